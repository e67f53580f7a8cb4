"""Upload an exported CulTwin folder to the Hub (only the dataset files: README.md, provenance.json, eval.yaml,
data/)."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from cultureclip_guards import BadInput

ALLOW_PATTERNS = ["README.md", "provenance.json", "eval.yaml", "data/*.parquet"]


def files_to_upload(folder: str | Path) -> list[tuple[str, int]]:
    """(relative path, size in bytes) of every file `push` would upload; raises if the folder is not an export."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"{folder}: no such folder (expected an exported CulTwin folder)")
    if not (folder / "README.md").exists() or not list((folder / "data").glob("*.parquet")):
        raise BadInput(f"{folder}: not an exported CulTwin folder (needs README.md and data/*.parquet)")
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and any(fnmatch.fnmatch(rel, pat) for pat in ALLOW_PATTERNS):
            out.append((rel, path.stat().st_size))
    return out


def check_repo_id(repo_id: str) -> None:
    """Raise BadInput unless `repo_id` is a valid Hub repo id of the form owner/name."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise BadInput(f"--repo-id {repo_id!r}: not a valid Hub repo id ({' '.join(str(error).split())[:200]})",
                       hint="use owner/name with letters, digits, '-', '_' and '.', e.g. me/cultwin") from None
    if "/" not in repo_id:
        raise BadInput(f"--repo-id {repo_id!r}: expected owner/name (e.g. me/cultwin)")


def push(folder: str | Path, repo_id: str, *, private: bool = False, dry_run: bool = False,
         token: str | None = None, commit_message: str = "Upload CulTwin dataset") -> dict[str, Any]:
    """Create the dataset repo if needed and upload the export; with `dry_run`, only list the files.

    The repo id is checked with huggingface_hub's own validator and the offline switch before anything is sent.
    """
    check_repo_id(repo_id)
    files = files_to_upload(folder)
    result: dict[str, Any] = {"repo_id": repo_id, "files": files, "total_bytes": sum(s for _, s in files)}
    if dry_run:
        return {**result, "uploaded": False}
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    except OfflineModeIsEnabled:
        raise BadInput(f"push {folder} -> {repo_id}: the Hub is offline here (HF_HUB_OFFLINE is set); nothing was "
                       "uploaded", hint="unset HF_HUB_OFFLINE on a machine with network, or use --dry-run to list "
                                        "the files") from None
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                               allow_patterns=ALLOW_PATTERNS, commit_message=commit_message)
    return {**result, "uploaded": True, "repo_url": str(url), "commit": str(getattr(commit, "oid", commit))}
