"""Reports from result JSONs: side-by-side table (CSV + markdown), model-index card block, `.eval_results` YAML,
and PNG plots (per-continent accuracy bars, twin confusion matrices)."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
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


def _models(records: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["model"]["id"] for r in records))


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


def comparison_rows(records: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the side-by-side table: one row per (benchmark, task, metric), one column per model."""
    models = _models(records)
    by_key: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for r in records:
        by_key[(r["benchmark"], r["task"])][r["model"]["id"]] = r
    rows = []
    for (bench, task), per_model in sorted(by_key.items()):
        metrics: list[str] = []
        for r in per_model.values():
            for name in r["metrics"]:
                if not name.endswith("_std") and name not in metrics:
                    metrics.append(name)
        primary = next(iter(per_model.values()))["primary_metric"]
        metrics.sort(key=lambda m: (m != primary, m))
        for metric in metrics:
            rows.append([bench, task, metric] + [_cell(per_model[m], metric) if m in per_model else "" for m in models])
    return ["benchmark", "task", "metric"] + models, rows


def write_table(records: Sequence[dict], out_dir: Path) -> tuple[Path, Path]:
    """comparison.csv and comparison.md (values in percent)."""
    header, rows = comparison_rows(records)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    csv_path = out_dir / "comparison.csv"
    write_text_atomic(csv_path, buffer.getvalue())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    note = ("\nValues in percent: mean ± std over distractor seeds (where seeded), [95% bootstrap CI].\n")
    md_path = out_dir / "comparison.md"
    write_text_atomic(md_path, "\n".join(lines) + "\n" + note)
    return csv_path, md_path


def _dataset_id(record: dict, dataset_ids: Mapping[str, str]) -> str | None:
    return dataset_ids.get(record["benchmark"]) or record.get("dataset", {}).get("id")


def model_index_card(model: str, records: Sequence[dict], dataset_ids: Mapping[str, str]) -> ModelCard:
    """A model card whose YAML carries the `model-index` of the model's results (primary metric, percent)."""
    results = []
    for r in records:
        source = r.get("dataset", {})
        results.append(EvalResult(
            task_type=TASK_TYPES.get(r["task"], "zero-shot-image-classification"), task_name=f"{r['benchmark']}/{r['task']}",
            dataset_type=_dataset_id(r, dataset_ids) or f"local/{r['benchmark']}", dataset_name=r["benchmark"],
            dataset_split=source.get("split"), metric_type=r["primary_metric"], metric_name=r["primary_metric"],
            metric_value=round(100 * r["metrics"][r["primary_metric"]], 2),
        ))
    data = ModelCardData(model_name=model, eval_results=results)
    body = f"# Evaluation of {model}\n\nScores from `python -m evaluate_suite` (percent, primary metric per task).\n"
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def eval_result_entries(records: Sequence[dict], dataset_ids: Mapping[str, str]) -> tuple[list[EvalResultEntry],
                                                                                          list[str]]:
    """`.eval_results` entries (primary metric, percent) and the benchmark/task pairs left out for lack of a Hub id."""
    entries, left_out = [], []
    for r in records:
        dataset_id = _dataset_id(r, dataset_ids)
        if not dataset_id:
            left_out.append(f"{r['benchmark']}/{r['task']}")
            continue
        seeds = r.get("config", {}).get("seeds", [])
        notes = f"{r['primary_metric']}; evaluate_suite; seeds {','.join(map(str, seeds))}"
        std = r["metrics"].get(f"{r['primary_metric']}_std")
        if std is not None and len(seeds) > 1:
            notes += f"; std {100 * std:.2f}"
        entries.append(EvalResultEntry(dataset_id=dataset_id, task_id=r["task"],
                                       value=round(100 * r["metrics"][r["primary_metric"]], 2),
                                       date=r.get("created_at"), notes=notes))
    return entries, left_out


def plot_continents(records: Sequence[dict], out_dir: Path) -> list[Path]:
    """One grouped bar chart per (benchmark, task) with a continent breakdown: continents x models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        if "continent" in r.get("breakdowns", {}):
            by_key[(r["benchmark"], r["task"])].append(r)
    paths = []
    for (bench, task), group in sorted(by_key.items()):
        continents = sorted({c for r in group for c in r["breakdowns"]["continent"]["accuracy"]})
        width = 0.8 / len(group)
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(continents) + 2), 4))
        for i, r in enumerate(group):
            acc = r["breakdowns"]["continent"]["accuracy"]
            xs = [j + (i - (len(group) - 1) / 2) * width for j in range(len(continents))]
            bars = ax.bar(xs, [100 * acc.get(c, float("nan")) for c in continents], width,
                          label=_short(r["model"]["id"]))
            # Value labels keep 0% bars (invisible otherwise) readable.
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
        ax.set_xticks(range(len(continents)), continents, rotation=20, ha="right")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 108)  # headroom for the value labels
        ax.set_title(f"{bench} / {task}: accuracy per continent")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / "plots" / f"continents__{safe_name(bench)}__{safe_name(task)}.png"
        save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_confusions(records: Sequence[dict], out_dir: Path) -> list[Path]:
    """One 2x2 twin confusion heatmap per model with a `confusion_matrix` extra (CulTwin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        ax.set_title(f"twin confusion: {_short(r['model']['id'])}", fontsize=9)
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        path = out_dir / "plots" / f"twin_confusion__{safe_name(r['model']['id'])}__{safe_name(r['benchmark'])}.png"
        save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def _short(model_id: str, limit: int = 40) -> str:
    """Last path component of a local checkpoint path (Hub ids kept whole), cut to `limit` characters."""
    name = model_id if model_id.count("/") <= 1 and not model_id.startswith("/") else Path(model_id).name
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


def build_report(results_dir: str | Path, output_dir: str | Path, dataset_ids: Mapping[str, str] | None = None
                 ) -> dict[str, Any]:
    """Write every report artefact for the results under `results_dir`; returns a summary (also report.json)."""
    records = load_results(results_dir)
    dataset_ids = dict(dataset_ids or {})
    out = Path(output_dir)
    written: list[Path] = list(write_table(records, out))
    left_out_all: dict[str, list[str]] = {}
    for model in _models(records):
        mine = [r for r in records if r["model"]["id"] == model]
        folder = out / "models" / safe_name(model)
        card_path = folder / "README.md"
        write_text_atomic(card_path, str(model_index_card(model, mine, dataset_ids)))
        written.append(card_path)
        entries, left_out = eval_result_entries(mine, dataset_ids)
        if left_out:
            left_out_all[model] = left_out
        by_bench: dict[str, list[EvalResultEntry]] = defaultdict(list)
        for entry, record in zip(entries, [r for r in mine if _dataset_id(r, dataset_ids)]):
            by_bench[record["benchmark"]].append(entry)
        for bench, bench_entries in by_bench.items():
            path = folder / ".eval_results" / f"{safe_name(bench)}.yaml"
            write_text_atomic(path, yaml.safe_dump(eval_result_entries_to_yaml(bench_entries), sort_keys=False))
            written.append(path)
    written += plot_continents(records, out)
    written += plot_confusions(records, out)
    summary = {
        "results": len(records), "models": _models(records),
        "eval_results_left_out": left_out_all,  # no Hub dataset id: pass --dataset-id BENCH=ID to include them
        "files": {str(p.relative_to(out)): file_sha256(p) for p in written},
    }
    write_json_atomic(out / "report.json", summary)
    return summary


__all__ = ["build_report", "comparison_rows", "eval_result_entries", "model_index_card", "plot_confusions",
           "plot_continents", "save_figure"]
