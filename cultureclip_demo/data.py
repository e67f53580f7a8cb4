"""The demo's datasets, all as in-memory `datasets.Dataset`s with real Image features:

- pretraining rows for the trainer's `clip` objective (two independent (image, caption) examples per row);
- the fine-tuning mixture: CulTwin rows plus general replay rows, with the columns both objectives read;
- evaluation sets (validation or test views): twin choice in the CulTwin layout (`cultwin` benchmark, plus a
  `kind` column: flag or object twins) and general zero-shot classification in the ImageNet layout
  (`zeroshot_imagenet` benchmark with a ClassLabel column).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import datasets
import numpy as np

from dataset_builder.twin_catalog import TwinCatalog
from modeling_cultureclip.tiny import words_of

from .emoji_sources import EmojiConcept, ViewRange, is_flag, views

FINETUNE_COLUMNS = ("image", "twin_image", "caption", "twin_caption", "concept_id", "twin_concept_id", "concept",
                    "twin_concept")
REPLAY_PREFIX = "general:"
TEXT_COLUMNS = ("caption", "twin_caption", "concept", "twin_concept")


def _image_features(columns: dict[str, str]) -> datasets.Features:
    return datasets.Features({name: datasets.Image() if kind == "image" else datasets.Value(kind)
                              for name, kind in columns.items()})


def pretraining_rows(concepts: list[EmojiConcept], style, views_per_emoji: int, size: int, view: ViewRange,
                     seed: int) -> datasets.Dataset:
    """Views of every concept captioned with its name, shuffled and paired two examples to a row (the `clip`
    objective splits rows back into single examples and shuffles those independently)."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for concept in concepts:
        images += views(style, concept.char, views_per_emoji, size, view, rng)
        captions += [concept.name] * views_per_emoji
    order = rng.permutation(len(images))
    if len(order) % 2:
        order = order[:-1]
    first, second = order[0::2], order[1::2]
    columns = {"image": "image", "twin_image": "image", "caption": "string", "twin_caption": "string"}
    return datasets.Dataset.from_dict(
        {"image": [images[i] for i in first], "twin_image": [images[i] for i in second],
         "caption": [captions[i] for i in first], "twin_caption": [captions[i] for i in second]},
        features=_image_features(columns),
    )


def replay_rows(concepts: list[EmojiConcept], style, rows: int, size: int, view: ViewRange,
                seed: int) -> datasets.Dataset:
    """General emoji rows in the fine-tuning layout: each row holds two different random general emoji (one
    training-range view each), captioned and named by their CLDR names."""
    rng = np.random.default_rng(seed)
    data: dict[str, list] = {name: [] for name in FINETUNE_COLUMNS}
    for _ in range(rows):
        a, b = (concepts[i] for i in rng.choice(len(concepts), size=2, replace=False))
        for prefix, concept in (("", a), ("twin_", b)):
            data[f"{prefix}image"] += views(style, concept.char, 1, size, view, rng)
            data[f"{prefix}caption"].append(concept.name)
            data[f"{prefix}concept"].append(concept.name)
            data[f"{prefix}concept_id"].append(REPLAY_PREFIX + concept.name.casefold())
    columns = {name: "image" if name.endswith("image") else "string" for name in FINETUNE_COLUMNS}
    return datasets.Dataset.from_dict(data, features=_image_features(columns))


def finetune_mixture(cultwin: datasets.DatasetDict, replay: datasets.Dataset, seed: int) -> datasets.Dataset:
    """Every CulTwin row (all splits: the demo's test is on held-out views, see docs/demo.md) plus the replay rows,
    restricted to the columns the trainer reads, in a seeded order."""
    parts = [cultwin[split].select_columns(list(FINETUNE_COLUMNS)) for split in sorted(cultwin)]
    if len(replay):
        parts.append(replay.cast(parts[0].features))
    return datasets.concatenate_datasets(parts).shuffle(seed=seed).flatten_indices()


def texts_of(dataset: datasets.Dataset) -> list[str]:
    """Every caption and concept name of both sides of a CulTwin-layout dataset."""
    return [text for column in TEXT_COLUMNS for text in dataset[column]]


def words_new_to(mixture: datasets.Dataset, pretraining_captions: list[str]) -> list[str]:
    """Words of the mixture's captions and concept names that no pretraining caption uses, sorted."""
    return sorted(set(words_of(texts_of(mixture))) - set(words_of(pretraining_captions)))


KINDS = ("flag", "object")  # kinds of twin pair, from the catalog's emoji


def twin_kind(catalog: TwinCatalog, left: str, right: str) -> str:
    """"flag" when both emoji of a pair are flags (regional-indicator sequences), "object" when neither is."""
    flags = [is_flag(catalog.concepts[c].emoji or "") for c in (left, right)]
    if all(flags):
        return "flag"
    if not any(flags):
        return "object"
    raise ValueError(f"twin pair {left!r} / {right!r} pairs a flag with an object; the demo reports kinds apart")


def twin_eval_set(catalog: TwinCatalog, style, views_per_side: int, size: int, view: ViewRange,
                  seed: int) -> datasets.Dataset:
    """Views of every catalog pair in the CulTwin layout the `cultwin` benchmark reads: each row is one view of the
    concept and one of its twin; the task asks each image to pick its own name over the twin's. `kind` says
    whether the pair is a flag or an object twin."""
    rng = np.random.default_rng(seed)
    data: dict[str, list] = {name: [] for name in ("pair_id", "kind", "concept", "twin_concept", "country",
                                                   "twin_country", "image", "twin_image")}
    for index, (left, right) in enumerate(catalog.pairs):
        a, b = catalog.concepts[left], catalog.concepts[right]
        kind = twin_kind(catalog, left, right)
        images_a = views(style, a.emoji, views_per_side, size, view, rng)
        images_b = views(style, b.emoji, views_per_side, size, view, rng)
        for image_a, image_b in zip(images_a, images_b):
            data["pair_id"].append(f"pair-{index:03d}")
            data["kind"].append(kind)
            data["concept"].append(a.concept)
            data["twin_concept"].append(b.concept)
            data["country"].append(a.country)
            data["twin_country"].append(b.country)
            data["image"].append(image_a)
            data["twin_image"].append(image_b)
    columns = {name: "image" if name.endswith("image") else "string" for name in data}
    return datasets.Dataset.from_dict(data, features=_image_features(columns))


def general_eval_set(concepts: list[EmojiConcept], style, classes: int, views_per_class: int, size: int,
                     view: ViewRange, seed: int, exclude: frozenset[str] = frozenset()) -> datasets.Dataset:
    """Views of `classes` general emoji (seeded choice among those not named in `exclude`) as `image` + ClassLabel
    `label` (the names)."""
    rng = np.random.default_rng(seed)
    concepts = [c for c in concepts if c.name not in exclude]
    if classes > len(concepts):
        raise ValueError(f"general_classes={classes} but only {len(concepts)} general emoji are left to draw from")
    chosen = sorted((concepts[i] for i in rng.choice(len(concepts), size=classes, replace=False)),
                    key=lambda c: c.name)
    images, labels = [], []
    for label, concept in enumerate(chosen):
        images += views(style, concept.char, views_per_class, size, view, rng)
        labels += [label] * views_per_class
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[c.name for c in chosen])})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def class_names(general: datasets.Dataset) -> frozenset[str]:
    """The class names of a general zero-shot set."""
    return frozenset(general.features["label"].names)


@dataclass
class EvalSets:
    """One style's evaluation sets drawn from one view family."""

    twin: datasets.Dataset
    general: datasets.Dataset


def content_fingerprint(dataset: datasets.Dataset) -> str:
    """SHA-256 (first 16 hex digits) of every value of every row, images as their encoded bytes: equal datasets
    (same rows, same order, same pixels) give equal fingerprints however they were made or stored."""
    raw = dataset
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            raw = raw.cast_column(name, datasets.Image(decode=False))
    digest = hashlib.sha256()
    for name in sorted(raw.column_names):
        digest.update(name.encode())
        for value in raw[name]:
            if isinstance(value, dict):  # an undecoded image: its bytes, or its path when it has no bytes
                digest.update(value.get("bytes") or str(value.get("path")).encode())
            else:
                digest.update(repr(value).encode())
    return digest.hexdigest()[:16]


__all__ = ["EvalSets", "FINETUNE_COLUMNS", "KINDS", "REPLAY_PREFIX", "TEXT_COLUMNS", "class_names",
           "content_fingerprint", "finetune_mixture", "general_eval_set", "pretraining_rows", "replay_rows", "texts_of",
           "twin_eval_set", "twin_kind", "words_new_to"]
