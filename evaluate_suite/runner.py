"""Running benchmarks: the in-memory Python API (`evaluate_model`) and the file-writing run (`run_benchmarks`)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from cultureclip_guards import atomic_write_json
from cultureclip_guards.errors import naming

from .encoders import DualEncoder, load_encoder
from .errors import EvalDataError
from .metrics.core import MIN_GROUP_SIZE
from .sources import is_hub_id, load_benchmark_data
from .tasks import Benchmark, EvalSettings, TaskResult, get_benchmark

logger = logging.getLogger(__name__)
RESULT_SCHEMA_VERSION = 2  # 2: dataset provenance (kind, id+revision or path+fingerprint), protocol, model name


def model_display_name(model_id: str, name: str | None = None) -> str:
    """How results name a model: `name` if given, a Hub id as is, else the last folder name (never a full path)."""
    if name:
        return name
    text = str(model_id).rstrip("/\\")
    if is_hub_id(text):
        return text
    return Path(text).name or text


def model_identity(model_id: str, revision: str | None = None, name: str | None = None) -> str:
    """8 hex digits telling apart models that share a display name (`runs/b32/model` vs `runs_b32/model`): a hash of
    the absolute path (or Hub id), the revision and the name given."""
    text = str(model_id)
    key = os.path.abspath(text) if os.path.exists(text) else text
    return hashlib.sha256(f"{key}@{revision or ''}#{name or ''}".encode()).hexdigest()[:8]


def evaluate_model(
    model,
    processor,
    benchmark: str | Benchmark,
    dataset: datasets.Dataset,
    seeds: Sequence[int] = (0,),
    batch_size: int = 64,
    bootstrap_resamples: int = 1000,
    encoder: DualEncoder | None = None,
    dataset_name: str | None = None,
    min_group_size: int = MIN_GROUP_SIZE,
    model_name: str | None = None,
    dtype: str | None = None,
    compile: bool = False,
    **benchmark_params: Any,
) -> dict[str, dict]:
    """Evaluate an in-memory model on an in-memory dataset; returns {task name: result dict}.

    `benchmark` is a registered name (see `evaluate_suite.tasks.BENCHMARKS`) or a Benchmark instance. Pass an
    `encoder` to share its text cache across calls. `dataset_name` labels the in-memory data in reports (it is never
    taken for a Hub dataset); groups smaller than `min_group_size` are listed, not ranked. `dtype` ('auto', 'fp32',
    'bf16', 'fp16'; None: the model as it is) and `compile` as for `DualEncoder`; `model` itself is never cast.
    """
    bench = get_benchmark(benchmark, **benchmark_params) if isinstance(benchmark, str) else benchmark
    encoder = encoder or DualEncoder(model, processor, batch_size=batch_size, dtype=dtype, compile=compile)
    settings = EvalSettings(seeds=tuple(seeds), bootstrap_resamples=bootstrap_resamples,
                            min_group_size=min_group_size)
    results = bench.evaluate(encoder, dataset, settings)
    info = {"kind": "in-memory", "id": None, "name": dataset_name or f"{bench.name} (in-memory)",
            "split": bench.split, "rows": len(dataset),
            "datasets_fingerprint": getattr(dataset, "_fingerprint", None)}
    return {r.task: result_record(r, bench, encoder, settings, info, model_name=model_name) for r in results}


def result_record(result: TaskResult, bench: Benchmark, encoder: DualEncoder, settings: EvalSettings,
                  dataset_info: dict[str, Any], batch_size: int | None = None,
                  model_name: str | None = None, loader_skipped: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The JSON-ready record of one (model, benchmark, task) result.

    `dataset_info` is the provenance of the data (`sources.BenchmarkData.provenance` or an in-memory description);
    the record adds the rows this task used and the rows left out by reason (loader and task together).
    """
    model_id = str(encoder.model_id)
    skipped = dict(loader_skipped or {})
    for reason, n in (result.counts.get("skipped") or {}).items():
        skipped[reason] = skipped.get(reason, 0) + n
    dataset = {"id": None, **dataset_info, "rows_used": result.counts.get("rows_used"), "rows_skipped": skipped}
    return {
        "schema_version": RESULT_SCHEMA_VERSION,
        "model": {"name": model_display_name(model_id, model_name),
                  "identity": model_identity(model_id, encoder.revision, model_name),
                  "source": "hub" if is_hub_id(model_id) else "local", "revision": encoder.revision,
                  "class": type(encoder.model).__name__, "scoring": encoder.family,
                  **(encoder.describe() if hasattr(encoder, "describe") else {})},
        "benchmark": bench.name,
        "task": result.task,
        "protocol": bench.protocol_for(result.task).to_dict(),
        "dataset": dataset,
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
    """Write JSON (indent 2, keys in order) through a temp file and os.replace, so readers never see half a file."""
    atomic_write_json(path, payload, sort_keys=False, indent=2)


def _source_of(bench: Benchmark, data_dirs: Mapping[str, str], hub_datasets: Mapping[str, str]
               ) -> tuple[str, str | None]:
    """(local folder or Hub id, Hub revision) a benchmark reads: --data-dir, else --hub-dataset ID[@REV], else its
    default Hub copy."""
    if bench.name in data_dirs:
        folder = data_dirs[bench.name]
        if not os.path.isdir(folder):
            raise EvalDataError(bench.name, f"--data-dir {bench.name}={folder}: not a folder")
        return folder, None
    if bench.name in hub_datasets:
        repo_id, _, revision = hub_datasets[bench.name].partition("@")
        if not is_hub_id(repo_id):
            raise EvalDataError(bench.name, f"--hub-dataset {bench.name}={hub_datasets[bench.name]}: expected "
                                            "OWNER/NAME[@REVISION]")
        return repo_id, revision or None
    if bench.dataset_id is None:
        raise ValueError(f"benchmark {bench.name!r} has no Hub dataset: pass --data-dir {bench.name}=PATH")
    return bench.dataset_id, None


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
    name: str | None = None,
    hub_datasets: Mapping[str, str] | None = None,
    min_group_size: int = MIN_GROUP_SIZE,
    overwrite: bool = False,
    dtype: str = "auto",
    compile: bool = False,
) -> list[Path]:
    """Evaluate `model` (path or Hub id) on each benchmark and write one JSON per task into `output_dir`.

    `data_dirs` maps a benchmark name to a local folder, `hub_datasets` to another Hub copy (`ID[@REVISION]`);
    otherwise the benchmark's default Hub copy is read (only its split). Result files are named
    `{model name}-{identity}__{benchmark}__{task}.json`; an existing one stops the run unless `overwrite`.
    `dtype` is the towers' precision ('auto': bf16 where the device has bf16 units, else fp32); scores are computed
    in fp32 from the embeddings. `compile` runs the towers through torch.compile. Returns the written paths.
    """
    data_dirs, hub_datasets = dict(data_dirs or {}), dict(hub_datasets or {})
    for flag, given in (("--data-dir", data_dirs), ("--hub-dataset", hub_datasets)):
        unknown = sorted(set(given) - set(benchmarks))
        if unknown:
            raise ValueError(f"{flag} given for benchmark(s) not being run: {unknown}")
    both = sorted(set(data_dirs) & set(hub_datasets))
    if both:
        raise ValueError(f"both --data-dir and --hub-dataset given for {both}")
    instances = [get_benchmark(b, **(benchmark_params or {}).get(b, {})) for b in benchmarks]
    if not instances:
        raise ValueError("no benchmarks given")
    sources = {bench.name: _source_of(bench, data_dirs, hub_datasets) for bench in instances}
    settings = EvalSettings(seeds=tuple(seeds), bootstrap_resamples=bootstrap_resamples,
                            min_group_size=min_group_size)
    out_dir = Path(output_dir)
    identity = model_identity(model, revision, name)
    stem = f"{safe_name(model_display_name(model, name))}-{identity}"
    if not overwrite:
        for bench in instances:
            existing = sorted(out_dir.glob(f"{stem}__{bench.name}__*.json"))
            if existing:
                raise ValueError(f"{existing[0]}: a result of this model on {bench.name!r} exists already (from "
                                 "another run?); pass --overwrite to replace it or choose another --output-dir")
    # All data first: a bad source fails before minutes go into loading the model.
    loaded = {}
    for bench in instances:
        source, data_revision = sources[bench.name]
        loaded[bench.name] = load_benchmark_data(source, bench.split, bench.name, revision=data_revision)
        bench.use_source(loaded[bench.name])
    if encoder is None:
        with naming(f"--model {model}"):  # an offline Hub id or a broken folder: one line naming the model
            encoder = load_encoder(model, revision=revision, trust_remote_code=trust_remote_code,
                                   batch_size=batch_size, device=device, dtype=dtype, compile=compile)
    written = []
    for bench in instances:
        source, data = sources[bench.name][0], loaded[bench.name]
        logger.info("evaluating %s on %s (%d rows of %s split %r)", model_display_name(model, name), bench.name,
                    len(data.dataset), source, bench.split)
        try:
            results = bench.evaluate(encoder, data.dataset, settings)
        except EvalDataError as err:
            raise err.with_source(source) from err
        for result in results:
            record = result_record(result, bench, encoder, settings, data.provenance, batch_size=batch_size,
                                   model_name=model_display_name(model, name), loader_skipped=data.skipped)
            # Of the checkpoint named on the command line (a passed-in encoder may carry another id).
            record["model"].update(identity=identity, source="hub" if is_hub_id(model) else "local")
            path = out_dir / f"{stem}__{bench.name}__{result.task}.json"
            write_json_atomic(path, record)
            if record["dataset"]["rows_skipped"]:
                logger.warning("%s/%s: rows left out %s", bench.name, result.task, record["dataset"]["rows_skipped"])
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
        if not isinstance(record, dict):
            raise ValueError(f"{path}: not an evaluate_suite result (a JSON {type(record).__name__})")
        missing = [k for k in ("model", "benchmark", "task", "metrics", "primary_metric", "dataset") if k not in record]
        if missing:
            raise ValueError(f"{path}: not an evaluate_suite result (missing {missing})")
        wrong = [f"{k} (expected {t.__name__})" for k, t in (("model", dict), ("benchmark", str), ("task", str),
                                                             ("metrics", dict), ("primary_metric", str),
                                                             ("dataset", dict)) if not isinstance(record[k], t)]
        if not wrong and not isinstance(record["model"].get("name"), str):
            wrong.append("model.name (expected str)")
        if not wrong and record["primary_metric"] not in record["metrics"]:
            wrong.append(f"primary_metric {record['primary_metric']!r} (not among the metrics)")
        if wrong:
            raise ValueError(f"{path}: result field(s) of the wrong type: {', '.join(wrong)}")
        if record.get("schema_version") != RESULT_SCHEMA_VERSION:
            raise ValueError(f"{path}: result schema {record.get('schema_version')!r}, expected "
                             f"{RESULT_SCHEMA_VERSION}; its dataset provenance cannot be reported, re-run the "
                             "evaluation")
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


__all__ = ["RESULT_SCHEMA_VERSION", "evaluate_model", "load_results", "model_display_name", "model_identity",
           "result_record", "run_benchmarks", "safe_name", "write_json_atomic"]
