"""Memory estimates for `build --plan`: parameter counts read offline, turned into bytes per device.

Where the counts come from, best first: the safetensors headers of a local folder or a Hub snapshot already in the
cache (exact: every tensor's shape); the model's config in such a folder, instantiated on the meta device with
accelerate's `init_empty_weights` (exact for the architecture, no weights needed); for the two default models when
neither is on this machine, figures from their Hub pages, stated as assumed. Nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "uint8": 1, "F32": 4, "F16": 2,
               "BF16": 2, "F64": 8, "I8": 1, "U8": 1, "I32": 4, "I64": 8, "BOOL": 1}

# Used only when a default model is neither a local folder nor in the Hub cache (figures from the model pages).
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-VL-7B-Instruct": {
        "components": {"model": 8.29e9},
        "text": {"num_hidden_layers": 28, "num_key_value_heads": 4, "head_dim": 128},
        "source": "Hub model page: 8.29B parameters; 28 layers, 4 KV heads of 128 (its config.json)",
    },
    "stabilityai/stable-diffusion-3.5-large-turbo": {
        "components": {"transformer": 8.1e9, "text_encoder_3": 4.76e9, "text_encoder_2": 0.695e9,
                       "text_encoder": 0.124e9, "vae": 0.084e9},
        "source": "Hub files: MMDiT transformer 8.1B, T5-XXL encoder 4.76B, CLIP-G 0.70B, CLIP-L 0.12B, VAE 0.08B",
        "gated": True,
    },
}


@dataclass
class ModelSize:
    """Parameter counts of a model (per component for a diffusers pipeline) and where they came from."""

    components: dict[str, float]
    source: str
    text_shape: dict[str, int] = field(default_factory=dict)  # layers / KV heads / head dim, for the KV-cache estimate

    @property
    def total(self) -> float:
        return float(sum(self.components.values()))


def safetensors_params(path: Path) -> int:
    """Number of parameters in one .safetensors file, from its JSON header alone."""
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in info["shape"]:
            count *= int(dim)
        total += count
    return total


def local_folder(model_id: str | Path, marker: str) -> Path | None:
    """The folder holding `model_id`: itself if it exists, else its snapshot in the Hub cache (offline), else None."""
    path = Path(model_id)
    if path.is_dir():
        return path
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(str(model_id), marker)
    return Path(cached).parent if isinstance(cached, str) else None


def _text_shape(config: dict[str, Any]) -> dict[str, int]:
    text = config.get("text_config") or config
    heads = text.get("num_attention_heads")
    layers = text.get("num_hidden_layers")
    if not heads or not layers:
        return {}
    head_dim = text.get("head_dim") or text["hidden_size"] // heads
    return {"num_hidden_layers": int(layers), "num_key_value_heads": int(text.get("num_key_value_heads") or heads),
            "head_dim": int(head_dim)}


_VARIANT = re.compile(r"\.(fp16|bf16|fp32)[.-]")


def _folder_params(folder: Path) -> tuple[int | None, str]:
    """Parameters in a folder's safetensors files; a repo may hold the same weights twice (plain and an fp16
    variant such as `model.fp16-00001-of-00002.safetensors`), so one set is counted: the plain one if present."""
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if not _VARIANT.search(f.name)]
    if plain:
        files = plain
    elif files:
        variant = _VARIANT.search(files[0].name).group(1)
        files = [f for f in files if _VARIANT.search(f.name).group(1) == variant]
    if files:
        return sum(safetensors_params(f) for f in files), f"safetensors headers in {folder}"
    return None, ""


def chat_model_size(model_id: str) -> ModelSize | None:
    """Parameter count of a transformers VLM (safetensors headers, else meta-device init from its config)."""
    folder = local_folder(model_id, "config.json")
    if folder is not None and (folder / "config.json").exists():
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        count, source = _folder_params(folder)
        if count is None:
            from accelerate import init_empty_weights
            from transformers import AutoConfig, AutoModelForImageTextToText

            with init_empty_weights():
                model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(folder))
            count, source = sum(p.numel() for p in model.parameters()), f"config in {folder} (meta-device init)"
        return ModelSize({"model": float(count)}, source, _text_shape(config))
    known = KNOWN_MODELS.get(str(model_id))
    if known:
        return ModelSize(dict(known["components"]), "assumed: " + known["source"], dict(known["text"]))
    return None


def pipeline_size(model_id: str) -> ModelSize | None:
    """Parameter counts per component of a diffusers pipeline (model_index.json + each component's weights)."""
    folder = local_folder(model_id, "model_index.json")
    if folder is not None and (folder / "model_index.json").exists():
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        components = {}
        for name, value in index.items():
            if name.startswith("_") or not isinstance(value, list) or not (folder / name / "config.json").exists():
                continue  # not a model component (scheduler, tokenizer, an absent safety checker)
            count, _ = _folder_params(folder / name)
            if count is None:
                return None  # a component's weights are missing: no partial figure
            components[name] = float(count)
        if components:
            return ModelSize(components, f"safetensors headers in {folder}")
    known = KNOWN_MODELS.get(str(model_id))
    if known:
        return ModelSize(dict(known["components"]), "assumed: " + known["source"])
    return None


def kv_cache_bytes(shape: dict[str, int], batch: int, tokens: int, dtype_bytes: int) -> float:
    """Keys and values of `batch` sequences of `tokens` tokens: 2 x layers x KV heads x head dim per token."""
    if not shape:
        return 0.0
    per_token = 2 * shape["num_hidden_layers"] * shape["num_key_value_heads"] * shape["head_dim"] * dtype_bytes
    return float(per_token * batch * tokens)


def gib(n_bytes: float) -> str:
    """Bytes as GiB with one decimal (or MiB below 1 GiB)."""
    if n_bytes < 2**30:
        return f"{n_bytes / 2**20:.1f} MiB"
    return f"{n_bytes / 2**30:.1f} GiB"
