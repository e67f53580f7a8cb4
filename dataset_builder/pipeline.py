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

from cultureclip_guards import BadInput

from .backends import make_role_specs
from .backends.base import ChatBackend, ImageBackend
from .backends.lifecycle import BackendPool
from .embedders import TextEmbedder
from .prompts import load_prompt
from .recipe import Recipe, load_recipe
from .runstore import atomic_write_json, read_json
from .stages import bottom_up as bottom_up_stage
from .stages import captions as captions_stage
from .stages import concepts as concepts_stage
from .stages import export as export_stage
from .stages import image_check as image_check_stage
from .stages import images as images_stage
from .stages import judge as judge_stage
from .stages import twins as twins_stage
from .stages.common import RunContext, rank_world, status_counts


class RunMismatchError(BadInput):
    """The run folder was started with different settings; resuming it would mix two builds."""


def _manifest(recipe: Recipe) -> dict[str, Any]:
    return {"recipe": recipe.output_dict(), "format": 2}


def _check_manifest(run_dir: Path, recipe: Recipe) -> None:
    """Refuse to resume a run folder started with settings that change the rows (runtime settings may differ)."""
    path = run_dir / "manifest.json"
    want = _manifest(recipe)
    if path.exists():
        have = read_json(path)
        if have != want:
            diff = sorted(k for k in want["recipe"] if have.get("recipe", {}).get(k) != want["recipe"][k])
            diff = diff or ["format"]
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

    pool = BackendPool(make_role_specs(recipe), record_dir=run_dir / "backends", rank=rank, world=world)
    ctx = RunContext(run_dir, recipe, text_backend, image_backend, judge_backend, rank=rank, world=world,
                     progress=progress, limit_pairs=recipe.limit_pairs, backends=pool,
                     barrier_timeout_s=recipe.runtime.barrier_timeout_s)
    keep = recipe.runtime.keep_backends_loaded
    try:
        concepts = concepts_stage.run(ctx)
        pool.end_stage("concepts")
        pairs, twin_drops = twins_stage.run(ctx, concepts, embedder)
        pool.end_stage("twins")
        side_concepts = twins_stage.pair_concepts(pairs)
        caption_recs = captions_stage.run(ctx, side_concepts)
        pool.end_stage("captions", release=() if keep else ("text",))
        image_recs = images_stage.run(ctx, side_concepts, caption_recs)
        pool.end_stage("images", release=() if keep else ("image",))
        # optional: do the rendered twins look alike? (off unless the recipe sets twins.image_check)
        pairs, image_drops = image_check_stage.run(ctx, pairs, image_recs)
        side_concepts = twins_stage.pair_concepts(pairs)
        judge_recs = judge_stage.run(ctx, side_concepts, caption_recs, image_recs)
        pool.end_stage("judge", release=() if keep else ("judge",))
    finally:
        pool.release_all()
    server_stats = dict(pool.request_stats)
    memory = {"loads": list(pool.loads), "live_backends_by_stage": dict(pool.live_by_stage),
              "peak_live_backends": max(pool.live_by_stage.values(), default=0), "leaked": list(pool.leaks),
              "keep_backends_loaded": keep}
    if rank != 0:
        return {"rank": rank, "world": world, "exported": False, "memory": memory, "servers": server_stats}

    stats = {
        "concepts": {**status_counts(ctx.store("concepts").all_records()),
                     **({"screening": screening} if (screening := bottom_up_stage.screening_summary(ctx)) else {})},
        "twins": {**status_counts(ctx.store("twins").all_records()), **dict(twin_drops), **dict(image_drops),
                  "pairs": len(pairs)},
        "captions": {**status_counts(caption_recs.values()),
                     "caption_rejections": captions_stage.caption_rejections(caption_recs)},
        "images": status_counts(image_recs.values()),
        "judge": judge_stage.judge_summary(judge_recs, recipe.judge.drop_if_any_at_most),
    }
    prompt_versions = [recipe.concepts.prompt if recipe.concepts.source == "top-down" else None,
                       recipe.concepts.bottom_up_prompt if recipe.concepts.source == "bottom-up" else None,
                       recipe.twins.prompt if recipe.concepts.source != "curated" else None,
                       recipe.captions.prompt, recipe.judge.prompt]
    provenance = {
        "recipe": recipe.to_dict(),
        "text_model": _model_str(*pool.identity("text")),
        "judge_model": _model_str(*pool.identity("judge")),
        "image_models": sorted({f"{r['model_id']}@{r['revision']}" for r in image_recs.values()}),
        "prompts": {v: load_prompt(v).sha256 for v in prompt_versions if v},
        "seed": recipe.seed,
        "seed_rule": "sha256(recipe seed, stage, item key) -> 31-bit seed per item",
        "world_size": world,
        "devices": _device_table(pool.records()),
    }
    summary = export_stage.run(ctx, output_dir, pairs, side_concepts, caption_recs, image_recs, judge_recs, stats,
                               provenance)
    summary.update(memory=memory, servers=server_stats, world_size=world)
    summary["wall_time_s"] = round(time.perf_counter() - t0, 3)
    if progress:
        print_summary(summary, file=sys.stderr)
    return summary


def _model_str(model_id: str, revision: str | None) -> str:
    return f"{model_id}@{revision}" if revision else str(model_id)


def _device_table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (world size, rank) that loaded backends in this run folder: each role's device and dtype."""
    table: dict[tuple[int, int], dict[str, Any]] = {}
    for rec in records:
        row = table.setdefault((rec["world"], rec["rank"]), {"world": rec["world"], "rank": rec["rank"],
                                                             "local_rank": rec["local_rank"]})
        row[rec["role"]] = {k: rec[k] for k in ("device", "index", "name", "dtype") if rec.get(k) is not None}
    return [table[k] for k in sorted(table)]


def print_summary(summary: dict[str, Any], file: Any = None) -> None:
    """Human-readable counts: rows per split, kept and rejected by reason per stage."""
    out = file or sys.stdout
    rows = summary["rows"]
    print(f"CulTwin build: {summary['total_rows']} rows ({', '.join(f'{k} {v}' for k, v in rows.items())})", file=out)
    for stage, counts in summary["statistics"].items():
        print(f"  {stage:>9}: {json.dumps(counts, sort_keys=True, ensure_ascii=False)}", file=out)
    criteria = summary["statistics"].get("judge", {}).get("criteria") or {}
    if criteria:
        print("  judge scores: " + "; ".join(f"{name} {c['mean']:.2f} ± {c['std']:.2f} (n={c['n']})"
                                            for name, c in criteria.items()), file=out)
    memory = summary.get("memory")
    if memory:
        print(f"  backends: loaded {memory['loads']}, at most {memory['peak_live_backends']} alive at once", file=out)
