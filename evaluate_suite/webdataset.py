"""Reading a CLIP_benchmark webdataset folder (the layout of the `clip-benchmark/wds_*` Hub repos).

Layout, as CLIP_benchmark's `build_wds_dataset` reads it::

    classnames.txt                          one class name per line (classification)
    zeroshot_classification_templates.txt   one template per line, `{c}` for the class name
    dataset_type.txt                        "retrieval", "multilabel", or absent (= classification)
    {split}/nshards.txt                     number of shards n
    {split}/0.tar ... {split}/{n-1}.tar     samples: `{key}.webp` (or .png/.jpg/.jpeg) and `{key}.cls` (int) or
                                            `{key}.txt` (captions joined by newlines); optional `{key}.npy`

`datasets.load_dataset` on such a repo yields the per-sample fields but drops the root files, so class names and
templates are read here and applied: the label becomes a ClassLabel with the root class names. Only `.npy` among
the array formats is decoded (numpy, `allow_pickle=False`); pickles are never loaded.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from .errors import EvalDataError

IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
ROOT_FILES = ("classnames.txt", "zeroshot_classification_templates.txt", "dataset_type.txt")
_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's key/extension split: key up to the first dot


@dataclass
class WdsMeta:
    """The root files of a webdataset folder and the shards of one split."""

    root: Path
    split: str
    dataset_type: str = "classification"
    classnames: list[str] | None = None
    templates: list[str] | None = None
    shards: list[Path] = field(default_factory=list)

    def files_read(self) -> list[Path]:
        """Every file the loader reads (root files present, nshards.txt, shards), for the content fingerprint."""
        out = [self.root / name for name in ROOT_FILES if (self.root / name).is_file()]
        nshards = self.root / self.split / "nshards.txt"
        return out + ([nshards] if nshards.is_file() else []) + list(self.shards)


def is_webdataset_folder(root: Path, split: str) -> bool:
    """Whether `root` holds a CLIP_benchmark webdataset split (`{split}/nshards.txt` or `{split}/*.tar`)."""
    split_dir = root / split
    return (split_dir / "nshards.txt").is_file() or any(split_dir.glob("*.tar"))


def _lines(path: Path, benchmark: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise EvalDataError(benchmark, f"{path}: not UTF-8 text ({err})") from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_meta(root: Path, split: str, benchmark: str) -> WdsMeta:
    """Root files and the split's shard list; EvalDataError naming the file for anything inconsistent."""
    meta = WdsMeta(root=root, split=split)
    type_file = root / "dataset_type.txt"
    if type_file.is_file():
        meta.dataset_type = (_lines(type_file, benchmark) or ["classification"])[0].lower()
    if (root / "classnames.txt").is_file():
        meta.classnames = _lines(root / "classnames.txt", benchmark)
    if (root / "zeroshot_classification_templates.txt").is_file():
        meta.templates = _lines(root / "zeroshot_classification_templates.txt", benchmark)
    split_dir = root / split
    nshards_file = split_dir / "nshards.txt"
    if nshards_file.is_file():
        text = nshards_file.read_text(encoding="utf-8").strip()
        if not text.isdigit() or int(text) < 1:
            raise EvalDataError(benchmark, f"{nshards_file}: expected a positive shard count, got {text!r}")
        meta.shards = [split_dir / f"{i}.tar" for i in range(int(text))]
        missing = [p.name for p in meta.shards if not p.is_file()]
        if missing:
            raise EvalDataError(benchmark, f"{nshards_file} announces {text} shards but {split_dir} lacks "
                                           f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
    else:
        meta.shards = sorted(split_dir.glob("*.tar"), key=lambda p: (len(p.stem), p.stem))
    if not meta.shards:
        raise EvalDataError(benchmark, f"{split_dir}: no .tar shards for split {split!r}")
    if meta.dataset_type not in ("classification", "retrieval"):
        raise EvalDataError(benchmark, f"{type_file}: dataset type {meta.dataset_type!r} is not supported "
                                       "(classification or retrieval)")
    if meta.dataset_type == "classification" and not meta.classnames:
        raise EvalDataError(benchmark, f"{root / 'classnames.txt'}: a classification webdataset needs its class "
                                       "names file")
    return meta


def _samples(shard: Path, shard_name: str, benchmark: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample, in archive order; members of one sample must be consecutive."""
    try:
        archive = tarfile.open(shard, mode="r:*")
    except (tarfile.TarError, OSError) as err:
        raise EvalDataError(benchmark, f"shard {shard_name}: not a readable tar archive ({err})") from err
    with archive:
        key, fields, seen = None, {}, set()
        for member in archive:
            if not member.isfile():
                continue
            match = _KEY.match(member.name)
            if not match:
                continue
            member_key, extension = match.group(1), match.group(2).lower()
            if member_key != key:
                if key is not None:
                    yield key, fields
                if member_key in seen:
                    raise EvalDataError(benchmark, f"shard {shard_name}: sample {member_key!r} is split across "
                                                   "non-consecutive tar members")
                seen.add(member_key)
                key, fields = member_key, {}
            handle = archive.extractfile(member)
            assert handle is not None
            fields[extension] = handle.read()
        if key is not None:
            yield key, fields


def _generate(shards: list[str], shard_names: list[str], benchmark: str, dataset_type: str, n_classes: int,
              signature: list) -> Iterator[dict]:
    """Rows of the split (a `Dataset.from_generator` generator; `signature` only keys the cache)."""
    row = 0
    for shard, shard_name in zip(shards, shard_names):
        for key, fields in _samples(Path(shard), shard_name, benchmark):
            where = f"shard {shard_name}, sample {key!r}"
            image_ext = next((e for e in IMAGE_EXTENSIONS if e in fields), None)
            if image_ext is None:
                raise EvalDataError(benchmark, f"{where}: no image (expected one of "
                                               f"{', '.join('.' + e for e in IMAGE_EXTENSIONS)}; has "
                                               f"{sorted(fields)})", row=row, field="image")
            out = {"__key__": key, "__url__": shard_name,
                   "image": {"bytes": fields[image_ext], "path": f"{key}.{image_ext}"}}
            if dataset_type == "retrieval":
                if "txt" not in fields:
                    raise EvalDataError(benchmark, f"{where}: no .txt captions", row=row, field="txt")
                text = fields["txt"].decode("utf-8", errors="strict")
                lines = text.splitlines()
                out["captions"] = [line.strip() for line in lines if line.strip()]
                out["blank_caption_lines"] = len(lines) - len(out["captions"])
            else:
                if "cls" not in fields:
                    raise EvalDataError(benchmark, f"{where}: no .cls label", row=row, field="cls")
                text = fields["cls"].decode("utf-8", errors="replace").strip()
                if not re.fullmatch(r"-?\d+", text) or not 0 <= int(text) < n_classes:
                    raise EvalDataError(benchmark, f"{where}: label {text!r} is not a class index 0..{n_classes - 1} "
                                                   "of classnames.txt", row=row, field="cls")
                out["label"] = int(text)
            if "npy" in fields:
                try:
                    array = np.lib.format.read_array(io.BytesIO(fields["npy"]), allow_pickle=False)
                except (ValueError, OSError) as err:
                    raise EvalDataError(benchmark, f"{where}: unreadable .npy metadata ({err})", row=row,
                                        field="npy") from err
                out["metadata"] = [float(x) for x in np.asarray(array, dtype=float).reshape(-1)]
            else:
                out["metadata"] = None
            yield out
            row += 1


def load_webdataset_split(meta: WdsMeta, benchmark: str) -> datasets.Dataset:
    """The split as a `datasets.Dataset` (columns `__key__`, `__url__`, `image`, `label` (ClassLabel of the root
    class names) or `captions` (+ `blank_caption_lines`), `metadata` (the .npy values, or null)), cached on disk."""
    features = {"__key__": datasets.Value("string"), "__url__": datasets.Value("string"), "image": datasets.Image()}
    if meta.dataset_type == "retrieval":
        features.update({"captions": datasets.List(datasets.Value("string")),
                         "blank_caption_lines": datasets.Value("int64")})
    else:
        assert meta.classnames is not None
        features["label"] = datasets.ClassLabel(names=meta.classnames)
    features["metadata"] = datasets.List(datasets.Value("float64"))
    names = [str(p.relative_to(meta.root)) for p in meta.shards]
    signature = [(n, p.stat().st_size, p.stat().st_mtime_ns) for n, p in zip(names, meta.shards)]
    try:
        return datasets.Dataset.from_generator(
            _generate, features=datasets.Features(features),
            gen_kwargs={"shards": [str(p) for p in meta.shards], "shard_names": names, "benchmark": benchmark,
                        "dataset_type": meta.dataset_type, "n_classes": len(meta.classnames or []),
                        "signature": signature},
        )
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, EvalDataError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


__all__ = ["IMAGE_EXTENSIONS", "ROOT_FILES", "WdsMeta", "is_webdataset_folder", "load_webdataset_split",
           "read_meta"]
