"""Generative VLMs on CultureVerse-style multiple choice: batched generation, answer parsing, disparity.

`cultureverse_vlm` (registered benchmark) reads rows with `image`, `question`, `options`, `answer` (a letter or the
option text), `question_type` and optional `country`/`category`. With a generative model (`VLMGenerator`, any
`image-text-to-text` checkpoint) every question is asked with its lettered options, the reply is parsed by
`answer_parsing.parse_choice` and scored; unparseable replies count as wrong and are reported by reason. With a
CLIP-family `DualEncoder` the recognition questions are scored by option similarity (the `cultureverse_mcq` task),
so both kinds of model land in the same (benchmark, task) rows of the comparison table.

Why not `pipeline("image-text-to-text")` for batching: its collate step cannot pad a batch whose chats produce
different image layouts, and it pads on whatever side the tokenizer was saved with. `VLMGenerator` holds the same
two objects the pipeline does (processor + `AutoModelForImageTextToText`) and batches through the processor's chat
template with left padding, so each prompt ends where generation starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from .answer_parsing import LETTERS, parse_choice
from .data import ImageRef, ImageTable
from .encoders import DualEncoder
from .errors import EvalDataError
from .tasks.base import ChoiceItems, EvalSettings, MultipleChoiceBenchmark, TaskResult, register
from .tasks.cultural import CultureVerseMCQ, geo

INSTRUCTION = "Answer with the letter of the correct option."
QUESTION_TYPES = ("recognition", "cultural_knowledge", "scene_reasoning")


def format_mcq_prompt(question: str, options: Sequence[str], instruction: str = INSTRUCTION) -> str:
    """The text part of a question turn: the question, one lettered option per line, then the instruction."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    return "\n".join(lines + [instruction])


class VLMGenerator:
    """Batched greedy generation with a transformers image-text-to-text model (left-padded chat batches)."""

    family = "generative"

    def __init__(self, model: Any, processor: Any, model_id: str | None = None, revision: str | None = None,
                 batch_size: int = 8, max_new_tokens: int = 32, device: str | torch.device | None = None):
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise TypeError(f"processor {type(processor).__name__} has no tokenizer; a chat VLM needs one")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; batched generation needs one")
        if getattr(processor, "chat_template", None) is None and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the processor has no chat template; questions are sent as chats")
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
        tokenizer.padding_side = "left"  # every prompt must end in the last column, where generation continues
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.processor, self.tokenizer = processor, tokenizer
        self.model_id = model_id or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.revision = revision
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    @classmethod
    def from_pretrained(cls, model_id: str, revision: str | None = None, processor: Any = None,
                        dtype: torch.dtype | None = None, device: str | None = None, **kwargs: Any) -> "VLMGenerator":
        """Load a Hub id or folder with AutoModelForImageTextToText (+ AutoProcessor unless `processor` is given)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if dtype is None:
            dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        model = AutoModelForImageTextToText.from_pretrained(model_id, revision=revision, dtype=dtype)
        processor = processor or AutoProcessor.from_pretrained(model_id, revision=revision)
        device = device or ("cuda" if torch.cuda.is_available() else None)
        return cls(model, processor, model_id=str(model_id), revision=revision, device=device, **kwargs)

    @torch.inference_mode()
    def generate(self, conversations: list[list[dict[str, Any]]]) -> list[str]:
        """The newly generated text of each conversation, in order."""
        answers: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            batch = conversations[start : start + self.batch_size]
            inputs = self.processor.apply_chat_template(batch, add_generation_prompt=True, tokenize=True,
                                                        return_dict=True, return_tensors="pt",
                                                        processor_kwargs={"padding": True})
            inputs = inputs.to(self.model.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         temperature=None, top_p=None, top_k=None,
                                         pad_token_id=self.tokenizer.pad_token_id)
            new = output[:, inputs["input_ids"].shape[1] :]
            answers.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return answers


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


def evaluate_vlm(model: Any, processor: Any, dataset: datasets.Dataset, seed: int = 0, batch_size: int = 8,
                 max_new_tokens: int = 32, bootstrap_resamples: int = 1000, model_id: str | None = None,
                 split: str | None = None) -> dict[str, dict]:
    """In-memory evaluation of a chat VLM on CultureVerse rows; {task: result record} as `evaluate_model` gives."""
    from .runner import evaluate_model

    generator = VLMGenerator(model, processor, model_id=model_id, batch_size=batch_size, max_new_tokens=max_new_tokens)
    return evaluate_model(None, None, CultureVerseVLM(split=split), dataset, seeds=(seed,),
                          bootstrap_resamples=bootstrap_resamples, encoder=generator)


def run_vlm_benchmark(model: str, data_dir: str, output_dir: str | Path, processor: Any = None, seed: int = 0,
                      batch_size: int = 8, max_new_tokens: int = 32, revision: str | None = None,
                      device: str | None = None, bootstrap_resamples: int = 1000) -> list[Path]:
    """Evaluate a chat VLM (path or Hub id) on a CultureVerse folder; one result JSON per task in `output_dir`."""
    from .runner import run_benchmarks

    generator = VLMGenerator.from_pretrained(model, revision=revision, processor=processor, device=device,
                                             batch_size=batch_size, max_new_tokens=max_new_tokens)
    return run_benchmarks(model, [CultureVerseVLM.name], output_dir, data_dirs={CultureVerseVLM.name: data_dir},
                          seeds=(seed,), batch_size=batch_size, bootstrap_resamples=bootstrap_resamples,
                          encoder=generator)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m evaluate_suite.vlm --model M --data-dir D --output-dir O`: result JSONs for a chat VLM."""
    parser = argparse.ArgumentParser(prog="python -m evaluate_suite.vlm", description=main.__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", required=True, help="CultureVerse-style folder or Hub id")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--revision", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--bootstrap-resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        paths = run_vlm_benchmark(args.model, args.data_dir, args.output_dir, seed=args.seed,
                                  batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                  revision=args.revision, device=args.device,
                                  bootstrap_resamples=args.bootstrap_resamples)
    except (EvalDataError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps([str(p) for p in paths]))
    return 0


__all__ = ["CultureVerseVLM", "INSTRUCTION", "VLMGenerator", "evaluate_vlm", "format_mcq_prompt", "main",
           "run_vlm_benchmark"]

if __name__ == "__main__":
    sys.exit(main())
