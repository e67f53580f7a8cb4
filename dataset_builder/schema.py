"""The concept record shared by all stages, and the exported row schema."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from .catalog import CATEGORIES, lookup_country

_WS = re.compile(r"\s+")

SOURCES = ("curated", "top-down", "bottom-up")


def concept_key(concept: str, iso_code: str) -> str:
    """Identity of a concept: ISO code plus the case-folded, space-normalised name."""
    return f"{iso_code.upper()}:{_WS.sub(' ', concept.strip()).casefold()}"


def feature_list(visual_features: str) -> list[str]:
    """Split a '; '-separated feature description into its phrases."""
    return [p.strip() for p in visual_features.split(";") if p.strip()]


def similarity_text(concept: "Concept") -> str:
    """The text the twin similarity check embeds for one side: its visual-feature description. The twins stage
    and the threshold calibration both call this, so the threshold is calibrated on what is compared."""
    return concept.visual_features


@dataclass(frozen=True)
class Concept:
    """One culturally specific concept with its metadata."""

    concept: str
    country: str
    iso_code: str
    continent: str
    category: str
    context: str
    visual_features: str
    source: str
    emoji: str | None = None
    subregion: str | None = None  # UN M49 sub-region; None only in records written before the field existed

    @property
    def concept_id(self) -> str:
        """Stable identity (see `concept_key`)."""
        return concept_key(self.concept, self.iso_code)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict including `concept_id`."""
        return {**asdict(self), "concept_id": self.concept_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Concept":
        """Inverse of `to_dict` (extra keys such as `concept_id` are ignored)."""
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


def make_concept(
    concept: str, country: str, category: str, context: str, visual_features: str, source: str, emoji: str | None = None
) -> Concept:
    """Build a Concept with country metadata from `catalog` (name, code, continent, UN sub-region); raise ValueError
    naming the bad field (UnknownCountryError, a ValueError, for a country that does not resolve)."""
    for name, value in (("concept", concept), ("context", context), ("visual_features", visual_features)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"field {name!r} must be a non-empty string, got {value!r}")
    if category not in CATEGORIES:
        raise ValueError(f"field 'category': unknown category {category!r}; expected one of {list(CATEGORIES)}")
    if source not in SOURCES:
        raise ValueError(f"field 'source': {source!r} not in {SOURCES}")
    c = lookup_country(country)
    return Concept(
        concept=_WS.sub(" ", concept.strip()),
        country=c.name,
        iso_code=c.iso_code,
        continent=c.continent,
        category=category,
        context=context.strip(),
        visual_features=visual_features.strip(),
        source=source,
        emoji=emoji,
        subregion=c.subregion,
    )


def row_features():  # -> datasets.Features
    """The `datasets.Features` of one exported CulTwin row (one matched sample of a twin pair)."""
    from datasets import Features, Image, List, Value

    scores = {"authenticity": Value("int32"), "consistency": Value("int32"), "cultural_fidelity": Value("int32")}
    side = {
        "concept_id": Value("string"),
        "concept": Value("string"),
        "country": Value("string"),
        "iso_code": Value("string"),
        "continent": Value("string"),
        "subregion": Value("string"),
        "context": Value("string"),
        "visual_features": Value("string"),
        "caption": Value("string"),
        "all_captions": List(Value("string")),
        "image": Image(),
        "seed": Value("int64"),
        "judge_scores": scores,
    }
    feats: dict[str, Any] = {"pair_id": Value("string"), "sample_index": Value("int32")}
    for name, ftype in side.items():
        feats[name] = ftype
        if name == "subregion":
            feats["category"] = Value("string")
    for name, ftype in side.items():
        feats[f"twin_{name}"] = ftype
    feats["source"] = Value("string")
    feats["text_model"] = Value("string")
    feats["image_model"] = Value("string")
    return Features(feats)
