"""How the demo scores one model on one family of views.

Two outputs per (style, task): the evaluation suite's record (through `evaluate_suite.runner.evaluate_model`, the
published form), and the model's right/wrong answer on every item, which the paired comparison needs and the
records do not carry. The per-item answers are computed the way the suite's `cultwin` and `zeroshot_imagenet`
benchmarks compute theirs (same option order, same class embeddings, same argmax), and a test checks that their
means equal the records' accuracies. One encoder serves both, and it remembers image features by pixel content, so
no image is encoded twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image

from evaluate_suite.encoders import DualEncoder
from evaluate_suite.runner import evaluate_model
from evaluate_suite.tasks import get_benchmark

from .data import EvalSets, content_fingerprint

GENERAL_TEMPLATES = ("{}",)  # the names alone, as in pretraining
TASKS = ("twin", "general")


class CachingEncoder(DualEncoder):
    """A DualEncoder that keeps the features of every image it encoded, keyed by the image's RGB pixels."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._image_cache: dict[bytes, torch.Tensor] = {}
        self.images_encoded = 0

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        images = list(images)
        rgb = [image if image.mode == "RGB" else image.convert("RGB") for image in images]
        keys = [_pixel_key(image) for image in rgb]
        todo = {key: image for key, image in zip(keys, rgb) if key not in self._image_cache}
        if todo:
            features = super().encode_images(list(todo.values()))
            self._image_cache.update(zip(todo, features))
            self.images_encoded += len(todo)
        if not keys:
            return torch.empty(0, self.embedding_dim)
        return torch.stack([self._image_cache[key] for key in keys])


def _pixel_key(image: Image.Image) -> bytes:
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(repr(image.size).encode())
    return digest.digest()


_DECODED: dict[tuple[str, str], list[Image.Image]] = {}  # decoded image columns by (datasets fingerprint, column)


def decoded(dataset: datasets.Dataset, column: str) -> list[Image.Image]:
    """A dataset's decoded image column, decoded once per process (a run scores the same sets many times)."""
    key = (dataset._fingerprint, column)
    if key not in _DECODED:
        _DECODED[key] = list(dataset[column])
    return _DECODED[key]


def twin_answers(encoder: DualEncoder, dataset: datasets.Dataset, template: str = "{}") -> np.ndarray:
    """1/0 per item, two items per row (the concept's image, then the twin's), as the `cultwin` benchmark orders
    and scores them: options [concept, twin] in that order, cosine argmax (a tie picks the concept)."""
    concepts = [template.format(text) for text in dataset["concept"]]
    twins = [template.format(text) for text in dataset["twin_concept"]]
    images = [image for pair in zip(decoded(dataset, "image"), decoded(dataset, "twin_image")) for image in pair]
    image_features = encoder.encode_images(images)
    options = torch.stack([encoder.encode_texts(concepts), encoder.encode_texts(twins)], dim=1)  # (rows, 2, dim)
    options = options.repeat_interleave(2, dim=0)
    cosine = torch.einsum("nd,nkd->nk", image_features, options)
    answer = torch.tensor([0, 1] * len(dataset))
    return (cosine.argmax(dim=1) == answer).numpy().astype(np.uint8)


def general_answers(encoder: DualEncoder, dataset: datasets.Dataset, bench=None) -> np.ndarray:
    """1/0 per image: top-1 zero-shot over the set's class names, with the benchmark's own class embeddings."""
    bench = bench or get_benchmark("zeroshot_imagenet", templates=GENERAL_TEMPLATES)
    names = list(dataset.features["label"].names)
    scores = (encoder.encode_images(decoded(dataset, "image")) @ bench.class_embeddings(encoder, names).T).numpy()
    return (scores.argmax(axis=1) == np.asarray(dataset["label"])).astype(np.uint8)


@dataclass
class ItemLayout:
    """What the items of one (style, task) are: their group (twin pair, or general class) and kind."""

    groups: list[str]
    kinds: list[str]

    @classmethod
    def of_twin(cls, dataset: datasets.Dataset) -> ItemLayout:
        return cls([g for g in dataset["pair_id"] for _ in range(2)], [k for k in dataset["kind"] for _ in range(2)])

    @classmethod
    def of_general(cls, dataset: datasets.Dataset) -> ItemLayout:
        names = dataset.features["label"].names
        labels = [names[label] for label in dataset["label"]]
        return cls(labels, ["general"] * len(labels))


@dataclass
class Scored:
    """One model on one view family: per-item answers and (when asked) the suite's records, per style and task."""

    answers: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    records: dict[str, dict[str, dict]] = field(default_factory=dict)

    def accuracy(self, style: str, task: str) -> float:
        return float(np.mean(self.answers[style][task]))


_FINGERPRINTS: dict[str, str] = {}  # content fingerprints by datasets' own fingerprint (each set is hashed once)


def dataset_description(dataset: datasets.Dataset, name: str, family: dict[str, Any]) -> dict[str, Any]:
    """What a record's `dataset` field says about a demo evaluation set: in memory, no Hub id (it is not one), its
    name, how its views were drawn and a content fingerprint."""
    key = dataset._fingerprint
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = content_fingerprint(dataset)
    return {"kind": "in-memory", "id": None, "name": name, "source": "rendered in memory by cultureclip_demo",
            "rows": len(dataset), "fingerprint": _FINGERPRINTS[key], "views": family}


def _record(model, processor, bench, dataset: datasets.Dataset, task: str, encoder: DualEncoder, *, model_id: str,
            dataset_name: str, views: dict[str, Any], seed: int, bootstrap_resamples: int) -> dict[str, Any]:
    """evaluate_suite's record of one task, its dataset described as the demo's own in-memory set."""
    record = evaluate_model(model, processor, bench, dataset, encoder=encoder, seeds=(seed,),
                            bootstrap_resamples=bootstrap_resamples, dataset_name=dataset_name,
                            model_name=model_id)[task]
    record["dataset"].update(dataset_description(dataset, dataset_name, views))
    return record


def score_model(model, processor, sets: dict[str, EvalSets], *, model_id: str, batch_size: int, seed: int,
                with_records: bool, bootstrap_resamples: int = 200, family: str = "test",
                family_settings: Any = None) -> Scored:
    """Score `model` on every style's sets. Records (evaluate_suite's JSON form) only when `with_records`."""
    encoder = CachingEncoder(model, processor, batch_size=batch_size, device="cpu", model_id=model_id)
    general_bench = get_benchmark("zeroshot_imagenet", templates=GENERAL_TEMPLATES)
    scored = Scored()
    views = asdict(family_settings) if family_settings is not None else {}
    for style, pair in sets.items():
        scored.answers[style] = {"twin": twin_answers(encoder, pair.twin).tolist(),
                                 "general": general_answers(encoder, pair.general, general_bench).tolist()}
        if not with_records:
            continue
        common = dict(model_id=model_id, views=views, seed=seed, bootstrap_resamples=bootstrap_resamples)
        twin = _record(model, processor, "cultwin", pair.twin, "twin_choice", encoder,
                       dataset_name=f"cultureclip-demo {style} twins, {family} views", **common)
        general = _record(model, processor, general_bench, pair.general, "zero_shot", encoder,
                          dataset_name=f"cultureclip-demo {style} general emoji, {family} views", **common)
        scored.records[style] = {"twin": twin, "general": general}
    return scored


__all__ = ["CachingEncoder", "GENERAL_TEMPLATES", "ItemLayout", "Scored", "TASKS", "dataset_description",
           "general_answers", "score_model", "twin_answers"]
