"""The curated Twemoji twin catalog: loading and validation.

A catalog YAML has `concepts` (each with concept, iso_code, category, emoji, context, visual_features and an
optional `country` name that must agree with the code) and `pairs` (two concept names each). Every problem is
reported with the file, the row and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from cultureclip_guards import BadInput

from .catalog import UnknownCountryError, lookup_country, resolve_code
from .schema import Concept, concept_key, make_concept
from .twemoji import EmojiNotFoundError, pixel_difference

DEFAULT_CATALOG = Path(__file__).parent / "catalogs" / "twemoji_twins.yaml"
REQUIRED_FIELDS = ("concept", "iso_code", "category", "emoji", "context", "visual_features")
# Mean absolute RGB difference (0-255) two twin emoji must exceed. The closest curated pair (Indonesia/Monaco,
# which differ only in proportions) measures about 3.3; identical images measure 0.
MIN_PIXEL_DIFFERENCE = 2.0


class CatalogError(BadInput):
    """A curated catalog is malformed; the message names file, row and field."""


@dataclass(frozen=True)
class TwinCatalog:
    """Validated curated catalog."""

    path: Path
    concepts: dict[str, Concept]  # by concept_id
    pairs: list[tuple[str, str]]  # concept ids, in file order


def _fail(path: Path, where: str, msg: str) -> CatalogError:
    return CatalogError(f"{path}: {where}: {msg}")


def load_twin_catalog(path: str | Path = DEFAULT_CATALOG, check_pixels: bool = True) -> TwinCatalog:
    """Load and validate a curated twin catalog; raise CatalogError on the first problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: cannot read catalog YAML ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("concepts"), list) or not isinstance(data.get("pairs"), list):
        raise CatalogError(f"{path}: expected a mapping with list fields 'concepts' and 'pairs'")

    concepts: dict[str, Concept] = {}
    by_name: dict[str, str] = {}
    for i, row in enumerate(data["concepts"]):
        where = f"concepts[{i}]"
        if not isinstance(row, dict):
            raise _fail(path, where, f"expected a mapping, got {type(row).__name__}")
        for name in REQUIRED_FIELDS:
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise _fail(path, f"{where}.{name}", "missing or empty (expected a non-empty string)")
        where = f"{where} ({row['concept']!r})"
        try:
            country = lookup_country(row["iso_code"])
        except UnknownCountryError as exc:
            raise _fail(path, f"{where}.iso_code", str(exc)) from None
        if "country" in row and resolve_code(row["country"]) != country.iso_code:
            raise _fail(path, f"{where}.country", f"{row['country']!r} does not match iso_code {row['iso_code']!r}")
        try:
            concept = make_concept(
                row["concept"], country.iso_code, row["category"], row["context"], row["visual_features"],
                source="curated", emoji=row["emoji"],
            )
        except ValueError as exc:
            raise _fail(path, where, str(exc)) from None
        if concept.concept_id in concepts:
            raise _fail(path, where, f"duplicate concept {concept.concept_id!r}")
        name_key = concept.concept.casefold()
        if name_key in by_name:
            raise _fail(path, where, f"duplicate concept name {row['concept']!r} (pairs refer to concepts by name)")
        concepts[concept.concept_id] = concept
        by_name[name_key] = concept.concept_id

    pairs: list[tuple[str, str]] = []
    seen: set[frozenset[str]] = set()
    for i, row in enumerate(data["pairs"]):
        where = f"pairs[{i}]"
        if not (isinstance(row, list) and len(row) == 2 and all(isinstance(x, str) for x in row)):
            raise _fail(path, where, "expected a list of two concept names")
        ids = []
        for name in row:
            if name.casefold() not in by_name:
                raise _fail(path, where, f"unknown concept {name!r}")
            ids.append(by_name[name.casefold()])
        a, b = concepts[ids[0]], concepts[ids[1]]
        if a.iso_code == b.iso_code:
            raise _fail(path, where, f"twins must come from different countries, both are {a.iso_code}")
        if a.category != b.category:
            raise _fail(path, where, f"twins must share a category ({a.category!r} vs {b.category!r})")
        if frozenset(ids) in seen:
            raise _fail(path, where, f"duplicate pair {row}")
        seen.add(frozenset(ids))
        if check_pixels:
            try:
                diff = pixel_difference(a.emoji or "", b.emoji or "")
            except EmojiNotFoundError as exc:
                raise _fail(path, where, str(exc)) from None
            if diff <= MIN_PIXEL_DIFFERENCE:
                raise _fail(path, where, f"twins are not visually distinguishable (pixel difference {diff:.2f} "
                            f"<= {MIN_PIXEL_DIFFERENCE})")
        pairs.append((ids[0], ids[1]))
    return TwinCatalog(path=path, concepts=concepts, pairs=pairs)


def catalog_key(concept: str, iso_code: str) -> str:
    """Re-export of the concept identity for callers that only import the catalog."""
    return concept_key(concept, iso_code)
