"""Atomic writes (temp file or folder in the same place, then one rename) and reads that name the file on error.

A killed process leaves either the previous file/folder or the complete new one, never half of one. fsync makes a
write survive a power loss too; CULTURECLIP_FSYNC=0 (or the older DATASET_BUILDER_FSYNC=0) skips it on throwaway
runs such as tests (os.replace is atomic against a kill either way).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import BadInput


def _fsync_enabled() -> bool:
    return os.environ.get("CULTURECLIP_FSYNC", os.environ.get("DATASET_BUILDER_FSYNC", "1")) != "0"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if _fsync_enabled():
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, sort_keys: bool = True, indent: int = 1) -> None:
    """Atomically write `obj` as UTF-8 JSON (sorted keys by default: stable bytes for checksums)."""
    text = json.dumps(obj, ensure_ascii=False, sort_keys=sort_keys, indent=indent)
    atomic_write_text(path, text if indent == 1 else text + "\n")


def atomic_dir(target: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Write a folder through `write(temporary)` and put it in place of `target`.

    The previous `target` is first renamed aside (never deleted before the new one is complete), so a kill at any
    point leaves a readable version: the old one, or the new one; a leftover `.old-<name>` beside a missing target
    is restored by the next call.
    """
    target = Path(target)
    temporary = target.with_name(f".tmp-{target.name}")
    retired = target.with_name(f".old-{target.name}")
    if retired.exists() and not target.exists():  # killed between the two renames of replace_dir: put it back
        os.replace(retired, target)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    write(temporary)
    return replace_dir(temporary, target)


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put the complete folder `new` in place of `target`: the old one is renamed aside, never deleted first."""
    new, target = Path(new), Path(target)
    retired = target.with_name(f".old-{target.name}")
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists() or target.is_symlink():
        os.replace(target, retired)
    os.replace(new, target)
    shutil.rmtree(retired, ignore_errors=True)
    return target


def publish_entries(staging: str | os.PathLike, target: str | os.PathLike, entries: tuple[str, ...],
                    retired: str | os.PathLike, required: bool = True) -> None:
    """Move finished `entries` (files or folders) from `staging` into `target`, each by one rename, retiring the
    previous ones into `retired` first and deleting them only at the end.

    A kill leaves every entry either old or new; `restore_entries(target, entries, retired)` (run at the start of
    the next attempt) puts back an old entry whose new one never arrived.
    """
    staging, target, retired = Path(staging), Path(target), Path(retired)
    shutil.rmtree(retired, ignore_errors=True)
    retired.mkdir(parents=True)
    for name in entries:
        new, old = staging / name, target / name
        if not new.exists():
            if required:
                raise FileNotFoundError(f"the run did not write {new}")
            continue
        if old.exists() or old.is_symlink():
            os.replace(old, retired / name)
        os.replace(new, old)
    shutil.rmtree(retired, ignore_errors=True)


def restore_entries(target: str | os.PathLike, entries: tuple[str, ...], retired: str | os.PathLike) -> list[str]:
    """After a kill inside `publish_entries`: move retired entries back where no new one took their place."""
    target, retired = Path(target), Path(retired)
    restored = []
    for name in entries:
        if (retired / name).exists() and not (target / name).exists():
            os.replace(retired / name, target / name)
            restored.append(name)
    shutil.rmtree(retired, ignore_errors=True)
    return restored


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file; a missing or malformed one raises BadInput naming the file, line and column."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: {what} does not exist") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: {what} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
                       ) from None


def read_yaml(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """Read a YAML file with safe_load; a malformed one raises BadInput naming the file, line and column."""
    import yaml

    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise BadInput(f"{path}: {what} does not exist") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: {what} is a folder, expected a file") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise BadInput(f"{path}: {what} is not valid YAML ({' '.join(str(problem).split())}{where})") from None


def load_weights_only(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`, with a refusal naming the file when it holds pickled objects.

    torch's weights-only unpickler refuses any global it does not allow before creating it, so nothing from a
    malicious file runs; this only turns its refusal (and a truncated file) into one line.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise BadInput(f"{path}: holds pickled Python objects, not only tensors; refused without running it",
                       hint="weights must be safetensors or a weights-only tensor file") from None
    except (EOFError, RuntimeError) as exc:
        raise BadInput(f"{path}: not a readable tensor file ({' '.join(str(exc).split())[:200]})") from None


__all__ = ["replace_dir", "publish_entries", "restore_entries", "atomic_dir", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "load_weights_only",
           "read_json", "read_yaml"]
