"""CultureVerse-style multiple choice for generative VLMs, as a registered benchmark (`cultureverse_vlm`).

Rows: `image`, `question`, `options`, `answer` (a letter or the option text), `question_type`, optional
`country`/`category`. The encoder is either a generator with `.generate(chats)` (see `evaluate_suite.vlm.VLMGenerator`)
or a CLIP-family `DualEncoder`, which scores the recognition questions by option similarity instead. This module
imports no runner: the runner imports the task registry, never the other way round.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
import torch

from ..answer_parsing import LETTERS, parse_choice
from ..data import ImageRef, ImageTable
from ..encoders import DualEncoder
from ..errors import EvalDataError
from ..protocols import Protocol
from .base import ChoiceItems, EvalSettings, MultipleChoiceBenchmark, TaskResult, register
from .cultural import CultureVerseMCQ, geo

INSTRUCTION = "Answer with the letter of the correct option."
QUESTION_TYPES = ("recognition", "cultural_knowledge", "scene_reasoning")


def format_mcq_prompt(question: str, options: Sequence[str], instruction: str = INSTRUCTION) -> str:
    """The text part of a question turn: the question, one lettered option per line, then the instruction."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    return "\n".join(lines + [instruction])


def _answer_index(answer: Any, options: list[str], bench: str, row: int) -> int:
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise EvalDataError(bench, "the question has no answer key", row=row, field="answer")
    if not isinstance(answer, str):
        raise EvalDataError(bench, f"expected a letter or an option text, got {answer!r}", row=row, field="answer")
    text = answer.strip()
    if len(text) == 1 and text.upper() in LETTERS:
        index = LETTERS.index(text.upper())
        if index < len(options):
            return index
    elif text in options:
        return options.index(text)
    raise EvalDataError(bench, f"answer key {answer!r} is not among the options {options}", row=row, field="answer")


def _missing_images(dataset: datasets.Dataset, column: str) -> list[int]:
    """Rows whose image cell is null or has neither bytes nor a path (checked in Arrow, without decoding)."""
    import pyarrow.compute as pc

    cells = dataset.select_columns([column]).with_format("arrow")[:][column]
    if cells.type.num_fields == 0:
        return [i for i, v in enumerate(cells.to_pylist()) if v is None]
    empty = pc.or_kleene(pc.is_null(cells), pc.and_(pc.is_null(pc.struct_field(cells, "bytes")),
                                                    pc.is_null(pc.struct_field(cells, "path"))))
    return np.flatnonzero(np.asarray(pc.fill_null(empty, True))).tolist()


def _subset(items: ChoiceItems, keep: np.ndarray) -> ChoiceItems:
    out = ChoiceItems()
    for i in np.flatnonzero(keep):
        out.add(items.rows[i], items.image[i], items.options[i], items.answer[i], items.kinds[i],
                **{g: v[i] for g, v in items.groups.items()})
    return out


@register
class CultureVerseVLM(MultipleChoiceBenchmark):
    """CultureVerse-style MCQ for generative VLMs (tasks `all` + one per question type); CLIP scores recognition."""

    name = "cultureverse_vlm"
    dataset_id = None
    required_columns = ("image", "question", "options", "answer", "question_type")
    seeded = False
    protocol = Protocol("CultureVerse-style MCQ for generative VLMs", "2", "this suite's own benchmark "
                        "(CultureVerse is not public): lettered options in dataset order, greedy decoding, the reply's "
                        "letter parsed by answer_parsing.parse_choice; unparseable replies count as wrong", ())

    def __init__(self, split: str | None = None, instruction: str = INSTRUCTION, **params: Any):
        super().__init__(split=split, **params)
        self.instruction = instruction

    def params(self) -> dict[str, Any]:
        return {**super().params(), "instruction": self.instruction}

    def build_items(self, dataset: datasets.Dataset, table: ImageTable, rng: np.random.Generator) -> ChoiceItems:
        """One item per row, options in dataset order (the answer key is a position); every row checked first."""
        missing = _missing_images(dataset, "image")
        if missing:
            raise EvalDataError(self.name, f"image is missing (rows without an image: {missing[:10]})",
                                row=missing[0], field="image")
        columns = [c for c in ("question", "options", "answer", "question_type", "country", "category")
                   if c in dataset.column_names]
        items = ChoiceItems()
        for row, record in enumerate(dataset.select_columns(columns)):
            question, options = record["question"], record["options"]
            if not isinstance(question, str) or not question.strip():
                raise EvalDataError(self.name, "the question is empty", row=row, field="question")
            if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS) or \
                    not all(isinstance(o, str) and o.strip() for o in options):
                raise EvalDataError(self.name, f"need 2-26 non-empty option strings, got {options!r}", row=row,
                                    field="options")
            answer = _answer_index(record["answer"], options, self.name, row)
            qtype = record["question_type"]
            if not isinstance(qtype, str) or not qtype:
                raise EvalDataError(self.name, f"expected a question type, got {qtype!r}", row=row,
                                    field="question_type")
            items.add(row, table.add(ImageRef(row, "image")), options, answer, kind=qtype,
                      **geo(record.get("country")), category=record.get("category"))
        return items

    def evaluate(self, encoder: Any, dataset: datasets.Dataset, settings: EvalSettings) -> list[TaskResult]:
        if isinstance(encoder, DualEncoder):
            # A dual encoder cannot answer free-form questions; it scores the recognition options instead.
            return CultureVerseMCQ(split=self.split).evaluate(encoder, dataset, settings)
        if not hasattr(encoder, "generate"):
            raise TypeError(f"{type(encoder).__name__} is neither a DualEncoder nor a generator with .generate()")
        dataset = self.prepare(dataset)
        table = ImageTable(dataset, self.name)
        self._skipped = Counter()
        seed = settings.seeds[0]
        items = self.build_items(dataset, table, np.random.default_rng(seed))
        torch.manual_seed(seed)
        replies: list[str] = []
        for start in range(0, len(items), encoder.batch_size):
            idx = range(start, min(start + encoder.batch_size, len(items)))
            images = table.batch([items.image[i] for i in idx])
            questions = dataset.select_columns(["question"])[[items.rows[i] for i in idx]]["question"]
            chats = [[{"role": "user", "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": format_mcq_prompt(q, items.options[i], self.instruction)}]}]
                for image, q, i in zip(images, questions, idx)]
            replies.extend(encoder.generate(chats))
        parsed = [parse_choice(reply, opts) for reply, opts in zip(replies, items.options)]
        predicted = np.array([-1 if p.index is None else p.index for p in parsed])
        correct = (predicted == np.asarray(items.answer)).astype(float)
        unparseable = np.array([p.index is None for p in parsed])
        results = []
        kinds = np.asarray(items.kinds)
        for task in ["all"] + [k for k in QUESTION_TYPES if k in set(items.kinds)] + \
                sorted(set(items.kinds) - set(QUESTION_TYPES)):
            keep = np.ones(len(items), bool) if task == "all" else kinds == task
            sub = _subset(items, keep)
            result = self.choice_result(task, {seed: sub}, {seed: correct[keep]}, settings, len(dataset), len(table))
            result.metrics["unparseable_rate"] = float(unparseable[keep].mean())
            result.counts["unparseable"] = int(unparseable[keep].sum())
            result.counts["unparseable_reasons"] = dict(sorted(Counter(
                p.reason for p, k in zip(parsed, keep) if k and p.index is None).items()))
            result.extras["predictions"] = [
                {"row": items.rows[i], "reply": replies[i][:200], "parsed": parsed[i].letter,
                 "answer": LETTERS[items.answer[i]]} for i in np.flatnonzero(keep)]
            results.append(result)
        return results


__all__ = ["INSTRUCTION", "QUESTION_TYPES", "CultureVerseVLM", "format_mcq_prompt"]
