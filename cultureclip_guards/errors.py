"""One error path for every command line: a known fault becomes one line and an exit status.

The line reads `PROG: error: what is wrong (naming the file, row, field or option and what was expected); what to
do`.

Exit statuses: 0 done, 1 a failure while running (a server that stays down, a rank that never came, a full disk),
2 bad input (arguments, recipes, configs, data, checkpoints, output folders), 3 training diverged (NaN/inf).
A traceback is printed only for exceptions of unexpected types (genuine bugs) or with `--debug` / CULTURECLIP_DEBUG=1.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator, Sequence

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
DEBUG_ENV = "CULTURECLIP_DEBUG"
DEBUG_FLAG = "--debug"


class CommandError(Exception):
    """Base of the project's own errors; `exit_status` says how the command ends, `hint` what to do (optional)."""

    exit_status = EXIT_FAILURE

    def __init__(self, message: str = "", hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class BadInput(CommandError, ValueError):
    """Bad input: an argument, recipe, config, data file, checkpoint or output folder is not what was expected."""

    exit_status = EXIT_BAD_INPUT


class RunFailure(CommandError, RuntimeError):
    """The input was fine but running failed (a server, a peer process, the machine)."""

    exit_status = EXIT_FAILURE


class Diverged(CommandError, RuntimeError):
    """Training produced a non-finite loss or gradient."""

    exit_status = EXIT_DIVERGED


# errno values of OSErrors that mean "this path is not what the command needs": bad input, not a failure
_PATH_ERRNOS = {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTEMPTY,
                errno.ENAMETOOLONG, errno.ELOOP, errno.EROFS}


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _innermost(exc: BaseException) -> BaseException:
    """The deepest cause/context of `exc` (datasets and transformers wrap the real reason)."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def _library_error(exc: BaseException) -> tuple[int, str, str | None] | None:
    """(status, message, hint) for the expected errors of the libraries the project uses, else None."""
    import pickle

    name = type(exc).__name__
    module = type(exc).__module__ or ""
    text = _one_line(exc)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        first = text.split(" Please file an issue")[0].split(" (1) ")[0]
        return (EXIT_BAD_INPUT, f"refused to unpickle a file: {first[:300]}",
                "weights must be safetensors (or a weights-only tensor file); nothing from it was run")
    if module.startswith("yaml"):
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.name}: line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or text
        return EXIT_BAD_INPUT, f"{where}not valid YAML ({_one_line(problem)})", None
    if name == "JSONDecodeError":
        return EXIT_BAD_INPUT, f"not valid JSON: {text}", None
    if name == "SafetensorError" or "safetensors" in module:
        return EXIT_BAD_INPUT, f"not a readable safetensors file: {text}", "the file is truncated or not safetensors"
    if name == "DecompressionBombError":
        return EXIT_BAD_INPUT, f"image too large: {text}", None
    if module.startswith("huggingface_hub"):
        offline = name in ("OfflineModeIsEnabled", "LocalEntryNotFoundError")
        if offline or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
            return (EXIT_BAD_INPUT, f"the Hub cannot be reached (offline): {text[:300]}",
                    "use a local folder instead of a Hub id, or unset HF_HUB_OFFLINE and connect")
        if name in ("RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError", "GatedRepoError",
                    "RemoteEntryNotFoundError", "HFValidationError", "DisabledRepoError"):
            return EXIT_BAD_INPUT, f"{text[:300]}", "check the Hub id (owner/name) and revision, or give a local folder"
        return EXIT_FAILURE, f"Hub request failed: {text[:300]}", None
    if module.startswith("pyarrow") or module.startswith("datasets"):
        inner = _innermost(exc)
        detail = _one_line(inner) if inner is not exc else ""
        return EXIT_BAD_INPUT, f"cannot read the data: {text[:300]}" + (f" ({detail[:300]})" if detail else ""), None
    if module.startswith("PIL"):
        return EXIT_BAD_INPUT, f"not a readable image: {text}", None
    return None


def describe(exc: BaseException) -> tuple[int, str, str | None] | None:
    """(exit status, message, hint) for a known fault, or None for an unexpected exception (a bug)."""
    if isinstance(exc, CommandError):
        return exc.exit_status, _one_line(exc), exc.hint
    known = _library_error(exc)
    if known is not None:
        return known
    if isinstance(exc, ConnectionError):
        return EXIT_FAILURE, f"connection failed: {_one_line(exc)}", None
    if isinstance(exc, TimeoutError):
        return EXIT_FAILURE, _one_line(exc), None
    if isinstance(exc, OSError):
        path = exc.filename
        reason = exc.strerror or _one_line(exc)
        message = f"{path}: {reason}" if path is not None else _one_line(exc)
        bad_path = exc.errno in _PATH_ERRNOS or exc.errno is None  # no errno: a library's "cannot find X"
        return (EXIT_BAD_INPUT if bad_path else EXIT_FAILURE), message, None
    if isinstance(exc, ValueError):  # the project's (and pyarrow's, json's) way of saying "this input is wrong"
        return EXIT_BAD_INPUT, _one_line(exc), None
    return None


@contextlib.contextmanager
def naming(prefix: str) -> Iterator[None]:
    """Re-raise a known bad-input fault of the block as one BadInput starting with `prefix` (e.g. "model X"), so
    a library's message (offline Hub, truncated file) says what it was about; bugs and failures pass unchanged."""
    try:
        yield
    except CommandError:
        raise
    except Exception as error:  # noqa: BLE001 - sorted by describe() right here
        known = describe(error)
        if known is None or known[0] != EXIT_BAD_INPUT:
            raise
        _, message, hint = known
        raise BadInput(f"{prefix}: {message}", hint=hint) from None


def debug_enabled(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "0") not in ("0", "", "false")


def run_command(prog: str, body: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run `body(argv)` (argv without `--debug`) and turn known faults into `prog: error: ...` and their status.

    `--debug` anywhere on the command line, or CULTURECLIP_DEBUG=1, lets every exception through with its traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(args)
    args = [a for a in args if a != DEBUG_FLAG]
    if debug:
        return int(body(args) or 0)
    try:
        return int(body(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished work is kept (rerun the same command to continue where it resumes)",
              file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - sorted into known faults and bugs right here
        known = describe(exc)
        if known is None:
            raise  # a genuine bug: Python prints the traceback
        status, message, hint = known
        label = "training stopped" if status == EXIT_DIVERGED else "error"
        print(f"{prog}: {label}: {message}" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return status


__all__ = ["BadInput", "CommandError", "DEBUG_ENV", "Diverged", "EXIT_BAD_INPUT", "EXIT_DIVERGED", "EXIT_FAILURE",
           "RunFailure", "debug_enabled", "describe", "naming", "run_command"]
