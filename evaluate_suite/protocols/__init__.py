"""Packaged zero-shot class names and prompt templates (see README.md here for their source and licence), and the
`Protocol` statement every benchmark task writes into its result records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

_HERE = Path(__file__).parent
LISTS = ("imagenet1k_classnames", "imagenet1k_templates", "country211_classnames", "country211_templates")


@lru_cache(maxsize=None)
def packaged_list(name: str) -> tuple[str, ...]:
    """One packaged list (class names or templates), one entry per line of `protocols/{name}.txt`."""
    if name not in LISTS:
        raise KeyError(f"unknown packaged list {name!r}; known: {', '.join(LISTS)}")
    lines = (_HERE / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def packaged_source(name: str) -> str:
    """How a record names a packaged list: `package:evaluate_suite/protocols/{name}.txt`."""
    packaged_list(name)
    return f"package:evaluate_suite/protocols/{name}.txt"


def fill_template(template: str, name: str) -> str:
    """A prompt from a template with CLIP_benchmark's `{c}` or the plain `{}` placeholder."""
    return template.replace("{c}", name) if "{c}" in template else template.replace("{}", name)


def check_templates(templates: tuple[str, ...], origin: str) -> tuple[str, ...]:
    """The templates, or ValueError naming `origin` and the first template without exactly one placeholder."""
    if not templates:
        raise ValueError(f"{origin}: no prompt templates")
    for i, template in enumerate(templates):
        if template.count("{c}") + template.count("{}") != 1:
            raise ValueError(f"{origin}: template {i} {template!r} must contain exactly one '{{c}}' or '{{}}'")
    return templates


@dataclass(frozen=True)
class Protocol:
    """What a task measures and against which reference: written into every result record (`record["protocol"]`).

    `follows` names the reference implementation the numbers are meant to be comparable with; `departures` lists
    every known difference from it (an empty list claims none).
    """

    name: str
    version: str
    follows: str
    departures: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["departures"] = list(self.departures)
        return out


__all__ = ["LISTS", "Protocol", "check_templates", "fill_template", "packaged_list", "packaged_source"]
