"""`--dry-run`: the steps (done or pending), the sources and their sizes, and time/memory estimates; nothing is
downloaded, trained or written. How the estimates are made: see `estimates` (printed with the plan)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import estimates
from .config import ReproduceConfig
from .sources import is_cultwin_folder, is_local
from .steps import TRAINED, StepStore, check_budget, release_source, step_names, training_args


def _source(name: str, source: str | None, repo_type: str, revision: str | None) -> dict[str, Any]:
    if source is None:
        return {"name": name, "source": None, "where": "not set", "bytes": None}
    if is_local(source):
        return {"name": name, "source": source, "where": "local", "bytes": estimates.folder_bytes(Path(source))}
    return {"name": name, "source": source, "where": "hub", "revision": revision or "main (resolved when fetched)",
            "bytes": estimates.hub_bytes(source, repo_type, revision)}


def _base_config(source: str, revision: str | None) -> Any:
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(source, revision=revision)
    except Exception:  # offline and not cached: the plan says the estimates are unknown
        return None


def _released_rows(config: ReproduceConfig, output: Path) -> tuple[int | None, int | None]:
    """(train rows, approximate bytes of the imported folder), from what is on disk; (None, None) if nothing is."""
    imported = output / "data" / "cultwin-release"
    if is_cultwin_folder(imported):
        return estimates.local_rows(imported, "train"), estimates.folder_bytes(imported)
    if not is_local(config.release_data):
        return None, None
    source = release_source(config, config.release_data)
    if is_cultwin_folder(source):
        return estimates.local_rows(source, "train"), estimates.folder_bytes(source)
    from dataset_builder.release_import import ImageResolver, find_split_files, read_records

    rows, sizes = 0, []
    for path in find_split_files(source).get("train", []):
        records = read_records(path)
        if config.import_combinations == "matched":
            records = [r for r in records if r.get("pos_caption_id") == r.get("neg_caption_id")]
        rows += len(records)
        resolver = ImageResolver(Path(config.image_root) if config.image_root else path.parent)
        for record in records[:16]:  # a sample of image sizes; every row embeds its two images
            for side in ("pos", "neg"):
                found = resolver.resolve(record[f"{side}_image_path"])
                if found is not None:
                    sizes.append(found.stat().st_size)
    return rows, (int(rows * 2 * sum(sizes) / len(sizes)) if sizes else None)


def _benchmark_images(config: ReproduceConfig, bench: str) -> tuple[int | None, str]:
    folder = config.data_dirs.get(bench)
    if folder is not None:  # the benchmarks read their `test` split
        return estimates.local_rows(Path(folder), "test"), "local data dir, test split"
    if bench in estimates.KNOWN_ROWS:
        return estimates.KNOWN_ROWS[bench], "stated size of the Hub split"
    return None, "unknown until downloaded"


def make_plan(config: ReproduceConfig, assumed_tflops: float | None = None) -> dict[str, Any]:
    """The plan as a dict (what `format_plan` prints)."""
    config.validate()
    check_budget(config)
    output = Path(config.output_dir).resolve()
    store = StepStore(output, lambda _: None)
    steps = []
    for name in step_names(config):
        status = "done" if store.done(name) else "pending"
        if status == "pending" and name.startswith("train-"):
            from cultureclip_training.checkpointing import list_checkpoints

            found = list_checkpoints(output / "runs" / name.removeprefix("train-"))
            status = f"resumes from {found[-1].name}" if found else status
        steps.append({"step": name, "status": status})
    base_config = _base_config(config.base_model, config.base_revision)
    rows, imported_bytes = _released_rows(config, output)
    training = {}
    for label in TRAINED:
        args = training_args(config, label)
        estimate = (estimates.training_estimate(base_config, args, rows, assumed_tflops) if base_config is not None
                    else {"rows": rows, "note": "base model config not reachable: no estimate"})
        training[label] = {"recipe": args.recipe, "accumulation": args.accumulation,
                           "mixed_precision": args.mixed_precision, **estimate}
    evaluation = {}
    for bench in config.benchmarks:
        images, basis = _benchmark_images(config, bench)
        per_model = (estimates.evaluation_estimate(base_config, images, assumed_tflops) if base_config is not None
                     else {"images": images, "hours": None})
        evaluation[bench] = {**per_model, "rows_from": basis}
    hours = [t.get("hours") for t in training.values()] + [4 * e["hours"] if e.get("hours") is not None else None
                                                           for e in evaluation.values()]
    return {
        "output_dir": str(output),
        "sources": [_source("base CLIP", config.base_model, "model", config.base_revision),
                    _source("released data", config.release_data, "dataset", config.data_revision),
                    _source("authors' checkpoint", config.released_model, "model", config.released_revision)],
        "imported_data": {"rows": rows, "bytes": imported_bytes, "combinations": config.import_combinations},
        "steps": steps, "training": training, "evaluation": evaluation,
        "total_hours": None if any(h is None for h in hours) else sum(hours),
        "method": estimates.METHOD.strip(),
    }


def _size(value: int | None) -> str:
    if value is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def _hours(value: float | None) -> str:
    return "unknown" if value is None else (f"{value:.2f} h" if value >= 0.1 else f"{value * 3600:.0f} s")


def format_plan(plan: dict[str, Any]) -> str:
    """Human-readable plan."""
    lines = [f"Reproduction plan for {plan['output_dir']} (dry run: nothing is downloaded, trained or written)", "",
             "Sources:"]
    for s in plan["sources"]:
        lines.append(f"  {s['name']}: {s['source']} ({s['where']}, {_size(s['bytes'])}"
                     + (f", revision {s['revision']}" if s.get("revision") else "") + ")")
    data = plan["imported_data"]
    lines.append(f"  imported CulTwin ({data['combinations']} caption combinations): {data['rows'] or 'unknown'} "
                 f"train rows, ~{_size(data['bytes'])} (rows x 2 x the mean image file size of a sample)")
    lines += ["", "Steps:"] + [f"  {i:2d}. {s['step']:<40} {s['status']}" for i, s in enumerate(plan["steps"], 1)]
    lines += ["", "Training (same budget for both):"]
    for label, t in plan["training"].items():
        if "steps" not in t:
            lines.append(f"  {label}: {t['recipe']}: {t['note']}")
            continue
        size = (f"{t['rows']} rows -> {t['steps']} steps" if t["steps"] is not None
                else "rows unknown until the data is fetched; steps")
        lines.append(f"  {label}: {t['recipe']} ({t['accumulation']}, {t['precision']}), {size} of "
                     f"{t['global_batch']} pairs; ~{_hours(t['hours'])} ({t['step_seconds']:.1f} s per step) at "
                     f"{t['assumed_tflops']:.0f} TFLOP/s; peak ~{t['peak_memory_gib']:.1f} GiB per device; "
                     f"{t['trainable_parameters']:,} of {t['parameters']:,} parameters trained")
    lines += ["", "Evaluation (each of 4 models):"]
    for bench, e in plan["evaluation"].items():
        lines.append(f"  {bench}: {e['images'] if e['images'] is not None else 'unknown'} rows ({e['rows_from']}), "
                     f"~{_hours(e['hours'])} per model")
    lines += ["", f"Total: ~{_hours(plan['total_hours'])}", "", "How these are estimated:"]
    lines += ["  " + line for line in plan["method"].splitlines()]
    return "\n".join(lines)


__all__ = ["format_plan", "make_plan"]
