"""The training loop: `train(args) -> TrainResult`, used by train.py and by the demo.

Builds the model (a Hub/local checkpoint, or a fresh tiny one), attaches LoRA or unfreezes everything, reads
and validates the data, then runs feature-cached (or, as the release, plainly accumulated) steps under accelerate (DDP across processes, the loss over
features gathered with gradients), with checkpoints, exact resume, a NaN/inf guard, trackers and a progress bar.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer, CLIPImageProcessorPil, CLIPProcessor, get_scheduler

from modeling_cultureclip import CultureCLIPModel, ObjectiveSettings
from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of

from cultureclip_guards import Diverged

from . import checkpointing as ckpt
from . import preflight
from .artifacts import Artifacts, push_artifacts, write_artifacts
from .data import BatchPlan, epoch_batches, load_split, prepare
from .distributed import all_finite, end_processes, feature_gather_or_none, mean_over_ranks
from .feature_cache import FeatureEncoder, cached_step, compile_towers, objective_loss, plain_step
from .lora import LoraSettings, apply_lora, trainable_token_ids
from .recipes import TINY_MODEL, RecipeError, TrainArgs

OBJECTIVE_FIELDS = ("loss_mode", "loss_terms", "caption_loss_weight", "concept_loss_weight", "use_twin_negatives",
                    "normalize_features", "symmetric_twin_negatives", "mask_false_negatives", "logit_scale_max")
TINY_TEXT_COLUMNS = ("caption", "twin_caption", "concept", "twin_concept")
METRICS_FILE = "metrics.jsonl"

StepCallback = Callable[[int, torch.nn.Module], None]


class TrainingDiverged(Diverged):
    """The loss or the gradient became NaN/inf; no checkpoint was written for that step."""


@dataclass
class TrainResult:
    """What a run produced: counts, speed, final losses, per-step history and artifact paths."""

    output_dir: Path
    steps: int
    samples_seen: int
    samples_per_second: float
    final_losses: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    artifacts: Artifacts | None = None
    model: Any = None  # the merged CultureCLIPModel when artifacts were written, else the trained module

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "samples_seen": self.samples_seen,
                "samples_per_second": self.samples_per_second, "final_losses": self.final_losses}


def _lora_settings(args: TrainArgs, tokenizer: Any) -> LoraSettings:
    layers: Any = args.lora_layers
    if all(part.strip().isdigit() for part in layers.split(",")):  # "0,1,5": explicit indices
        layers = [int(part) for part in layers.split(",")]
    token_ids = trainable_token_ids(args.lora_trainable_tokens, tokenizer) if args.lora_trainable_tokens else ()
    return LoraSettings(rank=args.lora_rank, alpha=args.lora_alpha, dropout=args.lora_dropout,
                        towers=tuple(args.lora_towers), layers=layers, targets=tuple(args.lora_targets),
                        projections=args.lora_projections, trainable_token_ids=token_ids)


def load_model(args: TrainArgs, dataset: datasets.Dataset, model: Any = None,
               processor: Any = None) -> tuple[CultureCLIPModel, Any]:
    """The starting CultureCLIPModel and its processor, with the run's objective written into the config."""
    if model is not None:
        if processor is None:
            raise ValueError("train(model=...) needs processor=... as well (the model's tokenizer and image processor)")
        model = model if isinstance(model, CultureCLIPModel) else CultureCLIPModel.from_clip(model)
    elif args.model == TINY_MODEL:
        texts = [text for column in TINY_TEXT_COLUMNS if column in dataset.column_names for text in dataset[column]]
        tokenizer = build_word_tokenizer(words_of(texts))
        model = CultureCLIPModel(tiny_config(len(tokenizer)))
        processor = processor or tiny_processor(tokenizer)
    else:
        preflight.check_model_source(args.model)
        with preflight.naming_model(args.model):
            if AutoConfig.from_pretrained(args.model).model_type == "cultureclip":
                model = CultureCLIPModel.from_pretrained(args.model)
            else:
                model = CultureCLIPModel.from_clip(args.model)  # raises unless it is a CLIP checkpoint
            if processor is None:
                processor = CLIPProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(args.model),
                                          tokenizer=AutoTokenizer.from_pretrained(args.model))
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        # weights are trained in fp32 (mixed_precision autocasts the matmuls); a half-precision checkpoint is
        # upcast once here instead of being stepped in bf16/fp16
        model.float()
    preflight.check_tokenizer(processor.tokenizer, model.config, args.model)
    for name in OBJECTIVE_FIELDS:
        setattr(model.config, name, getattr(args, name))
    model.config.validate_objective()
    return model, processor


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # biases, norms and the temperature are not decayed (the usual AdamW practice)
        skip = param.ndim < 2 or "norm" in name or name.endswith("logit_scale")
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _trackers(args: TrainArgs) -> list[str]:
    if args.report_to == "none":
        return []
    if args.report_to == "tensorboard" or importlib.util.find_spec("tensorboard") is not None:
        return ["tensorboard"]
    return []


def _read_history(path: Path, up_to: int) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if row["step"] <= up_to]


def _write_history(path: Path, rows: list[dict[str, float]]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    temporary.replace(path)


def train(args: TrainArgs, dataset: datasets.Dataset | None = None, model: Any = None, processor: Any = None,
          callbacks: Sequence[StepCallback] = ()) -> TrainResult:
    """Run training as `args` says; `dataset`/`model`/`processor` replace loading them from args when given.

    `callbacks` run before each step as `callback(step_number, model)` (the demo's and tests' hook).
    Raises DatasetSchemaError on bad data, TrainingDiverged on a NaN/inf loss or gradient, CheckpointError on a
    bad resume.
    """
    output = Path(args.output_dir)
    preflight.check_output_dir(args)  # read-only, on every rank, before any rank writes
    # accelerate only sets up gloo ranks on a GPU-less machine when told it runs on CPU; without this each
    # process launched by torchrun / `accelerate launch --multi_gpu` would train alone
    cpu_ranks = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    # the ranks meet within a short timeout first (a missing rank is named, not waited for 30 minutes)
    preflight.start_processes(args, "gloo" if cpu_ranks or not torch.cuda.is_available() else "nccl")
    # the demo calls train() several times in one process, possibly with other precision settings; accelerate
    # keeps those in a singleton, so start it afresh (the process group itself is kept)
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, log_with=_trackers(args) or None,
                              project_dir=str(output), cpu=cpu_ranks)
    if accelerator.mixed_precision != "no" and not accelerator.native_amp:
        # accelerate would silently train in fp32 (it runs fp16 autocast on GPUs only)
        raise RecipeError(f"mixed_precision={accelerator.mixed_precision} is not available on "
                          f"{accelerator.device.type}: use bf16 (autocast on CPUs and recent GPUs) or no")
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(args.seed)

    if dataset is None:
        dataset = load_split(args.dataset, args.train_split, args.dataset_config)
    if args.max_train_samples is not None:
        dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
    base_model, processor = load_model(args, dataset, model, processor)
    with_concepts = args.objective == "cultureclip" and ObjectiveSettings.from_config(base_model.config).uses_concepts
    data = prepare(dataset, processor, args.objective, with_concepts,
                   base_model.config.text_config.max_position_embeddings, args.train_split)
    plan = BatchPlan(len(data.examples), args.per_device_batch_size, args.micro_batches, world, rank, args.seed)
    total_steps = args.max_steps or math.ceil(args.epochs * plan.steps_per_epoch)

    base_state = ({k: v.detach().clone() for k, v in base_model.state_dict().items()}
                  if args.save_artifacts and args.wise_ft_alpha is not None else None)
    if args.gradient_checkpointing:
        base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.finetune == "lora":
        trained = apply_lora(base_model, _lora_settings(args, processor.tokenizer))
    else:
        base_model.requires_grad_(True)
        trained = base_model
    base_model.logit_scale.requires_grad_(args.train_logit_scale)
    if args.compile:
        compile_towers(base_model)
    settings = ObjectiveSettings.from_config(base_model.config)
    clamp_max = args.logit_scale_max if args.objective == "clip" else settings.logit_scale_max

    raw_optimizer = torch.optim.AdamW(_parameter_groups(trained, args.weight_decay), lr=args.learning_rate,
                                      betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    scheduler = get_scheduler(args.lr_scheduler, optimizer=raw_optimizer, num_warmup_steps=args.warmup_steps,
                              num_training_steps=total_steps)
    encoder, optimizer = accelerator.prepare(FeatureEncoder(trained, args.objective), raw_optimizer)
    gather = feature_gather_or_none()
    # plain accumulation reproduces the release: each micro-batch's loss over its own rows on its own device
    step_fn, loss_gather = (plain_step, None) if args.accumulation == "plain" else (cached_step, gather)
    trainable = [p for p in trained.parameters() if p.requires_grad]

    position = ckpt.Position(step=0, epoch=0, step_in_epoch=0)
    metrics_path = output / METRICS_FILE
    history: list[dict[str, float]] = []
    run_settings = preflight.resume_settings(args, len(dataset), getattr(dataset, "_fingerprint", None))
    resume_from = ckpt.resolve_resume(output, args.resume) if args.resume else None
    if resume_from is not None and not preflight.check_resume(resume_from, ckpt.verify(resume_from), run_settings,
                                                              args.overwrite):
        accelerator.print(f"--overwrite: {resume_from} was made with other settings; starting over")
        resume_from = None
    if resume_from is not None:
        path = resume_from
        position = ckpt.load_checkpoint(path, trained, optimizer, scheduler, rank, world)
        history = _read_history(metrics_path, position.step)
        accelerator.print(f"resumed from {path} at step {position.step} (epoch {position.epoch}, "
                          f"{position.step_in_epoch} batches done)")
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        if args.overwrite and resume_from is None:
            preflight.clear_previous_run(output)
        _write_history(metrics_path, history)
    accelerator.init_trackers("cultureclip", config={k: v if isinstance(v, int | float | str | bool) else str(v)
                                                     for k, v in args.to_dict().items()})

    def loss_fn(features: dict[str, torch.Tensor], scale: torch.Tensor) -> dict[str, torch.Tensor]:
        return objective_loss(features, scale, args.objective, settings, loss_gather)

    run_info = {"recipe": args.recipe, "seed": args.seed, "global_batch": plan.global_batch,
                "accumulation": args.accumulation,
                "settings": run_settings}
    progress = tqdm(total=total_steps, initial=position.step, desc="training",
                    disable=not (accelerator.is_main_process and args.progress_bar))
    started, steps_run = time.perf_counter(), 0
    final: dict[str, float] = history[-1] if history else {}
    while position.step < total_steps:
        for micro in epoch_batches(data, plan, position.epoch, position.step_in_epoch, args.num_workers):
            step = position.step + 1
            for callback in callbacks:
                callback(step, trained)
            where = (f"step {step} (epoch {position.epoch}, batch {position.step_in_epoch} of the epoch, "
                     f"example indices on rank {rank}: {micro[0][0][:8]}...)")

            def check(terms: dict[str, torch.Tensor]) -> None:
                if not all_finite(terms["loss"]):
                    value = float(terms["loss"].detach())
                    raise TrainingDiverged(f"non-finite loss {value} at {where}; stopping. The last "
                                           f"good checkpoint under {ckpt.checkpoint_root(output)} is untouched.")

            encoder.train()
            terms = step_fn(encoder, [batch for _, batch in micro], loss_fn, base_model.logit_scale,
                                accelerator.backward, lambda: accelerator.no_sync(encoder), check)
            norm = accelerator.clip_grad_norm_(trainable, args.max_grad_norm or float("inf"))
            if not all_finite(torch.as_tensor(norm)):
                raise TrainingDiverged(f"non-finite gradient norm at {where}; stopping. The last good checkpoint "
                                       f"under {ckpt.checkpoint_root(output)} is untouched.")
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if args.train_logit_scale and clamp_max is not None:
                with torch.no_grad():
                    base_model.logit_scale.clamp_(max=math.log(clamp_max))

            position.step, position.step_in_epoch = step, position.step_in_epoch + 1
            if position.step_in_epoch == plan.steps_per_epoch:
                position.epoch, position.step_in_epoch = position.epoch + 1, 0
            steps_run += 1
            record = {"step": step, **mean_over_ranks(terms), "lr": scheduler.get_last_lr()[0],
                      "logit_scale": float(base_model.logit_scale.detach().exp())}
            history.append(record)
            final = record
            if accelerator.is_main_process:
                with open(metrics_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            if step % args.log_every == 0 or step == total_steps:
                accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=step)
            progress.update(1)
            progress.set_postfix(loss=f"{record['loss']:.4f}")
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                ckpt.save_checkpoint(output, position, trained, optimizer, scheduler, run_info, rank, world,
                                     accelerator.wait_for_everyone, args.keep_checkpoints)
            if position.step >= total_steps:
                break
    progress.close()
    elapsed = time.perf_counter() - started
    losses = {k: v for k, v in final.items() if k.endswith("loss")}
    result = TrainResult(output_dir=output, steps=position.step, samples_seen=position.step * plan.global_batch,
                         samples_per_second=steps_run * plan.global_batch / elapsed if elapsed > 0 else 0.0,
                         final_losses=losses, history=history, model=trained)
    accelerator.print(f"done: {result.steps} steps, {result.samples_seen} examples seen, "
                      f"{result.samples_per_second:.1f} examples/s this session, final "
                      + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    accelerator.wait_for_everyone()
    if args.save_artifacts and accelerator.is_main_process:
        if args.finetune == "lora" and args.train_logit_scale:
            accelerator.print("note: the PEFT adapter does not carry the trained logit_scale; model/ does")
        result.artifacts, result.model = write_artifacts(args, trained, processor, result.summary(), base_state)
        if args.push_to_hub:
            push_artifacts(result.artifacts, args.hub_model_id, private=args.hub_private)
    accelerator.wait_for_everyone()
    del encoder  # see end_processes: no reference to the DDP wrapper may outlive the group
    end_processes(accelerator)
    return result


__all__ = ["TrainResult", "TrainingDiverged", "load_model", "train"]
