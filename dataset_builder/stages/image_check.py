"""Optional stage after images: do the rendered twins look alike?

For each pair, the CLIP image embeddings of sample k of the concept and sample k of its twin are compared for
every k where both images rendered; the pair is kept when the mean cosine reaches
`twins.image_check.min_similarity`, else dropped as `low_image_similarity` (a pair with no rendered sample on both
sides is dropped as `no_image_pair`). Off unless the recipe sets `twins.image_check`. Records are resumable like
every stage's.

The pipeline calls `run(ctx, pairs, image_records)` between the images and judge stages and hands the kept pairs on.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import numpy as np
from PIL import Image

from ..embedders import CLIPImageEmbedder
from .common import RunContext, load_records, ok, rejected, run_items
from .images import image_key, read_image_bytes
from .twins import Pair

STAGE = "image_check"


def _open(ctx: RunContext, record: dict[str, Any]) -> Image.Image:
    with Image.open(io.BytesIO(read_image_bytes(ctx, record))) as im:
        return im.convert("RGB")


def run(ctx: RunContext, pairs: list[Pair], images: dict[str, dict[str, Any]],
        embedder: CLIPImageEmbedder | None = None) -> tuple[list[Pair], Counter[str]]:
    """The pairs that pass the image check (input order) and drop counts by reason."""
    settings = ctx.recipe.twins.image_check
    if settings is None:
        return pairs, Counter()
    if embedder is None:
        embedder = CLIPImageEmbedder.from_pretrained(settings.model, settings.revision)
        embedder.batch_size = settings.batch_size
    by_id = {p.pair_id: p for p in pairs}

    def samples(p: Pair) -> list[int]:
        ks = {int(key.rsplit("#", 1)[1]) for key in images if key.startswith(p.a.concept_id + "#")}
        return sorted(k for k in ks if images.get(image_key(p.a.concept_id, k), {}).get("status") == "ok"
                      and images.get(image_key(p.b.concept_id, k), {}).get("status") == "ok")

    def process(batch: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        todo = []
        for pid in batch:
            ks = samples(by_id[pid])
            if ks:
                todo.append((pid, ks))
            else:
                out[pid] = rejected("no_image_pair", model=embedder.name)
        pics = [_open(ctx, images[image_key(cid, k)]) for pid, ks in todo for k in ks
                for cid in (by_id[pid].a.concept_id, by_id[pid].b.concept_id)]
        vectors = embedder.embed_images(pics) if pics else np.zeros((0, 1))
        at = 0
        for pid, ks in todo:
            v = vectors[at : at + 2 * len(ks)]
            at += 2 * len(ks)
            sims = [round(float(s), 6) for s in (v[0::2] * v[1::2]).sum(axis=1)]
            mean = round(float(np.mean(sims)), 6)
            meta = {"similarity": mean, "samples": ks, "sample_similarities": sims, "model": embedder.name}
            out[pid] = ok(**meta) if mean >= settings.min_similarity else rejected("low_image_similarity", **meta)
        return out

    keys = [p.pair_id for p in pairs]
    run_items(ctx, STAGE, keys, 8, process)  # 8 pairs per stored batch
    records = load_records(ctx, STAGE, keys)
    drops = Counter(f"image_check:{r['reason']}" for r in records.values() if r["status"] != "ok")
    return [p for p in pairs if records[p.pair_id]["status"] == "ok"], drops
