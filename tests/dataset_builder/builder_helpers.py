"""Shared helpers for the dataset_builder tests (offline)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DATASET_BUILDER_FSYNC", "0")  # kills need no fsync; it only guards against power loss
REPO = Path(__file__).resolve().parents[2]


def run_cli(args: list[str], env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    """Run `python -m dataset_builder ...` in a fresh process from the repo root."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "dataset_builder", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, **kw)


def rows_fingerprint(folder: Path) -> dict[str, list[dict]]:
    """All exported rows per split with image bytes replaced by their sha256 (order as stored)."""
    import pyarrow.parquet as pq

    out: dict[str, list[dict]] = {}
    for split in ("train", "validation", "test"):
        rows = []
        for f in sorted((folder / "data").glob(f"{split}-*.parquet")):
            for row in pq.read_table(f).to_pylist():
                for key in ("image", "twin_image"):
                    row[key] = hashlib.sha256(row[key]["bytes"]).hexdigest()
                rows.append(row)
        out[split] = rows
    return out


@pytest.fixture(scope="session")
def reference_build(tmp_path_factory) -> Path:
    """An uninterrupted demo build (4 pairs, seed 7) made through the CLI."""
    out = tmp_path_factory.mktemp("reference") / "cultwin"
    res = run_cli(["build", "--recipe", "demo", "--output-dir", str(out), "--limit-pairs", "4", "--seed", "7",
                   "--no-progress"])
    assert res.returncode == 0, res.stderr
    return out
