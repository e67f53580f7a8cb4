"""The comparison: one row per model (base, released, release-exact, ours), one column per (benchmark, task)
primary metric, as CSV, markdown and a bar plot; plus evaluate_suite's per-model cards.

Only the result records' `benchmark`, `task`, `primary_metric` and `metrics` fields are read, so this keeps working
whatever else evaluate_suite adds to its records.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import ROWS, ReproduceError


def read_records(folder: Path) -> list[dict[str, Any]]:
    """The result JSONs of one model's evaluation folder."""
    records = []
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        missing = [k for k in ("benchmark", "task", "primary_metric", "metrics") if k not in record]
        if missing:
            raise ReproduceError(f"{path}: not an evaluation result (missing {missing})")
        records.append(record)
    return records


def comparison(results: Mapping[str, Sequence[dict[str, Any]]]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: label, description, then the primary metric (a fraction) of every (benchmark, task)."""
    columns: list[tuple[str, str, str]] = []
    for records in results.values():
        for r in records:
            key = (r["benchmark"], r["task"], r["primary_metric"])
            if key not in columns:
                columns.append(key)
    header = ["model", "description"] + [f"{b}/{t} {m}" for b, t, m in columns]
    rows = []
    for label in ROWS:
        if label not in results:
            raise ReproduceError(f"no evaluation results for the {label!r} row")
        by_key = {(r["benchmark"], r["task"], r["primary_metric"]): r["metrics"].get(r["primary_metric"])
                  for r in results[label]}
        rows.append([label, ROWS[label]] + [by_key.get(key) for key in columns])
    return header, rows


def _atomic_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    _atomic_bytes(path, text.encode("utf-8"))


def write_comparison(results: Mapping[str, Sequence[dict[str, Any]]], out: Path,
                     provenance: Mapping[str, Any]) -> dict[str, str]:
    """comparison.csv (fractions), comparison.md (percent, with provenance) and comparison.png."""
    header, rows = comparison(results)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[("" if v is None else v) for v in row] for row in rows])
    _atomic_text(out / "comparison.csv", buffer.getvalue())

    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}"

    lines = ["# CultureCLIP: the authors' release and ours, side by side", "",
             "Primary metric of every benchmark task, in percent (`comparison.csv` has the fractions).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([row[0], row[1]] + [cell(v) for v in row[2:]]) + " |" for row in rows]
    lines += ["", "## Provenance", "", "```json", json.dumps(provenance, indent=1, sort_keys=True), "```", ""]
    _atomic_text(out / "comparison.md", "\n".join(lines))
    plot = _plot(header, rows, out / "comparison.png")
    return {"csv": str(out / "comparison.csv"), "markdown": str(out / "comparison.md"), "plot": plot}


def _plot(header: list[str], rows: list[list[Any]], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = header[2:]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(metrics)), 4.0))
    for i, row in enumerate(rows):
        values = [100 * v if v is not None else 0.0 for v in row[2:]]
        ax.bar([j + i * width for j in range(len(metrics))], values, width, label=row[0])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))])
    ax.set_xticklabels([m.split(" ")[0] for m in metrics], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("primary metric (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    _atomic_bytes(path, png.getvalue())
    return str(path)


__all__ = ["comparison", "read_records", "write_comparison"]
