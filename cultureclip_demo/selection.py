"""Choosing WiSE-FT's alpha for one fine-tuned model, by the rule the config names, from validation scores only.

The chooser is handed a function that scores a blend on validation views and the base's validation scores; it
never receives anything else, so no test view can reach the choice. The finished choice is a frozen value the test
evaluation reads afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .config import SelectionSettings

ValidationScorer = Callable[[float], dict[str, float]]  # alpha -> {"twin": accuracy, "general": accuracy}


@dataclass(frozen=True)
class Selection:
    """The chosen alpha, the rule's wording, every alpha tried with its validation scores, and whether the rule had
    to fall back (no alpha qualified)."""

    alpha: float
    rule: str
    tried: tuple[dict[str, float], ...] = field(default_factory=tuple)
    fallback: bool = False

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "rule": self.rule, "tried": [dict(t) for t in self.tried],
                "fallback": self.fallback}


def describe_rule(settings: SelectionSettings) -> str:
    """The rule in words, as the report states it."""
    if settings.rule == "largest_alpha_within_general_drop":
        alphas = ", ".join(f"{a:g}" for a in sorted(settings.alphas, reverse=True))
        return (f"the largest WiSE-FT alpha among [{alphas}] whose general accuracy on the validation views is at most "
                f"{100 * settings.max_general_drop:g} points below the base's (tried from the largest down; alpha 0 "
                "is the base itself; if none qualifies, the alpha with the smallest drop)")
    raise ValueError(f"unknown selection rule {settings.rule!r}")


def select_alpha(settings: SelectionSettings, score_validation: ValidationScorer,
                 base_validation: dict[str, float]) -> Selection:
    """Apply the configured rule: score blends on validation views (largest alpha first) until one qualifies."""
    rule = describe_rule(settings)
    tried = []
    for alpha in sorted(settings.alphas, reverse=True):
        scores = score_validation(alpha)
        drop = base_validation["general"] - scores["general"]
        tried.append({"alpha": alpha, **scores, "general_drop_vs_base": drop})
        # a tolerance for float noise: a drop of exactly the limit qualifies
        if drop <= settings.max_general_drop + 1e-9:
            return Selection(alpha, rule, tuple(tried))
    best = min(tried, key=lambda t: (t["general_drop_vs_base"], -t["alpha"]))
    return Selection(best["alpha"], rule, tuple(tried), fallback=True)


__all__ = ["Selection", "ValidationScorer", "describe_rule", "select_alpha"]
