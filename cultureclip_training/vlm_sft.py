"""CultureVLM: LoRA supervised fine-tuning of a chat VLM on a CultureVerse-style train split.

Each row becomes one chat: the user turn holds the image and the lettered question (the same text the evaluator
sends), the assistant turn the answer letter plus the row's short rationale ("Answer: B. <rationale>"). The loss is
the language-model loss on the assistant tokens only. A plain accelerate loop (TRL is not installed here) with the
conventions of `train.py`: YAML recipes with `--field value` overrides, atomic checkpoints holding the trainable
weights, optimizer, scheduler, RNG states and data position (`checkpointing.py`), `--resume latest`, a NaN guard,
`metrics.jsonl`, and at the end the adapter in PEFT format (`OUTPUT/adapter/`) with a model card.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cultureclip_guards import BadInput

from . import checkpointing as ckpt
from .artifacts import atomic_dir
from .distributed import end_processes
from .loop import TrainingDiverged
from .recipes import RecipeError, RecipeSchema

RECIPE_DIR = Path(__file__).parent / "recipes" / "vlm"  # kept apart: train.py lists recipes/*.yaml
INSTRUCTION = "Answer with the letter of the correct option."  # must equal evaluate_suite.vlm.INSTRUCTION (tested)
LETTERS = string.ascii_uppercase
METRICS_FILE = "metrics.jsonl"
StepCallback = Callable[[int, torch.nn.Module], None]


class VLMDataError(BadInput):
    """A training row is unusable; the message names the split, row and field."""


@dataclass
class VLMTrainArgs:
    """Settings of a VLM LoRA fine-tuning run (recipes: `cultureclip_training/recipes/vlm/*.yaml`)."""

    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    dataset: str = ""  # CultureVerse-style folder or Hub id
    train_split: str = "train"
    max_train_samples: int | None = None
    output_dir: str = "outputs/culturevlm"
    recipe: str | None = None
    answer_template: str = "Answer: {letter}. {rationale}"
    instruction: str = INSTRUCTION
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    lora_scope: str = "language_model"  # module-path part the targets must sit under (keeps the vision tower frozen)
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    epochs: float = 1.0
    max_steps: int | None = None
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler: str = "cosine"
    max_grad_norm: float | None = 1.0
    mixed_precision: str | None = None
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    resume: str | None = None
    log_every: int = 10
    progress_bar: bool = True
    save_artifacts: bool = True
    license: str = "apache-2.0"

    def __post_init__(self) -> None:
        checks = [("per_device_batch_size", self.per_device_batch_size >= 1), ("lora_rank", self.lora_rank >= 1),
                  ("gradient_accumulation_steps", self.gradient_accumulation_steps >= 1),
                  ("learning_rate", self.learning_rate > 0), ("keep_checkpoints", self.keep_checkpoints >= 1),
                  ("checkpoint_every", self.checkpoint_every >= 0),
                  ("max_steps", self.max_steps is None or self.max_steps >= 1),
                  ("epochs", self.max_steps is not None or self.epochs > 0),
                  ("mixed_precision", self.mixed_precision in (None, "no", "fp16", "bf16"))]
        for name, ok in checks:
            if not ok:
                raise RecipeError(f"{name}={getattr(self, name)!r} is out of range")
        if "{letter}" not in self.answer_template:
            raise RecipeError("answer_template must contain {letter}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


VLM_RECIPES = RecipeSchema(VLMTrainArgs, RECIPE_DIR)
read_vlm_recipe = VLM_RECIPES.read
parse_vlm_command_line = VLM_RECIPES.parse_command_line


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def format_mcq_prompt(question: str, options: Sequence[str], instruction: str = INSTRUCTION) -> str:
    """The question turn's text, identical to the evaluator's (`evaluate_suite.vlm.format_mcq_prompt`)."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    return "\n".join(lines + [instruction])


def check_rows(dataset: Any, split: str) -> None:
    """Every row needs a question, >= 2 options, an answer letter among them and an image; else VLMDataError."""
    needed = ("image", "question", "options", "answer")
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise VLMDataError(f"split {split!r}: missing column(s) {missing}; it has {sorted(dataset.column_names)}")
    import datasets

    raw = dataset.cast_column("image", datasets.Image(decode=False)) if isinstance(
        dataset.features.get("image"), datasets.Image) else dataset
    for row, record in enumerate(raw.select_columns(list(needed))):
        where = f"split {split!r}, row {row}"
        if not isinstance(record["question"], str) or not record["question"].strip():
            raise VLMDataError(f"{where}, field 'question': empty")
        options = record["options"]
        if not isinstance(options, list) or len(options) < 2:
            raise VLMDataError(f"{where}, field 'options': need a list of >= 2 options, got {options!r}")
        answer = record["answer"]
        if not isinstance(answer, str) or not answer.strip():
            raise VLMDataError(f"{where}, field 'answer': missing (the question has no answer key)")
        if answer.strip().upper() not in LETTERS[: len(options)]:
            raise VLMDataError(f"{where}, field 'answer': {answer!r} is not among the option letters "
                               f"{list(LETTERS[: len(options)])}")
        image = record["image"]
        if image is None or (isinstance(image, dict) and not (image.get("bytes") or image.get("path"))):
            raise VLMDataError(f"{where}, field 'image': missing")


def chat(record: dict[str, Any], args: VLMTrainArgs, with_answer: bool) -> list[dict[str, Any]]:
    """The conversation of one row (user turn, plus the assistant answer when `with_answer`)."""
    image = record["image"].convert("RGB")
    turns = [{"role": "user", "content": [
        {"type": "image", "image": image},
        {"type": "text", "text": format_mcq_prompt(record["question"], record["options"], args.instruction)}]}]
    if with_answer:
        letter = record["answer"].strip().upper()
        text = args.answer_template.format(letter=letter, rationale=(record.get("rationale") or "").strip()).strip()
        turns.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
    return turns


_SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


def collate(records: list[dict[str, Any]], processor: Any, args: VLMTrainArgs) -> dict[str, torch.Tensor]:
    """Tokenise each row alone, mask everything but the answer with -100, pad right, join the image tensors."""
    parts = []
    for record in records:
        full = processor.apply_chat_template([chat(record, args, True)], tokenize=True, return_dict=True,
                                             return_tensors="pt")
        prompt = processor.apply_chat_template([chat(record, args, False)], tokenize=True, return_dict=True,
                                               return_tensors="pt", add_generation_prompt=True)
        n_prompt = prompt["input_ids"].shape[1]
        if not torch.equal(full["input_ids"][0, :n_prompt], prompt["input_ids"][0]):
            raise ValueError("the chat template does not render the prompt as a prefix of the full chat; "
                             "answer tokens cannot be located")
        labels = full["input_ids"].clone()
        labels[:, :n_prompt] = -100
        parts.append((full, labels))
    width = max(p["input_ids"].shape[1] for p, _ in parts)
    pad_id = processor.tokenizer.pad_token_id
    batch: dict[str, list[torch.Tensor]] = {}
    for full, labels in parts:
        extra = width - full["input_ids"].shape[1]
        for key, value in list(full.items()) + [("labels", labels)]:
            if key in _SEQUENCE_KEYS or key == "labels":
                fill = {"input_ids": pad_id, "labels": -100}.get(key, 0)
                value = torch.nn.functional.pad(value, (0, extra), value=fill)
            batch.setdefault(key, []).append(value)
    return {k: torch.cat(v, dim=0) for k, v in batch.items()}


@dataclass
class BatchOrder:
    """Seeded per-epoch example order, sharded by rank; a step takes `per_step` examples of this rank's share."""

    n: int
    per_step: int
    micro: int
    seed: int
    rank: int = 0
    world: int = 1

    @property
    def steps_per_epoch(self) -> int:
        steps = (self.n // self.world) // self.per_step
        if steps < 1:
            raise VLMDataError(f"{self.n} training rows are fewer than one step needs "
                               f"({self.per_step} per process x {self.world} processes)")
        return steps

    def micro_batches(self, epoch: int, step_in_epoch: int) -> list[list[int]]:
        # The order depends only on (seed, epoch), never on the global RNG, so a resumed run sees the same rows.
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)[self.rank :: self.world]
        chunk = order[step_in_epoch * self.per_step : (step_in_epoch + 1) * self.per_step].tolist()
        return [chunk[i : i + self.micro] for i in range(0, len(chunk), self.micro)]


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------


def load_vlm(args: VLMTrainArgs) -> tuple[Any, Any]:
    """The base chat VLM and its processor (the Qwen-VL processor is assembled without torchvision when needed)."""
    from transformers import AutoModelForImageTextToText

    from dataset_builder.backends.tiny import load_tiny_chat_processor

    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32)
    # AutoProcessor whenever it can load the folder; for Qwen-VL without torchvision, the same files piece by piece.
    return model, load_tiny_chat_processor(args.model)


def apply_vlm_lora(model: Any, args: VLMTrainArgs) -> Any:
    """Wrap `model` with LoRA adapters on `lora_targets` inside modules whose path contains `lora_scope`."""
    from peft import LoraConfig, get_peft_model

    targets = "|".join(sorted(args.lora_targets))
    pattern = rf".*{args.lora_scope}.*\.({targets})$" if args.lora_scope else rf".*\.({targets})$"
    config = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=pattern, bias="none")
    peft_model = get_peft_model(model, config)
    if not any(p.requires_grad for p in peft_model.parameters()):
        raise RecipeError(f"LoRA matched no module for targets {args.lora_targets} under {args.lora_scope!r}")
    return peft_model


def _card(args: VLMTrainArgs, summary: dict[str, Any]) -> str:
    from huggingface_hub import ModelCard, ModelCardData

    base = args.model if "/" in args.model and not os.path.exists(args.model) else None
    data = ModelCardData(base_model=base, library_name="peft", pipeline_tag="image-text-to-text",
                         license=args.license, tags=["culturevlm", "lora", "peft", "cultural-understanding"])
    text = (f"---\n{data.to_yaml()}\n---\n\n# CultureVLM LoRA adapter ({args.recipe or 'custom recipe'})\n\n"
            f"LoRA r={args.lora_rank}, alpha={args.lora_alpha}, dropout={args.lora_dropout} on "
            f"{', '.join(args.lora_targets)} under `{args.lora_scope}` of `{args.model}`, fine-tuned on the "
            f"`{args.train_split}` split of a CultureVerse-style benchmark to answer with the option letter and a "
            f"short rationale ({args.answer_template!r}).\n\nLoad with "
            f"`PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), adapter_dir)`.\n\n"
            f"Run: {summary['steps']} steps, {summary['examples_seen']} examples, final loss "
            f"{summary['final_loss']:.4f}, seed {args.seed}.\n")
    return str(ModelCard(text))


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class VLMTrainResult:
    """Steps, examples seen, loss history and the adapter folder (when saved)."""

    output_dir: Path
    steps: int
    examples_seen: int
    history: list[dict[str, float]]
    adapter_dir: Path | None
    model: Any = None


def train_vlm(args: VLMTrainArgs, dataset: Any = None, model: Any = None, processor: Any = None,
              callbacks: Sequence[StepCallback] = ()) -> VLMTrainResult:
    """Fine-tune as `args` says; `dataset`/`model`/`processor` replace loading them when given.

    `callbacks(step, model)` run before each step (tests use one to kill the process mid-run).
    """
    import datasets
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from accelerate.state import AcceleratorState

    output = Path(args.output_dir)
    # Same reasons as train(): several runs in one process must not inherit accelerate's singleton settings, and
    # GPU-less multi-process launches need cpu=True to form gloo ranks.
    AcceleratorState._reset_state(reset_partial_state=False)
    cpu_ranks = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=cpu_ranks)
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(args.seed)
    if dataset is None:
        if not args.dataset:
            raise VLMDataError("no dataset given (set dataset: in the recipe or --dataset PATH)")
        loaded = datasets.load_dataset(args.dataset)
        if args.train_split not in loaded:
            raise VLMDataError(f"{args.dataset}: no split {args.train_split!r} (splits: {sorted(loaded)})")
        dataset = loaded[args.train_split]
    if args.max_train_samples is not None:
        dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
    check_rows(dataset, args.train_split)
    if model is None:
        model, processor = load_vlm(args)
    elif processor is None:
        raise ValueError("train_vlm(model=...) needs processor=... as well")
    trained = apply_vlm_lora(model, args)
    order = BatchOrder(len(dataset), args.per_device_batch_size * args.gradient_accumulation_steps,
                       args.per_device_batch_size, args.seed, rank, world)
    total_steps = args.max_steps or math.ceil(args.epochs * order.steps_per_epoch)
    trainable = [p for p in trained.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.warmup_steps,
                              num_training_steps=total_steps)
    wrapped, optimizer = accelerator.prepare(trained, optimizer)

    position, history = ckpt.Position(0, 0, 0), []
    metrics_path = output / METRICS_FILE
    if args.resume:
        path = ckpt.resolve_resume(output, args.resume)
        position = ckpt.load_checkpoint(path, trained, optimizer, scheduler, rank, world)
        if metrics_path.is_file():
            history = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line]
            history = [h for h in history if h["step"] <= position.step]
        accelerator.print(f"resumed from {path} at step {position.step}")
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("".join(json.dumps(h) + "\n" for h in history), encoding="utf-8")
    progress = tqdm(total=total_steps, initial=position.step, desc="vlm-sft",
                    disable=not (accelerator.is_main_process and args.progress_bar))
    run_info = {"recipe": args.recipe, "seed": args.seed, "model": args.model}
    while position.step < total_steps:
        step = position.step + 1
        for callback in callbacks:
            callback(step, trained)
        wrapped.train()
        total = 0.0
        micro = order.micro_batches(position.epoch, position.step_in_epoch)
        for indices in micro:
            batch = collate([dataset[i] for i in indices], processor, args)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            loss = wrapped(**batch).loss / len(micro)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"non-finite loss at step {step} (epoch {position.epoch}, rows {indices}); "
                                       f"the last good checkpoint under {ckpt.checkpoint_root(output)} is untouched")
            accelerator.backward(loss)
            total += float(loss.detach())
        if args.max_grad_norm is not None:
            accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        position.step, position.step_in_epoch = step, position.step_in_epoch + 1
        if position.step_in_epoch == order.steps_per_epoch:
            position.epoch, position.step_in_epoch = position.epoch + 1, 0
        record = {"step": step, "loss": total, "lr": scheduler.get_last_lr()[0]}
        history.append(record)
        if accelerator.is_main_process:
            with open(metrics_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        progress.update(1)
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            ckpt.save_checkpoint(output, position, trained, optimizer, scheduler, run_info, rank, world,
                                 accelerator.wait_for_everyone, args.keep_checkpoints)
    progress.close()
    result = VLMTrainResult(output, position.step, position.step * order.per_step * world, history, None, trained)
    accelerator.wait_for_everyone()
    if args.save_artifacts and accelerator.is_main_process:
        summary = {"steps": result.steps, "examples_seen": result.examples_seen,
                   "final_loss": history[-1]["loss"] if history else float("nan")}

        def write(directory: Path) -> None:
            accelerator.unwrap_model(wrapped).save_pretrained(str(directory), safe_serialization=True)
            (directory / "README.md").write_text(_card(args, summary), encoding="utf-8")
            (directory / "train_args.json").write_text(json.dumps(args.to_dict(), indent=2), encoding="utf-8")

        result.adapter_dir = atomic_dir(output / "adapter", write)
    accelerator.wait_for_everyone()
    accelerator.print(f"done: {result.steps} steps, {result.examples_seen} examples")
    del wrapped  # see end_processes: no reference to the DDP wrapper may outlive the group
    end_processes(accelerator)
    return result


__all__ = ["BatchOrder", "INSTRUCTION", "VLMDataError", "VLMTrainArgs", "VLMTrainResult", "apply_vlm_lora",
           "check_rows", "collate", "format_mcq_prompt", "load_vlm", "parse_vlm_command_line", "read_vlm_recipe",
           "train_vlm"]
