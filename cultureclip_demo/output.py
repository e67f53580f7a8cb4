"""The demo's output folder: what it may write into, and how a finished run replaces the previous one.

A run writes everything into a fresh staging folder inside the output folder and, only once it has finished, moves
its `work/`, `results/` and `hub/` into place (each by one rename) and writes a marker file saying the demo made
them. So a run that fails or is killed leaves the previous results as they were, and a new run never leaves files
of an older one (a 5-seed record beside a 2-seed summary) behind. A folder holding anything the demo did not make is
refused unless the user passes `--overwrite`; even then only the demo's own entries are replaced.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from pathlib import Path

from cultureclip_guards import BadInput, refuse_foreign
from cultureclip_guards.files import atomic_write_json, publish_entries

MARKER = "cultureclip-demo.json"
ENTRIES = ("work", "results", "hub")
STAGING_PREFIX = ".staging-"


class DemoOutputError(BadInput):
    """The output folder cannot be used as asked."""


def _staging_pid(name: str) -> int | None:
    tail = name[len(STAGING_PREFIX):]
    return int(tail) if name.startswith(STAGING_PREFIX) and tail.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Raise DemoOutputError when `out` is not a folder the demo may write into."""
    if out.exists() and not out.is_dir():
        raise DemoOutputError(f"--output-dir {out}: exists and is not a folder")
    if not out.exists():
        return
    entries = {p.name for p in out.iterdir()}
    busy = [name for name in entries if (pid := _staging_pid(name)) is not None and pid != os.getpid() and _alive(pid)]
    if busy:
        raise DemoOutputError(f"--output-dir {out}: another demo run (process {busy[0][len(STAGING_PREFIX):]}) is "
                              "writing into it")
    ours = (set(ENTRIES) | {MARKER} if MARKER in entries else set()) | {n for n in entries if _staging_pid(n)}
    try:
        refuse_foreign(out, ours, made_by="the demo", overwrite=overwrite,
                       hint="choose an empty or new folder, or pass --overwrite to replace the demo's entries "
                            f"({', '.join(ENTRIES)}) there")
    except BadInput as error:
        raise DemoOutputError(str(error), hint=error.hint) from None


def start_staging(out: Path) -> Path:
    """A fresh staging folder for this run (stale ones of dead runs are removed first)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in out.iterdir():
        pid = _staging_pid(path.name)
        if pid is not None and (pid == os.getpid() or not _alive(pid)):
            shutil.rmtree(path, ignore_errors=True)
    staging = out / f"{STAGING_PREFIX}{os.getpid()}"
    staging.mkdir()
    return staging


def publish(staging: Path, out: Path, info: dict) -> None:
    """Move the finished run's entries from `staging` into `out`, replacing the previous ones, and write the
    marker last."""
    publish_entries(staging, out, ENTRIES, staging / "previous")
    marker = {"made_by": "cultureclip-demo", "entries": list(ENTRIES),
              "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **info}
    atomic_write_json(out / MARKER, marker, sort_keys=False, indent=2)
    shutil.rmtree(staging, ignore_errors=True)


__all__ = ["DemoOutputError", "ENTRIES", "MARKER", "check_output_dir", "publish", "start_staging"]
