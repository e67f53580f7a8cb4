"""Shared by the table-driven CLI fault tests: run a command's `main(argv)` in-process (or as a real subprocess),
hash the trees it must not touch, and check the one-line refusal."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests" / "training"), str(REPO / "tests" / "evaluate_suite")]


@dataclass
class Outcome:
    status: int
    out: str
    err: str


@dataclass
class Case:
    """One bad input: the arguments (built from the fixture paths), the exit status and what the message names."""

    name: str
    category: str
    argv: Callable[[dict], list[str]]
    status: int
    names: tuple[str, ...]
    setup: Callable[[dict], None] | None = None
    env: dict[str, str] = field(default_factory=dict)


def tree_hashes(roots: Iterable[Path]) -> dict[str, str]:
    """sha256 of every file under `roots` (files or folders), by path; folders that do not exist hash to nothing."""
    hashes = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        for path in files:
            hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def run_main(main: Callable[[list[str]], int], argv: list[str], env: dict[str, str] | None = None) -> Outcome:
    """`main(argv)` with stdout/stderr captured; argparse's SystemExit becomes the status."""
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else 2
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Outcome(int(status or 0), out.getvalue(), err.getvalue())


def run_process(command: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> Outcome:
    """A real subprocess from the repository root (the console path: `python -m ...`, `python train.py`)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    done = subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    return Outcome(done.returncode, done.stdout, done.stderr)


def error_lines(err: str) -> list[str]:
    """The command's own message lines: `PROG: error: ...`, `PROG: training stopped: ...` or argparse's `usage:`."""
    return [line for line in err.splitlines() if ": error: " in line or "training stopped:" in line]


def check_refusal(outcome: Outcome, status: int, names: Iterable[str], before: dict[str, str],
                  after: dict[str, str]) -> None:
    """Exit status, a message naming what is wrong, no traceback, and every pre-existing file byte-identical."""
    assert outcome.status == status, (outcome.status, outcome.err[-2000:])
    assert "Traceback" not in outcome.err, outcome.err[-3000:]
    lines = error_lines(outcome.err)
    assert len(lines) == 1, outcome.err[-2000:]
    for name in names:
        assert name in lines[0], (name, lines[0])
    changed = sorted(path for path, digest in before.items() if after.get(path) != digest)
    assert not changed, f"files changed or removed: {changed}"


def run_case(main: Callable[[list[str]], int], case: Case, paths: dict, guarded: Iterable[Path]) -> Outcome:
    """Set up, hash, run in-process, hash again and check."""
    if case.setup is not None:
        case.setup(paths)
    guarded = list(guarded)
    before = tree_hashes(guarded)
    outcome = run_main(main, case.argv(paths), case.env)
    check_refusal(outcome, case.status, [n.format(**{k: str(v) for k, v in paths.items()}) for n in case.names],
                  before, tree_hashes(guarded))
    return outcome


__all__ = ["Case", "Outcome", "REPO", "check_refusal", "error_lines", "run_case", "run_main", "run_process",
           "tree_hashes"]
