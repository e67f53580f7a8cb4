"""argparse value types shared by the command lines: counts and fractions checked where they are parsed."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type=` that accepts whole numbers >= `minimum` (so `--limit-pairs 0` is refused, not ignored)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int>={minimum}"
    return parse


def float_between(low: float, high: float) -> Callable[[str], float]:
    """An argparse `type=` for numbers in [low, high]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in [{low:g}, {high:g}], got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a number in [{low:g}, {high:g}], got {value:g}")
        return value

    parse.__name__ = f"number in [{low:g}, {high:g}]"
    return parse


def int_list(text: str) -> list[int]:
    """Comma-separated whole numbers, at least one (`--seeds ''` and `--seeds a,b` are refused)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers (at least one), got {text!r}")
    try:
        return [int(item) for item in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


DEBUG_HELP = "show the full traceback of an error (or set CULTURECLIP_DEBUG=1)"

__all__ = ["DEBUG_HELP", "float_between", "int_at_least", "int_list"]
