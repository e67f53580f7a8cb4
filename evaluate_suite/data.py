"""Reading benchmark rows: required columns, undecoded image columns, and lazy image decoding with errors that
name the row (loading a split from the Hub or a folder is `sources.py`)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import datasets
from PIL import Image, UnidentifiedImageError

from .errors import EvalDataError


def require_columns(dataset: datasets.Dataset, columns: Iterable[str], benchmark: str) -> None:
    """Raise EvalDataError listing every missing column and the columns that exist."""
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise EvalDataError(
            benchmark, f"missing column(s) {missing}; the dataset has {sorted(dataset.column_names)}"
        )


def first_column(dataset: datasets.Dataset, candidates: Sequence[str], benchmark: str, what: str) -> str:
    """The first of `candidates` the dataset has; EvalDataError naming them and the columns that exist."""
    for column in candidates:
        if column in dataset.column_names:
            return column
    raise EvalDataError(benchmark, f"missing a {what} column (one of {list(candidates)}); the dataset has "
                                   f"{sorted(dataset.column_names)}")


def raw_images(dataset: datasets.Dataset, columns: Sequence[str]) -> datasets.Dataset:
    """The dataset with its image columns left undecoded, so that decoding errors can name their row."""
    for column in columns:
        feature = dataset.features.get(column)
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
        elif isinstance(feature, (datasets.Sequence, datasets.List)) and isinstance(feature.feature, datasets.Image):
            dataset = dataset.cast_column(column, datasets.List(datasets.Image(decode=False)))
    return dataset


def decode_image(value: object, benchmark: str, row: int, field: str) -> Image.Image:
    """An RGB PIL image from an undecoded `datasets.Image` value ({bytes, path}) or a PIL image."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if not isinstance(value, dict):
        raise EvalDataError(benchmark, f"expected an image, got {type(value).__name__}", row=row, field=field)
    data, path = value.get("bytes"), value.get("path")
    try:
        if data is not None:
            image = Image.open(io.BytesIO(data))
        elif path:
            image = Image.open(path)
        else:
            raise EvalDataError(benchmark, "image has neither bytes nor path", row=row, field=field)
        image.load()
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise EvalDataError(benchmark, f"unreadable image ({err})", row=row, field=field) from err


@dataclass(frozen=True)
class ImageRef:
    """Where one image lives: dataset row, column and, for list columns, the element index."""

    row: int
    column: str
    element: int | None = None


class ImageTable(Sequence):
    """The distinct images a benchmark scores, decoded lazily in the order the encoder asks for them."""

    def __init__(self, dataset: datasets.Dataset, benchmark: str):
        self.dataset, self.benchmark = dataset, benchmark
        self.refs: list[ImageRef] = []
        self._index: dict[ImageRef, int] = {}
        self._columns: dict[str, datasets.Dataset] = {}

    def add(self, ref: ImageRef) -> int:
        """Index of `ref` in the table, adding it on first sight."""
        if ref not in self._index:
            self._index[ref] = len(self.refs)
            self.refs.append(ref)
        return self._index[ref]

    def index_of(self, ref: ImageRef) -> int | None:
        """Index of `ref` if it is in the table."""
        return self._index.get(ref)

    def __len__(self) -> int:
        return len(self.refs)

    def _column(self, name: str) -> datasets.Dataset:
        # Reading one column avoids pulling every other (image) column of the row from Arrow.
        if name not in self._columns:
            self._columns[name] = self.dataset.select_columns([name])
        return self._columns[name]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.batch(range(*i.indices(len(self))))
        return self.batch([i])[0]

    def batch(self, indices: Iterable[int]) -> list[Image.Image]:
        """Decoded RGB images for table indices, read column by column in one Arrow call each."""
        refs = [self.refs[i] for i in indices]
        values: dict[int, object] = {}
        by_column: dict[str, list[int]] = {}
        for pos, ref in enumerate(refs):
            by_column.setdefault(ref.column, []).append(pos)
        for column, positions in by_column.items():
            cells = self._column(column)[[refs[p].row for p in positions]][column]
            for pos, cell in zip(positions, cells):
                values[pos] = cell
        images = []
        for pos, ref in enumerate(refs):
            value, field = values[pos], ref.column
            if ref.element is not None:
                field = f"{ref.column}[{ref.element}]"
                value = value[ref.element]
            images.append(decode_image(value, self.benchmark, ref.row, field))
        return images
