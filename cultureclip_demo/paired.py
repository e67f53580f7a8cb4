"""Summary statistics over seeds, and the paired bootstrap behind the demo's claim.

A paired difference compares two models item by item on the same evaluation items, seed s against seed s. Its
confidence interval resamples both sources of chance at once: the fine-tuning seeds (with replacement) and the
evaluation items (with replacement, the same draw for every seed). Items that belong together (the views of one
twin pair, or of one general emoji) can be resampled as whole groups, which is the honest unit when the question
is about pairs and classes rather than about pictures.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np


def seed_stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for a single value) and the values themselves."""
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": values}


def paired_bootstrap(differences: np.ndarray, groups: Sequence[str] | None = None, resamples: int = 2000,
                     level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Mean paired difference over seeds and items, with a percentile bootstrap CI.

    `differences` is (seeds, items): model A's answer minus model B's on each item, per seed. `groups` names each
    item's group; when given, groups are resampled whole (an item-level bootstrap otherwise). Each resample draws
    seeds and groups with replacement and takes the mean difference over the drawn (seed, item) cells.
    """
    diff = np.asarray(differences, dtype=float)
    if diff.ndim != 2 or diff.size == 0:
        raise ValueError(f"differences must be a non-empty (seeds, items) array, got shape {diff.shape}")
    n_seeds, n_items = diff.shape
    labels = list(groups) if groups is not None else list(range(n_items))
    if len(labels) != n_items:
        raise ValueError(f"{len(labels)} group labels for {n_items} items")
    order = {label: index for index, label in enumerate(dict.fromkeys(labels))}
    index = np.asarray([order[label] for label in labels])
    n_groups = len(order)
    sums = np.zeros((n_seeds, n_groups))
    np.add.at(sums, (slice(None), index), diff)  # per seed, the summed difference of each group
    sizes = np.bincount(index, minlength=n_groups).astype(float)
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=resamples).astype(float)
    group_counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=resamples).astype(float)
    totals = np.einsum("bs,sg,bg->b", seed_counts, sums, group_counts)
    cells = seed_counts.sum(axis=1) * (group_counts @ sizes)
    estimates = totals / cells
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(estimates, [tail, 1.0 - tail])
    return {"mean": float(diff.mean()), "ci_low": float(low), "ci_high": float(high), "level": level,
            "resamples": resamples, "unit": "group" if groups is not None else "item", "groups": n_groups,
            "items": n_items, "seeds": n_seeds, "per_seed": diff.mean(axis=1).tolist()}


__all__ = ["paired_bootstrap", "seed_stats"]
