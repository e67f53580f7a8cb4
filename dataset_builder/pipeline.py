"""`build()`: run every stage over a run folder and export a Hub-layout dataset folder.

Layout of `output_dir`: `data/*.parquet`, `README.md`, `provenance.json`, `eval.yaml` (the dataset) and `run/`
(per-stage item records, images and rank markers used for resuming; not uploaded by `push`).

A folder is a build folder once `run/manifest.json` exists; a non-empty folder without one (a dataset export, a
model, another dataset) is refused unless `overwrite`, and even then only the export's own entries and `run/` are
replaced. A run folder started with another recipe, seed, limit or catalog content is refused with the differences
listed; `overwrite` starts it over. Ranks of a multi-process build meet at start-up within a short timeout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from cultureclip_guards import BadInput, file_rendezvous, refuse_foreign
from cultureclip_guards.rendezvous import rendezvous_timeout_s as resolve_rendezvous_timeout

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
from .stages.export import EXPORT_ENTRIES
from .stages import image_check as image_check_stage
from .stages import images as images_stage
from .stages import judge as judge_stage
from .stages import twins as twins_stage
from .stages.common import RunContext, rank_world, status_counts


class RunMismatchError(BadInput):
    """The run folder was started with different settings; resuming it would mix two builds."""


RUN_ENTRIES = ("run", ".rendezvous")


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _inputs(recipe: Recipe) -> dict[str, Any]:
    """Content fingerprints of the files a build reads besides the recipe: the curated catalog and the prompts."""
    from .prompts import load_prompt
    from .twin_catalog import DEFAULT_CATALOG

    out: dict[str, Any] = {}
    if recipe.concepts.source == "curated":
        catalog = Path(recipe.concepts.catalog or DEFAULT_CATALOG)
        if catalog.is_file():  # a missing catalog is reported by the concepts stage, naming the file
            out["catalog_sha256"] = _file_sha256(catalog)
    for field_name, version in (("concepts.prompt", recipe.concepts.prompt), ("twins.prompt", recipe.twins.prompt),
                                ("captions.prompt", recipe.captions.prompt), ("judge.prompt", recipe.judge.prompt)):
        try:
            out[f"{field_name}_sha256"] = load_prompt(version).sha256
        except (OSError, ValueError):
            pass  # an unknown prompt is reported by its stage
    return out


def _manifest(recipe: Recipe) -> dict[str, Any]:
    return {"recipe": recipe.output_dict(), "format": 2, "inputs": _inputs(recipe)}


def manifest_differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """What differs between a run folder's manifest and this build's: recipe fields and input fingerprints."""
    diff = [f"recipe field {k!r}: was {have.get('recipe', {}).get(k)!r}, now {want['recipe'][k]!r}"
            for k in sorted(want["recipe"]) if have.get("recipe", {}).get(k) != want["recipe"][k]]
    if "inputs" in have:  # manifests written before input fingerprints existed compare the recipe only
        for key in sorted(set(have["inputs"]) | set(want["inputs"])):
            if have["inputs"].get(key) != want["inputs"].get(key):
                diff.append(f"{key.replace('_sha256', '')} content changed")
    if have.get("format") != want["format"]:
        diff.append(f"format {have.get('format')!r} -> {want['format']!r}")
    return diff


def check_output_folder(output_dir: Path, recipe: Recipe, overwrite: bool) -> list[str]:
    """Read-only check before a build touches `output_dir`; returns the differences to start over from (only when
    `overwrite`), else raises RunMismatchError/OutputInUse naming the folder."""
    manifest = output_dir / "run" / "manifest.json"
    if not manifest.is_file():
        refuse_foreign(output_dir, RUN_ENTRIES, made_by="a CulTwin build (no run/manifest.json)", overwrite=overwrite,
                       hint="choose a new or empty --output-dir, or pass --overwrite to build there (only the "
                            f"export's own entries {list(EXPORT_ENTRIES)} and run/ are replaced)")
        return []
    diff = manifest_differences(read_json(manifest), _manifest(recipe))
    if diff and not overwrite:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise RunMismatchError(f"{output_dir / 'run'}: this run folder was started with different inputs ({shown})",
                               hint="resume with the same recipe, seed, limit and catalog, use a new --output-dir, "
                                    "or pass --overwrite to start the run over")
    return diff


def _start_over(run_dir: Path) -> None:
    """Retire a run folder whose inputs changed (the user asked for it with --overwrite)."""
    retired = run_dir.with_name(".retired-run")
    shutil.rmtree(retired, ignore_errors=True)
    run_dir.rename(retired)
    shutil.rmtree(retired, ignore_errors=True)


def _check_manifest(run_dir: Path, recipe: Recipe, rank: int = 0, wait_s: float = 0.0) -> None:
    """Write the manifest of a new run folder (rank 0), or wait up to `wait_s` until rank 0 has (other ranks)."""
    path = run_dir / "manifest.json"
    want = _manifest(recipe)
    deadline = time.monotonic() + wait_s
    while True:
        have = read_json(path) if path.exists() else None
        if have is not None and not manifest_differences(have, want):
            return
        if rank == 0:
            if have is not None:
                raise RunMismatchError(f"{run_dir}: this run folder was started with different inputs "
                                       f"({'; '.join(manifest_differences(have, want))})")
            atomic_write_json(path, want)
            return
        if time.monotonic() > deadline:
            raise RunMismatchError(f"{run_dir}: rank 0 did not write a manifest matching this rank's recipe within "
                                   f"{wait_s:g} s; launch every rank with the same recipe and options")
        time.sleep(0.05)


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
    overwrite: bool = False,
    rendezvous_timeout_s: float | None = None,
) -> dict[str, Any]:
    """Build (or resume) a CulTwin folder. Backends default to the recipe's; rank/world to RANK/WORLD_SIZE.

    Refuses (OutputInUse) a non-empty `output_dir` that is not a build folder, and (RunMismatchError) a run folder
    started with other inputs, unless `overwrite`. Several ranks meet at start-up within `rendezvous_timeout_s`
    (default CULTURECLIP_RENDEZVOUS_TIMEOUT_S or 60 s) and raise RendezvousTimeout naming the ranks that never came.

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
    start_over = check_output_folder(output_dir, recipe, overwrite)
    timeout = resolve_rendezvous_timeout(rendezvous_timeout_s)
    file_rendezvous(output_dir / ".rendezvous", rank, world, timeout)  # returns at once for one process
    if rank == 0 and start_over and run_dir.exists():
        _start_over(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_manifest(run_dir, recipe, rank, wait_s=timeout)

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
