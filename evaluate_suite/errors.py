"""The one error type the suite raises for bad benchmark input, always naming the benchmark, and where known the
source (Hub id or folder), row and field."""

from __future__ import annotations

from cultureclip_guards import BadInput


class EvalDataError(BadInput):
    """Bad or unusable benchmark data (missing column, unreadable image, answer not among options, no items)."""

    def __init__(self, benchmark: str, message: str, row: int | None = None, field: str | None = None,
                 source: str | None = None):
        where = [f"benchmark {benchmark!r}"]
        if source is not None:
            where.append(f"source {source!r}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}")
        self.benchmark, self.row, self.field, self.source, self.message = benchmark, row, field, source, message

    def with_source(self, source: str) -> EvalDataError:
        """The same error naming `source` (unchanged if it names one already)."""
        if self.source is not None:
            return self
        return EvalDataError(self.benchmark, self.message, row=self.row, field=self.field, source=source)
