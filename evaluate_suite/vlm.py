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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch

from .errors import EvalDataError
from .metrics.core import MIN_GROUP_SIZE
from .runner import evaluate_model, run_benchmarks
from .sources import is_hub_id
from .tasks.cultureverse import INSTRUCTION, QUESTION_TYPES, CultureVerseVLM, format_mcq_prompt


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



def evaluate_vlm(model: Any, processor: Any, dataset: datasets.Dataset, seed: int = 0, batch_size: int = 8,
                 max_new_tokens: int = 32, bootstrap_resamples: int = 1000, model_id: str | None = None,
                 split: str | None = None, min_group_size: int = MIN_GROUP_SIZE,
                 dataset_name: str | None = None) -> dict[str, dict]:
    """In-memory evaluation of a chat VLM on CultureVerse rows; {task: result record} as `evaluate_model` gives."""
    generator = VLMGenerator(model, processor, model_id=model_id, batch_size=batch_size, max_new_tokens=max_new_tokens)
    return evaluate_model(None, None, CultureVerseVLM(split=split), dataset, seeds=(seed,),
                          bootstrap_resamples=bootstrap_resamples, encoder=generator, min_group_size=min_group_size,
                          dataset_name=dataset_name)


def run_vlm_benchmark(model: str, data_dir: str, output_dir: str | Path, processor: Any = None, seed: int = 0,
                      batch_size: int = 8, max_new_tokens: int = 32, revision: str | None = None,
                      device: str | None = None, bootstrap_resamples: int = 1000, name: str | None = None,
                      min_group_size: int = MIN_GROUP_SIZE, overwrite: bool = False) -> list[Path]:
    """Evaluate a chat VLM (path or Hub id) on a CultureVerse folder or Hub dataset (`ID[@REV]`); one result JSON
    per task in `output_dir`."""
    bench = CultureVerseVLM.name
    where = {"hub_datasets": {bench: data_dir}} if is_hub_id(data_dir.partition("@")[0]) else \
        {"data_dirs": {bench: data_dir}}
    generator = VLMGenerator.from_pretrained(model, revision=revision, processor=processor, device=device,
                                             batch_size=batch_size, max_new_tokens=max_new_tokens)
    return run_benchmarks(model, [bench], output_dir, seeds=(seed,), batch_size=batch_size,
                          bootstrap_resamples=bootstrap_resamples, encoder=generator, name=name,
                          min_group_size=min_group_size, overwrite=overwrite, revision=revision, **where)


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
    parser.add_argument("--name", default=None, help="model name in results (default: Hub id or folder name)")
    parser.add_argument("--min-group-size", type=int, default=MIN_GROUP_SIZE)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        paths = run_vlm_benchmark(args.model, args.data_dir, args.output_dir, seed=args.seed,
                                  batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                  revision=args.revision, device=args.device,
                                  bootstrap_resamples=args.bootstrap_resamples, name=args.name,
                                  min_group_size=args.min_group_size, overwrite=args.overwrite)
    except (EvalDataError, ValueError, FileNotFoundError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(json.dumps([str(p) for p in paths]))
    return 0


__all__ = ["QUESTION_TYPES", "CultureVerseVLM", "INSTRUCTION", "VLMGenerator", "evaluate_vlm", "format_mcq_prompt",
           "main", "run_vlm_benchmark"]

if __name__ == "__main__":
    sys.exit(main())
