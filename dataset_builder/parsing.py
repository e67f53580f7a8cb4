"""Strict parsers for model answers.

Every prompt asks for one JSON object and nothing else. An answer may be wrapped in a single Markdown code fence
(chat models do this habitually) but may not carry any other prose. A malformed answer raises `Rejected` with a
short machine-readable reason that the stages count; nothing is filled in with a default.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from .catalog import CATEGORIES
from .schema import feature_list

_FENCE_RE = re.compile(r"^```[a-zA-Z]*[ \t]*\n(.*)\n[ \t]*```$", re.DOTALL)
_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
_STOP = {"and", "the", "with", "for", "from", "into", "its", "one", "two", "has", "are", "any", "all", "very", "on", "of", "in", "a", "an"}
SCORE_NAMES = ("authenticity", "consistency", "cultural_fidelity")


class Rejected(ValueError):
    """A model answer that does not follow the requested format; `reason` is a short counter key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def extract_json_object(answer: Any) -> dict[str, Any]:
    """The JSON object an answer consists of (optionally inside one code fence); else Rejected."""
    if not isinstance(answer, str):
        raise Rejected("not_text", f"answer is {type(answer).__name__}")
    text = answer.strip()
    if not text:
        raise Rejected("empty_answer")
    fence = _FENCE_RE.match(text)
    if fence:
        text = fence.group(1).strip()
    elif "```" in text:
        raise Rejected("extra_text", "code fence mixed with other text")
    if not (text.startswith("{") and text.endswith("}")):
        raise Rejected("extra_text", f"answer is not only a JSON object: {text[:60]!r}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Rejected("invalid_json", str(exc)) from None
    if not isinstance(obj, dict):
        raise Rejected("not_object")
    return obj


def check_fields(obj: dict[str, Any], spec: dict[str, type], allow_empty: bool = False) -> dict[str, Any]:
    """Require exactly the keys of `spec` with the given types (bool is not an int here); strings must be non-blank
    unless `allow_empty`."""
    for name in obj:
        if name not in spec:
            raise Rejected(f"unexpected_field:{name}")
    for name, typ in spec.items():
        if name not in obj:
            raise Rejected(f"missing_field:{name}")
        value = obj[name]
        if (typ is int and isinstance(value, bool)) or not isinstance(value, typ):
            raise Rejected(f"wrong_type:{name}", f"expected {typ.__name__}, got {type(value).__name__}")
        if typ is str and not allow_empty and not value.strip():
            raise Rejected(f"empty_field:{name}")
    return obj


def _strings(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.strip() if isinstance(v, str) else v) for k, v in obj.items()}


def _check_features(value: str, name: str) -> None:
    if len(feature_list(value)) < 1:
        raise Rejected(f"empty_field:{name}")


def parse_concept(answer: Any) -> dict[str, str]:
    """Parse a concept.v1 answer into concept, context, visual_features."""
    obj = check_fields(extract_json_object(answer), {"concept": str, "context": str, "visual_features": str})
    _check_features(obj["visual_features"], "visual_features")
    return _strings(obj)


def parse_twin(answer: Any) -> dict[str, str]:
    """Parse a twin.v1 answer; all four fields, visual features included, are required."""
    spec = {"twin_concept": str, "twin_country": str, "twin_context": str, "twin_visual_features": str}
    obj = check_fields(extract_json_object(answer), spec)
    _check_features(obj["twin_visual_features"], "twin_visual_features")
    return _strings(obj)


def parse_judge(answer: Any) -> dict[str, int]:
    """Parse a judge.v1 answer: three integer scores in 1..5."""
    obj = check_fields(extract_json_object(answer), {name: int for name in SCORE_NAMES})
    for name in SCORE_NAMES:
        if not 1 <= obj[name] <= 5:
            raise Rejected(f"score_out_of_range:{name}", str(obj[name]))
    return {name: int(obj[name]) for name in SCORE_NAMES}


def parse_bottom_up(answer: Any) -> dict[str, Any]:
    """Parse a bottomup.v2 answer (the page title is the concept, so there is no concept field); when keep is true
    every other field must be filled and the category valid. The country is resolved by the caller."""
    obj = extract_json_object(answer)
    spec = {"keep": bool, "country": str, "category": str, "context": str, "visual_features": str}
    check_fields(obj, spec, allow_empty=True)  # a rejected page may leave its other fields blank
    if obj["keep"]:
        check_fields(obj, spec)
        if obj["category"].strip() not in CATEGORIES:
            raise Rejected("unknown_category", obj["category"])
        _check_features(obj["visual_features"], "visual_features")
    return _strings(obj)


def feature_words(visual_features: str) -> set[str]:
    """Content words of a feature description, used to check that a caption mentions a feature."""
    return {w for w in _WORD_RE.findall(visual_features.casefold()) if len(w) >= 3 and w not in _STOP}


def parse_captions(answer: Any, max_words: int, visual_features: str) -> tuple[list[str], Counter[str]]:
    """Parse a captions.v1 answer.

    Returns the valid captions (in order, de-duplicated) and a Counter of per-caption rejections
    (`caption_too_long`, `caption_no_feature`, `caption_duplicate`, `wrong_type:caption`, `empty_field:caption`).
    A malformed answer as a whole raises Rejected.
    """
    obj = extract_json_object(answer)
    check_fields(obj, {"captions": list})
    if not obj["captions"]:
        raise Rejected("empty_field:captions")
    words = feature_words(visual_features)
    kept: list[str] = []
    seen: set[str] = set()
    rejected: Counter[str] = Counter()
    for cap in obj["captions"]:
        if not isinstance(cap, str):
            rejected["wrong_type:caption"] += 1
            continue
        cap = " ".join(cap.split())
        if not cap:
            rejected["empty_field:caption"] += 1
        elif len(cap.split()) >= max_words:
            rejected["caption_too_long"] += 1
        elif not words & set(_WORD_RE.findall(cap.casefold())):
            rejected["caption_no_feature"] += 1
        elif cap.casefold() in seen:
            rejected["caption_duplicate"] += 1
        else:
            seen.add(cap.casefold())
            kept.append(cap)
    return kept, rejected
