"""Zero-shot classification metrics: top-1, top-k, balanced accuracy and a per-group breakdown."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from evaluate_suite.metrics.core import (
    MIN_GROUP_SIZE, balanced_accuracy, bootstrap_ci, group_accuracy, top_k_accuracy,
)

_DESCRIPTION = """Zero-shot classification scores from per-class similarity rows: top-1 and top-k accuracy,
balanced accuracy (mean per-class recall), a seeded bootstrap interval of top-1, and top-1 per group (for example
country or region, as in Dollar Street and GeoDE)."""

_KWARGS = """
Args:
    predictions (list[list[float]]): per image, a score for every class.
    references (list[int]): the correct class index.
    top_k (list[int], optional): default [5].
    groups (list[str | None], optional): per-image group label for the breakdown.
    min_group_size, confidence_level, n_resamples, seed: as in cultural_accuracy.
Returns:
    top1_accuracy, top{k}_accuracy, balanced_accuracy, top1_ci_low, top1_ci_high and, with groups, the breakdown.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ZeroShotAccuracy(evaluate.Metric):
    """Top-k and balanced accuracy of zero-shot class scores."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, top_k=(5,), groups=None, min_group_size=MIN_GROUP_SIZE,
                 confidence_level=0.95, n_resamples=1000, seed=0):
        scores = np.asarray(predictions, dtype=np.float32)
        labels = np.asarray(references)
        if scores.ndim != 2:
            raise ValueError("every prediction row must have one score per class (same length for all images)")
        predicted = scores.argmax(axis=1)
        correct = predicted == labels
        ci = bootstrap_ci(correct, level=confidence_level, n_resamples=n_resamples, seed=seed)
        out = {"top1_accuracy": top_k_accuracy(scores, labels, 1),
               "balanced_accuracy": balanced_accuracy(predicted, labels),
               "top1_ci_low": ci.low, "top1_ci_high": ci.high}
        for k in top_k:
            out[f"top{k}_accuracy"] = top_k_accuracy(scores, labels, k)
        if groups is not None:
            breakdown = group_accuracy(correct, list(groups), min_group_size=min_group_size)
            if breakdown is not None:
                out.update(group_accuracy=breakdown.accuracy, group_counts=breakdown.counts,
                           small_groups=breakdown.small_groups,
                           worst_group=breakdown.worst_group, worst_group_accuracy=breakdown.worst_accuracy,
                           best_worst_gap=breakdown.gap)
        return out
