"""Accuracy with a per-group (country, continent, ...) breakdown, worst group, best-worst gap and a bootstrap CI."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from evaluate_suite.metrics.core import MIN_GROUP_SIZE, accuracy, bootstrap_ci, group_accuracy

_DESCRIPTION = """Accuracy of predicted answer indices, broken down by an optional group label per example (for
example the image's country or continent). Reports the worst group, the best group and their gap, and a seeded
percentile bootstrap confidence interval of the overall accuracy."""

_KWARGS = """
Args:
    predictions (list[int]): predicted option indices.
    references (list[int]): correct option indices.
    groups (list[str | None], optional): one group label per example; None leaves the example out of the breakdown.
    min_group_size (int, optional): only groups with at least this many examples are ranked worst/best
        (default 20); smaller ones are returned in `small_groups`, not ranked.
    confidence_level (float, optional): default 0.95.
    n_resamples (int, optional): bootstrap resamples, default 1000.
    seed (int, optional): bootstrap seed, default 0.
Returns:
    accuracy, accuracy_ci_low, accuracy_ci_high, and when groups are given: group_accuracy (dict), group_counts,
    worst_group, worst_group_accuracy, best_group, best_group_accuracy, best_worst_gap.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class CulturalAccuracy(evaluate.Metric):
    """Accuracy with per-group breakdown and bootstrap confidence interval."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, groups=None, min_group_size=MIN_GROUP_SIZE,
                 confidence_level=0.95, n_resamples=1000, seed=0):
        correct = np.asarray(predictions) == np.asarray(references)
        ci = bootstrap_ci(correct, level=confidence_level, n_resamples=n_resamples, seed=seed)
        out = {"accuracy": accuracy(predictions, references), "accuracy_ci_low": ci.low,
               "accuracy_ci_high": ci.high}
        if groups is not None:
            breakdown = group_accuracy(correct, list(groups), min_group_size=min_group_size)
            if breakdown is not None:
                out.update(group_accuracy=breakdown.accuracy, group_counts=breakdown.counts,
                           small_groups=breakdown.small_groups,
                           worst_group=breakdown.worst_group, worst_group_accuracy=breakdown.worst_accuracy,
                           best_group=breakdown.best_group, best_group_accuracy=breakdown.best_accuracy,
                           best_worst_gap=breakdown.gap)
        return out
