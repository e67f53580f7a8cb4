"""Running benchmarks: the in-memory Python API (`evaluate_model`) and the file-writing run (`run_benchmarks`)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from .data import load_benchmark_dataset
from .encoders import DualEncoder, load_encoder
from .tasks import Benchmark, EvalSettings, TaskResult, get_benchmark

logger = logging.getLogger(__name__)
RESULT_SCHEMA_VERSION = 1


def evaluate_model(
    model,
    processor,
    benchmark: str | Benchmark,
    dataset: datasets.Dataset,
    seeds: Sequence[int] = (0,),
    batch_size: int = 64,
    bootstrap_resamples: int = 1000,
    encoder: DualEncoder | None = None,
    **benchmark_params: Any,
) -> dict[str, dict]:
    """Evaluate an in-memory model on an in-memory dataset; returns {task name: result dict}.

    `benchmark` is a registered name (see `evaluate_suite.tasks.BENCHMARKS`) or a Benchmark instance. Pass an
    `encoder` to share its text cache across calls.
    """
    bench = get_benchmark(benchmark, **benchmark_params) if isinstance(benchmark, str) else benchmark
    encoder = encoder or DualEncoder(model, processor, batch_size=batch_size)
    settings = EvalSettings(seeds=tuple(seeds), bootstrap_resamples=bootstrap_resamples)
    results = bench.evaluate(encoder, dataset, settings)
    return {r.task: result_record(r, bench, encoder, settings, dataset_info={"source": "in-memory"}) for r in results}


def result_record(result: TaskResult, bench: Benchmark, encoder: DualEncoder, settings: EvalSettings,
                  dataset_info: dict[str, Any], batch_size: int | None = None) -> dict[str, Any]:
    """The JSON-ready record of one (model, benchmark, task) result."""
    return {
        "schema_version": RESULT_SCHEMA_VERSION,
        "model": {"id": encoder.model_id, "revision": encoder.revision, "class": type(encoder.model).__name__,
                  "scoring": encoder.family},
        "benchmark": bench.name,
        "task": result.task,
        "dataset": {"id": bench.dataset_id, **dataset_info},
        "config": {"task_params": bench.params(), "seeds": list(settings.seeds if bench.seeded else
                                                                  settings.seeds[:1]),
                   "seeded": bench.seeded, "bootstrap_resamples": settings.bootstrap_resamples,
                   "confidence_level": settings.confidence_level, "min_group_size": settings.min_group_size,
                   "batch_size": batch_size or encoder.batch_size},
        "primary_metric": result.primary_metric,
        "metrics": result.metrics,
        "breakdowns": result.breakdowns,
        "confidence_intervals": result.confidence_intervals,
        "seeds": result.seeds,
        "counts": result.counts,
        "extras": result.extras,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def safe_name(text: str) -> str:
    """A file-name fragment from a model id or path that cannot leave the output folder."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("._") or "model"
    return cleaned[:120]


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON through a temp file in the same folder and os.replace, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_benchmarks(
    model: str,
    benchmarks: Sequence[str],
    output_dir: str | Path,
    data_dirs: Mapping[str, str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    batch_size: int = 64,
    revision: str | None = None,
    trust_remote_code: bool = False,
    bootstrap_resamples: int = 1000,
    device: str | None = None,
    encoder: DualEncoder | None = None,
    benchmark_params: Mapping[str, dict[str, Any]] | None = None,
) -> list[Path]:
    """Evaluate `model` (path or Hub id) on each benchmark and write one JSON per task into `output_dir`.

    `data_dirs` maps a benchmark name to a local folder replacing its Hub dataset. Returns the written paths.
    """
    data_dirs = dict(data_dirs or {})
    unknown = sorted(set(data_dirs) - set(benchmarks))
    if unknown:
        raise ValueError(f"--data-dir given for benchmark(s) not being run: {unknown}")
    instances = [get_benchmark(name, **(benchmark_params or {}).get(name, {})) for name in benchmarks]
    if not instances:
        raise ValueError("no benchmarks given")
    for bench in instances:
        if bench.name not in data_dirs and bench.dataset_id is None:
            raise ValueError(f"benchmark {bench.name!r} has no Hub dataset: pass --data-dir {bench.name}=PATH")
    encoder = encoder or load_encoder(model, revision=revision, trust_remote_code=trust_remote_code,
                                      batch_size=batch_size, device=device)
    settings = EvalSettings(seeds=tuple(seeds), bootstrap_resamples=bootstrap_resamples)
    out_dir = Path(output_dir)
    written = []
    for bench in instances:
        source = data_dirs.get(bench.name) or bench.dataset_id
        assert source is not None
        dataset = load_benchmark_dataset(source, bench.split, bench.name)
        info = {"source": source, "split": bench.split, "rows": len(dataset),
                "fingerprint": getattr(dataset, "_fingerprint", None)}
        logger.info("evaluating %s on %s (%d rows from %s)", encoder.model_id, bench.name, len(dataset), source)
        for result in bench.evaluate(encoder, dataset, settings):
            record = result_record(result, bench, encoder, settings, info, batch_size=batch_size)
            path = out_dir / f"{safe_name(encoder.model_id)}__{bench.name}__{result.task}.json"
            write_json_atomic(path, record)
            skipped = result.counts.get("skipped")
            if skipped:
                logger.warning("%s/%s: skipped rows %s", bench.name, result.task, skipped)
            written.append(path)
    return written


def load_results(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every result JSON under `results_dir` (sorted by path); raises on a file that is not a result record."""
    paths = sorted(Path(results_dir).rglob("*.json"))
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            try:
                record = json.load(handle)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON ({err})") from err
        missing = [k for k in ("model", "benchmark", "task", "metrics", "primary_metric") if k not in record]
        if missing:
            raise ValueError(f"{path}: not an evaluate_suite result (missing {missing})")
        record["_path"] = str(path)
        records.append(record)
    if not records:
        raise ValueError(f"no result JSON files under {results_dir}")
    return records


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (recorded next to report outputs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["evaluate_model", "load_results", "result_record", "run_benchmarks", "safe_name", "write_json_atomic"]
