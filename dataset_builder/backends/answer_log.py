"""Answers of remote chat requests, one JSON file per request, so a killed build never asks a server twice.

The key is the sha256 of the exact request body (model name, messages with images as data URLs, token budget,
sampling settings and seed), not of the server's address: any replica of the same model may answer it. Files are
written atomically as each answer arrives, while the rest of its batch is still in flight.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..runstore import atomic_write_json, read_json


def canonical_json(body: dict[str, Any]) -> bytes:
    """The exact bytes sent for a request body (sorted keys, compact), so a key names what the server received."""
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def request_key(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a request body."""
    return hashlib.sha256(canonical_json(body)).hexdigest()


class AnswerLog:
    """`root/<key[:2]>/<key>.json` holding `{"answer": ..., ...}` per answered request."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """File of one key (keys are hex digests, so the name cannot leave `root`)."""
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"answer log key must be a sha256 hex digest, got {key!r}")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record of `key`, or None."""
        path = self.path(key)
        return read_json(path) if path.exists() else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store the record of `key` (atomic: a kill leaves the old state or the whole record)."""
        atomic_write_json(self.path(key), {**record, "key": key})

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> set[str]:
        """Keys with a stored answer (leftover `.tmp-*` files of a killed writer are not answers)."""
        if not self.root.exists():
            return set()
        return {p.stem for p in self.root.glob("*/*.json") if not p.name.startswith(".tmp-")}
