"""Metric functions (`core`) and the local `evaluate` module folders next to them.

`evaluate.load(module_path("cultural_accuracy"))` loads a metric module offline.
"""

from pathlib import Path

from .core import (
    ConfidenceInterval, GroupBreakdown, SeedSummary, accuracy, balanced_accuracy, bootstrap_ci, group_accuracy,
    retrieval_recall, seed_summary, top_k_accuracy, top_k_hits,
)

METRIC_MODULES = ("cultural_accuracy", "retrieval_recall", "zero_shot_accuracy")


def module_path(name: str) -> str:
    """Folder of a local `evaluate` metric module, for `evaluate.load(...)`."""
    if name not in METRIC_MODULES:
        raise KeyError(f"unknown metric module {name!r}; known: {', '.join(METRIC_MODULES)}")
    return str(Path(__file__).parent / name)


__all__ = [
    "METRIC_MODULES", "ConfidenceInterval", "GroupBreakdown", "SeedSummary", "accuracy", "balanced_accuracy",
    "bootstrap_ci", "group_accuracy", "module_path", "retrieval_recall", "seed_summary", "top_k_accuracy",
    "top_k_hits",
]
