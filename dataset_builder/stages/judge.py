"""Stage 5, judge: the VLM scores each image 1-5 on authenticity, consistency and cultural fidelity.

The judge sees the image (shrunk to `image_max_side` first: a 1024² render costs a VLM ~4x the image tokens of a
512² one and shows no more for these questions) with the concept, its country and category, its context and visual
features (judge.v2, as the release judges on concept + context; judge.v1 showed the caption instead).
Keep rule (released setup): drop an image if any score is at most `drop_if_any_at_most` (1) or the mean is at most
`min_mean` (3). An unparseable verdict drops the image with the parse reason; it is never given default scores.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

from PIL import Image

from ..parsing import SCORE_NAMES, Rejected, parse_judge
from ..prompts import load_prompt, make_request
from ..runstore import derive_seed
from ..schema import Concept
from .common import RunContext, load_records, ok, rejected, run_items
from .images import image_fields, read_image_bytes

STAGE = "judge"


def verdict(scores: dict[str, int], drop_if_any_at_most: int, min_mean: float) -> list[str]:
    """Reasons to drop an image under the keep rule (empty list = keep)."""
    reasons = []
    if min(scores.values()) <= drop_if_any_at_most:
        reasons.append(f"score_at_most_{drop_if_any_at_most}")
    if sum(scores.values()) / len(scores) <= min_mean:
        reasons.append(f"mean_at_most_{min_mean:g}")
    return reasons


def shrink(image: Image.Image, max_side: int | None) -> Image.Image:
    """The image scaled down (aspect ratio kept, Lanczos) so its longer side is at most `max_side`; never enlarged."""
    if max_side is None or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def run(ctx: RunContext, concepts: dict[str, Concept], captions: dict[str, dict[str, Any]],
        images: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Judge records by image key for every rendered image of `concepts` (pairs an earlier check dropped are not
    judged)."""
    settings = ctx.recipe.judge
    prompt = load_prompt(settings.prompt)
    keys = sorted(k for k, rec in images.items() if rec["status"] == "ok" and rec["concept_id"] in concepts)

    def process(batch: list[str]) -> dict[str, dict[str, Any]]:
        requests = []
        for key in batch:
            rec = images[key]
            c = concepts[rec["concept_id"]]
            caption = captions[c.concept_id]["captions"][rec["index"]]
            image = shrink(Image.open(io.BytesIO(read_image_bytes(ctx, rec))).convert("RGB"), settings.image_max_side)
            fields = {**image_fields(c, caption), "context": c.context}
            requests.append(make_request("judge", prompt, fields, derive_seed(ctx.recipe.seed, STAGE, key), image))
        answers = ctx.judge_backend.generate(requests)
        out = {}
        for key, req, answer in zip(batch, requests, answers):
            meta = {"answer": str(answer)[:2000], "seed": req.seed, "prompt": prompt.version,
                    "judge_model": ctx.judge_backend.model_id, "judge_revision": ctx.judge_backend.revision}
            try:
                scores = parse_judge(answer)
            except Rejected as exc:
                out[key] = rejected(f"judge_unparseable:{exc.reason}", passed=False, **meta)
                continue
            drops = verdict(scores, settings.drop_if_any_at_most, settings.min_mean)
            out[key] = ok(scores=scores, passed=not drops, drop_reasons=drops, **meta)
        return out

    run_items(ctx, STAGE, keys, settings.batch_size, process)
    return load_records(ctx, STAGE, keys)


def judge_summary(records: dict[str, dict[str, Any]], drop_if_any_at_most: int = 1) -> dict[str, Any]:
    """Pass rate, drop reasons, and per criterion the mean +- std (population) of the parsed scores and how many
    images scored at most `drop_if_any_at_most` on it."""
    reasons: Counter[str] = Counter()
    passed = 0
    scores: dict[str, list[int]] = {name: [] for name in SCORE_NAMES}
    for rec in records.values():
        if rec["status"] != "ok":
            reasons[rec["reason"]] += 1
            continue
        for name in SCORE_NAMES:
            scores[name].append(int(rec["scores"][name]))
        if rec["passed"]:
            passed += 1
        else:
            reasons.update(rec["drop_reasons"])
    total = len(records)
    criteria = {}
    for name, values in scores.items():
        if values:
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
            criteria[name] = {"mean": round(mean, 3), "std": round(std, 3), "n": len(values),
                              f"at_most_{drop_if_any_at_most}": sum(v <= drop_if_any_at_most for v in values)}
    return {"judged": total, "passed": passed, "pass_rate": round(passed / total, 4) if total else None,
            "drop_reasons": dict(sorted(reasons.items())), "criteria": criteria}
