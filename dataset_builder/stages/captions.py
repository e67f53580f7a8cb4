"""Stage 3, captions: N contextual captions per concept side, each short and naming a visual feature.

Invalid captions (too long, no visual feature, duplicates, wrong type) are dropped and counted per reason. If an
answer leaves fewer than N valid captions the model is asked again with a derived seed, up to `max_attempts`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..parsing import Rejected, parse_captions
from ..prompts import load_prompt, make_request
from ..runstore import derive_seed
from ..schema import Concept
from .common import RunContext, load_records, ok, rejected, run_items

STAGE = "captions"


def run(ctx: RunContext, concepts: dict[str, Concept]) -> dict[str, dict[str, Any]]:
    """Caption records by concept_id (`captions` holds at most `per_side` valid captions)."""
    settings = ctx.recipe.captions
    prompt = load_prompt(settings.prompt)
    keys = sorted(concepts)

    def process(batch: list[str]) -> dict[str, dict[str, Any]]:
        got: dict[str, list[str]] = {k: [] for k in batch}
        reasons: dict[str, Counter[str]] = {k: Counter() for k in batch}
        attempts: dict[str, int] = {k: 0 for k in batch}
        for attempt in range(settings.max_attempts):
            short = [k for k in batch if len(got[k]) < settings.per_side]
            if not short:
                break
            requests = []
            for key in short:
                c = concepts[key]
                fields = {"concept": c.concept, "country": c.country, "category": c.category, "context": c.context,
                          "visual_features": c.visual_features, "n": settings.per_side, "max_words": settings.max_words}
                requests.append(make_request("captions", prompt, fields, derive_seed(ctx.recipe.seed, STAGE, key, attempt)))
            answers = ctx.text_backend.generate(requests)
            for key, answer in zip(short, answers):
                attempts[key] += 1
                try:
                    kept, bad = parse_captions(answer, settings.max_words, concepts[key].visual_features)
                except Rejected as exc:
                    reasons[key][f"answer:{exc.reason}"] += 1
                    continue
                reasons[key].update(bad)
                for cap in kept:
                    if cap.casefold() in {g.casefold() for g in got[key]}:
                        reasons[key]["caption_duplicate"] += 1
                    elif len(got[key]) < settings.per_side:
                        got[key].append(cap)
        out = {}
        for key in batch:
            meta = {"rejections": dict(sorted(reasons[key].items())), "attempts": attempts[key], "prompt": prompt.version}
            if got[key]:
                out[key] = ok(captions=got[key], short_by=settings.per_side - len(got[key]), **meta)
            else:
                out[key] = rejected("no_valid_captions", captions=[], **meta)
        return out

    run_items(ctx, STAGE, keys, ctx.recipe.text_batch_size, process)
    return load_records(ctx, STAGE, keys)


def caption_rejections(records: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Total caption-level rejections by reason over all concepts."""
    total: Counter[str] = Counter()
    for rec in records.values():
        total.update(rec["rejections"])
    return dict(sorted(total.items()))
