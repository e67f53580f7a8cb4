"""Cultural benchmarks scored as multiple choice: CROPE twins, GlobalRG retrieval/grounding, CultureVerse-style MCQ.

Schemas (column names/types) follow the Hub dataset cards where they could be confirmed; see each class docstring.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import datasets
import numpy as np
import torch

from dataset_builder.benchmark_yaml import CULTWIN_TASKS

from ..data import ImageRef, ImageTable
from ..encoders import DualEncoder
from ..errors import EvalDataError
from ..geography import continent_of, country_name
from ..metrics.core import bootstrap_ci, retrieval_recall
from ..protocols import Protocol
from .base import (
    ChoiceItems, EvalSettings, MultipleChoiceBenchmark, TaskResult, register, score_choices, shuffled,
)


def geo(country: str | None) -> dict[str, str | None]:
    """Country and continent group labels for a country name/code (None when absent or not a known country)."""
    if not country:
        return {"country": None, "continent": None}
    return {"country": country_name(country), "continent": continent_of(country)}


_SCORING = ("each image is scored against its option texts by cosine of L2-normalised features computed once per "
            "distinct image and text (the release calls the model once per image with all its options; the argmax is "
            "the same up to float rounding)")
_SHUFFLE = "option order is shuffled per item with a seeded RNG so an exact tie cannot favour a fixed position"


def _text(value: Any, benchmark: str, row: int, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EvalDataError(benchmark, f"expected a non-empty string, got {value!r}", row=row, field=field)
    return value.strip()


@register
class CropeTwins(MultipleChoiceBenchmark):
    """CROPE (`Malvinan/CROPE`, split `test`, 1,060 rows) as a twin choice between a concept and its look-alike.

    Columns used: `image` (Image), `definition_images` (list of Image), `answer` ("yes"/"no"), `metadata` (struct
    with `image_en_concept`, `definition_concept`, `image_concept`, `source_language` and URL fields; no country),
    optional `chapter`. Rows answered "no" pair an image of one concept with its hard negative: the main image
    should match "There is {image_en_concept} in the image.", each definition image "There is {definition_concept}
    in the image.". Rows answered "yes" have no twin; rows with an empty concept are skipped, as the release
    evaluator skips them; both are counted. Breakdowns by what the metadata holds: `source_language` and
    `chapter` (plus country/continent only if a metadata `country` field exists).
    """

    name = "crope"
    dataset_id = "Malvinan/CROPE"
    required_columns = ("image", "definition_images", "answer", "metadata")
    image_columns = ("image", "definition_images")
    seeded = False
    task_name = "twin_choice"
    template = "There is {} in the image."
    protocol = Protocol("CROPE twin choice", "2", "CultureCLIP release evaluator: binary choice between "
                        "\"There is {concept} in the image.\" for the image's concept and its look-alike; rows "
                        "with an empty concept skipped", (_SCORING, _SHUFFLE,
                                                          "rows answered 'yes' (no look-alike) are skipped and counted",
                                                          "adds breakdowns by source_language and chapter"))

    def build_items(self, dataset: datasets.Dataset, table: ImageTable, rng: np.random.Generator) -> ChoiceItems:
        items = ChoiceItems()
        answers = dataset["answer"]
        metadata = dataset["metadata"]
        chapters = dataset["chapter"] if "chapter" in dataset.column_names else [None] * len(dataset)
        n_definition = [len(x) if x is not None else 0 for x in dataset.select_columns(["definition_images"])[
            "definition_images"]]
        for row, (answer, meta) in enumerate(zip(answers, metadata)):
            if not isinstance(answer, str) or answer.strip().lower() not in ("yes", "no"):
                raise EvalDataError(self.name, f"answer must be 'yes' or 'no', got {answer!r}", row=row,
                                    field="answer")
            if answer.strip().lower() == "yes":
                self._skipped["answer_yes_no_twin"] += 1
                continue
            if not isinstance(meta, dict):
                raise EvalDataError(self.name, "metadata must be a struct", row=row, field="metadata")
            for key in ("image_en_concept", "definition_concept"):
                if key not in meta:
                    raise EvalDataError(self.name, f"metadata has no field {key!r} (fields: {sorted(meta)})",
                                        row=row, field="metadata")
            target, twin = meta["image_en_concept"], meta["definition_concept"]
            if not (isinstance(target, str) and target.strip()) or not (isinstance(twin, str) and twin.strip()):
                self._skipped["empty_concept"] += 1
                continue
            target, twin = target.strip(), twin.strip()
            if target == twin:
                raise EvalDataError(self.name, f"concept and twin are the same ({target!r})", row=row,
                                    field="metadata.definition_concept")
            options = [self.template.format(target), self.template.format(twin)]
            groups = {"source_language": meta.get("source_language") or None, "chapter": chapters[row] or None}
            if "country" in meta:
                groups.update(geo(meta.get("country")))
            opts, answer_index = shuffled(options, options[0], rng)
            items.add(row, table.add(ImageRef(row, "image")), opts, answer_index, kind="main_image", **groups)
            for element in range(n_definition[row]):
                opts, answer_index = shuffled(options, options[1], rng)
                items.add(row, table.add(ImageRef(row, "definition_images", element)), opts, answer_index,
                          kind="definition_image", **groups)
        return items


@register
class GlobalRGRetrieval(MultipleChoiceBenchmark):
    """GlobalRG-Retrieval (`UBC-VL/GlobalRG-Retrieval`, split `test`; card features: `image` Image, `region` string,
    `universal` string). Task `region_choice`: for a universal concept seen in >= 4 regions, pick the image's region
    among it and 3 seeded distractor regions of the same universal. Task `retrieval`: recall@k between every image
    and the texts "{universal} in {region}" (an image matches its own universal-region text).
    """

    name = "globalrg_retrieval"
    dataset_id = "UBC-VL/GlobalRG-Retrieval"
    required_columns = ("image", "region", "universal")
    task_name = "region_choice"
    template = "The picture depicts a kind of {universal} in {region}"
    n_options = 4
    ks = (1, 5, 10)
    protocol = Protocol("GlobalRG-Retrieval region choice", "2", "CultureCLIP release evaluator: 4-way choice of "
                        "\"The picture depicts a kind of {universal} in {region}\" among the image's region and 3 "
                        "distractor regions of the same universal (universals seen in >= 4 regions)",
                        (_SCORING, _SHUFFLE, "distractors come from numpy's seeded Generator, one draw per seed; the "
                         "release's own random draws cannot be reproduced, so per-seed values differ",
                         "region names are used as the dataset writes them (lowercase); country/continent groups "
                         "come from resolving them"))
    retrieval_protocol = Protocol("GlobalRG-Retrieval text-image recall@k", "2", "this suite's own task (not in the "
                                  "release): CLIP-paper recall@k between every image and the texts "
                                  "\"{universal} in {region}\"; an image's text is the one of its own pair", ())

    def protocol_for(self, task: str) -> Protocol:
        return self.retrieval_protocol if task == "retrieval" else self.protocol

    def _rows(self, dataset: datasets.Dataset) -> list[tuple[str, str]]:
        return [(_text(u, self.name, i, "universal"), _text(r, self.name, i, "region"))
                for i, (u, r) in enumerate(zip(dataset["universal"], dataset["region"]))]

    def build_items(self, dataset: datasets.Dataset, table: ImageTable, rng: np.random.Generator) -> ChoiceItems:
        rows = self._rows(dataset)
        regions: dict[str, set[str]] = defaultdict(set)
        for universal, region in rows:
            regions[universal].add(region)
        items = ChoiceItems()
        for row, (universal, region) in enumerate(rows):
            if len(regions[universal]) < self.n_options:
                self._skipped[f"universal_in_fewer_than_{self.n_options}_regions"] += 1
                continue
            others = sorted(regions[universal] - {region})
            picked = rng.choice(len(others), size=self.n_options - 1, replace=False)
            options = [self.template.format(universal=universal, region=r) for r in [region] + [others[i] for i in
                                                                                                picked]]
            opts, answer = shuffled(options, options[0], rng)
            items.add(row, table.add(ImageRef(row, "image")), opts, answer, **geo(region), universal=universal)
        return items

    def no_items_reason(self, dataset: datasets.Dataset) -> str:
        return f"no universal is seen in >= {self.n_options} regions; skipped: {self.skipped()}"

    def evaluate(self, encoder: DualEncoder, dataset: datasets.Dataset, settings: EvalSettings) -> list[TaskResult]:
        results = super().evaluate(encoder, dataset, settings)
        results.append(self._retrieval(encoder, self.prepare(dataset), settings))
        return results

    def _retrieval(self, encoder: DualEncoder, dataset: datasets.Dataset, settings: EvalSettings) -> TaskResult:
        rows = self._rows(dataset)
        texts = sorted({f"{u} in {r}" for u, r in rows})
        column = {t: j for j, t in enumerate(texts)}
        relevant = torch.zeros(len(rows), len(texts), dtype=torch.bool)
        for row, (u, r) in enumerate(rows):
            relevant[row, column[f"{u} in {r}"]] = True
        # Reuse the region_choice image features; only rows it skipped (rare universals) are encoded now.
        seen_table, seen_features = self._image_features
        missing = ImageTable(dataset, self.name)
        source = []
        for row in range(len(rows)):
            seen = seen_table.index_of(ImageRef(row, "image"))
            source.append((seen_features, seen) if seen is not None else (None, missing.add(ImageRef(row, "image"))))
        extra = encoder.encode_images(missing)
        features = torch.stack([(feats if feats is not None else extra)[i] for feats, i in source])
        similarity = features @ encoder.encode_texts(texts).T
        metrics = retrieval_recall(similarity, relevant, ks=self.ks)
        return TaskResult(task="retrieval", primary_metric="image_to_text_recall@1", metrics=metrics,
                          counts={"rows": len(rows), "rows_used": len(rows), "skipped": {}, "images": len(rows),
                                  "texts": len(texts)})


@register
class GlobalRGGrounding(MultipleChoiceBenchmark):
    """GlobalRG grounding (`UBC-VL/globalrg-grounding-task`, split `test`): pick the image's concept among it and 3
    seeded distractor concepts of the same region (regions with >= 4 concepts). Columns `image` (Image), `region`
    (string), `concept` (string), as on the UBCNLP/GlobalRG-Grounding card and in the release evaluator; the
    `globalrg-grounding-task` card itself could not be read here, so its schema is assumed to be the same.
    """

    name = "globalrg_grounding"
    dataset_id = "UBC-VL/globalrg-grounding-task"
    required_columns = ("image", "region", "concept")
    task_name = "concept_choice"
    template = "The item in the picture is {concept} in {region}"
    n_options = 4
    protocol = Protocol("GlobalRG-Grounding concept choice", "2", "CultureCLIP release evaluator: 4-way choice of "
                        "\"The item in the picture is {concept} in {region}\" among the image's concept and 3 "
                        "distractor concepts of the same region (regions with >= 4 concepts)",
                        (_SCORING, _SHUFFLE, "distractors come from numpy's seeded Generator, one draw per seed",
                         "the public dataset has no boxes, so grounding is scored as concept recognition"))

    def build_items(self, dataset: datasets.Dataset, table: ImageTable, rng: np.random.Generator) -> ChoiceItems:
        rows = [(_text(c, self.name, i, "concept"), _text(r, self.name, i, "region"))
                for i, (c, r) in enumerate(zip(dataset["concept"], dataset["region"]))]
        concepts: dict[str, set[str]] = defaultdict(set)
        for concept, region in rows:
            concepts[region].add(concept)
        items = ChoiceItems()
        for row, (concept, region) in enumerate(rows):
            if len(concepts[region]) < self.n_options:
                self._skipped[f"region_with_fewer_than_{self.n_options}_concepts"] += 1
                continue
            others = sorted(concepts[region] - {concept})
            picked = rng.choice(len(others), size=self.n_options - 1, replace=False)
            options = [self.template.format(concept=c, region=region) for c in [concept] + [others[i] for i in
                                                                                           picked]]
            opts, answer = shuffled(options, options[0], rng)
            items.add(row, table.add(ImageRef(row, "image")), opts, answer, **geo(region))
        return items

    def no_items_reason(self, dataset: datasets.Dataset) -> str:
        return f"no region has >= {self.n_options} concepts; skipped: {self.skipped()}"


@register
class CultureVerseMCQ(MultipleChoiceBenchmark):
    """CultureVerse-style recognition MCQ (CultureVerse itself is not public; this is the suite's own schema).

    Columns: `image` (Image), `options` (list of strings, near-miss concepts), `answer` (string equal to one option,
    or its letter "A".."Z"); optional `country`, `question_type` (only "recognition" rows are scored when present).
    Each option is scored as "a photo of {option}.".
    """

    name = "cultureverse_mcq"
    dataset_id = None
    required_columns = ("image", "options", "answer")
    seeded = False
    task_name = "recognition"
    template = "a photo of {}."
    protocol = Protocol("CultureVerse-style recognition MCQ (dual encoder)", "2",
                        "this suite's own schema (CultureVerse is not public): each option scored as "
                        "\"a photo of {option}.\", argmax", (_SHUFFLE,))

    def build_items(self, dataset: datasets.Dataset, table: ImageTable, rng: np.random.Generator) -> ChoiceItems:
        countries = dataset["country"] if "country" in dataset.column_names else [None] * len(dataset)
        qtypes = dataset["question_type"] if "question_type" in dataset.column_names else [None] * len(dataset)
        items = ChoiceItems()
        for row, (options, answer) in enumerate(zip(dataset["options"], dataset["answer"])):
            if qtypes[row] is not None and qtypes[row] != "recognition":
                self._skipped[f"question_type_{qtypes[row]}"] += 1
                continue
            if not isinstance(options, list) or len(options) < 2:
                raise EvalDataError(self.name, f"need a list of >= 2 options, got {options!r}", row=row,
                                    field="options")
            options = [_text(o, self.name, row, "options") for o in options]
            if len(set(options)) != len(options):
                raise EvalDataError(self.name, f"duplicate options {options}", row=row, field="options")
            if isinstance(answer, str) and answer.strip() in options:
                correct = answer.strip()
            elif isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().isalpha() and \
                    ord(answer.strip().upper()) - ord("A") < len(options):
                correct = options[ord(answer.strip().upper()) - ord("A")]
            else:
                raise EvalDataError(self.name, f"answer {answer!r} is not among the options {options}", row=row,
                                    field="answer")
            texts = [self.template.format(o) for o in options]
            opts, index = shuffled(texts, self.template.format(correct), rng)
            items.add(row, table.add(ImageRef(row, "image")), opts, index, **geo(countries[row]))
        return items


@register
class CulTwinHeldOut(MultipleChoiceBenchmark):
    """CulTwin held-out twins: the test split of a CulTwin build (schema in the dataset_builder card).

    Each row is one sample of a twin pair; both its images are scored against the concept and its twin (bare
    concept names by default; set `template`). Reports side accuracy, pair accuracy (both sides right) and a 2x2
    twin confusion matrix (true side x predicted side).
    """

    name = "cultwin"
    dataset_id = None
    required_columns = ("pair_id", "concept", "twin_concept", "image", "twin_image", "country", "twin_country")
    image_columns = ("image", "twin_image")
    seeded = False
    task_name = next(iter(CULTWIN_TASKS))  # the task id the CulTwin export's eval.yaml registers
    protocol = Protocol("CulTwin held-out twin choice", "2", "this suite's own task on a CulTwin build's test split "
                        "(the export's eval.yaml registers it): each image against [concept, twin concept]; pair "
                        "accuracy needs both images of a row right", (_SCORING,))

    def __init__(self, split: str | None = None, template: str = "{}", **params: Any):
        super().__init__(split=split, **params)
        if "{}" not in template:
            raise ValueError(f"template must contain '{{}}', got {template!r}")
        self.template = template

    def params(self) -> dict[str, Any]:
        return {**super().params(), "template": self.template}

    def build_items(self, dataset: datasets.Dataset, table: ImageTable, rng: np.random.Generator) -> ChoiceItems:
        items = ChoiceItems()
        columns = dataset.select_columns(["concept", "twin_concept", "country", "twin_country"])
        for row, record in enumerate(columns):
            concept = _text(record["concept"], self.name, row, "concept")
            twin = _text(record["twin_concept"], self.name, row, "twin_concept")
            if concept == twin:
                raise EvalDataError(self.name, f"concept and twin_concept are both {concept!r}", row=row,
                                    field="twin_concept")
            # Fixed option order [concept, twin] so predictions map to sides for the confusion matrix.
            options = [self.template.format(concept), self.template.format(twin)]
            items.add(row, table.add(ImageRef(row, "image")), options, 0, kind="concept_side",
                      **geo(record["country"]))
            items.add(row, table.add(ImageRef(row, "twin_image")), options, 1, kind="twin_side",
                      **geo(record["twin_country"]))
        return items

    def evaluate(self, encoder: DualEncoder, dataset: datasets.Dataset, settings: EvalSettings) -> list[TaskResult]:
        prepared = self.prepare(dataset)
        table = ImageTable(prepared, self.name)
        self._skipped = defaultdict(int)
        items = self.build_items(prepared, table, np.random.default_rng(settings.seeds[0]))
        predicted = score_choices(encoder, encoder.encode_images(table), items)
        answer = np.asarray(items.answer)
        correct = (predicted == answer).astype(float)
        result = self.choice_result(self.task_name, {settings.seeds[0]: items}, {settings.seeds[0]: correct},
                                    settings, len(prepared), len(table))
        # Items alternate concept side / twin side per row, so pairs are consecutive.
        pair_correct = correct.reshape(-1, 2).all(axis=1).astype(float)
        pair_ci = self._ci(pair_correct, settings)
        result.metrics["pair_accuracy"] = float(pair_correct.mean())
        result.confidence_intervals["pair_accuracy"] = pair_ci
        confusion = np.zeros((2, 2), dtype=int)
        np.add.at(confusion, (answer, predicted), 1)
        result.extras["confusion_matrix"] = {"labels": ["concept", "twin_concept"], "matrix": confusion.tolist(),
                                             "rows": "true side", "columns": "predicted side"}
        result.counts["pairs"] = int(len(pair_correct))
        result.counts["pair_ids"] = int(len(set(prepared["pair_id"])))
        return [result]

    @staticmethod
    def _ci(values: np.ndarray, settings: EvalSettings) -> dict:
        return bootstrap_ci(values, level=settings.confidence_level, n_resamples=settings.bootstrap_resamples,
                            seed=settings.seeds[0]).to_dict()
