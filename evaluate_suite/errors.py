"""The one error type the suite raises for bad benchmark input, always naming the benchmark, row and field."""

from __future__ import annotations


class EvalDataError(ValueError):
    """Bad or unusable benchmark data (missing column, unreadable image, answer not among options, no items)."""

    def __init__(self, benchmark: str, message: str, row: int | None = None, field: str | None = None):
        where = [f"benchmark {benchmark!r}"]
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}")
        self.benchmark, self.row, self.field = benchmark, row, field
