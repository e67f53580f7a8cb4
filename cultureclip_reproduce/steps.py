"""The reproduction as an ordered list of resumable steps.

get the base CLIP -> get the released data -> import it into our layout -> get the authors' checkpoint (merging an
adapter-only release into the base) -> evaluate base and released (first, so a benchmark that cannot be read fails
before hours of training) -> train release-b32 -> evaluate it -> train our recipe with the same budget -> evaluate
it -> comparison table and cards.

Each step, when it finishes, writes `OUTPUT/steps/<step>.json` (atomically) with its inputs and outputs. A rerun
skips a step whose record exists and whose inputs are the same, and refuses one whose inputs changed (a different
recipe, override, source or revision would silently mix two experiments). A training step that was killed resumes
from its newest checkpoint; an evaluation step redoes only its one (model, benchmark) pair.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ROWS, ReproduceConfig, ReproduceError
from .sources import fetch, is_cultwin_folder, prepare_released_model

Log = Callable[[str], None]
TRAINED = {"release-exact": "release_recipe", "ours": "ours_recipe"}  # row label -> config field of its recipe


def step_names(config: ReproduceConfig) -> list[str]:
    """Every step, in the order they run."""
    names = ["fetch-base", "fetch-release-data", "import-release-data", "fetch-released-model",
             "prepare-released-model"]
    names += [f"eval-{label}-{bench}" for label in ("base", "released") for bench in config.benchmarks]
    for label in TRAINED:
        names += [f"train-{label}"] + [f"eval-{label}-{bench}" for bench in config.benchmarks]
    return names + ["report"]


class StepStore:
    """Step records under OUTPUT/steps/: run a step unless it finished with the same inputs."""

    def __init__(self, output: Path, log: Log):
        self.root = output / "steps"
        self.log = log

    def record_path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def done(self, name: str) -> dict[str, Any] | None:
        path = self.record_path(name)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def run(self, name: str, inputs: dict[str, Any], action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
        record = self.done(name)
        if record is not None:
            if record["inputs_sha256"] != digest:
                raise ReproduceError(
                    f"step {name!r} finished earlier with other inputs (see {self.record_path(name)}); use a new "
                    "--output-dir, or delete that record to redo the step with the new settings")
            self.log(f"[done] {name} (finished earlier; not redone)")
            return record["outputs"]
        self.log(f"[run ] {name}")
        started = _dt.datetime.now(_dt.timezone.utc)
        outputs = action()
        from dataset_builder.runstore import atomic_write_json

        atomic_write_json(self.record_path(name), {
            "step": name, "inputs": inputs, "inputs_sha256": digest, "outputs": outputs,
            "started_at": started.isoformat(timespec="seconds"),
            "seconds": round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1)})
        return outputs


def training_args(config: ReproduceConfig, label: str, base: str = "base", dataset: str = "data",
                  output: str = "out", card: dict[str, str | None] | None = None):
    """TrainArgs of one training row: its recipe, the shared overrides, the fetched base and imported data."""
    from cultureclip_training import build_args

    recipe = getattr(config, TRAINED[label])
    # decoding 2 x 2048 large images per step dominates a step on one CPU core: load with workers unless told
    values: dict[str, Any] = {"num_workers": str(min(8, os.cpu_count() or 1)), **config.train_overrides}
    values.update(model=base, dataset=dataset, output_dir=output)
    for name, value in (card or {}).items():
        if value:
            values[name] = value
    return build_args(recipe, values)


def check_budget(config: ReproduceConfig) -> None:
    """Both runs must see the same examples: the same global batch and the same epochs / max_steps."""
    release, ours = (training_args(config, label) for label in TRAINED)
    budget = [(a.per_device_batch_size * a.micro_batches, a.max_steps, None if a.max_steps else a.epochs)
              for a in (release, ours)]
    if budget[0] != budget[1]:
        raise ReproduceError(f"the two recipes do not have the same budget: {config.release_recipe} has (global "
                             f"batch, max_steps, epochs) = {budget[0]}, {config.ours_recipe} {budget[1]}; set the "
                             "same with --train-override (applied to both) or choose recipes that agree")


def _train(config: ReproduceConfig, label: str, base: dict, cultwin: dict, output: Path) -> dict[str, Any]:
    from cultureclip_training import train
    from cultureclip_training.checkpointing import list_checkpoints

    run_dir = output / "runs" / label
    args = training_args(config, label, base["path"], cultwin["path"], str(run_dir),
                         {"card_base_model": base["id"], "card_dataset": cultwin["id"]})
    if list_checkpoints(run_dir):
        args.resume = "latest"  # a killed run continues where its last checkpoint left it
    else:
        args.overwrite = True  # this step owns run_dir: a run killed before its first checkpoint starts over
    result = train(args)
    if result.artifacts is None:
        raise ReproduceError(f"training {label} wrote no model (save_artifacts is off); the evaluation needs it")
    return {"model_dir": str(result.artifacts.model_dir), "recipe": args.recipe, "steps": result.steps,
            "samples_seen": result.samples_seen, "final_losses": result.final_losses}


def release_source(config: ReproduceConfig, fetched: str) -> Path:
    """The file or folder to import inside the fetched released data; never outside it."""
    from dataset_builder.runstore import inside

    root = Path(fetched)
    return inside(root, config.release_data_path) if config.release_data_path else root


def _import_data(config: ReproduceConfig, data: dict, output: Path) -> dict[str, Any]:
    source = release_source(config, data["path"])
    if is_cultwin_folder(source):
        return {"path": str(source), "id": data["id"], "revision": data["revision"], "imported": False}
    from dataset_builder.release_import import import_release

    target = output / "data" / "cultwin-release"
    summary = import_release(source, target, image_root=config.image_root, overwrite=True,
                             skip_missing_images=config.skip_missing_images, source_id=data["id"],
                             revision=data["revision"], combinations=config.import_combinations)
    return {"path": str(target), "id": data["id"], "revision": data["revision"], "imported": True,
            "rows": summary["rows"], "statistics": summary["statistics"]}


def _evaluate(store: StepStore, config: ReproduceConfig, label: str, model: dict, output: Path,
              device: str) -> list[str]:
    from evaluate_suite.runner import run_benchmarks

    folder = output / "results" / label
    files: list[str] = []
    for bench in config.benchmarks:
        data_dirs = {bench: config.data_dirs[bench]} if bench in config.data_dirs else None
        inputs = {"model": model, "benchmark": bench, "data_dir": config.data_dirs.get(bench),
                  "seeds": list(config.eval_seeds), "bootstrap_resamples": config.bootstrap_resamples}

        def action(bench=bench, data_dirs=data_dirs) -> dict[str, Any]:
            paths = run_benchmarks(model["path"], [bench], folder, data_dirs=data_dirs, seeds=config.eval_seeds,
                                   batch_size=config.eval_batch_size, bootstrap_resamples=config.bootstrap_resamples,
                                   device=device)
            return {"files": [str(Path(p).relative_to(output)) for p in paths]}

        files += store.run(f"eval-{label}-{bench}", inputs, action)["files"]
    return files


def reproduce(config: ReproduceConfig, log: Log = print) -> dict[str, Any]:
    """Run (or resume) the whole reproduction; returns the report step's outputs (paths of table, plot, cards)."""
    import torch

    config.validate()
    check_budget(config)
    if config.released_model is None:
        raise ReproduceError("--released-model is required: the authors' checkpoint, a lukahh/cultureclip_lora_* "
                             "repo (merged CLIPModel or PEFT adapter) or a local folder")
    output = Path(config.output_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    store = StepStore(output, log)

    base = store.run("fetch-base", {"source": config.base_model, "revision": config.base_revision},
                     lambda: fetch(config.base_model, config.base_revision, "model"))
    data = store.run("fetch-release-data", {"source": config.release_data, "revision": config.data_revision},
                     lambda: fetch(config.release_data, config.data_revision, "dataset"))
    cultwin = store.run("import-release-data", {"data": data, "path": config.release_data_path,
                                                "image_root": config.image_root,
                                                "skip_missing_images": config.skip_missing_images,
                                                "combinations": config.import_combinations},
                        lambda: _import_data(config, data, output))
    released = store.run("fetch-released-model", {"source": config.released_model,
                                                  "revision": config.released_revision},
                         lambda: fetch(config.released_model, config.released_revision, "model"))
    ready = store.run("prepare-released-model", {"released": released, "base": base},
                      lambda: {**released, **prepare_released_model(Path(released["path"]), Path(base["path"]),
                                                                    output / "models" / "released")})
    models: dict[str, dict[str, Any]] = {"base": base, "released": ready}
    evaluations = {label: _evaluate(store, config, label, models[label], output, device)
                   for label in ("base", "released")}
    runs = {}
    for label in TRAINED:
        args = training_args(config, label, base["path"], cultwin["path"], str(output / "runs" / label))
        inputs = {"args": {k: v for k, v in args.to_dict().items() if k != "resume"}, "base": base,
                  "data": cultwin}
        runs[label] = store.run(f"train-{label}", inputs, lambda label=label: _train(config, label, base, cultwin,
                                                                                     output))
        models[label] = {"path": runs[label]["model_dir"], "id": None, "trained_by": runs[label]}
        evaluations[label] = _evaluate(store, config, label, models[label], output, device)

    provenance = {"base_model": {k: base[k] for k in ("id", "revision")},
                  "release_data": {k: data[k] for k in ("id", "revision")},
                  "released_model": {**{k: released[k] for k in ("id", "revision")}, "kind": ready["kind"]},
                  "recipes": {label: getattr(config, field) for label, field in TRAINED.items()},
                  "train_overrides": config.train_overrides,
                  "budget": {label: {k: runs[label][k] for k in ("steps", "samples_seen")} for label in TRAINED},
                  "benchmark_data": {b: config.data_dirs.get(b, "evaluate_suite's Hub default") for b in
                                     config.benchmarks},
                  "local_paths": {label: models[label]["path"] for label in ROWS}}
    return store.run("report", {"evaluations": evaluations, "provenance": provenance},
                     lambda: _report(output, evaluations, provenance))


def _report(output: Path, evaluations: dict[str, list[str]], provenance: dict[str, Any]) -> dict[str, Any]:
    from evaluate_suite.report import build_report

    from .compare import read_records, write_comparison

    results = {label: read_records(output / "results" / label) for label in ROWS}
    for label, files in evaluations.items():
        if len(results[label]) != len(files):
            raise ReproduceError(f"{output / 'results' / label}: {len(results[label])} result files, the evaluation "
                                 f"steps wrote {len(files)}; remove stray files there")
    written = write_comparison(results, output, provenance)
    summary = build_report(output / "results", output / "report")
    return {**written, "cards": sorted(p for p in summary["files"] if p.endswith("README.md"))}


__all__ = ["StepStore", "check_budget", "release_source", "reproduce", "step_names", "training_args"]
