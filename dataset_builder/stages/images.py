"""Stage 4, images: one image per caption through the ImageBackend, batched, with a per-item seed.

Each image is validated (a readable PIL image of the requested size, not blank), saved as PNG with an atomic write
and recorded with its sha256, seed, prompt, model id and revision. Invalid images are rejected and counted.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from ..backends.base import ImageRenderError
from ..runstore import atomic_write_bytes, derive_seed, sha256_bytes
from ..schema import Concept
from .common import RunContext, load_records, ok, rejected, run_items

STAGE = "images"


def image_key(concept_id: str, k: int) -> str:
    """Key of the k-th image of a concept."""
    return f"{concept_id}#{k}"


def image_fields(c: Concept, caption: str) -> dict[str, Any]:
    """The structured fields handed to image and judge backends."""
    return {"concept": c.concept, "country": c.country, "iso_code": c.iso_code, "category": c.category,
            "visual_features": c.visual_features, "emoji": c.emoji, "caption": caption}


def validate_image(image: Any, size: tuple[int, int]) -> tuple[bytes | None, str | None]:
    """PNG bytes of a valid image, or (None, reason)."""
    if not isinstance(image, Image.Image):
        return None, "not_an_image"
    try:
        image.load()
        rgb = image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        return None, f"unreadable_image:{type(exc).__name__}"
    if rgb.size != size:
        return None, "wrong_size"
    if float(np.asarray(rgb, dtype=np.float32).std()) < 1.0:
        return None, "blank_image"
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue(), None


def run(ctx: RunContext, concepts: dict[str, Concept], captions: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Image records by image key for every (concept, caption index)."""
    settings = ctx.recipe.images
    items: dict[str, tuple[Concept, int, str]] = {}
    for cid, rec in captions.items():
        for k, cap in enumerate(rec["captions"]):
            items[image_key(cid, k)] = (concepts[cid], k, cap)
    keys = sorted(items)
    store = ctx.store(STAGE)
    size = (settings.width, settings.height)

    def process(batch: list[str]) -> dict[str, dict[str, Any]]:
        backend = ctx.image_backend  # built on first use: a resumed run with no images left never loads it
        prompts = [items[k][2] + settings.prompt_suffix for k in batch]
        seeds = [derive_seed(ctx.recipe.seed, STAGE, k) for k in batch]
        fields = [image_fields(items[k][0], items[k][2]) for k in batch]
        images = render_or_isolate(backend, prompts, seeds, fields)
        out = {}
        for key, prompt, seed, image in zip(batch, prompts, seeds, images):
            meta = {"concept_id": items[key][0].concept_id, "index": items[key][1], "prompt": prompt, "seed": seed,
                    "model_id": backend.model_id, "revision": backend.revision}
            if isinstance(image, ImageRenderError):
                out[key] = rejected("render_error", detail=str(image), **meta)
                continue
            png, reason = validate_image(image, size)
            if reason:
                out[key] = rejected(reason, **meta)
                continue
            path = store.file_path(key, ".png")
            atomic_write_bytes(path, png)
            out[key] = ok(file=str(path.relative_to(ctx.run_dir)), sha256=sha256_bytes(png), **meta)
        return out

    run_items(ctx, STAGE, keys, settings.batch_size, process)
    return load_records(ctx, STAGE, keys)


def render_or_isolate(backend, prompts: list[str], seeds: list[int], fields: list[dict[str, Any]]) -> list[Any]:
    """Render a batch; if the backend rejects it, render each prompt alone so one bad output costs one item.

    Each image depends only on its own (prompt, seed), so the one-by-one images equal the batched ones. Items that
    still fail come back as their ImageRenderError, which the caller records as a counted rejection.
    """
    try:
        images = backend.render(prompts, seeds, fields)
    except ImageRenderError:
        images = []
        for one in zip(prompts, seeds, fields):
            try:
                images.extend(backend.render(*([value] for value in one)))
            except ImageRenderError as error:
                images.append(error)
    if len(images) != len(prompts):
        raise RuntimeError(f"image backend {backend.model_id} returned {len(images)} images for {len(prompts)} prompts")
    return images


def read_image_bytes(ctx: RunContext, record: dict[str, Any]) -> bytes:
    """The stored PNG of a kept image record, checked against its sha256."""
    path = ctx.run_dir / record["file"]
    data = path.read_bytes()
    if sha256_bytes(data) != record["sha256"]:
        raise ValueError(f"{path}: checksum mismatch (record says {record['sha256']})")
    return data
