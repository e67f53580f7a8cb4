"""LoRA (PEFT) on CultureCLIP towers, adapter save/merge, and WiSE-FT weight interpolation.

Layer presets follow the released code's choices: all layers, the upper or lower half, or N blocks at the top,
bottom or middle of each tower. Targets are the attention projections (q/k/v/out) and optionally the two
tower-to-joint-space projections.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from modeling_cultureclip import CultureCLIPModel

TOWERS = {"text": ("text_model", "text_config"), "vision": ("vision_model", "vision_config")}
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
MLP_TARGETS = ("fc1", "fc2")
PROJECTIONS = {"text": "text_projection", "vision": "visual_projection"}
TOKEN_EMBEDDING = "text_model.embeddings.token_embedding"


@dataclass
class LoraSettings:
    """Where and how to put LoRA adapters.

    Args:
        rank, alpha, dropout: LoRA's r, lora_alpha and lora_dropout.
        towers: any of "text", "vision".
        layers: "all", "upper", "lower", "top:N", "bottom:N", "middle:N", or explicit layer indices.
        targets: linear layers inside each chosen encoder layer (q_proj, k_proj, v_proj, out_proj, fc1, fc2).
        projections: also adapt the chosen towers' projection into the joint space.
        trainable_token_ids: rows of the text token embedding trained alongside the adapters (PEFT's trainable
            tokens), for vocabulary the base never learned; the rest of the embedding stays frozen.
    """

    rank: int = 4
    alpha: float = 16.0
    dropout: float = 0.1
    towers: Sequence[str] = ("text", "vision")
    layers: str | Sequence[int] = "all"
    targets: Sequence[str] = ("q_proj", "v_proj")
    projections: bool = False
    trainable_token_ids: Sequence[int] = ()
    extra: dict = field(default_factory=dict)  # passed through to peft.LoraConfig

    def __post_init__(self) -> None:
        unknown_towers = set(self.towers) - set(TOWERS)
        if unknown_towers or not self.towers:
            raise ValueError(f"LoraSettings.towers={list(self.towers)}: expected a non-empty subset of {sorted(TOWERS)}")
        unknown_targets = set(self.targets) - set(ATTENTION_TARGETS + MLP_TARGETS)
        if unknown_targets or not (self.targets or self.projections):
            raise ValueError(
                f"LoraSettings.targets={list(self.targets)}: expected names from {ATTENTION_TARGETS + MLP_TARGETS}"
            )
        if self.rank < 1:
            raise ValueError(f"LoraSettings.rank={self.rank}: expected >= 1")


def select_layers(preset: str | Sequence[int], num_layers: int) -> list[int]:
    """Layer indices chosen by a preset for a tower with `num_layers` encoder layers."""
    if not isinstance(preset, str):
        chosen = sorted(set(int(i) for i in preset))
        if not chosen or chosen[0] < 0 or chosen[-1] >= num_layers:
            raise ValueError(f"LoRA layers {list(preset)}: expected indices in [0, {num_layers - 1}]")
        return chosen
    half = num_layers // 2
    if preset == "all":
        return list(range(num_layers))
    if preset == "lower":
        return list(range(half))
    if preset == "upper":
        return list(range(half, num_layers))
    match = re.fullmatch(r"(top|bottom|middle):(\d+)", preset)
    if not match:
        raise ValueError(f"LoRA layers={preset!r}: expected all, upper, lower, top:N, bottom:N, middle:N or indices")
    where, count = match.group(1), int(match.group(2))
    if not 1 <= count <= num_layers:
        raise ValueError(f"LoRA layers={preset!r}: N must be between 1 and {num_layers}")
    start = {"bottom": 0, "top": num_layers - count, "middle": (num_layers - count) // 2}[where]
    return list(range(start, start + count))


def target_module_names(model: CultureCLIPModel, settings: LoraSettings) -> list[str]:
    """Fully qualified names of the linear modules that get adapters."""
    names = []
    for tower in settings.towers:
        module_name, config_name = TOWERS[tower]
        num_layers = getattr(model.config, config_name).num_hidden_layers
        for layer in select_layers(settings.layers, num_layers):
            for target in settings.targets:
                parent = "self_attn" if target in ATTENTION_TARGETS else "mlp"
                names.append(f"{module_name}.encoder.layers.{layer}.{parent}.{target}")
        if settings.projections:
            names.append(PROJECTIONS[tower])
    return names


def trainable_token_ids(words: Sequence[str], tokenizer: Any) -> list[int]:
    """The token ids that spell `words` (no special tokens); an error names any word the tokenizer cannot spell."""
    ids: set[int] = set()
    unknown_id = getattr(tokenizer, "unk_token_id", None)
    for word in words:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if not pieces or (unknown_id is not None and unknown_id in pieces):
            raise ValueError(f"lora_trainable_tokens: the tokenizer has no tokens for {word!r}"
                             + (" (it maps to the unknown token)" if pieces else ""))
        ids.update(pieces)
    return sorted(ids)


def apply_lora(model: CultureCLIPModel, settings: LoraSettings) -> PeftModel:
    """Freeze `model` and wrap it with LoRA adapters on the chosen towers, layers and projections."""
    if not isinstance(model, CultureCLIPModel):
        raise TypeError(f"apply_lora expects a CultureCLIPModel, got {type(model).__name__}; "
                        "use CultureCLIPModel.from_clip(...) first")
    names = target_module_names(model, settings)
    extra = dict(settings.extra)
    if settings.trainable_token_ids:
        vocabulary = model.config.text_config.vocab_size
        ids = sorted(set(int(i) for i in settings.trainable_token_ids))
        if ids[0] < 0 or ids[-1] >= vocabulary:
            raise ValueError(f"trainable_token_ids: expected ids in [0, {vocabulary - 1}], got {ids[0]}..{ids[-1]}")
        extra["trainable_token_indices"] = {TOKEN_EMBEDDING: ids}
    config = LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
        # an anchored regex: PEFT's list form matches by suffix, which would also catch other towers' layers
        target_modules="^(" + "|".join(re.escape(n) for n in names) + ")$",
        **extra,
    )
    return get_peft_model(model, config)


def save_adapter(peft_model: PeftModel, directory: str | Path) -> Path:
    """Save the adapter in PEFT's format (adapter_config.json + adapter_model.safetensors)."""
    peft_model.save_pretrained(str(directory), safe_serialization=True)
    return Path(directory)


def load_adapter(base: CultureCLIPModel, directory: str | Path, trainable: bool = False) -> PeftModel:
    """Attach a saved adapter to `base` with PeftModel.from_pretrained."""
    return PeftModel.from_pretrained(base, str(directory), is_trainable=trainable)


def merge_lora(peft_model: PeftModel) -> CultureCLIPModel:
    """Fold the adapters into the base weights and return the plain CultureCLIPModel."""
    merged = peft_model.merge_and_unload()
    if not isinstance(merged, CultureCLIPModel):
        raise TypeError(f"merging gave {type(merged).__name__}, expected CultureCLIPModel")
    return merged


@torch.no_grad()
def wise_ft(base: CultureCLIPModel, finetuned: CultureCLIPModel, alpha: float) -> CultureCLIPModel:
    """Weight-space ensemble (WiSE-FT): (1 - alpha) * base + alpha * finetuned, as a new model."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"wise_ft alpha={alpha}: expected a value in [0, 1]")
    base_state, tuned_state = base.state_dict(), finetuned.state_dict()
    if base_state.keys() != tuned_state.keys():
        difference = sorted(set(base_state) ^ set(tuned_state))[:5]
        raise ValueError(f"wise_ft: models differ in parameters, e.g. {difference}; merge LoRA adapters first")
    mixed = copy.deepcopy(finetuned)
    state = {}
    for name, tuned in tuned_state.items():
        start = base_state[name]
        if start.shape != tuned.shape:
            raise ValueError(f"wise_ft: {name} has shape {tuple(start.shape)} in base, {tuple(tuned.shape)} tuned")
        state[name] = torch.lerp(start, tuned, alpha) if tuned.is_floating_point() else tuned
    mixed.load_state_dict(state)
    return mixed


__all__ = ["LoraSettings", "apply_lora", "load_adapter", "merge_lora", "save_adapter", "select_layers",
           "target_module_names", "trainable_token_ids", "wise_ft"]
