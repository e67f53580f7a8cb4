"""Reports from result JSONs: side-by-side table (CSV + markdown), model-index card block, `.eval_results` YAML,
and PNG plots (per-continent accuracy bars, twin confusion matrices)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, EvalResultEntry, ModelCard, ModelCardData
from huggingface_hub import eval_result_entries_to_yaml

from .runner import file_sha256, load_results, safe_name, write_json_atomic

TASK_TYPES = {"retrieval": "image-text-retrieval"}  # everything else is scored as zero-shot classification


def write_text_atomic(path: Path, text: str) -> None:
    """Write text through a same-folder temp file and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class DataLabel:
    """Where a result's numbers came from, as reports show and publish it."""

    key: str  # unique per distinct data: "hub:ID@REV", "local:NAME#FINGERPRINT", "in-memory:NAME"
    name: str  # display name: the Hub id, or the local folder's / in-memory set's name
    hub_id: str | None  # the Hub dataset to publish under (loaded from it, or mapped with --dataset-id)
    revision: str | None  # resolved commit, only when the data was loaded from that Hub dataset
    mapped: bool  # hub_id comes from --dataset-id, not from where the data was loaded


def data_label(record: dict, dataset_ids: Mapping[str, str]) -> DataLabel:
    """The DataLabel of a record; ValueError when --dataset-id contradicts the Hub dataset it was loaded from."""
    info = record["dataset"]
    kind = info.get("kind")
    bench = record["benchmark"]
    mapped = dataset_ids.get(bench)
    if kind == "hub":
        if mapped and mapped != info["id"]:
            raise ValueError(f"{record.get('_path', bench)}: {bench} was loaded from Hub dataset {info['id']!r}; "
                             f"--dataset-id {bench}={mapped} would publish it under another dataset")
        return DataLabel(f"hub:{info['id']}@{info.get('revision')}", info["id"], info["id"], info.get("revision"),
                         False)
    if kind == "local":
        name = info.get("name") or Path(str(info.get("path", "local"))).name
        key = f"local:{name}#{str(info.get('fingerprint', ''))[:12]}"
    elif kind == "in-memory":
        name = info.get("name") or f"{bench} (in-memory)"
        key = f"in-memory:{name}#{info.get('datasets_fingerprint') or ''}"
    else:
        raise ValueError(f"{record.get('_path', bench)}: dataset kind {kind!r} is not hub/local/in-memory")
    return DataLabel(key, name, mapped, None, bool(mapped))


def model_labels(records: Sequence[dict]) -> dict[str, str]:
    """{model identity: label}: the model's name, with its identity appended when two models share a name."""
    names: dict[str, str] = {}
    for r in records:
        names.setdefault(r["model"]["identity"], r["model"]["name"])
    clash = {n for n in names.values() if list(names.values()).count(n) > 1}
    return {ident: (f"{n} ({ident})" if n in clash else n) for ident, n in names.items()}


def _cell(record: dict, metric: str) -> str:
    """'41.20 ± 1.30 [38.00, 44.50]' in percent: value, std over seeds (if several), bootstrap CI (if any)."""
    value = record["metrics"].get(metric)
    if value is None:
        return ""
    text = f"{100 * value:.2f}"
    std = record["metrics"].get(f"{metric}_std")
    if std is not None and len(record.get("config", {}).get("seeds", [])) > 1:
        text += f" ± {100 * std:.2f}"
    ci = record.get("confidence_intervals", {}).get(metric)
    if ci:
        text += f" [{100 * ci['low']:.2f}, {100 * ci['high']:.2f}]"
    return text


def check_unique(records: Sequence[dict], dataset_ids: Mapping[str, str]) -> None:
    """ValueError naming both files when one model has two results for the same benchmark, task and data."""
    seen: dict[tuple, str] = {}
    for r in records:
        key = (r["model"]["identity"], r["benchmark"], r["task"], data_label(r, dataset_ids).key)
        if key in seen:
            raise ValueError(f"two results of model {r['model']['name']!r} for {r['benchmark']}/{r['task']} on the "
                             f"same data: {seen[key]} and {r.get('_path')}; keep one (or report them separately)")
        seen[key] = str(r.get("_path"))


def comparison_rows(records: Sequence[dict], dataset_ids: Mapping[str, str] | None = None
                    ) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side table: one row per (benchmark, task, data, metric), one column per model.
    Results on different data never share a row."""
    dataset_ids = dict(dataset_ids or {})
    labels = model_labels(records)
    models = list(labels)
    by_key: dict[tuple[str, str, str], dict[str, dict]] = defaultdict(dict)
    shown: dict[tuple[str, str, str], str] = {}
    for r in records:
        label = data_label(r, dataset_ids)
        key = (r["benchmark"], r["task"], label.key)
        by_key[key][r["model"]["identity"]] = r
        shown[key] = label.name + (f"@{label.revision[:8]}" if label.revision else "")
    rows = []
    for key, per_model in sorted(by_key.items()):
        metrics: list[str] = []
        for r in per_model.values():
            for name in r["metrics"]:
                if not name.endswith("_std") and name not in metrics:
                    metrics.append(name)
        primary = next(iter(per_model.values()))["primary_metric"]
        metrics.sort(key=lambda m: (m != primary, m))
        for metric in metrics:
            rows.append([key[0], key[1], shown[key], metric] +
                        [_cell(per_model[m], metric) if m in per_model else "" for m in models])
    return ["benchmark", "task", "data", "metric"] + [labels[m] for m in models], rows


def write_table(records: Sequence[dict], out_dir: Path, dataset_ids: Mapping[str, str] | None = None
                ) -> tuple[Path, Path]:
    """comparison.csv and comparison.md (values in percent)."""
    header, rows = comparison_rows(records, dataset_ids)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    csv_path = out_dir / "comparison.csv"
    write_text_atomic(csv_path, buffer.getvalue())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    note = ("\nValues in percent: mean ± std over distractor seeds (where seeded), [95% bootstrap CI]. `data` is the "
            "Hub dataset id@revision the numbers came from, or the name of the local data.\n")
    md_path = out_dir / "comparison.md"
    write_text_atomic(md_path, "\n".join(lines) + "\n" + note)
    return csv_path, md_path


def _value(record: dict) -> float:
    return round(100 * record["metrics"][record["primary_metric"]], 2)


def model_index_card(model: str, records: Sequence[dict], dataset_ids: Mapping[str, str]) -> ModelCard:
    """A model card whose YAML `model-index` carries one result per (benchmark, task, data) with its primary metric
    (percent) under the dataset it came from: a Hub id only when loaded from (or mapped to) that Hub dataset, else
    `local:NAME`, which can never resolve to a Hub dataset. The card body lists every result with its data."""
    results, table = [], []
    seen: dict[tuple, str] = {}
    for r in records:
        label = data_label(r, dataset_ids)
        split = r["dataset"].get("split")
        # The model-index groups metrics by (task type, dataset, config, split, revision) and drops task names, so
        # the metric type carries the task: two tasks on one dataset never share a metric name.
        result = EvalResult(
            task_type=TASK_TYPES.get(r["task"], "zero-shot-image-classification"), task_name=r["benchmark"],
            dataset_type=label.hub_id or f"local:{label.name}", dataset_name=label.name,
            dataset_split=split, dataset_revision=label.revision,
            metric_type=f"{r['task']}/{r['primary_metric']}", metric_name=f"{r['task']} {r['primary_metric']}",
            metric_value=_value(r),
        )
        key = (*result.unique_identifier, result.metric_type)
        if key in seen:
            raise ValueError(f"two results for model-index entry {key}: {seen[key]} and {r.get('_path')}")
        seen[key] = str(r.get("_path"))
        results.append(result)
        where = (f"Hub `{label.hub_id}` @ `{label.revision}`" if label.revision else
                 f"local data `{label.name}`" + (f" (published as `{label.hub_id}`)" if label.mapped else ""))
        fingerprint = r["dataset"].get("fingerprint") or r["dataset"].get("datasets_fingerprint")
        table.append(f"| {r['benchmark']} | {r['task']} | {where} | {split} | {r['primary_metric']} | {_value(r):.2f} "
                     f"| {r.get('protocol', {}).get('name', '')} | {str(fingerprint or '')[:12]} |")
    data = ModelCardData(model_name=model, eval_results=results)
    body = (f"# Evaluation of {model}\n\nScores from `python -m evaluate_suite` (percent, primary metric per task).\n\n"
            "| benchmark | task | data | split | metric | value | protocol | content fingerprint |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(table) + "\n")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def eval_result_files(records: Sequence[dict], dataset_ids: Mapping[str, str]
                      ) -> tuple[dict[str, list[EvalResultEntry]], list[str]]:
    """{`.eval_results` file name: [entry]} for one model (one file per benchmark task, the primary metric in
    percent), and the results left out because their data is not a Hub dataset."""
    files: dict[str, list[EvalResultEntry]] = {}
    origin: dict[str, str] = {}
    left_out = []
    for r in records:
        label = data_label(r, dataset_ids)
        if label.hub_id is None:
            left_out.append(f"{r['benchmark']}/{r['task']} ({label.key.split('#')[0]})")
            continue
        name = f"{safe_name(r['benchmark'])}__{safe_name(r['task'])}.yaml"
        if name in files:
            raise ValueError(f"two results of model {r['model']['name']!r} for leaderboard {label.hub_id}/"
                             f"{r['task']}: {origin[name]} and {r.get('_path')}; keep one")
        seeds = r.get("config", {}).get("seeds", [])
        notes = [f"{r['primary_metric']} in percent", f"evaluate_suite protocol {r['protocol']['name']} "
                 f"v{r['protocol']['version']}", f"split {r['dataset'].get('split')}",
                 f"seeds {','.join(map(str, seeds))}"]
        std = r["metrics"].get(f"{r['primary_metric']}_std")
        if std is not None and len(seeds) > 1:
            notes.append(f"std over seeds {100 * std:.2f}")
        if r.get("counts", {}).get("comparable_to_published") is False:
            notes.append(f"not comparable to published numbers: {r['counts'].get('not_comparable_reason')}")
        if label.mapped:
            notes.append(f"evaluated on local data {label.name!r} (content fingerprint "
                         f"{r['dataset'].get('fingerprint') or r['dataset'].get('datasets_fingerprint')}), not "
                         f"downloaded from {label.hub_id}; mapped to it with --dataset-id; revision unknown")
        files[name] = [EvalResultEntry(dataset_id=label.hub_id, task_id=r["task"], value=_value(r),
                                       dataset_revision=label.revision, date=r.get("created_at"),
                                       notes="; ".join(notes))]
        origin[name] = str(r.get("_path"))
    return files, left_out


def plot_continents(records: Sequence[dict], out_dir: Path, dataset_ids: Mapping[str, str] | None = None
                    ) -> list[Path]:
    """One grouped bar chart per (benchmark, task, data) with a continent breakdown: continents x models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = model_labels(records)
    by_key: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    names: dict[tuple[str, str, str], str] = {}
    for r in records:
        if "continent" in r.get("breakdowns", {}):
            label = data_label(r, dict(dataset_ids or {}))
            by_key[(r["benchmark"], r["task"], label.key)].append(r)
            names[(r["benchmark"], r["task"], label.key)] = label.name
    paths = []
    keys = sorted(by_key)
    for key in keys:
        bench, task, _ = key
        group = by_key[key]
        continents = sorted({c for r in group for c in r["breakdowns"]["continent"]["accuracy"]})
        width = 0.8 / len(group)
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(continents) + 2), 4))
        for i, r in enumerate(group):
            acc = r["breakdowns"]["continent"]["accuracy"]
            xs = [j + (i - (len(group) - 1) / 2) * width for j in range(len(continents))]
            bars = ax.bar(xs, [100 * acc.get(c, float("nan")) for c in continents], width,
                          label=_short(labels[r["model"]["identity"]]))
            # Value labels keep 0% bars (invisible otherwise) readable.
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
        ax.set_xticks(range(len(continents)), continents, rotation=20, ha="right")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 108)  # headroom for the value labels
        ax.set_title(f"{bench} / {task} on {_short(names[key])}: accuracy per continent", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        several = sum(k[:2] == key[:2] for k in keys) > 1
        suffix = f"__{safe_name(names[key])}" if several else ""
        path = out_dir / "plots" / f"continents__{safe_name(bench)}__{safe_name(task)}{suffix}.png"
        save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_confusions(records: Sequence[dict], out_dir: Path) -> list[Path]:
    """One 2x2 twin confusion heatmap per (model, benchmark, data) with a `confusion_matrix` extra (CulTwin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model_names = model_labels(records)
    paths = []
    for r in records:
        confusion = r.get("extras", {}).get("confusion_matrix")
        if not confusion:
            continue
        matrix, labels = confusion["matrix"], confusion["labels"]
        fig, ax = plt.subplots(figsize=(4.2, 3.8))
        image = ax.imshow(matrix, cmap="Blues", vmin=0)
        top = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted side")
        ax.set_ylabel("true side")
        model = model_names[r["model"]["identity"]]
        ax.set_title(f"twin confusion: {_short(model)}", fontsize=9)
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        data = safe_name(str(r["dataset"].get("name") or r["dataset"].get("id") or "data"))
        path = out_dir / "plots" / f"twin_confusion__{safe_name(model)}__{safe_name(r['benchmark'])}__{data}.png"
        save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def _short(name: str, limit: int = 40) -> str:
    """`name` cut to `limit` characters."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG through a same-folder temp file and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse to write over an earlier report unless `overwrite`; then remove only the files that report wrote."""
    previous = out / "report.json"
    if not previous.is_file():
        return
    if not overwrite:
        raise ValueError(f"{previous}: a report exists already; pass --overwrite to replace it or choose another "
                         "--output-dir")
    try:
        old = json.loads(previous.read_text(encoding="utf-8")).get("files", {})
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{previous}: not a report summary ({err}); remove the folder yourself") from err
    for name in old:
        target = (out / name).resolve()
        if out.resolve() in target.parents and target.is_file():
            target.unlink()


def build_report(results_dir: str | Path, output_dir: str | Path, dataset_ids: Mapping[str, str] | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
    """Write every report artefact for the results under `results_dir`; returns a summary (also report.json).

    `.eval_results` files are written only for results whose data was loaded from a Hub dataset (revision recorded)
    or that `dataset_ids` maps to one ({benchmark: Hub id}; their notes say so); everything else is reported in the
    tables and the model card under its local name only.
    """
    records = load_results(results_dir)
    dataset_ids = dict(dataset_ids or {})
    unknown = sorted(set(dataset_ids) - {r["benchmark"] for r in records})
    if unknown:
        raise ValueError(f"--dataset-id given for benchmark(s) with no results: {unknown}")
    check_unique(records, dataset_ids)
    out = Path(output_dir)
    _prepare_output(out, overwrite)
    written: list[Path] = list(write_table(records, out, dataset_ids))
    left_out_all: dict[str, list[str]] = {}
    published: dict[str, list[str]] = {}
    labels = model_labels(records)
    for identity, model in labels.items():
        mine = [r for r in records if r["model"]["identity"] == identity]
        folder = out / "models" / safe_name(model)
        card_path = folder / "README.md"
        write_text_atomic(card_path, str(model_index_card(model, mine, dataset_ids)))
        written.append(card_path)
        files, left_out = eval_result_files(mine, dataset_ids)
        if left_out:
            left_out_all[model] = left_out
        for name, entries in sorted(files.items()):
            path = folder / ".eval_results" / name
            write_text_atomic(path, yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False))
            written.append(path)
            published.setdefault(model, []).append(name)
    written += plot_continents(records, out, dataset_ids)
    written += plot_confusions(records, out)
    summary = {
        "results": len(records), "models": list(labels.values()),
        "eval_results": published,
        "eval_results_left_out": left_out_all,  # local data: pass --dataset-id BENCH=ID to publish it
        "files": {str(p.relative_to(out)): file_sha256(p) for p in written},
    }
    write_json_atomic(out / "report.json", summary)
    return summary


__all__ = ["DataLabel", "build_report", "check_unique", "comparison_rows", "data_label", "eval_result_files",
           "model_index_card", "model_labels", "plot_confusions", "plot_continents", "save_figure",
           "write_text_atomic"]
