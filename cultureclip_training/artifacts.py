"""End-of-run artifacts: PEFT adapter, merged model with remote code and processor, WiSE-FT variant, model card,
and the Hub upload.

Layout of the output folder: `adapter/` (LoRA runs), `model/` (merged CultureCLIPModel + processor + README.md
card), `model-wise-ft-<alpha>/` (optional). Every folder is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData

from cultureclip_guards import atomic_dir  # re-exported: the demo and reproduce use it from here
from modeling_cultureclip import CultureCLIPModel

from .lora import merge_lora, save_adapter, wise_ft
from .recipes import TrainArgs

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
# tests: SIGKILL this process once the new model folder is written, just before it is renamed into place
KILL_HOOK_ENV = "CULTURECLIP_TEST_KILL_BEFORE_MODEL_RENAME"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CARD_SETTINGS = ("model", "objective", "loss_mode", "loss_terms", "caption_loss_weight", "concept_loss_weight",
                 "finetune", "lora_rank", "lora_alpha", "lora_dropout", "lora_layers", "per_device_batch_size",
                 "micro_batches", "accumulation", "learning_rate", "weight_decay", "warmup_steps", "lr_scheduler",
                 "epochs", "max_steps", "mixed_precision", "seed")


@dataclass
class Artifacts:
    """Paths written at the end of a run."""

    model_dir: Path
    adapter_dir: Path | None = None
    wise_ft_dir: Path | None = None
    pushed_to: str | None = None
    extra: dict[str, Path] = field(default_factory=dict)


def hub_id_or_none(value: str | None) -> str | None:
    """`value` if it reads as a Hub repo id (owner/name) and is not a local path, else None."""
    if value and _HUB_ID.match(value) and not os.path.exists(value):
        return value
    return None


def render_card(args: TrainArgs, summary: dict[str, Any], has_adapter: bool) -> ModelCard:
    """The model card: Hub YAML metadata plus a description of the run, from templates/model_card.md."""
    base_model = hub_id_or_none(args.card_base_model) or hub_id_or_none(args.model)
    dataset = hub_id_or_none(args.card_dataset) or hub_id_or_none(args.dataset)
    data = ModelCardData(
        base_model=base_model, datasets=[dataset] if dataset else None, license=args.license,
        pipeline_tag="zero-shot-image-classification", library_name="transformers",
        tags=["clip", "cultureclip", "contrastive-learning", "cultural-understanding"]
        + (["lora", "peft"] if has_adapter else []),
    )
    settings = [(name, getattr(args, name)) for name in CARD_SETTINGS]
    return ModelCard.from_template(
        data, template_path=str(TEMPLATE),
        model_title=f"CultureCLIP ({args.recipe or 'custom recipe'})",
        base_model_text=base_model or f"`{args.model}` (local)",
        dataset_text=dataset or "a local CulTwin folder",
        objective=args.objective, loss_mode=args.loss_mode, caption_loss_weight=args.caption_loss_weight,
        concept_loss_weight=args.concept_loss_weight,
        finetune_text=(f"LoRA r={args.lora_rank}, alpha={args.lora_alpha}, dropout={args.lora_dropout} on "
                       f"{'/'.join(args.lora_targets)} of {args.lora_layers} layers of the "
                       f"{' and '.join(args.lora_towers)} tower(s)"
                       + (f", plus the embedding rows of {len(args.lora_trainable_tokens)} words new to the base"
                          if args.lora_trainable_tokens else "")
                       + ", merged into the weights"
                       if args.finetune == "lora" else "all weights"),
        recipe=args.recipe or "custom", repo_id=args.hub_model_id or "<this repository>",
        has_adapter=has_adapter, wise_ft_alpha=args.wise_ft_alpha, settings=settings,
        steps=summary.get("steps"), samples_seen=summary.get("samples_seen"),
        samples_per_second=f"{summary.get('samples_per_second', 0.0):.1f}",
        final_losses=", ".join(f"{k} {v:.4f}" for k, v in summary.get("final_losses", {}).items()) or "n/a",
    )


def write_artifacts(args: TrainArgs, trained: Any, processor: Any, summary: dict[str, Any],
                    base_state: dict | None = None) -> tuple[Artifacts, CultureCLIPModel]:
    """Save adapter (LoRA runs), merged model + processor + card, and the WiSE-FT variant when asked.

    `trained` is the unwrapped model (a PeftModel for LoRA runs, merged in place); `base_state` the base weights
    for WiSE-FT. Returns the paths and the merged model.
    """
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    is_lora = args.finetune == "lora"
    adapter_dir = atomic_dir(output / "adapter", lambda d: save_adapter(trained, d)) if is_lora else None
    merged: CultureCLIPModel = merge_lora(trained) if is_lora else trained
    card = render_card(args, summary, has_adapter=is_lora)

    def write_model(model: CultureCLIPModel) -> Callable[[Path], None]:
        def write(directory: Path) -> None:
            model.save_pretrained(directory)
            processor.save_pretrained(directory)
            card.save(directory / "README.md")
            if os.environ.get(KILL_HOOK_ENV) == "1":
                import signal

                os.kill(os.getpid(), signal.SIGKILL)
        return write

    model_dir = atomic_dir(output / "model", write_model(merged))
    wise_dir = None
    if args.wise_ft_alpha is not None:
        if base_state is None:
            raise ValueError("wise_ft_alpha is set but the base weights were not kept")
        base = CultureCLIPModel(merged.config)
        base.load_state_dict(base_state)
        mixed = wise_ft(base, merged, args.wise_ft_alpha)
        wise_dir = atomic_dir(output / f"model-wise-ft-{args.wise_ft_alpha:g}", write_model(mixed))
    return Artifacts(model_dir=model_dir, adapter_dir=adapter_dir, wise_ft_dir=wise_dir), merged


def push_artifacts(artifacts: Artifacts, repo_id: str, private: bool = False, api: HfApi | None = None) -> str:
    """Upload model (repo root), adapter (`adapter/`) and WiSE-FT variant to the Hub; returns the repo id.

    The token comes from huggingface_hub's own lookup (HF_TOKEN or the saved login); it is never read here.
    """
    api = api or HfApi()
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(artifacts.model_dir),
                      commit_message="CultureCLIP: merged model, processor and card")
    if artifacts.adapter_dir is not None:
        api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(artifacts.adapter_dir),
                          path_in_repo="adapter", commit_message="CultureCLIP: LoRA adapter")
    if artifacts.wise_ft_dir is not None:
        api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(artifacts.wise_ft_dir),
                          path_in_repo=artifacts.wise_ft_dir.name, commit_message="CultureCLIP: WiSE-FT variant")
    artifacts.pushed_to = repo_id
    return repo_id


__all__ = ["Artifacts", "atomic_dir", "hub_id_or_none", "push_artifacts", "render_card", "write_artifacts"]
