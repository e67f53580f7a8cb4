"""General-ability benchmarks: zero-shot classification (several layouts) and image-text retrieval."""

from __future__ import annotations

from typing import Any, ClassVar

import datasets
import numpy as np
import torch

from ..data import ImageRef, ImageTable
from ..encoders import DualEncoder
from ..errors import EvalDataError
from ..geography import continent_of, country_name
from ..metrics.core import (
    balanced_accuracy, bootstrap_ci, group_accuracy, retrieval_recall, top_k_accuracy,
)
from .base import Benchmark, EvalSettings, TaskResult, register

# Our own short prompt sets (class-name ensembles in the spirit of CLIP's, not copies of them).
OBJECT_TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "a picture of a {}.",
                    "a cropped photo of the {}.", "a bright photo of a {}.", "a dark photo of the {}.")
HOUSEHOLD_TEMPLATES = ("a photo of a {}.", "a photo of the {} in a home.", "a {} in someone's home.",
                       "a picture of a {}.")
COUNTRY_TEMPLATES = ("a photo taken in {}.", "a photo from the country of {}.", "a landscape in {}.",
                     "a street scene in {}.")


class ZeroShotBenchmark(Benchmark):
    """Zero-shot classification: one prompt-ensemble text embedding per class, top-1/top-5 and balanced accuracy.

    Layout knobs: `label_column` (ClassLabel int or string), optional `country_column`/`region_column` for
    breakdowns. Class names come from the ClassLabel names, or the sorted distinct strings.
    """

    seeded = False
    label_column: ClassVar[str] = "label"
    country_column: ClassVar[str | None] = None
    region_column: ClassVar[str | None] = None
    default_templates: ClassVar[tuple[str, ...]] = OBJECT_TEMPLATES

    def __init__(self, split: str | None = None, templates: tuple[str, ...] | None = None, **params: Any):
        super().__init__(split=split, **params)
        self.templates = tuple(templates or self.default_templates)
        bad = [t for t in self.templates if "{}" not in t]
        if bad:
            raise ValueError(f"templates must contain '{{}}': {bad}")

    @property
    def required_columns(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("image", self.label_column)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "templates": list(self.templates), "label_column": self.label_column}

    def class_display_name(self, name: str) -> str:
        return name.split(",")[0].strip().replace("_", " ")

    def _labels(self, dataset: datasets.Dataset) -> tuple[list[str], np.ndarray]:
        feature = dataset.features[self.label_column]
        values = dataset[self.label_column]
        if isinstance(feature, datasets.ClassLabel):
            names = list(feature.names)
            labels = np.asarray(values)
            bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
            if len(bad):
                raise EvalDataError(self.name, f"label {labels[bad[0]]} is not a class index 0..{len(names) - 1}",
                                    row=int(bad[0]), field=self.label_column)
            return names, labels
        for row, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                raise EvalDataError(self.name, f"expected a class name, got {value!r}", row=row,
                                    field=self.label_column)
        names = sorted(set(values))
        index = {n: i for i, n in enumerate(names)}
        return names, np.asarray([index[v] for v in values])

    def _groups(self, dataset: datasets.Dataset, labels: np.ndarray, names: list[str]) -> dict[str, list]:
        groups: dict[str, list] = {}
        if self.country_column and self.country_column in dataset.column_names:
            countries = dataset[self.country_column]
            groups["country"] = [country_name(c) if c else None for c in countries]
            groups["continent"] = [continent_of(c) if c else None for c in countries]
        if self.region_column and self.region_column in dataset.column_names:
            groups["region"] = list(dataset[self.region_column])
        return groups

    def class_embeddings(self, encoder: DualEncoder, names: list[str]) -> torch.Tensor:
        """(classes, dim): mean of each class's template embeddings, re-normalised."""
        prompts = [t.format(self.class_display_name(n)) for n in names for t in self.templates]
        features = encoder.encode_texts(prompts).view(len(names), len(self.templates), -1).mean(dim=1)
        return torch.nn.functional.normalize(features, dim=-1)

    def evaluate(self, encoder: DualEncoder, dataset: datasets.Dataset, settings: EvalSettings) -> list[TaskResult]:
        dataset = self.prepare(dataset)
        names, labels = self._labels(dataset)
        table = ImageTable(dataset, self.name)
        for row in range(len(dataset)):
            table.add(ImageRef(row, "image"))
        scores = (encoder.encode_images(table) @ self.class_embeddings(encoder, names).T).numpy()
        predicted = scores.argmax(axis=1)
        correct = (predicted == labels).astype(float)
        metrics = {"top1_accuracy": top_k_accuracy(scores, labels, 1), "top5_accuracy": top_k_accuracy(scores, labels, 5),
                   "balanced_accuracy": balanced_accuracy(predicted, labels)}
        breakdowns = {}
        for group, values in self._groups(dataset, labels, names).items():
            b = group_accuracy(correct, values, min_group_size=settings.min_group_size)
            if b is not None:
                breakdowns[group] = b.to_dict()
                metrics[f"worst_{group}_accuracy"] = b.worst_accuracy
                metrics[f"{group}_gap"] = b.gap
        ci = bootstrap_ci(correct, level=settings.confidence_level, n_resamples=settings.bootstrap_resamples,
                          seed=settings.seeds[0])
        return [TaskResult(task="zero_shot", primary_metric="top1_accuracy", metrics=metrics, breakdowns=breakdowns,
                           confidence_intervals={"top1_accuracy": ci.to_dict()},
                           counts={"rows": len(dataset), "classes": len(names),
                                   "classes_present": int(len(np.unique(labels)))})]


@register
class ImageNetZeroShot(ZeroShotBenchmark):
    """ImageNet-style layout: `image` (Image), `label` (ClassLabel; first comma-separated synonym is the name)."""

    name = "zeroshot_imagenet"
    dataset_id = "ILSVRC/imagenet-1k"  # gated on the Hub; give a local folder with the same layout
    split = "validation"


@register
class DollarStreetZeroShot(ZeroShotBenchmark):
    """Dollar Street layout (no canonical Hub parquet was found; schema is the suite's own): `image`, `topic`
    (string class), `country` (string), optional `region`. Per-country and per-continent breakdowns."""

    name = "zeroshot_dollar_street"
    label_column = "topic"
    country_column = "country"
    region_column = "region"
    default_templates = HOUSEHOLD_TEMPLATES


@register
class GeoDEZeroShot(ZeroShotBenchmark):
    """GeoDE layout as in the `MLap/GeoDE` viewer: `image`, `object` (string), `region` (string, e.g. "Africa",
    "WestAsia"), `ip_country` (string). The split name there is unconfirmed; pass `split` if it differs."""

    name = "zeroshot_geode"
    dataset_id = "MLap/GeoDE"
    split = "train"
    label_column = "object"
    country_column = "ip_country"
    region_column = "region"


@register
class Country211ZeroShot(ZeroShotBenchmark):
    """Country211 layout (torchvision/CLIP ImageFolder): `image`, `label` (ClassLabel whose names are ISO 3166
    alpha-2 codes). Classes are scored by country name; the label itself gives per-country/continent groups."""

    name = "zeroshot_country211"
    dataset_id = None
    default_templates = COUNTRY_TEMPLATES

    def class_display_name(self, name: str) -> str:
        return country_name(name)

    def _groups(self, dataset: datasets.Dataset, labels: np.ndarray, names: list[str]) -> dict[str, list]:
        return {"country": [country_name(names[i]) for i in labels], "continent": [continent_of(names[i]) for i in
                                                                                   labels]}


class RetrievalBenchmark(Benchmark):
    """Image-text retrieval (Flickr30k/COCO layout): `image` and a list of captions per image; recall@1/5/10."""

    seeded = False
    caption_columns: ClassVar[tuple[str, ...]] = ("caption", "captions", "sentences", "text")
    ks = (1, 5, 10)

    def prepare(self, dataset: datasets.Dataset) -> datasets.Dataset:
        present = [c for c in self.caption_columns if c in dataset.column_names]
        if not present:
            raise EvalDataError(self.name, f"missing a caption column (one of {list(self.caption_columns)}); the "
                                           f"dataset has {sorted(dataset.column_names)}")
        self.caption_column = present[0]
        return super().prepare(dataset)

    def evaluate(self, encoder: DualEncoder, dataset: datasets.Dataset, settings: EvalSettings) -> list[TaskResult]:
        dataset = self.prepare(dataset)
        if "split" in dataset.column_names and self.split in set(dataset["split"]):
            # nlphuji/flickr30k keeps Karpathy splits in a column of its single split.
            dataset = dataset.filter(lambda s: s == self.split, input_columns="split")
        texts, owner = [], []
        for row, captions in enumerate(dataset[self.caption_column]):
            if isinstance(captions, str):
                captions = [captions]
            if not isinstance(captions, list) or not captions:
                raise EvalDataError(self.name, f"expected a non-empty list of captions, got {captions!r}", row=row,
                                    field=self.caption_column)
            for caption in captions:
                if not isinstance(caption, str) or not caption.strip():
                    raise EvalDataError(self.name, f"empty caption {caption!r}", row=row, field=self.caption_column)
                texts.append(caption)
                owner.append(row)
        table = ImageTable(dataset, self.name)
        for row in range(len(dataset)):
            table.add(ImageRef(row, "image"))
        similarity = encoder.encode_images(table) @ encoder.encode_texts(texts).T
        relevant = torch.zeros(len(dataset), len(texts), dtype=torch.bool)
        relevant[torch.tensor(owner), torch.arange(len(texts))] = True
        metrics = retrieval_recall(similarity, relevant, ks=self.ks)
        metrics["mean_recall"] = float(np.mean(list(metrics.values())))
        return [TaskResult(task="retrieval", primary_metric="image_to_text_recall@1", metrics=metrics,
                           counts={"images": len(dataset), "texts": len(texts)})]


@register
class Flickr30kRetrieval(RetrievalBenchmark):
    """Flickr30k (`nlphuji/flickr30k` layout: `image`, `caption` list[str], `split` column with Karpathy splits)."""

    name = "retrieval_flickr30k"
    dataset_id = "nlphuji/flickr30k"
    split = "test"


@register
class CocoRetrieval(RetrievalBenchmark):
    """COCO Karpathy test layout: `image` and a caption list (`captions`/`sentences`/`caption`); local folder."""

    name = "retrieval_coco"
    dataset_id = None
    split = "test"
