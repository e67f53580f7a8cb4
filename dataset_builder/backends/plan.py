"""`build --plan`: which models each stage loads, in which dtype, and the estimated peak memory per device.

Every rank loads its own copy on its own device, so the figures are per device whatever the world size. Estimates
are weights (parameter count x dtype size) plus, for chat models, the KV cache of one batch; activations and the
framework's own overhead are not included (add a few GiB). Parameter counts come from `backends.memory`.
"""

from __future__ import annotations

from typing import Any

from .lifecycle import share_key
from .memory import DTYPE_BYTES, KNOWN_MODELS, chat_model_size, gib, kv_cache_bytes, pipeline_size

PROMPT_TOKENS = 512  # assumed text tokens of a prompt (ours are 150-400)
TOKENS_PER_IMAGE_SIDE = 28  # Qwen2.5-VL: one token per 28x28 pixels (14-px patches merged 2x2)


def stage_roles(recipe: Any) -> dict[str, tuple[str, ...]]:
    """The backend roles each stage uses under this recipe."""
    source = recipe.concepts.source
    return {"concepts": ("text",) if source in ("top-down", "bottom-up") else (),
            "twins": ("text",) if source != "curated" else (), "captions": ("text",), "images": ("image",),
            "judge": ("judge",)}


def _dtype(spec: Any, gpu_default: str) -> tuple[str, int]:
    name = str((spec.options or {}).get("dtype") or "")
    if not name:
        return f"{gpu_default} (default on GPU; float32 on CPU)", DTYPE_BYTES[gpu_default]
    if name not in DTYPE_BYTES:
        raise ValueError(f"backend option dtype: {name!r} is not one of {sorted(k for k in DTYPE_BYTES if k.islower())}")
    return name, DTYPE_BYTES[name]


def backend_estimate(role: str, spec: Any, recipe: Any) -> dict[str, Any]:
    """Model, dtype and bytes on one device for one role."""
    out: dict[str, Any] = {"role": role, "kind": spec.kind, "model": spec.model_id, "dtype": None, "weights": 0.0,
                           "working": 0.0, "notes": []}
    if spec.kind.startswith("offline-"):
        out["notes"].append("offline stand-in on CPU: negligible memory")
        return out
    if spec.kind == "openai-server":
        out["notes"].append("remote inference server: no model memory in this process")
        return out
    if spec.kind not in ("transformers-chat", "diffusers"):
        raise ValueError(f"unknown backend kind {spec.kind!r} for role {role}")
    chat = spec.kind == "transformers-chat"
    out["dtype"], nbytes = _dtype(spec, "bfloat16" if chat else "float16")
    size = (chat_model_size if chat else pipeline_size)(str(spec.model_id))
    if size is None:
        out["notes"].append(f"{spec.model_id}: neither a complete local folder nor in the Hub cache, and not a known "
                            "default: size unknown")
        out["weights"] = None
        return out
    if chat:
        out["weights"] = size.total * nbytes
        batch = recipe.text_batch_size if role == "text" else recipe.judge.batch_size
        new_tokens = int((spec.options or {}).get("max_new_tokens", 256))
        tokens = PROMPT_TOKENS + new_tokens
        if role == "judge" and recipe.judge.image_max_side:
            tokens += (recipe.judge.image_max_side // TOKENS_PER_IMAGE_SIDE) ** 2
        out["working"] = kv_cache_bytes(size.text_shape, batch, tokens, nbytes)
        out["notes"] += [f"{size.total / 1e9:.2f}B parameters ({size.source})",
                         f"KV cache for {batch} sequences x {tokens} tokens (prompt assumed {PROMPT_TOKENS} text tokens"
                         + (" + image tokens" if role == "judge" else "") + f" + {new_tokens} new)"]
        return out
    # diffusers
    if KNOWN_MODELS.get(str(spec.model_id), {}).get("gated"):
        out["notes"].append("gated on the Hub: accept its licence on the model page and set HF_TOKEN before building")
    offload = (spec.options or {}).get("cpu_offload")
    largest_name, largest = max(size.components.items(), key=lambda kv: kv[1])
    if offload == "model":
        out["weights"] = largest * nbytes
        out["notes"].append(f"model CPU offload: only the largest component ({largest_name}) on the device at once")
    elif offload == "sequential":
        out["weights"] = 0.0
        out["notes"].append("sequential CPU offload: one layer at a time on the device (slow)")
    else:
        out["weights"] = size.total * nbytes
    out["notes"].append(f"{size.total / 1e9:.2f}B parameters in {len(size.components)} components ({size.source}); "
                        "activations not estimated")
    return out


def plan_build(recipe: Any) -> dict[str, Any]:
    """Per stage: roles, models, dtypes and estimated bytes per device; and the peak over the build."""
    specs = {"text": recipe.text_backend, "image": recipe.image_backend, "judge": recipe.judge_backend}
    estimates = {role: backend_estimate(role, spec, recipe) for role, spec in specs.items()}
    keep = recipe.runtime.keep_backends_loaded

    def resident(roles: list[str]) -> float | None:
        seen: dict[str, float] = {}
        for role in roles:
            e = estimates[role]
            if e["weights"] is None:
                return None
            key = share_key(specs[role])
            seen[key] = max(seen.get(key, 0.0), e["weights"] + e["working"])  # shared weights, larger KV cache
        return sum(seen.values())

    stages = []
    loaded: list[str] = []
    for stage, roles in stage_roles(recipe).items():
        loaded = sorted(set(loaded) | set(roles)) if keep else list(roles)
        stages.append({"stage": stage, "roles": list(roles), "resident": list(loaded), "bytes": resident(loaded)})
    known = [s["bytes"] for s in stages if s["bytes"] is not None]
    peak = max(known) if known and len(known) == len(stages) else None
    peak_stages = [s["stage"] for s in stages if peak is not None and s["bytes"] == peak]
    assumed = sorted({str(e["model"]) for e in estimates.values() if any("assumed:" in n for n in e["notes"])})
    return {"recipe": recipe.name, "keep_backends_loaded": keep, "backends": estimates, "stages": stages,
            "peak_bytes_per_device": peak, "peak_stages": peak_stages, "assumed": sorted(set(assumed))}


def format_plan(plan: dict[str, Any]) -> str:
    """Human-readable plan (what `python -m dataset_builder build --plan` prints)."""
    lines = [f"Build plan for recipe {plan['recipe']!r}: each rank loads its own copy on its own device "
             f"(cuda:<LOCAL_RANK>); figures are per device.",
             "Backends are " + ("kept loaded for the whole build." if plan["keep_backends_loaded"] else
                                "loaded when their first stage has work and released after their last."), ""]
    for role, e in plan["backends"].items():
        weights = "unknown" if e["weights"] is None else gib(e["weights"])
        lines.append(f"  {role:<5} {e['kind']:<17} {e['model'] or '-'}  dtype {e['dtype'] or '-'}  weights {weights}"
                     + (f" + KV cache {gib(e['working'])}" if e["working"] else ""))
        lines += [f"        {note}" for note in e["notes"]]
    lines.append("")
    for s in plan["stages"]:
        amount = "unknown" if s["bytes"] is None else gib(s["bytes"])
        lines.append(f"  {s['stage']:<9} uses {', '.join(s['roles']) or 'no model'}; resident: "
                     f"{', '.join(s['resident']) or 'nothing'}; ~{amount}")
    peak = plan["peak_bytes_per_device"]
    lines.append("")
    lines.append("Estimated peak per device: " + ("unknown (a model's size could not be read offline)" if peak is None
                 else "no model memory (offline or remote backends only)" if peak == 0
                 else f"{gib(peak)} during {', '.join(plan['peak_stages'])} (weights + KV cache; add a few GiB "
                      "for activations and the CUDA context)"))
    if plan["assumed"]:
        lines.append("Sizes assumed from the Hub pages (neither a local folder nor in the Hub cache here): "
                     + ", ".join(plan["assumed"]))
    return "\n".join(lines)
