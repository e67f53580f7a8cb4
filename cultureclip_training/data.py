"""CulTwin training data: load, validate, encode lazily, and plan deterministic batches.

Rows are read with `datasets.load_dataset` (Hub id or local folder) and checked up front. Images are decoded and
text tokenised only for the rows a batch touches (a `with_transform`), with text padded to the longest item of the
batch. For `objective: cultureclip` one row is one twin pair (both sides come from the row itself); for
`objective: clip` the two sides become separate (image, caption) examples shuffled independently. Only the columns
the objective reads are required (`required_columns`); metadata such as country, ISO code, continent, visual
features, seeds and judge scores may be null where they are honestly unknown (the imported authors' release has no
country at all), since training never reads them.

Batch order depends only on the seed, the epoch and the global batch size, never on the number of processes, so
a run on W processes sees the same global batches as a run on one, and a resumed run sees the batches that the
uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from PIL import Image as PILImage

from cultureclip_guards import BadInput

TEXT_DTYPES = ("string", "large_string")
MIN_IMAGE_SIDE = 8  # pixels; smaller images (a 1x1 placeholder) carry nothing to learn from
# columns per objective and their kinds; the clip baseline uses both sides' (image, caption) columns
CULTURECLIP_COLUMNS = {
    "image": "image", "twin_image": "image", "caption": "text", "twin_caption": "text",
    "concept_id": "text", "twin_concept_id": "text",
}
CONCEPT_COLUMNS = {"concept": "text", "twin_concept": "text"}
CLIP_COLUMNS = {"image": "image", "twin_image": "image", "caption": "text", "twin_caption": "text"}


class DatasetSchemaError(BadInput):
    """The training data lacks a column, has a column of the wrong type, an empty split or an empty text."""


def required_columns(objective: str, with_concepts: bool) -> dict[str, str]:
    """The columns (name -> "image" | "text") an objective reads."""
    if objective == "clip":
        return dict(CLIP_COLUMNS)
    return {**CULTURECLIP_COLUMNS, **(CONCEPT_COLUMNS if with_concepts else {})}


def load_split(source: str, split: str, config: str | None = None) -> datasets.Dataset:
    """One split of a dataset from the Hub or a local folder, with an error naming what is missing."""
    if not source:
        raise DatasetSchemaError("no dataset given: set --dataset to a Hub id or a local CulTwin folder")
    try:
        return datasets.load_dataset(source, config, split=split)
    except ValueError as error:
        # datasets reports these two cases as bare ValueErrors; name them in the trainer's terms
        message = str(error)
        if "corresponds to no data" in message:
            raise DatasetSchemaError(f"split {split!r} of dataset {source!r} is empty: no rows to train on") from error
        if "Unknown split" in message:
            raise DatasetSchemaError(f"dataset {source!r} has no split {split!r}: {message}") from error
        raise


def validate(dataset: datasets.Dataset, columns: dict[str, str], split: str = "train") -> None:
    """Check column presence, feature types and non-empty texts before any training starts."""
    if len(dataset) == 0:
        raise DatasetSchemaError(f"split {split!r} is empty: no rows to train on")
    features = dataset.features
    missing = [name for name in columns if name not in features]
    if missing:
        raise DatasetSchemaError(
            f"split {split!r} is missing column(s) {missing}; the trainer needs {sorted(columns)} "
            f"(present: {sorted(features)})"
        )
    for name, kind in columns.items():
        feature = features[name]
        if kind == "image" and not isinstance(feature, datasets.Image):
            raise DatasetSchemaError(
                f"column {name!r} of split {split!r} has type {feature!r}; expected datasets.Image"
            )
        if kind == "text" and not (isinstance(feature, datasets.Value) and feature.dtype in TEXT_DTYPES):
            raise DatasetSchemaError(f"column {name!r} of split {split!r} has type {feature!r}; expected a string")
    for name, kind in columns.items():
        if kind != "text":
            continue
        for row, value in enumerate(dataset[name]):
            if value is None or not str(value).strip():
                raise DatasetSchemaError(f"column {name!r} of split {split!r} is empty at row {row}")
    for name, kind in columns.items():
        if kind == "image":
            check_image_headers(dataset, name, split)
    if "concept_id" in columns and "twin_concept_id" in columns:
        for row, (a, b) in enumerate(zip(dataset["concept_id"], dataset["twin_concept_id"])):
            if a == b:
                raise DatasetSchemaError(f"split {split!r} row {row}: the twin is the row's own concept "
                                         f"(concept_id and twin_concept_id are both {a!r}); a twin pair needs two "
                                         "different concepts")


def check_image_headers(dataset: datasets.Dataset, column: str, split: str = "train", chunk: int = 512) -> None:
    """Every image of `column` must be a readable image of at least MIN_IMAGE_SIDE pixels a side.

    Only each file's header is parsed (no pixel decoding), a chunk of rows at a time, so this costs a read of the
    image bytes, small beside training on them, and a bad row stops the run before any step, named.
    """
    import io

    raw = dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    for start in range(0, len(raw), chunk):
        for offset, value in enumerate(raw[start:start + chunk][column]):
            row = start + offset
            data = value.get("bytes") if isinstance(value, dict) else None
            try:
                if data is not None:
                    with PILImage.open(io.BytesIO(data)) as image:
                        size = image.size
                elif isinstance(value, dict) and value.get("path"):
                    with PILImage.open(value["path"]) as image:
                        size = image.size
                else:
                    raise DatasetSchemaError(f"split {split!r} row {row}, column {column!r}: no image (null)")
            except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as error:
                if isinstance(error, DatasetSchemaError):
                    raise
                raise DatasetSchemaError(f"split {split!r} row {row}, column {column!r}: an image cannot be "
                                         f"decoded ({' '.join(str(error).split())[:160]})") from None
            if min(size) < MIN_IMAGE_SIDE:
                raise DatasetSchemaError(f"split {split!r} row {row}, column {column!r}: image is {size[0]}x{size[1]} "
                                         f"pixels, expected at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}")


def concept_vocabulary(dataset: datasets.Dataset) -> dict[str, int]:
    """Integer ids for concept_id strings (both sides), sorted so every rank derives the same ids."""
    names = set(dataset["concept_id"]) | set(dataset["twin_concept_id"])
    return {name: index for index, name in enumerate(sorted(names))}


def split_sides(dataset: datasets.Dataset) -> datasets.Dataset:
    """The clip baseline's examples: each row's `+` side then all twin sides, as (image, caption) rows."""
    plus = dataset.select_columns(["image", "caption"])
    twin = dataset.select_columns(["twin_image", "twin_caption"]).rename_columns(
        {"twin_image": "image", "twin_caption": "caption"}
    )
    return datasets.concatenate_datasets([plus, twin])


class _BadImage(DatasetSchemaError):
    """An image of a batch is too small; `position` is its place in the batch (the caller names the row)."""

    def __init__(self, message: str, position: int):
        super().__init__(message)
        self.position = position


def _rgb(images: Sequence[Any], column: str) -> list[PILImage.Image]:
    converted = []
    for position, image in enumerate(images):
        if not isinstance(image, PILImage.Image):
            raise DatasetSchemaError(f"column {column!r}: expected a decoded image, got {type(image).__name__}")
        if min(image.size) < MIN_IMAGE_SIDE:
            raise _BadImage(f"column {column!r}: image is {image.size[0]}x{image.size[1]} pixels, expected at least "
                            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}", position)
        converted.append(image.convert("RGB"))
    return converted


class BatchEncoder:
    """The `with_transform` function: decodes the touched rows' images and tokenises their texts."""

    def __init__(self, processor: Any, objective: str, with_concepts: bool, concept_ids: dict[str, int] | None,
                 max_text_length: int):
        self.image_processor = processor.image_processor
        self.tokenizer = processor.tokenizer
        self.objective = objective
        self.with_concepts = with_concepts
        self.concept_ids = concept_ids
        self.max_text_length = max_text_length

    def _pixels(self, batch: dict[str, list], column: str) -> torch.Tensor:
        return self.image_processor(images=_rgb(batch[column], column), return_tensors="pt")["pixel_values"]

    def _text(self, batch: dict[str, list], column: str) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.tokenizer(list(batch[column]), padding="longest", truncation=True,
                                 max_length=self.max_text_length, return_tensors="pt")
        return encoded["input_ids"], encoded["attention_mask"]

    def _ids(self, batch: dict[str, list], column: str) -> torch.Tensor:
        assert self.concept_ids is not None
        return torch.tensor([self.concept_ids[name] for name in batch[column]], dtype=torch.long)

    def __call__(self, batch: dict[str, list]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {"pixel_values": self._pixels(batch, "image")}
        out["input_ids"], out["attention_mask"] = self._text(batch, "caption")
        if self.objective == "clip":
            return out
        out["twin_pixel_values"] = self._pixels(batch, "twin_image")
        out["twin_input_ids"], out["twin_attention_mask"] = self._text(batch, "twin_caption")
        if self.with_concepts:
            out["concept_input_ids"], out["concept_attention_mask"] = self._text(batch, "concept")
            out["twin_concept_input_ids"], out["twin_concept_attention_mask"] = self._text(batch, "twin_concept")
        out["concept_ids"] = self._ids(batch, "concept_id")
        out["twin_concept_ids"] = self._ids(batch, "twin_concept_id")
        return out


@dataclass
class TrainData:
    """Examples ready to index by batch (rows for cultureclip, sides for clip) and how they were made."""

    examples: datasets.Dataset  # with the BatchEncoder transform set
    num_rows: int
    concept_ids: dict[str, int] | None


def prepare(dataset: datasets.Dataset, processor: Any, objective: str, with_concepts: bool, max_text_length: int,
            split: str = "train") -> TrainData:
    """Validate `dataset` and attach the lazy encoder for `objective`."""
    validate(dataset, required_columns(objective, with_concepts), split)
    vocabulary = concept_vocabulary(dataset) if objective == "cultureclip" else None
    examples = split_sides(dataset) if objective == "clip" else dataset
    encoder = BatchEncoder(processor, objective, with_concepts, vocabulary, max_text_length)
    return TrainData(examples=examples.with_transform(encoder), num_rows=len(dataset), concept_ids=vocabulary)


class BatchPlan:
    """Which examples each process reads at each step.

    A step takes the next `global_batch` examples of the epoch's permutation; process r gets the r-th contiguous
    share and splits it into `micro_batches` equal micro-batches. The trailing partial batch of an epoch is
    dropped (every rank must hold the same number of rows for the gathered loss).
    """

    def __init__(self, num_examples: int, per_device: int, micro_batches: int, world_size: int, rank: int,
                 seed: int):
        self.num_examples = num_examples
        self.per_device = per_device
        self.micro_batches = micro_batches
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.global_batch = per_device * micro_batches * world_size
        self.steps_per_epoch = num_examples // self.global_batch
        if self.steps_per_epoch == 0:
            raise DatasetSchemaError(
                f"the data has {num_examples} examples, fewer than one global batch of {self.global_batch} "
                f"(per_device_batch_size {per_device} x micro_batches {micro_batches} x {world_size} processes)"
            )

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_examples, generator=generator)

    def step_indices(self, epoch: int, step: int, permutation: torch.Tensor | None = None) -> list[list[int]]:
        """This rank's micro-batches (lists of example indices) for `step` of `epoch`."""
        order = self.permutation(epoch) if permutation is None else permutation
        share = self.per_device * self.micro_batches
        start = step * self.global_batch + self.rank * share
        mine = order[start:start + share].tolist()
        return [mine[i * self.per_device:(i + 1) * self.per_device] for i in range(self.micro_batches)]


class _StepBatches(torch.utils.data.Dataset):
    """Item j = the encoded micro-batches of step (start + j), so DataLoader workers can prefetch whole steps."""

    def __init__(self, data: TrainData, plan: BatchPlan, epoch: int, start: int):
        self.data, self.plan, self.epoch, self.start = data, plan, epoch, start
        self.order = plan.permutation(epoch)

    def __len__(self) -> int:
        return self.plan.steps_per_epoch - self.start

    def __getitem__(self, j: int) -> list[tuple[list[int], dict[str, torch.Tensor]]]:
        micro = self.plan.step_indices(self.epoch, self.start + j, self.order)
        return [(indices, encode_rows(self.data, indices)) for indices in micro]


def encode_rows(data: TrainData, indices: list[int]) -> dict[str, torch.Tensor]:
    """The encoded batch of `indices`; an image that is too small or cannot be decoded stops with the row named."""
    what = "row" if data.concept_ids is not None else "example (clip sides: rows, then twin sides)"
    try:
        return data.examples[indices]
    except _BadImage as error:
        raise DatasetSchemaError(f"{what} {indices[error.position]}: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL: unreadable bytes, truncated or not an image
        if isinstance(error, DatasetSchemaError):
            raise
        for index in indices:  # find the row (only on this error path)
            try:
                data.examples[[index]]
            except (OSError, SyntaxError, ValueError) as inner:
                raise DatasetSchemaError(f"{what} {index}: an image cannot be decoded "
                                         f"({' '.join(str(inner).split())[:200]})") from None
        raise


def _as_is(item: Any) -> Any:
    return item


def epoch_batches(data: TrainData, plan: BatchPlan, epoch: int, start_step: int = 0,
                  num_workers: int = 0) -> Iterator[list[tuple[list[int], dict[str, torch.Tensor]]]]:
    """Steps of `epoch` from `start_step` on: each a list of (example indices, encoded micro-batch)."""
    steps = _StepBatches(data, plan, epoch, start_step)
    # a private generator: creating a loader iterator would otherwise draw from the global RNG, and a resumed
    # run creates its iterator at a different point than the uninterrupted run did
    generator = torch.Generator().manual_seed(plan.seed * 1_000_003 + epoch)
    loader = torch.utils.data.DataLoader(steps, batch_size=None, shuffle=False, num_workers=num_workers,
                                         collate_fn=_as_is, generator=generator)
    yield from loader


__all__ = ["BatchEncoder", "BatchPlan", "DatasetSchemaError", "TrainData", "concept_vocabulary", "epoch_batches",
           "load_split", "prepare", "required_columns", "split_sides", "validate"]
