"""Sizes and time/memory estimates for `--dry-run`, from the model's architecture and the data's row counts (the
method is METHOD, printed with every plan)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

METHOD = """\
- Parameters: counted exactly by building the model on the meta device from its config (no weights loaded).
- Compute: forward FLOPs of a transformer tower ~ 2 x (non-embedding parameters) x tokens + 4 x layers x tokens^2
  x width (attention). Tokens: (image / patch)^2 + 1 per image; 24 per caption (under 15 words) and 6 per concept
  name (assumed). A twin pair is 2 images, 2 captions and 2 concept names. A training step costs 2 forwards per
  example with LoRA (backward to activations only, frozen weights), 3 with full fine-tuning, plus 1 more with
  feature caching (its no-grad first pass). Time = FLOPs / an assumed sustained rate (default: 20 TFLOP/s fp32,
  100 TFLOP/s bf16/fp16, for one H100/H200-class GPU on these small matmuls; `--assumed-tflops` overrides).
- Image decoding: 20 ms per 1024^2 image per CPU worker (assumed), overlapped with compute when the trainer has
  data-loader workers, added to it when it has none.
- Training memory per device: fp32 weights (4 B/parameter) + 16 B per trainable parameter (gradient, AdamW's two
  moments, master copy) + activations of one micro-batch, after Korthikanti et al. (2022): 34 x width + 5 x heads
  x tokens bytes per token and layer at 16 bits (doubled for fp32); with gradient checkpointing, two layers' worth.
These are planning numbers from the assumptions above, not measurements: compare them with the first logged steps.
"""
CAPTION_TOKENS, CONCEPT_TOKENS = 24, 6
DECODE_SECONDS = 0.02
ASSUMED_TFLOPS = {"fp32": 20.0, "bf16": 100.0, "fp16": 100.0}
# rows of the benchmarks' Hub splits where the SPEC or the dataset itself states them (others: counted locally)
KNOWN_ROWS = {"crope": 1060, "globalrg_retrieval": 3000, "globalrg_grounding": 590, "zeroshot_imagenet": 50000}


def tower_shapes(config: Any) -> dict[str, dict[str, int]]:
    """Per tower: layers, width, heads and tokens per item (image tokens from image and patch size)."""
    vision, text = config.vision_config, config.text_config
    return {
        "vision": {"layers": vision.num_hidden_layers, "width": vision.hidden_size, "heads": vision.num_attention_heads,
                   "tokens": (vision.image_size // vision.patch_size) ** 2 + 1},
        "text": {"layers": text.num_hidden_layers, "width": text.hidden_size, "heads": text.num_attention_heads,
                 "tokens": CAPTION_TOKENS},
    }


def parameter_counts(config: Any) -> dict[str, int]:
    """Exact parameter counts (total, per tower without embeddings), from a meta-device model."""
    import torch
    from transformers import CLIPModel

    with torch.device("meta"):
        model = CLIPModel(config)
    counts = {"total": sum(p.numel() for p in model.parameters())}
    for tower, module in (("vision", model.vision_model), ("text", model.text_model)):
        counts[tower] = sum(p.numel() for p in module.encoder.parameters())
    return counts


def forward_flops(params: int, layers: int, width: int, tokens: int) -> float:
    return 2.0 * params * tokens + 4.0 * layers * tokens ** 2 * width


def pair_forward_flops(config: Any, counts: dict[str, int], with_concepts: bool) -> float:
    """Forward FLOPs of one twin pair: 2 images, 2 captions and (if used) 2 concept names."""
    shapes = tower_shapes(config)
    v, t = shapes["vision"], shapes["text"]
    image = forward_flops(counts["vision"], v["layers"], v["width"], v["tokens"])
    caption = forward_flops(counts["text"], t["layers"], t["width"], CAPTION_TOKENS)
    concept = forward_flops(counts["text"], t["layers"], t["width"], CONCEPT_TOKENS)
    return 2 * image + 2 * caption + (2 * concept if with_concepts else 0.0)


def precision_of(mixed_precision: str | None) -> str:
    return mixed_precision if mixed_precision in ("bf16", "fp16") else "fp32"


def activation_bytes(config: Any, rows: int, with_concepts: bool, precision: str, checkpointing: bool) -> float:
    """Stored activations of one micro-batch of `rows` twin pairs (Korthikanti et al. per-layer estimate)."""
    scale = 1.0 if precision in ("bf16", "fp16") else 2.0
    total = 0.0
    for tower, items in (("vision", 2), ("text", 4 if with_concepts else 2)):
        shape = tower_shapes(config)[tower]
        per_token_layer = 34 * shape["width"] + 5 * shape["heads"] * shape["tokens"]
        layers = 2 if checkpointing else shape["layers"]
        total += rows * items * shape["tokens"] * layers * per_token_layer * scale
    return total


def training_estimate(config: Any, args: Any, rows: int | None, tflops: float | None = None) -> dict[str, Any]:
    """Steps, examples, hours and peak memory of one training run of `args` (TrainArgs) on `rows` twin pairs."""
    from modeling_cultureclip import ObjectiveSettings

    counts = parameter_counts(config)
    with_concepts = ObjectiveSettings(loss_terms=args.loss_terms, caption_loss_weight=args.caption_loss_weight,
                                      concept_loss_weight=args.concept_loss_weight).uses_concepts
    global_batch = args.per_device_batch_size * args.micro_batches
    if args.max_steps:
        steps = args.max_steps
    elif rows is not None:
        steps = math.ceil(args.epochs * (rows // global_batch))
    else:
        steps = None
    precision = precision_of(args.mixed_precision)
    rate = (tflops or ASSUMED_TFLOPS[precision]) * 1e12
    passes = (2 if args.finetune == "lora" else 3) + (1 if args.accumulation == "feature_cache" else 0)
    step_flops = global_batch * pair_forward_flops(config, counts, with_concepts) * passes
    compute_s = step_flops / rate
    decode_s = global_batch * 2 * DECODE_SECONDS / max(1, args.num_workers)
    step_s = max(compute_s, decode_s) if args.num_workers else compute_s + decode_s
    trainable = _trainable_parameters(config, counts, args)
    memory = (4 * counts["total"] + 16 * trainable
              + activation_bytes(config, args.per_device_batch_size, with_concepts, precision,
                                 args.gradient_checkpointing))
    return {"rows": rows, "steps": steps, "examples": None if steps is None else steps * global_batch,
            "global_batch": global_batch, "precision": precision, "assumed_tflops": rate / 1e12,
            "step_seconds": step_s, "hours": None if steps is None else steps * step_s / 3600,
            "peak_memory_gib": memory / 2**30, "parameters": counts["total"], "trainable_parameters": trainable}


def _trainable_parameters(config: Any, counts: dict[str, int], args: Any) -> int:
    if args.finetune == "full":
        return counts["total"]
    from cultureclip_training.lora import select_layers

    preset = args.lora_layers
    if all(part.strip().isdigit() for part in preset.split(",")):
        preset = [int(part) for part in preset.split(",")]
    total = 0
    for tower, cfg in (("text", config.text_config), ("vision", config.vision_config)):
        if tower in args.lora_towers:
            layers = len(select_layers(preset, cfg.num_hidden_layers))
            # each adapted d x d attention projection gets A (r x d) and B (d x r)
            total += layers * len(args.lora_targets) * 2 * args.lora_rank * cfg.hidden_size
    return total


def evaluation_estimate(config: Any, images: int | None, tflops: float | None, precision: str = "fp32"
                        ) -> dict[str, Any]:
    """Hours to embed `images` benchmark images once (text embeddings are cached and comparatively free)."""
    if images is None:
        return {"images": None, "hours": None}
    counts = parameter_counts(config)
    v = tower_shapes(config)["vision"]
    flops = images * forward_flops(counts["vision"], v["layers"], v["width"], v["tokens"])
    seconds = flops / ((tflops or ASSUMED_TFLOPS[precision]) * 1e12) + images * DECODE_SECONDS
    return {"images": images, "hours": seconds / 3600}


def local_rows(folder: Path, split: str) -> int | None:
    """Rows of `split` in a local copy: parquet shards (their metadata) or webdataset shards (`{split}/*.tar`, one
    image per sample); nothing is decoded. None for any other layout."""
    import tarfile

    import pyarrow.parquet as pq

    files = sorted(folder.glob(f"data/{split}-*.parquet")) or sorted(folder.glob(f"{split}*.parquet"))
    if files:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    shards = sorted(folder.glob(f"{split}/*.tar"))
    if not shards:
        return None
    images = (".webp", ".jpg", ".jpeg", ".png")
    count = 0
    for shard in shards:
        with tarfile.open(shard) as archive:
            count += sum(1 for member in archive if member.name.lower().endswith(images))
    return count


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def hub_bytes(repo_id: str, repo_type: str, revision: str | None = None) -> int | None:
    """Total size of a Hub repo's files (None when the Hub cannot be reached)."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=True)
        return sum(s.size or 0 for s in info.siblings or [])
    except Exception:  # offline or no access: the plan says "unknown"
        return None


__all__ = ["METHOD", "evaluation_estimate", "folder_bytes", "hub_bytes", "local_rows", "parameter_counts",
           "training_estimate"]
