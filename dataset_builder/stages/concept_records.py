"""The concept stage's record store and de-duplication, shared by every concept source (top-down, curated,
bottom-up) without the sources importing each other."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..schema import Concept

STAGE = "concepts"


def dedupe(records: dict[str, dict[str, Any]]) -> tuple[list[Concept], Counter[str]]:
    """Kept concepts in key order with duplicates (same concept_id) dropped and counted."""
    seen: dict[str, Concept] = {}
    dropped: Counter[str] = Counter()
    for key in sorted(records):
        rec = records[key]
        if rec["status"] != "ok":
            continue
        c = Concept.from_dict(rec["concept"])
        if c.concept_id in seen:
            dropped["duplicate_concept"] += 1
        else:
            seen[c.concept_id] = c
    return list(seen.values()), dropped
