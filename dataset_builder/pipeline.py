"""`build()`: run every stage over a run folder and export a Hub-layout dataset folder.

Layout of `output_dir`: `data/*.parquet`, `README.md`, `provenance.json` (the dataset) and `run/` (per-stage item
records, images and rank markers used for resuming; not uploaded by `push`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from .backends import make_chat_backend, make_image_backend
from .backends.base import ChatBackend, ImageBackend
from .embedders import TextEmbedder
from .prompts import load_prompt
from .recipe import Recipe, load_recipe
from .runstore import atomic_write_json, read_json
from .stages import captions as captions_stage
from .stages import concepts as concepts_stage
from .stages import export as export_stage
from .stages import images as images_stage
from .stages import judge as judge_stage
from .stages import twins as twins_stage
from .stages.common import RunContext, rank_world, status_counts


class RunMismatchError(ValueError):
    """The run folder was started with different settings; resuming it would mix two builds."""


def _manifest(recipe: Recipe) -> dict[str, Any]:
    return {"recipe": recipe.to_dict(), "format": 1}


def _check_manifest(run_dir: Path, recipe: Recipe) -> None:
    path = run_dir / "manifest.json"
    want = _manifest(recipe)
    if path.exists():
        have = read_json(path)
        if have != want:
            diff = sorted(k for k in want["recipe"] if have.get("recipe", {}).get(k) != want["recipe"][k])
            raise RunMismatchError(f"{run_dir}: this run folder was started with different settings (fields {diff}); "
                                   "resume with the same recipe, seed and limit, or use a new --output-dir")
    else:
        atomic_write_json(path, want)


def build(
    recipe: Recipe | str | Path,
    output_dir: str | Path,
    text_backend: ChatBackend | None = None,
    image_backend: ImageBackend | None = None,
    judge_backend: ChatBackend | None = None,
    *,
    limit_pairs: int | None = None,
    seed: int | None = None,
    rank: int | None = None,
    world: int | None = None,
    embedder: TextEmbedder | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build (or resume) a CulTwin folder. Backends default to the recipe's; rank/world to RANK/WORLD_SIZE.

    Returns the summary (row counts per split and filter statistics); ranks other than 0 return after the judge
    stage with `{"rank": r, "exported": False}`, rank 0 exports.
    """
    t0 = time.perf_counter()
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    overrides: dict[str, Any] = {}
    if seed is not None:
        overrides["seed"] = seed
    if limit_pairs is not None:
        overrides["limit_pairs"] = limit_pairs
    recipe = dataclasses.replace(recipe, **overrides)
    if rank is None or world is None:
        rank, world = rank_world()
    output_dir = Path(output_dir).resolve()
    run_dir = output_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_manifest(run_dir, recipe)

    ctx = RunContext(
        run_dir=run_dir, recipe=recipe,
        text_backend=text_backend or make_chat_backend(recipe.text_backend, recipe.text_batch_size),
        image_backend=image_backend or make_image_backend(recipe.image_backend, recipe.images),
        judge_backend=judge_backend or make_chat_backend(recipe.judge_backend, recipe.judge.batch_size),
        rank=rank, world=world, progress=progress, limit_pairs=recipe.limit_pairs,
    )
    concepts = concepts_stage.run(ctx)
    pairs, twin_drops = twins_stage.run(ctx, concepts, embedder)
    side_concepts = twins_stage.pair_concepts(pairs)
    caption_recs = captions_stage.run(ctx, side_concepts)
    image_recs = images_stage.run(ctx, side_concepts, caption_recs)
    judge_recs = judge_stage.run(ctx, side_concepts, caption_recs, image_recs)
    if rank != 0:
        return {"rank": rank, "world": world, "exported": False}

    stats = {
        "concepts": status_counts(ctx.store("concepts").all_records()),
        "twins": {**status_counts(ctx.store("twins").all_records()), **dict(twin_drops), "pairs": len(pairs)},
        "captions": {**status_counts(caption_recs.values()),
                     "caption_rejections": captions_stage.caption_rejections(caption_recs)},
        "images": status_counts(image_recs.values()),
        "judge": judge_stage.judge_summary(judge_recs),
    }
    prompt_versions = [recipe.concepts.prompt if recipe.concepts.source == "top-down" else None,
                       recipe.concepts.bottom_up_prompt if recipe.concepts.source == "bottom-up" else None,
                       recipe.twins.prompt if recipe.concepts.source != "curated" else None,
                       recipe.captions.prompt, recipe.judge.prompt]
    provenance = {
        "recipe": recipe.to_dict(),
        "text_model": _model_str(ctx.text_backend),
        "judge_model": _model_str(ctx.judge_backend),
        "image_models": sorted({f"{r['model_id']}@{r['revision']}" for r in image_recs.values()}),
        "prompts": {v: load_prompt(v).sha256 for v in prompt_versions if v},
        "seed": recipe.seed,
        "seed_rule": "sha256(recipe seed, stage, item key) -> 31-bit seed per item",
        "world_size": world,
    }
    summary = export_stage.run(ctx, output_dir, pairs, side_concepts, caption_recs, image_recs, judge_recs, stats,
                               provenance)
    summary["wall_time_s"] = round(time.perf_counter() - t0, 3)
    if progress:
        print_summary(summary, file=sys.stderr)
    return summary


def _model_str(backend: Any) -> str:
    return f"{backend.model_id}@{backend.revision}" if backend.revision else str(backend.model_id)


def print_summary(summary: dict[str, Any], file: Any = None) -> None:
    """Human-readable counts: rows per split, kept and rejected by reason per stage."""
    out = file or sys.stdout
    rows = summary["rows"]
    print(f"CulTwin build: {summary['total_rows']} rows ({', '.join(f'{k} {v}' for k, v in rows.items())})", file=out)
    for stage, counts in summary["statistics"].items():
        print(f"  {stage:>9}: {json.dumps(counts, sort_keys=True, ensure_ascii=False)}", file=out)
