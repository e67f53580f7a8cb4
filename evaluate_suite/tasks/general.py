"""General-ability benchmarks as CLIP_benchmark / DataComp (whose numbers open_clip publishes) define them:
zero-shot classification (ImageNet-1k, Country211, Dollar Street, GeoDE) and image-text retrieval (Flickr30k, COCO).

Defaults are the `clip-benchmark/wds_*` webdataset copies those numbers come from; their root `classnames.txt` and
`zeroshot_classification_templates.txt` are applied. Local parquet copies work too (class names from the label
column, templates from the package: see `evaluate_suite/protocols/README.md`).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import datasets
import numpy as np
import torch

from ..data import ImageRef, ImageTable, first_column
from ..encoders import DualEncoder
from ..errors import EvalDataError
from ..geography import continent_of, country_name, iso_alpha2
from ..metrics.core import balanced_accuracy, bootstrap_ci, retrieval_recall, top_k_accuracy
from ..protocols import Protocol, check_templates, fill_template, packaged_list, packaged_source
from .base import Benchmark, EvalSettings, TaskResult, add_breakdowns, register

logger = logging.getLogger(__name__)

_CLIP_BENCHMARK_ZS = ("CLIP_benchmark zero-shot classification (clip_benchmark.metrics.zeroshot_classification): "
                      "one classifier row per class = mean of the L2-normalised embeddings of every template filled "
                      "with the class name, re-normalised; argmax of image-class cosine; acc1, acc5 (only with >= 5 "
                      "classes), mean_per_class_recall")
_SHARED_DEPARTURES = (
    "images are preprocessed by the checkpoint's own transformers image processor, not open_clip's transform",
    "features are computed at the run's precision (model.precision in the record; bf16/fp16 run the towers' matmuls "
    "under autocast with norms in fp32), scores in fp32",
)


def _top5(scores: np.ndarray, labels: np.ndarray, metrics: dict[str, float]) -> None:
    # CLIP_benchmark reports acc5 as NaN below five classes; the record leaves it out instead.
    if scores.shape[1] >= 5:
        metrics["top5_accuracy"] = top_k_accuracy(scores, labels, 5)


class ZeroShotBenchmark(Benchmark):
    """Zero-shot classification: one prompt-ensemble text embedding per class; top-1, top-5 (>= 5 classes) and mean
    per-class recall; per-group breakdowns where the data has groups.

    Class names: the ClassLabel names of the label column (for a webdataset copy these are its root
    `classnames.txt`), a packaged list where the benchmark names one and the class count matches, or the sorted
    distinct strings of a string label column. Templates: the `templates` argument, else the source's root
    templates file, else the packaged default.
    """

    seeded = False
    label_columns: ClassVar[tuple[str, ...]] = ("label",)
    default_templates: ClassVar[str] = "imagenet1k_templates"
    packaged_classnames: ClassVar[str | None] = None  # replaces dataset ClassLabel names when the count matches
    protocol = Protocol("zero-shot classification", "2", _CLIP_BENCHMARK_ZS, _SHARED_DEPARTURES)

    def __init__(self, split: str | None = None, templates: tuple[str, ...] | list[str] | None = None,
                 **params: Any):
        super().__init__(split=split, **params)
        self.templates: tuple[str, ...] | None = None
        self.templates_source = "argument"
        if templates is not None:
            self.templates = check_templates(tuple(templates), f"benchmark {self.name!r}")
        self._source_templates: tuple[tuple[str, ...], str] | None = None
        self._root_classnames: str | None = None

    def use_source(self, data: Any) -> None:
        wds = getattr(data, "wds", None)
        if wds is None:
            return
        where = data.provenance.get("id") or data.provenance.get("path")
        if wds.classnames:
            self._root_classnames = f"{where}:classnames.txt"
        if wds.templates:
            origin = f"{where}:zeroshot_classification_templates.txt"
            self._source_templates = (check_templates(tuple(wds.templates), origin), origin)

    def resolved_templates(self) -> tuple[tuple[str, ...], str]:
        """(templates, where they come from) for this run."""
        if self.templates is not None:
            return self.templates, self.templates_source
        if self._source_templates is not None:
            return self._source_templates
        return packaged_list(self.default_templates), packaged_source(self.default_templates)

    @property
    def label_column(self) -> str:
        return getattr(self, "_label_column", self.label_columns[0])

    def prepare(self, dataset: datasets.Dataset) -> datasets.Dataset:
        self._label_column = first_column(dataset, self.label_columns, self.name, "label")
        self.required_columns = ("image", self._label_column)  # type: ignore[misc]
        return super().prepare(dataset)

    def params(self) -> dict[str, Any]:
        templates, source = self.resolved_templates()
        return {**super().params(), "templates": list(templates), "templates_source": source,
                "label_column": self.label_column}

    # -- classes -----------------------------------------------------------------------------------------------
    def class_names(self, dataset: datasets.Dataset) -> tuple[list[str], np.ndarray, str]:
        """(display class names, label index per row, where the names come from)."""
        column = self.label_column
        feature = dataset.features[column]
        values = dataset[column]
        if isinstance(feature, datasets.ClassLabel):
            names = list(feature.names)
            labels = np.asarray(values)
            bad = np.flatnonzero((labels < 0) | (labels >= len(names)))
            if len(bad):
                raise EvalDataError(self.name, f"label {labels[bad[0]]} is not a class index 0..{len(names) - 1}",
                                    row=int(bad[0]), field=column)
            return self._named(names, labels, f"ClassLabel names of column {column!r}")
        for row, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                raise EvalDataError(self.name, f"expected a class name, got {value!r}", row=row, field=column)
        names = sorted(set(values))
        index = {n: i for i, n in enumerate(names)}
        return names, np.asarray([index[v] for v in values]), f"sorted distinct values of column {column!r}"

    def _named(self, names: list[str], labels: np.ndarray, origin: str) -> tuple[list[str], np.ndarray, str]:
        if self._root_classnames is not None:
            return names, labels, self._root_classnames  # the webdataset's classnames.txt, used as written
        if self.packaged_classnames and len(names) == len(packaged_list(self.packaged_classnames)):
            return list(packaged_list(self.packaged_classnames)), labels, packaged_source(self.packaged_classnames)
        # Synset-style names ("tench, Tinca tinca", "great_white_shark"): first synonym, spaces.
        return [n.split(",")[0].strip().replace("_", " ") for n in names], labels, \
            origin + " (first comma-separated synonym, underscores as spaces)"

    def class_embeddings(self, encoder: DualEncoder, names: list[str]) -> torch.Tensor:
        """(classes, dim): mean of each class's L2-normalised template embeddings, re-normalised (CLIP's recipe)."""
        templates, _ = self.resolved_templates()
        prompts = [fill_template(t, n) for n in names for t in templates]
        features = encoder.encode_texts(prompts).view(len(names), len(templates), -1).mean(dim=1)
        return torch.nn.functional.normalize(features, dim=-1)

    # -- groups ------------------------------------------------------------------------------------------------
    def groups(self, dataset: datasets.Dataset, labels: np.ndarray, names: list[str]) -> dict[str, list]:
        """Group label per row for breakdowns (none by default)."""
        return {}

    def extra_tasks(self, scores: np.ndarray, labels: np.ndarray, groups: dict[str, list], settings: EvalSettings,
                    counts: dict[str, Any]) -> list[TaskResult]:
        """Further tasks computed from the same scores (DataComp's worst-group numbers)."""
        return []

    def evaluate(self, encoder: DualEncoder, dataset: datasets.Dataset, settings: EvalSettings) -> list[TaskResult]:
        dataset = self.prepare(dataset)
        names, labels, names_source = self.class_names(dataset)
        table = ImageTable(dataset, self.name)
        for row in range(len(dataset)):
            table.add(ImageRef(row, "image"))
        scores = (encoder.encode_images(table) @ self.class_embeddings(encoder, names).T).numpy()
        predicted = scores.argmax(axis=1)
        correct = (predicted == labels).astype(float)
        metrics = {"top1_accuracy": top_k_accuracy(scores, labels, 1)}
        _top5(scores, labels, metrics)
        metrics["mean_per_class_recall"] = balanced_accuracy(predicted, labels)
        groups = self.groups(dataset, labels, names)
        breakdowns = add_breakdowns(metrics, correct, groups, settings)
        ci = bootstrap_ci(correct, level=settings.confidence_level, n_resamples=settings.bootstrap_resamples,
                          seed=settings.seeds[0])
        counts = {"rows": len(dataset), "rows_used": len(dataset), "skipped": {}, "classes": len(names),
                  "classes_present": int(len(np.unique(labels))), "class_names_source": names_source,
                  "ungrouped": {g: sum(v is None for v in values) for g, values in groups.items()}}
        result = TaskResult(task="zero_shot", primary_metric="top1_accuracy", metrics=metrics,
                            breakdowns=breakdowns, confidence_intervals={"top1_accuracy": ci.to_dict()},
                            counts=counts, extras={"class_names": names, "predictions": predicted.tolist()})
        return [result] + self.extra_tasks(scores, labels, groups, settings, counts)


def _metadata_groups(dataset: datasets.Dataset, column_index: int, label: str) -> list[str | None] | None:
    """Integer codes from the webdataset `.npy` metadata (DataComp stores group ids there), as 'label=code'."""
    if "metadata" not in dataset.column_names:
        return None
    values = dataset["metadata"]
    if all(v is None for v in values):
        return None
    out: list[str | None] = []
    for v in values:
        out.append(None if v is None or len(v) <= column_index else f"{label}={int(v[column_index])}")
    return out


def _worst_group_task(task: str, group: str, per_item: np.ndarray, labels: list, settings: EvalSettings,
                      metric: str, counts: dict[str, Any], bench: str) -> list[TaskResult]:
    """A task whose value is the worst group's `metric` (DataComp's *_wg numbers), when two groups are large."""
    metrics: dict[str, float] = {}
    breakdowns = add_breakdowns(metrics, per_item, {group: labels}, settings, metric=metric)
    key = f"worst_{group}_{metric}"
    if key not in metrics:
        logger.warning("%s: task %s not produced: fewer than two %s groups with >= %d items (%s)", bench, task,
                       group, settings.min_group_size, breakdowns.get(group, {}).get("counts"))
        counts.setdefault("tasks_not_produced", {})[task] = (
            f"fewer than two {group} groups with >= {settings.min_group_size} items")
        return []
    metrics[metric] = float(per_item.mean())
    return [TaskResult(task=task, primary_metric=key, metrics=metrics, breakdowns=breakdowns,
                       counts={k: v for k, v in counts.items() if k != "ungrouped"})]


@register
class ImageNetZeroShot(ZeroShotBenchmark):
    """ImageNet-1k zero-shot on `clip-benchmark/wds_imagenet1k`, split `test` (= the ILSVRC-2012 validation set, 50,000
    images): OpenAI's class names and its 80 templates (the repo's root files, equal to the packaged lists). A local
    ImageNet folder with a 1000-class ClassLabel gets the packaged OpenAI names in class-index order."""

    name = "zeroshot_imagenet"
    dataset_id = "clip-benchmark/wds_imagenet1k"
    split = "test"
    packaged_classnames = "imagenet1k_classnames"
    protocol = Protocol("ImageNet-1k zero-shot top-1", "2", _CLIP_BENCHMARK_ZS + "; open_clip publishes acc1 "
                        "(ViT-B/32 openai: 63.3)", _SHARED_DEPARTURES)


@register
class Country211ZeroShot(ZeroShotBenchmark):
    """Country211 zero-shot on `clip-benchmark/wds_country211`, split `test` (21,100 images, 211 countries): root class
    names (country names) and its 5 CLIP-paper templates. A local folder whose ClassLabel names are ISO 3166 alpha-2
    codes (torchvision's ImageFolder) gets the packaged names. Breakdowns per country and continent of the label."""

    name = "zeroshot_country211"
    dataset_id = "clip-benchmark/wds_country211"
    split = "test"
    default_templates = "country211_templates"
    packaged_classnames = "country211_classnames"
    protocol = Protocol("Country211 zero-shot top-1", "2", _CLIP_BENCHMARK_ZS + "; open_clip publishes acc1 "
                        "(ViT-B/32 openai: 17.2)", _SHARED_DEPARTURES + (
                            "adds per-country/continent breakdowns of the label country (not in CLIP_benchmark)",))

    def _named(self, names: list[str], labels: np.ndarray, origin: str) -> tuple[list[str], np.ndarray, str]:
        codes = self._root_classnames is None and len(names) != len(packaged_list("country211_classnames"))
        if codes and all(len(n) == 2 and n.isalpha() and n.isupper() for n in names):
            return [country_name(n) for n in names], labels, origin + " (ISO 3166 alpha-2 codes as country names)"
        return super()._named(names, labels, origin)

    def groups(self, dataset: datasets.Dataset, labels: np.ndarray, names: list[str]) -> dict[str, list]:
        codes = [iso_alpha2(n) for n in names]
        return {"country": [country_name(codes[i] or names[i]) for i in labels],
                "continent": [continent_of(codes[i]) if codes[i] else None for i in labels]}


def _country_groups(dataset: datasets.Dataset, column: str) -> dict[str, list]:
    if column not in dataset.column_names:
        return {}
    countries = dataset[column]
    return {"country": [country_name(c) if c else None for c in countries],
            "continent": [continent_of(c) if c else None for c in countries]}


class WorstGroupZeroShot(ZeroShotBenchmark):
    """Zero-shot plus DataComp's worst-group task: the `worst_metric` of the worst `group` (over groups of at least
    min_group_size images). The group is the first value of each webdataset sample's `.npy` metadata (named
    "{npy_label}=code": the code-to-name mapping is not in the repos), or a column of a local copy."""

    group: ClassVar[str]
    group_column: ClassVar[str]  # the group's column in a local parquet copy
    npy_label: ClassVar[str]
    column_prefix: ClassVar[str] = ""  # prepended to the local column's values (codes get their label)
    country_column: ClassVar[str]
    worst_task: ClassVar[str]
    worst_metric: ClassVar[str]  # "accuracy" (top-1) or "top5_accuracy"

    def groups(self, dataset: datasets.Dataset, labels: np.ndarray, names: list[str]) -> dict[str, list]:
        out: dict[str, list] = {}
        values = _metadata_groups(dataset, 0, self.npy_label)
        if values is None and self.group_column in dataset.column_names:
            values = [None if v is None else f"{self.column_prefix}{v}" for v in dataset[self.group_column]]
        if values is not None:
            out[self.group] = values
        return {**out, **_country_groups(dataset, self.country_column)}

    def extra_tasks(self, scores, labels, groups, settings, counts):
        if self.group not in groups:
            counts.setdefault("tasks_not_produced", {})[self.worst_task] = f"no {self.group} groups in the data"
            return []
        k = 5 if self.worst_metric == "top5_accuracy" else 1
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        hit = (top == labels[:, None]).any(axis=1).astype(float)
        return _worst_group_task(self.worst_task, self.group, hit, groups[self.group], settings, self.worst_metric,
                                 counts, self.name)


@register
class DollarStreetZeroShot(WorstGroupZeroShot):
    """Dollar Street zero-shot on `clip-benchmark/wds_dollar_street`, split `test`, as DataComp evaluates it (the
    numbers open_clip publishes, ViT-B/32 openai 53.9): task `zero_shot` (top-1/top-5/mean per-class recall) and task
    `worst_income_group_top5`, top-5 accuracy of the worst income group, DataComp's `acc_top5_wg`. Income groups are
    the first `.npy` metadata value (DataComp's `income_ds`), named "income=code". A local parquet copy: `image`,
    `label` (ClassLabel) or `topic` (string), optional `income_group`, `country` (country/continent breakdowns)."""

    name = "zeroshot_dollar_street"
    dataset_id = "clip-benchmark/wds_dollar_street"
    split = "test"
    label_columns = ("label", "topic")
    group, group_column, npy_label, column_prefix = "income_group", "income_group", "income", "income="
    country_column = "country"
    worst_task, worst_metric = "worst_income_group_top5", "top5_accuracy"
    protocol = Protocol("Dollar Street zero-shot (DataComp fairness/dollar_street)", "2",
                        _CLIP_BENCHMARK_ZS + "; DataComp eval_utils/fairness_eval.py: top-5 accuracy per income "
                        "group (npy metadata column 0), worst group = acc_top5_wg", _SHARED_DEPARTURES + (
                            "worst group is taken over income groups with >= min_group_size images only",))


@register
class GeoDEZeroShot(WorstGroupZeroShot):
    """GeoDE zero-shot on `clip-benchmark/wds_geode`, split `test`, as DataComp evaluates it (open_clip publishes its
    worst-region accuracy, ViT-B/32 openai 82.2): task `zero_shot` and task `worst_region`, top-1 accuracy of the worst
    region (DataComp's `acc_wg`). Webdataset regions are the first `.npy` metadata value ("region=code"). A local
    parquet copy in the `MLap/GeoDE` layout: `image`, `object` (string), `region` (e.g. "WestAsia"), `ip_country`."""

    name = "zeroshot_geode"
    dataset_id = "clip-benchmark/wds_geode"
    split = "test"
    label_columns = ("label", "object")
    group, group_column, npy_label = "region", "region", "region"
    country_column = "ip_country"
    worst_task, worst_metric = "worst_region", "accuracy"
    protocol = Protocol("GeoDE zero-shot (DataComp fairness/geode)", "2",
                        _CLIP_BENCHMARK_ZS + "; DataComp eval_utils/fairness_eval.py: top-1 accuracy per region "
                        "(npy metadata column 0), worst region = acc_wg", _SHARED_DEPARTURES + (
                            "worst region is taken over regions with >= min_group_size images only",))


_RETRIEVAL_PROTOCOL = ("CLIP_benchmark zero-shot retrieval (clip_benchmark.metrics.zeroshot_retrieval), the CLIP "
                       "paper's recall@k: a text query is correct if its own image is among the k nearest images "
                       "(CLIP_benchmark's image_retrieval_recall@k = our text_to_image_recall@k); an image query if "
                       "any of its captions is among the k nearest texts (text_retrieval_recall@k = "
                       "image_to_text_recall@k); mean_recall@1 is DataComp's main metric")


class RetrievalBenchmark(Benchmark):
    """Image-text retrieval on a Karpathy test split: every image against every caption, recall@1/5/10 both ways and
    mean_recall@k (the mean of the two directions; `mean_recall@1` is what open_clip publishes).

    Layouts: webdataset (`captions` from each sample's newline-joined `.txt`), or a parquet folder with an `image`
    and a caption-list column (`captions`/`caption`/`sentences`/`text`). A `split` column, if present, is filtered to
    this benchmark's split; a copy whose image count differs from the Karpathy split is still scored but the record
    says it is not comparable to published numbers.
    """

    seeded = False
    caption_columns: ClassVar[tuple[str, ...]] = ("captions", "caption", "sentences", "text")
    ks = (1, 5, 10)
    karpathy_images: ClassVar[int | None] = None
    protocol = Protocol("image-text retrieval recall@k", "2", _RETRIEVAL_PROTOCOL, _SHARED_DEPARTURES)

    def prepare(self, dataset: datasets.Dataset) -> datasets.Dataset:
        self.caption_column = first_column(dataset, self.caption_columns, self.name, "caption")
        return super().prepare(dataset)

    def evaluate(self, encoder: DualEncoder, dataset: datasets.Dataset, settings: EvalSettings) -> list[TaskResult]:
        dataset = self.prepare(dataset)
        n_rows, skipped = len(dataset), {}
        if "split" in dataset.column_names:
            values = set(dataset["split"])
            if self.split not in values:
                raise EvalDataError(self.name, f"the 'split' column has no value {self.split!r} (values: "
                                               f"{sorted(map(str, values))})", field="split")
            dataset = dataset.filter(lambda s: s == self.split, input_columns="split")
            skipped[f"split_column_not_{self.split}"] = n_rows - len(dataset)
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
        for k in self.ks:
            both = metrics[f"image_to_text_recall@{k}"], metrics[f"text_to_image_recall@{k}"]
            metrics[f"mean_recall@{k}"] = (both[0] + both[1]) / 2
        counts: dict[str, Any] = {"rows": n_rows, "rows_used": len(dataset), "skipped": skipped,
                                  "images": len(dataset), "texts": len(texts)}
        if self.karpathy_images is not None and len(dataset) != self.karpathy_images:
            counts["comparable_to_published"] = False
            counts["not_comparable_reason"] = (f"{len(dataset)} images scored; the Karpathy {self.split} split has "
                                               f"{self.karpathy_images}")
            logger.warning("%s: %s", self.name, counts["not_comparable_reason"])
        return [TaskResult(task="retrieval", primary_metric="mean_recall@1", metrics=metrics, counts=counts)]


@register
class Flickr30kRetrieval(RetrievalBenchmark):
    """Flickr30k retrieval on `clip-benchmark/wds_flickr30k`, split `test` = the Karpathy 1k test set (1,000 images,
    5 captions each). `nlphuji/flickr30k` is a loading script and `lmms-lab/flickr30k` has all 31,783 images without
    a split column; neither is the default."""

    name = "retrieval_flickr30k"
    dataset_id = "clip-benchmark/wds_flickr30k"
    split = "test"
    karpathy_images = 1000
    protocol = Protocol("Flickr30k (Karpathy 1k test) retrieval", "2", _RETRIEVAL_PROTOCOL +
                        " (ViT-B/32 openai mean_recall@1: 68.8)", _SHARED_DEPARTURES)


@register
class CocoRetrieval(RetrievalBenchmark):
    """MSCOCO retrieval on `clip-benchmark/wds_mscoco_captions`, split `test` = the Karpathy 5k test set (5,000
    images, about 25,000 captions)."""

    name = "retrieval_coco"
    dataset_id = "clip-benchmark/wds_mscoco_captions"
    split = "test"
    karpathy_images = 5000
    protocol = Protocol("MSCOCO (Karpathy 5k test) retrieval", "2", _RETRIEVAL_PROTOCOL +
                        " (ViT-B/32 openai mean_recall@1: 40.3)", _SHARED_DEPARTURES)
