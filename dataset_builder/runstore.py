"""Run-folder storage: safe file names, atomic writes, per-item seeds and a file barrier between ranks.

Every stage keeps one JSON record per item under `RUN/<stage>/items/`. A record is written to a temporary file and
moved into place with `os.replace`, so a killed process leaves either the old state or the complete new record,
never half a file. A rerun treats an existing record as done.
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from pathlib import Path
from typing import Any, Iterable

# the atomic writes live in cultureclip_guards (shared by every package); fsync there is skipped with
# CULTURECLIP_FSYNC=0 or DATASET_BUILDER_FSYNC=0 on throwaway runs, e.g. in tests
from cultureclip_guards.files import atomic_write_bytes, atomic_write_json  # noqa: F401  (re-exported)
from cultureclip_guards.files import read_json as _read_json

_SLUG_RE = re.compile(r"[^a-z0-9]+")


def short_hash(text: str, length: int = 10) -> str:
    """Hex prefix of the sha256 of `text`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def safe_name(key: str, max_slug: int = 48) -> str:
    """A file-system-safe, collision-resistant name for an arbitrary string.

    The name is an ASCII slug (letters, digits, '-') plus a hash of the full original string, so `../../etc/x`
    becomes `etc-x-<hash>`: it contains no separator or dot-dot and cannot leave the folder it is joined to.
    """
    ascii_text = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode("ascii").lower()
    slug = _SLUG_RE.sub("-", ascii_text).strip("-")[:max_slug].strip("-") or "item"
    return f"{slug}-{short_hash(key)}"


def inside(root: Path, name: str) -> Path:
    """Join `name` to `root` and refuse any result outside `root` (defence in depth behind `safe_name`)."""
    root = root.resolve()
    path = (root / name).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"refusing path {name!r}: it leaves {root}")
    return path


def derive_seed(base_seed: int, *parts: object) -> int:
    """A 31-bit seed that depends only on the recipe seed and the item's identity, never on process order."""
    text = "\x1f".join([str(base_seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def read_json(path: Path) -> Any:
    """Read a JSON record, naming the file in any error (BadInput, a ValueError)."""
    return _read_json(path, "JSON record")


class StageStore:
    """Item records of one stage in `RUN/<stage>/items/<safe_name(key)>.json`."""

    def __init__(self, run_dir: Path, stage: str):
        self.stage = stage
        self.root = Path(run_dir) / stage
        self.items_dir = self.root / "items"
        self.items_dir.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Record path for item `key`."""
        return inside(self.items_dir, safe_name(key) + ".json")

    def has(self, key: str) -> bool:
        """Whether item `key` already has a record."""
        return self.path(key).exists()

    def get(self, key: str) -> dict[str, Any]:
        """The record of item `key`; checks it belongs to that key."""
        rec = read_json(self.path(key))
        if rec.get("key") != key:
            raise ValueError(f"{self.path(key)}: record key {rec.get('key')!r} does not match {key!r}")
        return rec

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Atomically store the record of item `key`."""
        atomic_write_json(self.path(key), {**record, "key": key})

    def all_records(self) -> list[dict[str, Any]]:
        """Every stored record of this stage, sorted by key."""
        # A killed writer can leave its `.tmp-*` file behind (never a record: records appear only via os.replace).
        recs = [read_json(p) for p in self.items_dir.glob("*.json") if not p.name.startswith(".tmp-")]
        return sorted(recs, key=lambda r: r["key"])

    def file_path(self, key: str, suffix: str) -> Path:
        """Path of a binary side file (e.g. an image) for item `key`."""
        return inside(self.root / "files", safe_name(key) + suffix)


def barrier(run_dir: Path, name: str, rank: int, world: int, timeout_s: float = 3600.0, poll_s: float = 0.05) -> None:
    """Wait until every rank has reached the point `name` (file markers, so it also works without torch.distributed).

    Markers are named by (name, rank, world); `name` should include a digest of the stage's item list so a marker
    left by a run over different items never releases the barrier.
    """
    if world <= 1:
        return
    folder = Path(run_dir) / "_barriers"
    folder.mkdir(parents=True, exist_ok=True)
    tag = safe_name(name)
    atomic_write_bytes(folder / f"{tag}.rank{rank}-of-{world}", b"done")
    deadline = time.monotonic() + timeout_s
    needed = [folder / f"{tag}.rank{r}-of-{world}" for r in range(world)]
    while not all(p.exists() for p in needed):
        if time.monotonic() > deadline:
            missing = [p.name for p in needed if not p.exists()]
            raise TimeoutError(f"barrier {name!r}: ranks never arrived: {missing}")
        time.sleep(poll_s)


def digest_keys(keys: Iterable[str]) -> str:
    """Short digest of an item-key list (order-independent)."""
    return short_hash("\n".join(sorted(keys)), 12)
