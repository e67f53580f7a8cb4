"""Plain typed metric functions (numpy/torch in, floats and dicts out).

Everything the metric modules, tasks and reports compute goes through here so tests can check it directly against
scikit-learn or by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor | Sequence


def _array(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _check_same_length(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if len(a) != len(b):
        raise ValueError(f"`{names[0]}` has {len(a)} entries but `{names[1]}` has {len(b)}")
    if len(a) == 0:
        raise ValueError(f"`{names[0]}` is empty: nothing to score")


def accuracy(predictions: ArrayLike, references: ArrayLike) -> float:
    """Fraction of predictions equal to their reference."""
    p, r = _array(predictions, "predictions"), _array(references, "references")
    _check_same_length(p, r, ("predictions", "references"))
    return float(np.mean(p == r))


def balanced_accuracy(predictions: ArrayLike, references: ArrayLike) -> float:
    """Mean per-class recall over the classes present in `references` (scikit-learn's `balanced_accuracy_score`,
    which CLIP_benchmark reports as `mean_per_class_recall`)."""
    p, r = _array(predictions, "predictions"), _array(references, "references")
    _check_same_length(p, r, ("predictions", "references"))
    recalls = [np.mean(p[r == c] == c) for c in np.unique(r)]
    return float(np.mean(recalls))


def top_k_accuracy(scores: ArrayLike, references: ArrayLike, k: int) -> float:
    """Fraction of rows whose reference class is among the k highest scores (ties broken by lower index first)."""
    s, r = _array(scores, "scores"), _array(references, "references").astype(int)
    if s.ndim != 2:
        raise ValueError(f"`scores` must be 2-D (rows x classes), got shape {s.shape}")
    _check_same_length(s, r, ("scores", "references"))
    if not 1 <= k:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, s.shape[1])
    # A reference is in the top k when fewer than k classes beat it strictly, counting earlier ties as beating it
    # (the order a stable descending sort gives).
    ref_scores = s[np.arange(len(r)), r][:, None]
    index = np.arange(s.shape[1])[None, :]
    beaten_by = (s > ref_scores) | ((s == ref_scores) & (index < r[:, None]))
    return float(np.mean(beaten_by.sum(axis=1) < k))


def top_k_hits(similarity: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Per query (row): does any relevant column appear among the k most similar columns?"""
    k = min(k, similarity.shape[1])
    top = similarity.topk(k, dim=1).indices
    return relevant.gather(1, top).any(dim=1)


def retrieval_recall(similarity: ArrayLike, relevant: ArrayLike, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k both ways (CLIP paper definition), from an images x texts similarity matrix.

    `relevant[i, j]` is True when text j describes image i. image->text: an image is a hit when any of its texts is
    among its k nearest texts; text->image: a text is a hit when any of its images is among its k nearest images.
    """
    sim = torch.as_tensor(_array(similarity, "similarity"), dtype=torch.float32)
    rel = torch.as_tensor(_array(relevant, "relevant"), dtype=torch.bool)
    if sim.shape != rel.shape or sim.ndim != 2:
        raise ValueError(f"similarity {tuple(sim.shape)} and relevant {tuple(rel.shape)} must be equal 2-D shapes")
    if not bool(rel.any(dim=1).all()):
        raise ValueError(f"image rows {rel.any(dim=1).logical_not().nonzero().flatten().tolist()} have no text")
    if not bool(rel.any(dim=0).all()):
        raise ValueError(f"text columns {rel.any(dim=0).logical_not().nonzero().flatten().tolist()} have no image")
    out = {}
    for k in ks:
        out[f"image_to_text_recall@{k}"] = float(top_k_hits(sim, rel, k).float().mean())
        out[f"text_to_image_recall@{k}"] = float(top_k_hits(sim.T, rel.T, k).float().mean())
    return out


MIN_GROUP_SIZE = 20  # groups with fewer items are listed with their n but never ranked worst/best


@dataclass(frozen=True)
class GroupBreakdown:
    """Accuracy and size of every group; worst/best group and their gap over the groups with >= min_group_size
    items only (None when fewer than two groups are that large). Smaller groups are listed in `small_groups`."""

    accuracy: dict[str, float]
    counts: dict[str, int]
    min_group_size: int
    ranked_groups: list[str]
    small_groups: dict[str, int]
    worst_group: str | None
    worst_accuracy: float | None
    best_group: str | None
    best_accuracy: float | None
    gap: float | None

    @property
    def ranked(self) -> bool:
        """Whether worst/best/gap exist (at least two groups of >= min_group_size items)."""
        return self.gap is not None

    def to_dict(self) -> dict:
        return asdict(self)


def group_accuracy(correct: ArrayLike, groups: Sequence[str | None],
                   min_group_size: int = MIN_GROUP_SIZE) -> GroupBreakdown | None:
    """Accuracy of `correct` (per-item 0/1 or fractions) within each group.

    Items whose group is None are left out. Only groups with at least `min_group_size` items are ranked (worst, best,
    gap; needs two such groups); the others keep their accuracy and n but are listed as small, not ranked. Returns
    None when no item has a group.
    """
    c = _array(correct, "correct").astype(float)
    if len(c) != len(groups):
        raise ValueError(f"`correct` has {len(c)} entries but `groups` has {len(groups)}")
    if min_group_size < 1:
        raise ValueError(f"min_group_size must be >= 1, got {min_group_size}")
    labels = np.asarray([g if g is not None else "" for g in groups], dtype=object)
    known = np.asarray([g is not None for g in groups], dtype=bool)
    if not known.any():
        return None
    acc: dict[str, float] = {}
    counts: dict[str, int] = {}
    for g in sorted(set(labels[known].tolist())):
        mask = known & (labels == g)
        acc[g] = float(c[mask].mean())
        counts[g] = int(mask.sum())
    eligible = {g: a for g, a in acc.items() if counts[g] >= min_group_size}
    small = {g: n for g, n in counts.items() if n < min_group_size}
    if len(eligible) < 2:
        return GroupBreakdown(acc, counts, min_group_size, sorted(eligible), small, None, None, None, None, None)
    worst = min(eligible, key=lambda g: (eligible[g], g))
    best = max(eligible, key=lambda g: (eligible[g], g))
    return GroupBreakdown(acc, counts, min_group_size, sorted(eligible), small, worst, eligible[worst], best,
                          eligible[best], eligible[best] - eligible[worst])


@dataclass(frozen=True)
class ConfidenceInterval:
    """Percentile bootstrap interval of a statistic."""

    estimate: float
    low: float
    high: float
    level: float
    n_resamples: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_ci(
    values: ArrayLike,
    statistic: Callable[[np.ndarray], float] = np.mean,
    level: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap CI of `statistic` over items (resampled with replacement, seeded so reruns agree)."""
    v = _array(values, "values").astype(float)
    if len(v) == 0:
        raise ValueError("bootstrap_ci: no values")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    if statistic is np.mean:  # one vectorised draw instead of a Python loop
        idx = rng.integers(0, len(v), size=(n_resamples, len(v)))
        stats = v[idx].mean(axis=1)
    else:
        stats = np.array([statistic(v[rng.integers(0, len(v), size=len(v))]) for _ in range(n_resamples)])
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return ConfidenceInterval(float(statistic(v)), float(low), float(high), level, n_resamples, seed)


@dataclass(frozen=True)
class SeedSummary:
    """Mean and sample standard deviation of one metric over distractor seeds."""

    mean: float
    std: float
    per_seed: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def seed_summary(per_seed: dict[int, float]) -> SeedSummary:
    """Mean ± std (ddof=1; 0.0 for a single seed) of a metric measured once per seed."""
    if not per_seed:
        raise ValueError("seed_summary: no seeds")
    values = np.array(list(per_seed.values()), dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return SeedSummary(float(values.mean()), std, {str(k): float(v) for k, v in per_seed.items()})


__all__ = [
    "MIN_GROUP_SIZE", "ConfidenceInterval", "GroupBreakdown", "SeedSummary", "accuracy", "balanced_accuracy",
    "bootstrap_ci",
    "group_accuracy", "retrieval_recall", "seed_summary", "top_k_accuracy", "top_k_hits",
]
