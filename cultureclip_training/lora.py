"""LoRA (PEFT) on CultureCLIP towers, adapter save/merge, and WiSE-FT weight interpolation.

Layer presets follow the released code's choices: all layers, the upper or lower half, or N blocks at the top,
bottom or middle of each tower. Targets are the attention projections (q/k/v/out) and optionally the two
tower-to-joint-space projections. `load_adapter` also takes the authors' released adapters (saved by PEFT for a
`CLIPModel`, some in a `lora_adapter/` sub-folder).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, PeftType, get_peft_model

from modeling_cultureclip import CultureCLIPModel

TOWERS = {"text": ("text_model", "text_config"), "vision": ("vision_model", "vision_config")}
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
MLP_TARGETS = ("fc1", "fc2")
PROJECTIONS = {"text": "text_projection", "vision": "visual_projection"}
TOKEN_EMBEDDING = "text_model.embeddings.token_embedding"
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
ADAPTER_SUBFOLDERS = ("", "lora_adapter", "adapter")  # root; the authors' release; this package's run folders


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


def find_adapter(source: str | Path, subfolder: str | None = None, revision: str | None = None) -> tuple[str, str]:
    """(location, subfolder) of the PEFT adapter in `source`, a local folder or a Hub model repo.

    Without `subfolder`, the root is tried first, then the sub-folders adapters are saved in: `lora_adapter/` (the
    authors' release) and `adapter/` (this package's run folders and Hub repos).
    """
    candidates = [subfolder] if subfolder is not None else list(ADAPTER_SUBFOLDERS)
    local = Path(source)
    if local.is_dir():
        for sub in candidates:
            if (local / sub / ADAPTER_CONFIG).is_file():
                return str(local), sub
        raise FileNotFoundError(f"no PEFT adapter ({ADAPTER_CONFIG}) in {local} or its sub-folder(s) "
                                f"{[c for c in candidates if c]}")
    from huggingface_hub import HfApi

    files = set(HfApi().list_repo_files(str(source), revision=revision))
    for sub in candidates:
        if (f"{sub}/{ADAPTER_CONFIG}" if sub else ADAPTER_CONFIG) in files:
            return str(source), sub
    raise FileNotFoundError(f"no PEFT adapter ({ADAPTER_CONFIG}) in Hub repo {source!r} at its root or in "
                            f"{[c for c in candidates if c]}")


def load_adapter(base: CultureCLIPModel, source: str | Path, trainable: bool = False, subfolder: str | None = None,
                 revision: str | None = None) -> PeftModel:
    """Attach a saved LoRA adapter (ours, or one saved by PEFT for a `CLIPModel`, as the authors saved theirs) to
    `base`, and check that every weight in the adapter file landed on a parameter.

    `source` is a folder or Hub repo holding the adapter at its root or in `lora_adapter/` / `adapter/` (see
    `find_adapter`). The module names of a CLIP adapter are CultureCLIPModel's own (same module tree). The
    release saved its adapter with task type FEATURE_EXTRACTION, whose PEFT wrapper calls the model with
    `inputs_embeds=`, which CLIP's forward does not take; the task type is therefore dropped, giving the plain
    `PeftModel`, whose forward is the model's own.
    """
    from peft import PeftConfig

    location, sub = find_adapter(source, subfolder, revision)
    config = PeftConfig.from_pretrained(location, subfolder=sub or None, revision=revision)
    if config.peft_type != PeftType.LORA:
        raise ValueError(f"adapter in {source} is {config.peft_type}, expected a LoRA adapter")
    config.task_type = None
    model = PeftModel.from_pretrained(base, location, subfolder=sub or None, revision=revision, config=config,
                                      is_trainable=trainable)
    _check_adapter_loaded(model, location, sub, revision)
    return model


def _check_adapter_loaded(model: PeftModel, location: str, subfolder: str, revision: str | None) -> None:
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    if Path(location).is_dir():
        path = Path(location) / subfolder / ADAPTER_WEIGHTS
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(location, ADAPTER_WEIGHTS, subfolder=subfolder or None, revision=revision))
    saved = load_file(str(path))
    loaded = get_peft_model_state_dict(model)
    missing, unused = sorted(set(loaded) - set(saved)), sorted(set(saved) - set(loaded))
    if missing or unused:
        raise ValueError(f"adapter {path} does not fit the model: weights not in the file {missing[:3]}, "
                         f"weights of the file without a place in the model {unused[:3]}")
    for name, value in saved.items():
        if not torch.equal(loaded[name].to(value.dtype).cpu(), value):
            raise ValueError(f"adapter {path}: weight {name} did not load")


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


__all__ = ["LoraSettings", "apply_lora", "find_adapter", "load_adapter", "merge_lora", "save_adapter", "select_layers",
           "target_module_names", "trainable_token_ids", "wise_ft"]
