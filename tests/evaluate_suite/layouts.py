"""Fixtures in the structure of the real Hub copies (SPEC §10), written to disk as those repos hold them:

- `write_wds_repo`: a `clip-benchmark/wds_*` repo: `{split}/0.tar ...` with `nshards.txt`, per sample
  `{key}.webp` + `{key}.cls` (int) or `{key}.txt` (newline-joined captions), optional `{key}.npy`; root
  `classnames.txt`, `zeroshot_classification_templates.txt`, `dataset_type.txt` (retrieval only).
- `crope_repo`: `Malvinan/CROPE`'s parquet columns, `metadata` the real nested struct, `definition_images` a list of
  Image.
- `globalrg_repo`: `UBC-VL/GlobalRG-Retrieval`'s `image`, `region` (lowercase country names), `universal`.
- `loading_script_repo`: a repo whose only loader is `name.py` (as `nlphuji/flickr30k`).
- `FakeHub`: stands in for `evaluate_suite.hub.fetch_hub_snapshot` (the Hub's network and cache): it serves fixture
  folders by repo id, only the files matching the requested patterns, under a fake commit hash.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from evalsuite_fixtures import COLOURS, image_value, write_folder


def webp_bytes(i: int, size: tuple[int, int] = (36, 28)) -> bytes:
    """A lossless WebP of a distinct colour/stripe pattern."""
    image = Image.new("RGB", size, COLOURS[i % len(COLOURS)])
    for x in range(0, size[0], 3 + i % 4):
        for y in range(0, size[1], 2):
            image.putpixel((x, y), ((i * 53) % 255, (i * 97) % 255, (i * 31) % 255))
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    archive.addfile(info, io.BytesIO(data))


def npy_bytes(values: Sequence[int]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values, dtype=np.int64), allow_pickle=False)
    return buffer.getvalue()


def write_wds_repo(root: Path, splits: dict[str, list[dict]], classnames: list[str] | None = None,
                   templates: list[str] | None = None, retrieval: bool = False, per_shard: int = 4) -> Path:
    """Samples are dicts with `image` (int pattern id), `cls` (int) or `txt` (str), optional `npy` (ints)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ".gitattributes").write_text("*.tar filter=lfs diff=lfs merge=lfs -text\n")
    if classnames is not None:
        (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    if templates is not None:
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    if retrieval:
        (root / "dataset_type.txt").write_text("retrieval\n")
    for split, samples in splits.items():
        (root / split).mkdir(exist_ok=True)
        shards = [samples[i:i + per_shard] for i in range(0, len(samples), per_shard)]
        for n, shard in enumerate(shards):
            with tarfile.open(root / split / f"{n}.tar", "w") as archive:
                for j, sample in enumerate(shard):
                    key = f"s{n:04d}{j:04d}"
                    _add(archive, f"{key}.webp", webp_bytes(sample["image"]))
                    if "cls" in sample:
                        _add(archive, f"{key}.cls", str(sample["cls"]).encode())
                    if "txt" in sample:
                        _add(archive, f"{key}.txt", sample["txt"].encode())
                    if "npy" in sample:
                        _add(archive, f"{key}.npy", npy_bytes(sample["npy"]))
        (root / split / "nshards.txt").write_text(f"{len(shards)}\n")
    return root


def read_wds_samples(root: Path, split: str) -> list[dict[str, bytes]]:
    """Every sample of a split straight from the tar files (an independent reader for reference computations)."""
    out = []
    for n in range(int((root / split / "nshards.txt").read_text())):
        with tarfile.open(root / split / f"{n}.tar") as archive:
            current: dict[str, bytes] = {}
            for member in archive:
                key, ext = member.name.split(".", 1)
                if current and current["__key__"] != key:
                    out.append(current)
                    current = {}
                current["__key__"] = key
                current[ext] = archive.extractfile(member).read()
            out.append(current)
    return out


CLASSNAMES = ["red", "green", "blue", "yellow", "white", "black"]
TEMPLATES = ["a photo of a {c}.", "a bad photo of the {c}.", "a close-up photo of a {c}.", "itap of a {c}."]


def classification_wds(root: Path, n: int = 12, with_income: bool = False, with_region: bool = False) -> Path:
    """A zero-shot wds repo (test + a train split that must not be read), optionally with DataComp-style npy."""
    samples = []
    for i in range(n):
        sample = {"image": i, "cls": i % len(CLASSNAMES)}
        if with_income:
            sample["npy"] = [i % 2, 100 + i, 3]
        if with_region:
            sample["npy"] = [i % 3, 40 + i]
        samples.append(sample)
    return write_wds_repo(root, {"test": samples, "train": [{"image": 99, "cls": 0}] * 3}, classnames=CLASSNAMES,
                          templates=TEMPLATES)


CAPTIONS = [["a dog runs on grass .", "a dog on grass ."], ["a cat sleeps .", "a cat ."],
            ["two men talk .", "men talk ."], ["a red car parked .", "a car ."],
            ["children play outside .", "children play ."]]


def retrieval_wds(root: Path) -> Path:
    """A retrieval wds repo (`dataset_type.txt` = retrieval); the third sample's text has a blank line."""
    samples = [{"image": i, "txt": "\n".join(c) + ("\n\n" if i == 2 else "")} for i, c in enumerate(CAPTIONS)]
    return write_wds_repo(root, {"test": samples}, retrieval=True, per_shard=2)


def crope_dataset() -> datasets.Dataset:
    """CROPE test rows with the published columns: 3 'no' rows, 1 'yes' row, 1 'no' row with an empty concept."""
    metadata_feature = {k: datasets.Value("string") for k in (
        "definition_concept", "image_en_concept", "image_concept", "source_language", "image_url",
        "definition_url")}
    rows = [
        ("sushi", "kimchi", "寿司", "ja", "no", "food"),
        ("dumpling", "fortune cookie", "饺子", "zh", "no", "food"),
        ("kimono", "sari", "着物", "ja", "no", "clothing"),
        ("kimchi", "kimchi", "김치", "ko", "yes", "food"),
        ("", "tagine", "", "ar", "no", "food"),
    ]
    features = datasets.Features({
        "sample_id": datasets.Value("string"), "image": datasets.Image(), "question": datasets.Value("string"),
        "answer": datasets.Value("string"), "definition_images": datasets.List(datasets.Image()),
        "definition_captions": datasets.List(datasets.Value("string")),
        "definition_summary": datasets.Value("string"), "chapter": datasets.Value("string"),
        "metadata": metadata_feature,
    })
    columns: dict[str, list] = {k: [] for k in features}
    for i, (en, definition, native, language, answer, chapter) in enumerate(rows):
        columns["sample_id"].append(f"crope-{i}")
        columns["image"].append(image_value(i))
        columns["question"].append(f"Is there {definition} in the image?")
        columns["answer"].append(answer)
        n_def = 2 if i == 0 else 1
        columns["definition_images"].append([image_value(10 + i + k) for k in range(n_def)])
        columns["definition_captions"].append([f"a photo of {definition}"] * n_def)
        columns["definition_summary"].append(f"{definition} is a concept")
        columns["chapter"].append(chapter)
        columns["metadata"].append({"definition_concept": definition, "image_en_concept": en, "image_concept": native,
                                    "source_language": language, "image_url": f"https://example.org/{i}.jpg",
                                    "definition_url": f"https://example.org/d{i}"})
    return datasets.Dataset.from_dict(columns, features=features)


GLOBALRG_REGIONS = ["united states of america", "japan", "south korea", "nigeria", "peru", "italy"]


def globalrg_dataset() -> datasets.Dataset:
    """GlobalRG-Retrieval rows: lowercase region names; 'house' in 6 regions, 'wedding' in 2 (skipped)."""
    regions = GLOBALRG_REGIONS + GLOBALRG_REGIONS[:4] + ["japan", "peru"]
    universals = ["house"] * 6 + ["breakfast"] * 4 + ["wedding"] * 2
    features = datasets.Features({"image": datasets.Image(), "region": datasets.Value("string"),
                                  "universal": datasets.Value("string")})
    return datasets.Dataset.from_dict({"image": [image_value(i) for i in range(len(regions))], "region": regions,
                                       "universal": universals}, features=features)


def crope_repo(root: Path) -> Path:
    return write_folder(root, {"test": crope_dataset()})


def globalrg_repo(root: Path) -> Path:
    return write_folder(root, {"test": globalrg_dataset()})


def loading_script_repo(root: Path, name: str = "flickr30k") -> Path:
    """A repo whose only loader is `{name}.py` plus its CSV (the layout of `nlphuji/flickr30k`)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.py").write_text("import datasets\n\nclass Flickr(datasets.GeneratorBasedBuilder):\n    pass\n")
    (root / f"{name}_annotations.csv").write_text("raw,filename,split\n\"[\\\"a dog\\\"]\",1.jpg,test\n")
    (root / "README.md").write_text("# Flickr30k\n\nLoad with the script.\n")
    return root


class FakeHub:
    """Replaces `evaluate_suite.hub.fetch_hub_snapshot`: serves `repos[repo_id]` (a local folder), copying only the
    files that match `allow_patterns` into `snapshots/<fake commit>`, and records every call."""

    def __init__(self, cache: Path, repos: dict[str, Path]):
        self.cache, self.repos, self.calls = cache, repos, []

    @staticmethod
    def commit_of(repo_id: str) -> str:
        return hashlib.sha1(repo_id.encode()).hexdigest()

    def __call__(self, repo_id: str, revision: str | None, allow_patterns: Sequence[str]) -> tuple[Path, str]:
        from evaluate_suite.hub import HubFetchError

        self.calls.append((repo_id, revision, list(allow_patterns)))
        if repo_id not in self.repos:
            raise HubFetchError(f"cannot fetch dataset {repo_id!r}: not in the fake Hub")
        commit = self.commit_of(repo_id)
        if revision not in (None, "main", commit):
            raise HubFetchError(f"cannot fetch dataset {repo_id!r} (revision {revision}): no such revision")
        source = self.repos[repo_id]
        target = self.cache / repo_id.replace("/", "--") / "snapshots" / commit
        for path in source.rglob("*"):
            rel = path.relative_to(source).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(rel, p) for p in allow_patterns):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / rel)
        target.mkdir(parents=True, exist_ok=True)
        return target, commit

    def fetched(self, repo_id: str) -> list[str]:
        """Relative paths of every file served for `repo_id`."""
        folder = self.cache / repo_id.replace("/", "--") / "snapshots" / self.commit_of(repo_id)
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
