"""Upload an exported CulTwin folder to the Hub (only the dataset files: README.md, provenance.json, eval.yaml,
data/)."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

ALLOW_PATTERNS = ["README.md", "provenance.json", "eval.yaml", "data/*.parquet"]


def files_to_upload(folder: str | Path) -> list[tuple[str, int]]:
    """(relative path, size in bytes) of every file `push` would upload; raises if the folder is not an export."""
    folder = Path(folder)
    if not (folder / "README.md").exists() or not list((folder / "data").glob("*.parquet")):
        raise FileNotFoundError(f"{folder}: not an exported CulTwin folder (needs README.md and data/*.parquet)")
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and any(fnmatch.fnmatch(rel, pat) for pat in ALLOW_PATTERNS):
            out.append((rel, path.stat().st_size))
    return out


def push(folder: str | Path, repo_id: str, *, private: bool = False, dry_run: bool = False,
         token: str | None = None, commit_message: str = "Upload CulTwin dataset") -> dict[str, Any]:
    """Create the dataset repo if needed and upload the export; with `dry_run`, only list the files."""
    files = files_to_upload(folder)
    result: dict[str, Any] = {"repo_id": repo_id, "files": files, "total_bytes": sum(s for _, s in files)}
    if dry_run:
        return {**result, "uploaded": False}
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                               allow_patterns=ALLOW_PATTERNS, commit_message=commit_message)
    return {**result, "uploaded": True, "repo_url": str(url), "commit": str(getattr(commit, "oid", commit))}
