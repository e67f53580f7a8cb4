"""Output-folder guards: a command writes only into a new or empty folder, or one it made itself, unless the user
passes `--overwrite`; the refusal says what the folder holds."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import BadInput


class OutputInUse(BadInput):
    """The output folder holds something this command did not make for this run."""


def describe_folder(folder: Path) -> str:
    """A few words on what a folder holds: a dataset export, a model, a training run, results, or its entries."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    kinds = []
    if "run" in names and (folder / "run" / "manifest.json").is_file():
        kinds.append("a CulTwin build")
    elif "data" in names and ("README.md" in names or "dataset_info.json" in names):
        kinds.append("a dataset export")
    if "dataset_info.json" in names or "state.json" in names:
        kinds.append("a saved dataset")
    if "config.json" in names and any(n.endswith((".safetensors", ".bin")) for n in names):
        kinds.append("a model folder")
    if "checkpoints" in names or "metrics.jsonl" in names:
        kinds.append("a training run")
    if any(n.endswith(".json") for n in names) and not kinds:
        kinds.append("JSON files")
    shown = sorted(names)
    listing = ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
    return (" and ".join(kinds) + f" ({listing})") if kinds else listing


def refuse_foreign(folder: str | os.PathLike, ours: Iterable[str] = (), *, option: str = "--output-dir",
                   made_by: str = "this command", overwrite: bool = False, hint: str | None = None) -> list[str]:
    """Raise OutputInUse when `folder` is a file, or holds entries other than `ours` and `overwrite` is off.

    Returns the foreign entries (empty when the folder is new, empty or only holds `ours`).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputInUse(f"{option} {folder}: exists and is a file, expected a folder")
    if not folder.exists():
        return []
    own = set(ours)
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in own)
    if foreign and not overwrite:
        raise OutputInUse(f"{option} {folder}: holds {describe_folder(folder)}, not made by {made_by}; refusing to "
                          "write over it",
                          hint=hint or "choose a new or empty folder, or pass --overwrite to replace it")
    return foreign


__all__ = ["OutputInUse", "describe_folder", "refuse_foreign"]
