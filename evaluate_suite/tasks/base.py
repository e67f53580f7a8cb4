"""Benchmark base classes, the registry, and the shared multiple-choice scorer.

A benchmark turns dataset rows into items; scoring is shared: every distinct image and every distinct option text is
embedded once, then all items are scored with one batched tensor operation per seed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import datasets
import numpy as np
import torch

from ..data import ImageTable, raw_images, require_columns
from ..encoders import DualEncoder
from ..errors import EvalDataError
from ..metrics.core import MIN_GROUP_SIZE, bootstrap_ci, group_accuracy, seed_summary
from ..protocols import Protocol

BENCHMARKS: dict[str, type[Benchmark]] = {}


def register(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator adding a benchmark to the registry under its `name`."""
    if cls.name in BENCHMARKS:
        raise ValueError(f"benchmark {cls.name!r} registered twice")
    BENCHMARKS[cls.name] = cls
    return cls


def get_benchmark(name: str, **params: Any) -> Benchmark:
    """Instantiate a registered benchmark by name."""
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    return BENCHMARKS[name](**params)


@dataclass
class EvalSettings:
    """Run-wide settings every benchmark receives."""

    seeds: tuple[int, ...] = (0,)
    bootstrap_resamples: int = 1000
    confidence_level: float = 0.95
    min_group_size: int = MIN_GROUP_SIZE  # groups smaller than this are listed with their n, never ranked

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        if self.min_group_size < 1:
            raise ValueError(f"min_group_size must be >= 1, got {self.min_group_size}")


@dataclass
class TaskResult:
    """Metrics of one task of one benchmark (one JSON file per task)."""

    task: str
    primary_metric: str
    metrics: dict[str, float]
    breakdowns: dict[str, dict] = field(default_factory=dict)
    confidence_intervals: dict[str, dict] = field(default_factory=dict)
    seeds: dict[str, dict] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


class Benchmark(ABC):
    """One benchmark: where its data lives, which columns it needs, and how it turns rows into task results."""

    name: ClassVar[str]
    dataset_id: ClassVar[str | None] = None  # Hub default; None means a local folder must be given
    split: ClassVar[str] = "test"
    required_columns: ClassVar[tuple[str, ...]] = ()
    image_columns: ClassVar[tuple[str, ...]] = ("image",)
    seeded: ClassVar[bool] = True  # whether items depend on the distractor seed
    protocol: ClassVar[Protocol]  # what the numbers follow and where they depart from it (in every record)

    def __init__(self, split: str | None = None, **params: Any):
        if params:
            raise TypeError(f"benchmark {self.name!r} got unknown parameter(s) {sorted(params)}")
        self.split = split or type(self).split

    def params(self) -> dict[str, Any]:
        """Task parameters recorded in the result's config."""
        return {"split": self.split}

    def use_source(self, data: Any) -> None:
        """Take what the loaded source carries beyond its rows (`sources.BenchmarkData`: webdataset root files such
        as class names and templates). Called by the runner before `evaluate`; a no-op unless a task needs it."""

    def protocol_for(self, task: str) -> Protocol:
        """The protocol statement of one of this benchmark's tasks (the class's `protocol` unless overridden)."""
        return self.protocol

    def prepare(self, dataset: datasets.Dataset) -> datasets.Dataset:
        """Check columns and rows, leave images undecoded."""
        require_columns(dataset, self.required_columns, self.name)
        if len(dataset) == 0:
            raise EvalDataError(self.name, "the dataset has no rows: nothing to evaluate")
        return raw_images(dataset, [c for c in self.image_columns if c in dataset.column_names])

    @abstractmethod
    def evaluate(self, encoder: DualEncoder, dataset: datasets.Dataset, settings: EvalSettings) -> list[TaskResult]:
        """Score `dataset` (already loaded) and return one result per task."""


@dataclass
class ChoiceItems:
    """Multiple-choice items: an image (index into an ImageTable), option texts, the correct option, group labels."""

    image: list[int] = field(default_factory=list)
    options: list[list[str]] = field(default_factory=list)
    answer: list[int] = field(default_factory=list)
    groups: dict[str, list[str | None]] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)

    def add(self, row: int, image: int, options: Sequence[str], answer: int, kind: str = "default",
            **groups: str | None) -> None:
        self.rows.append(row)
        self.image.append(image)
        self.options.append(list(options))
        self.answer.append(answer)
        self.kinds.append(kind)
        for name, value in groups.items():
            self.groups.setdefault(name, [None] * (len(self.image) - 1)).append(value)
        for name, values in self.groups.items():
            if len(values) < len(self.image):
                values.append(None)

    def __len__(self) -> int:
        return len(self.image)


def add_breakdowns(metrics: dict[str, float], per_item: np.ndarray, groups: dict[str, Sequence[str | None]],
                   settings: EvalSettings, metric: str = "accuracy") -> dict[str, dict]:
    """Per-group breakdowns of `per_item` scores (every group's n; worst/best/gap over groups of at least
    `settings.min_group_size` items only) and, when ranked, `worst_{group}_{metric}` / `{group}_gap` metrics."""
    breakdowns = {}
    for name, labels in groups.items():
        b = group_accuracy(per_item, list(labels), min_group_size=settings.min_group_size)
        if b is None:
            continue
        breakdowns[name] = b.to_dict()
        if b.ranked:
            metrics[f"worst_{name}_{metric}"] = b.worst_accuracy
            metrics[f"{name}_gap" if metric == "accuracy" else f"{name}_{metric}_gap"] = b.gap
    return breakdowns


def shuffled(options: Sequence[str], correct: str, rng: np.random.Generator) -> tuple[list[str], int]:
    """Options in a seeded random order and the correct one's new index (argmax ties cannot favour position 0)."""
    order = rng.permutation(len(options))
    out = [options[i] for i in order]
    return out, out.index(correct)


def score_choices(encoder: DualEncoder, image_features: torch.Tensor, items: ChoiceItems) -> np.ndarray:
    """Predicted option index per item: argmax over options of image·option cosine, in one batched einsum."""
    texts = sorted({t for opts in items.options for t in opts})
    text_features = encoder.encode_texts(texts)
    position = {t: i for i, t in enumerate(texts)}
    width = max(len(o) for o in items.options)
    index = torch.full((len(items), width), -1, dtype=torch.long)
    for i, opts in enumerate(items.options):
        index[i, : len(opts)] = torch.tensor([position[t] for t in opts])
    gathered = text_features[index.clamp(min=0)]  # (items, options, dim)
    cosine = torch.einsum("nd,nkd->nk", image_features[torch.tensor(items.image)], gathered)
    cosine = cosine.masked_fill(index < 0, float("-inf"))
    return cosine.argmax(dim=1).numpy()


class MultipleChoiceBenchmark(Benchmark):
    """A benchmark whose items are "pick the option text that matches the image"."""

    task_name: ClassVar[str] = "choice"

    @abstractmethod
    def build_items(self, dataset: datasets.Dataset, table: ImageTable, rng: np.random.Generator) -> ChoiceItems:
        """Items for one distractor seed; images go through `table` so each is encoded once over all seeds."""

    def skipped(self) -> dict[str, int]:
        """Rows left out on purpose, by reason (filled in by build_items)."""
        return dict(getattr(self, "_skipped", {}))

    def evaluate(self, encoder: DualEncoder, dataset: datasets.Dataset, settings: EvalSettings) -> list[TaskResult]:
        dataset = self.prepare(dataset)
        table = ImageTable(dataset, self.name)
        seeds = settings.seeds if self.seeded else settings.seeds[:1]
        per_seed_items = {}
        for seed in seeds:
            self._skipped = Counter()
            per_seed_items[seed] = self.build_items(dataset, table, np.random.default_rng(seed))
            if len(per_seed_items[seed]) == 0:
                raise EvalDataError(self.name, f"no items to score ({self.no_items_reason(dataset)})")
        image_features = encoder.encode_images(table)
        self._image_features = (table, image_features)
        correct_by_seed = {}
        for seed, items in per_seed_items.items():
            predicted = score_choices(encoder, image_features, items)
            correct_by_seed[seed] = (predicted == np.asarray(items.answer)).astype(float)
            per_seed_items[seed].predicted = predicted  # type: ignore[attr-defined]
        return [self.choice_result(self.task_name, per_seed_items, correct_by_seed, settings, len(dataset),
                                   len(table))]

    def no_items_reason(self, dataset: datasets.Dataset) -> str:
        return f"skipped rows: {self.skipped() or 'none'}"

    def choice_result(self, task: str, items_by_seed: dict[int, ChoiceItems], correct_by_seed: dict[int, np.ndarray],
                      settings: EvalSettings, n_rows: int, n_images: int) -> TaskResult:
        """Accuracy mean ± std over seeds, bootstrap CI over items and per-group breakdowns, pooled over seeds."""
        first = next(iter(items_by_seed.values()))
        summary = seed_summary({s: float(c.mean()) for s, c in correct_by_seed.items()})
        same_items = all(len(c) == len(first) for c in correct_by_seed.values())
        if same_items:
            # Items are the same images in every seed (only distractors differ): average per item, then resample.
            per_item = np.mean(np.stack(list(correct_by_seed.values())), axis=0)
            groups = first.groups
            kinds = first.kinds
        else:
            per_item = np.concatenate(list(correct_by_seed.values()))
            groups = {g: sum((items.groups[g] for items in items_by_seed.values()), []) for g in first.groups}
            kinds = sum((items.kinds for items in items_by_seed.values()), [])
        ci = bootstrap_ci(per_item, level=settings.confidence_level, n_resamples=settings.bootstrap_resamples,
                          seed=min(items_by_seed))
        metrics = {"accuracy": summary.mean, "accuracy_std": summary.std}
        if len(set(kinds)) > 1:
            kind_breakdown = group_accuracy(per_item, kinds, min_group_size=1)
            assert kind_breakdown is not None
            for kind, value in kind_breakdown.accuracy.items():
                metrics[f"accuracy_{kind}"] = value
        breakdowns = add_breakdowns(metrics, per_item, groups, settings)
        n_options = Counter(len(o) for o in first.options)
        return TaskResult(
            task=task, primary_metric="accuracy", metrics=metrics, breakdowns=breakdowns,
            confidence_intervals={"accuracy": ci.to_dict()},
            seeds={"accuracy": summary.to_dict()},
            counts={"rows": n_rows, "rows_used": len(set(first.rows)), "items": len(first), "images": n_images,
                    "skipped": self.skipped(),
                    "options_per_item": {str(k): v for k, v in sorted(n_options.items())},
                    "ungrouped": {g: sum(v is None for v in labels) for g, labels in groups.items()}},
        )
