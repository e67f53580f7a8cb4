"""Where a benchmark's rows come from: a Hub dataset id (one split fetched, revision resolved) or a local folder, in
either the parquet layout (Hub-native: `data/{split}-*.parquet` + card, or the card's `configs:`) or the
CLIP_benchmark webdataset layout; with the provenance every result record carries.

Only the requested split's files are fetched from the Hub (through `hub.fetch_hub_snapshot`, the one network seam);
a repo that is still a loading script gets one error naming the copies that work.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import yaml

from . import hub
from .errors import EvalDataError
from .webdataset import ROOT_FILES, WdsMeta, is_webdataset_folder, load_webdataset_split, read_meta

DATA_EXTENSIONS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".csv": "csv"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

# Copies that load with `datasets` >= 4 (parquet or webdataset) for benchmarks whose best-known Hub copy is a
# loading script; named in the loading-script error.
ALTERNATIVES = {
    "nlphuji/flickr30k": "clip-benchmark/wds_flickr30k (webdataset; its test split is the Karpathy 1k test set)",
    "nlphuji/dollar_street_test": "clip-benchmark/wds_dollar_street (webdataset)",
    "ILSVRC/imagenet-1k": "clip-benchmark/wds_imagenet1k (webdataset; its test split is the ImageNet validation "
                          "set)",
}


@dataclass
class BenchmarkData:
    """One loaded split and where it came from."""

    dataset: datasets.Dataset
    provenance: dict[str, Any]
    wds: WdsMeta | None = None
    skipped: dict[str, int] = field(default_factory=dict)  # rows/lines the loader left out, by reason


def is_hub_id(source: str) -> bool:
    """Whether `source` has the form of a Hub repo id (`owner/name`) and is not an existing local path."""
    return bool(_HUB_ID.match(source)) and not os.path.exists(source)


# -- card configs ------------------------------------------------------------------------------------------------
def card_data_files(root: Path) -> dict[str, list[str]] | None:
    """{split: [patterns]} of the default config in README.md's `configs:`, or None without a card config."""
    card = root / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.S)
    if not match:
        return None
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        return None
    configs = meta.get("configs") if isinstance(meta, dict) else None
    if not isinstance(configs, list) or not configs:
        return None
    chosen = next((c for c in configs if isinstance(c, dict) and c.get("default")), None) or next(
        (c for c in configs if isinstance(c, dict) and c.get("config_name") == "default"), configs[0])
    files = chosen.get("data_files") if isinstance(chosen, dict) else None
    out: dict[str, list[str]] = {}
    if isinstance(files, str):
        out["train"] = [files]
    elif isinstance(files, dict):
        out = {s: [p] if isinstance(p, str) else list(p) for s, p in files.items()}
    elif isinstance(files, list):
        for item in files:
            if isinstance(item, str):
                out.setdefault("train", []).append(item)
            elif isinstance(item, dict) and "split" in item:
                paths = item.get("path", [])
                out.setdefault(item["split"], []).extend([paths] if isinstance(paths, str) else paths)
    return out or None


def default_split_patterns(split: str) -> list[str]:
    """Where the Hub looks for a split's files when the card names none (a subset of `datasets`' own patterns)."""
    return [f"data/{split}-*", f"data/{split}.*", f"data/{split}/**/*", f"{split}-*", f"{split}.*",
            f"{split}/**/*", f"*/{split}-*", f"*/{split}/**/*"]


def _glob(root: Path, patterns: list[str]) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in DATA_EXTENSIONS)
    return sorted(found)


def _loading_scripts(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("*.py"))


def loading_script_error(benchmark: str, source: str, scripts: list[str]) -> EvalDataError:
    """The one error for a repo or folder whose only loader is a Python script."""
    alternative = ALTERNATIVES.get(source)
    hint = (f"use {alternative}" if alternative else
            "use a copy in parquet (Hub-native: data/{split}-*.parquet + card) or in the CLIP_benchmark webdataset "
            "layout")
    return EvalDataError(benchmark, f"{source!r} is a dataset loading script ({', '.join(scripts)}), which datasets "
                                    f">= 4 no longer runs and this suite never executes; {hint} "
                                    f"(--hub-dataset {benchmark}=ID or --data-dir {benchmark}=PATH)")


# -- fingerprints ------------------------------------------------------------------------------------------------
def _file_digest(path: Path) -> str:
    # Hub cache files are symlinks to blobs named by their sha256 (LFS files): no need to re-read gigabytes.
    if path.is_symlink():
        target = Path(os.readlink(path))
        if target.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", target.name):
            return target.name
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_fingerprint(root: Path, files: list[Path]) -> dict[str, Any]:
    """sha256 over (relative path, sha256 of content) of every file read, and the per-file list."""
    entries = sorted((str(p.relative_to(root)), _file_digest(p)) for p in files)
    overall = hashlib.sha256("\n".join(f"{n}\t{d}" for n, d in entries).encode()).hexdigest()
    return {"fingerprint": overall, "files": [{"path": n, "sha256": d} for n, d in entries]}


# -- loading -----------------------------------------------------------------------------------------------------
def _load_files(files: list[Path], split: str, benchmark: str) -> datasets.Dataset:
    kinds = {DATA_EXTENSIONS[p.suffix.lower()] for p in files}
    if len(kinds) != 1:
        raise EvalDataError(benchmark, f"split {split!r} mixes file types {sorted(kinds)}")
    try:
        return datasets.load_dataset(kinds.pop(), data_files={split: [str(p) for p in files]}, split=split)
    except (ValueError, OSError, datasets.exceptions.DatasetsError) as err:
        raise EvalDataError(benchmark, f"cannot read split {split!r} "
                                       f"({type(err).__name__}: {str(err).splitlines()[0]})") from err


def load_folder(root: Path, split: str, benchmark: str, source: str | None = None) -> BenchmarkData:
    """One split of a local folder (webdataset or data-file layout), with a content fingerprint of what was read."""
    source = source or str(root)
    if is_webdataset_folder(root, split):
        meta = read_meta(root, split, benchmark)
        dataset = load_webdataset_split(meta, benchmark)
        skipped = {}
        if "blank_caption_lines" in dataset.column_names:
            blank = int(sum(dataset["blank_caption_lines"]))
            if blank:
                skipped["blank_caption_lines"] = blank
        read = meta.files_read()
        layout = "webdataset"
        data = BenchmarkData(dataset, {}, wds=meta, skipped=skipped)
    else:
        configs = card_data_files(root)
        if configs is not None and split not in configs:
            raise EvalDataError(benchmark, f"the card's configs have no split {split!r} "
                                           f"(splits: {sorted(configs)})")
        files = _glob(root, configs[split] if configs else default_split_patterns(split))
        if files:
            dataset = _load_files(files, split, benchmark)
            read = files + [p for p in (root / "README.md",) if p.is_file()]
            layout = DATA_EXTENSIONS[files[0].suffix.lower()]
        else:
            scripts = _loading_scripts(root)
            if scripts:
                raise loading_script_error(benchmark, source, scripts)
            dataset, read, layout = _load_other_layout(root, split, benchmark, source)
        data = BenchmarkData(dataset, {})
    data.provenance = {"layout": layout, "split": split, "rows": len(data.dataset),
                       **content_fingerprint(root, read)}
    return data


def _load_other_layout(root: Path, split: str, benchmark: str, source: str
                       ) -> tuple[datasets.Dataset, list[Path], str]:
    """A local folder in another layout `datasets` reads itself (e.g. imagefolder: one sub-folder per class)."""
    try:
        builder = datasets.load_dataset_builder(str(root))
        files = builder.config.data_files.get(split) if builder.config.data_files else None
        if not files:
            raise FileNotFoundError(f"no files for split {split!r}")
        dataset = datasets.load_dataset(builder.name, data_files={split: list(files)}, split=split)
    except (RuntimeError, FileNotFoundError, ValueError, datasets.exceptions.DatasetsError) as err:
        present = sorted({p.stem.split("-")[0] for p in _glob(root, ["**/*"])})
        raise EvalDataError(benchmark, f"no data for split {split!r} (found splits: {present or 'none'}; "
                                       f"expected {split}/*.tar shards, data/{split}-*.parquet, the card's configs or "
                                       f"a layout datasets reads: {str(err).splitlines()[0] if str(err) else err})"
                            ) from err
    return dataset, sorted(Path(f) for f in files), builder.name


def _hub_split_patterns(root: Path, split: str, benchmark: str, repo_id: str) -> list[str]:
    if (root / split / "nshards.txt").is_file() or any((root / name).is_file() for name in ROOT_FILES):
        return [f"{split}/*.tar", f"{split}/nshards.txt"]
    configs = card_data_files(root)
    if configs is not None:
        if split not in configs:
            raise EvalDataError(benchmark, f"the card's configs have no split {split!r} "
                                           f"(splits: {sorted(configs)})")
        return configs[split]
    scripts = _loading_scripts(root)
    if scripts:
        raise loading_script_error(benchmark, repo_id, scripts)
    # `fnmatch` patterns as the Hub's allow_patterns uses them (`*` also matches `/`).
    return [f"*{split}-*{ext}" for ext in DATA_EXTENSIONS] + [f"*{split}/*{ext}" for ext in DATA_EXTENSIONS] + \
        [f"*{split}{ext}" for ext in DATA_EXTENSIONS]


def load_hub(repo_id: str, split: str, benchmark: str, revision: str | None = None) -> BenchmarkData:
    """One split of a Hub dataset: root files first (card, webdataset root files, scripts) to learn the layout, then
    only the split's files, both at the same resolved commit."""
    root_patterns = ["README.md", "*.py", *ROOT_FILES, f"{split}/nshards.txt"]
    try:
        root, commit = hub.fetch_hub_snapshot(repo_id, revision, root_patterns)
        patterns = _hub_split_patterns(Path(root), split, benchmark, repo_id)
        folder, second = hub.fetch_hub_snapshot(repo_id, commit, patterns)
    except hub.HubFetchError as err:
        raise EvalDataError(benchmark, str(err)) from err
    if second != commit:
        raise EvalDataError(benchmark, f"revision moved from {commit} to {second} while fetching")
    data = load_folder(Path(folder), split, benchmark, source=repo_id)
    fetched = [p for p in Path(folder).rglob("*") if p.is_file()]
    unexpected = [str(p.relative_to(folder)) for p in fetched
                  if not any(fnmatch.fnmatch(str(p.relative_to(folder)), pat) for pat in root_patterns + patterns)]
    data.provenance = {"kind": "hub", "id": repo_id, "name": repo_id, "revision": commit,
                       "requested_revision": revision,
                       "allow_patterns": patterns, **data.provenance}
    if unexpected:
        data.provenance["other_cached_files"] = len(unexpected)  # an earlier fetch of this commit left them
    return data


def load_benchmark_data(source: str, split: str, benchmark: str, revision: str | None = None) -> BenchmarkData:
    """One split of `source` (local folder or Hub id) with provenance: kind, id+revision or path, layout, split,
    rows, content fingerprint and the files read. Every EvalDataError names `source`."""
    try:
        return _load(source, split, benchmark, revision)
    except EvalDataError as err:
        raise err.with_source(source) from err.__cause__


def _load(source: str, split: str, benchmark: str, revision: str | None) -> BenchmarkData:
    if os.path.isdir(source):
        data = load_folder(Path(source), split, benchmark)
        data.provenance = {"kind": "local", "path": source, "name": Path(os.path.abspath(source)).name,
                           **data.provenance}
        return data
    if is_hub_id(source):
        return load_hub(source, split, benchmark, revision)
    raise EvalDataError(benchmark, f"{source!r} is neither a local folder nor a Hub dataset id (owner/name)")


__all__ = ["ALTERNATIVES", "BenchmarkData", "card_data_files", "content_fingerprint", "default_split_patterns",
           "is_hub_id", "load_benchmark_data", "load_folder", "load_hub", "loading_script_error"]
