"""Offline backends for the demo and tests.

They answer in exactly the format the real models are asked for, so the same prompts, parsers and stages run:
- `TemplateTextWriter` fills answers from `request.fields` (deterministic from `request.seed`);
- `TwemojiImageSource` renders the concept's real Twemoji PNG with seeded augmentations standing in for
  diffusion samples (rotation, scale, translation, background tint, mild blur; the emoji's own colours are left
  alone because colour is what separates many look-alike flags);
- `RuleBasedJudge` scores images from simple image statistics and answers in the judge format.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from ..catalog import CATEGORIES, all_countries, lookup_country
from ..schema import feature_list
from ..twemoji import emoji_on_white, emoji_rgba
from .base import ChatRequest

OFFLINE_TEXT_ID = "offline/template-text-writer"
OFFLINE_IMAGE_ID = "offline/twemoji-augment"
OFFLINE_JUDGE_ID = "offline/rule-based-judge"

# Stand-in concepts per category for top-down requests: (noun, visual features).
_POOLS: dict[str, list[tuple[str, str]]] = {
    "Cuisine": [("stew", "clay pot; thick brown sauce; rising steam"), ("flatbread", "round flat shape; charred spots; golden crust")],
    "Clothing": [("festival robe", "long loose cut; embroidered hem; bright red fabric"), ("woven hat", "wide brim; straw weave; pointed crown")],
    "Animals & Plants": [("mountain goat", "curved horns; thick white coat; sure hooves"), ("palm tree", "tall slim trunk; fan-shaped leaves; green fronds")],
    "Art": [("carved mask", "dark wooden face; carved eyes; painted stripes"), ("painted pottery", "round clay vase; blue patterns; glazed surface")],
    "Architecture": [("old town house", "whitewashed walls; tiled roof; wooden shutters"), ("stone tower", "tall round tower; grey stone; narrow windows")],
    "Daily Life": [("market basket", "woven reeds; round handle; brown colour"), ("tea kettle", "metal body; curved spout; black handle")],
    "Symbol": [("national emblem", "round seal; gold border; central star"), ("banner", "rectangular cloth; bold stripes; bright colours")],
    "Festival": [("festival lantern", "round paper lantern; warm glow; red colour"), ("parade costume", "feathered headdress; sequinned fabric; bright colours")],
}
_SCENES = [
    "at a busy market", "on a kitchen table", "in a family home", "on a city street", "at a village festival",
    "in a museum display", "beside a school gate", "at a wedding", "in a park", "on a shop shelf",
    "at a train station", "in a courtyard", "during a parade", "by a riverside", "in a classroom", "at sunset",
]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(int(seed) & 0xFFFFFFFF)


def _base_name(concept: str, country: str) -> str:
    return concept[len(country):].strip() if concept.startswith(country) else concept


class TemplateTextWriter:
    """A ChatBackend that answers concept/twin/captions/bottomup requests from their structured fields."""

    model_id = OFFLINE_TEXT_ID
    revision: str | None = "v1"

    def generate(self, requests: list[ChatRequest], max_new_tokens: int | None = None) -> list[str]:
        """One JSON answer per request (unknown tasks are a programming error and raise)."""
        return [self._answer(r) for r in requests]

    def _answer(self, req: ChatRequest) -> str:
        f, rng = req.fields, _rng(req.seed)
        if req.task == "concept":
            noun, feats = _POOLS[f["category"]][int(rng.integers(len(_POOLS[f["category"]])))]
            return json.dumps({"concept": f"{f['country']} {noun}",
                               "context": f"A {noun} that people in {f['country']} know from everyday life.",
                               "visual_features": feats})
        if req.task == "twin":
            others = [c for c in all_countries() if c.iso_code != f["iso_code"]]
            other = others[int(rng.integers(len(others)))]
            base = _base_name(f["concept"], f["country"])
            feats = feature_list(f["visual_features"])
            # Same traits in a shuffled order: a look-alike described in similar words.
            order = rng.permutation(len(feats))
            return json.dumps({"twin_concept": f"{other.name} {base}", "twin_country": other.name,
                               "twin_context": f"A {base} as it is known in {other.name}.",
                               "twin_visual_features": "; ".join(feats[i] for i in order)})
        if req.task == "captions":
            feats = feature_list(f["visual_features"])
            combos = [(a, s) for a in feats for s in _SCENES]
            picks = rng.permutation(len(combos))[: int(f["n"])]
            caps = [f"{f['concept']} with {combos[i][0]} {combos[i][1]}" for i in picks]
            return json.dumps({"captions": caps}, ensure_ascii=False)
        if req.task == "bottomup":
            return json.dumps(self._bottom_up(req))
        raise ValueError(f"TemplateTextWriter cannot answer task {req.task!r}")

    def _bottom_up(self, req: ChatRequest) -> dict[str, Any]:
        title = str(req.fields["title"])
        found = [c for c in all_countries() if c.name.casefold() in title.casefold()]
        keywords = {"flag": "Symbol", "dish": "Cuisine", "food": "Cuisine", "temple": "Architecture",
                    "castle": "Architecture", "church": "Architecture", "mosque": "Architecture",
                    "festival": "Festival", "dress": "Clothing", "robe": "Clothing", "doll": "Art"}
        category = next((cat for word, cat in keywords.items() if word in title.casefold()), None)
        empty = {"keep": False, "country": "", "category": "", "context": "", "visual_features": ""}
        if not found or category is None:
            return empty
        country = max(found, key=lambda c: len(c.name))
        image = _first_image(req)
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0)
        tone = ["red", "green", "blue"][int(np.argmax(rgb))]
        return {"keep": True, "country": country.name, "category": category,
                "context": f"The subject of the encyclopedia page {title!r}.",
                "visual_features": f"mostly {tone} tones; compact shape; plain background"}


def _first_image(req: ChatRequest) -> Image.Image:
    for msg in req.messages:
        content = msg.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image":
                    return part["image"]
    raise ValueError(f"request for task {req.task!r} has no image part")


def reference_emoji(fields: dict[str, Any], flag_when_missing: bool) -> str:
    """The emoji an offline backend draws for an item: `fields['emoji']`, or the country flag if allowed."""
    emoji = fields.get("emoji")
    if emoji:
        return str(emoji)
    if flag_when_missing and fields.get("iso_code"):
        return lookup_country(str(fields["iso_code"])).flag_emoji
    raise ValueError(f"item {fields.get('concept')!r} has no 'emoji' field and flag_when_missing is off")


class TwemojiImageSource:
    """An ImageBackend drawing the concept's Twemoji with seeded augmentations."""

    model_id = OFFLINE_IMAGE_ID
    revision: str | None = "v1"

    def __init__(self, width: int = 64, height: int = 64, max_rotation: float = 12.0, min_scale: float = 0.7,
                 max_scale: float = 1.0, max_shift: float = 0.12, max_blur: float = 0.8, flag_when_missing: bool = False):
        self.width, self.height = width, height
        self.max_rotation, self.min_scale, self.max_scale = max_rotation, min_scale, max_scale
        self.max_shift, self.max_blur, self.flag_when_missing = max_shift, max_blur, flag_when_missing

    def render(self, prompts: list[str], seeds: list[int], fields: list[dict[str, Any]]) -> list[Image.Image]:
        """One augmented image per (prompt, seed, fields); the prompt text itself is not used."""
        if not (len(prompts) == len(seeds) == len(fields)):
            raise ValueError("prompts, seeds and fields must have the same length")
        return [self._one(s, f) for s, f in zip(seeds, fields)]

    def _one(self, seed: int, fields: dict[str, Any]) -> Image.Image:
        rng = _rng(seed)
        tint = tuple(int(v) for v in rng.integers(215, 256, size=3))
        canvas = Image.new("RGBA", (self.width, self.height), (*tint, 255))
        side = min(self.width, self.height) * float(rng.uniform(self.min_scale, self.max_scale))
        icon = emoji_rgba(reference_emoji(fields, self.flag_when_missing))
        icon = icon.resize((max(1, round(side)), max(1, round(side))), Image.Resampling.LANCZOS)
        icon = icon.rotate(float(rng.uniform(-self.max_rotation, self.max_rotation)), Image.Resampling.BICUBIC, expand=True)
        dx, dy = (rng.uniform(-self.max_shift, self.max_shift, size=2) * np.array([self.width, self.height]))
        x = round((self.width - icon.width) / 2 + dx)
        y = round((self.height - icon.height) / 2 + dy)
        canvas.paste(icon, (x, y), icon)  # paste clips at the frame edge, alpha_composite would not
        out = canvas.convert("RGB")
        radius = float(rng.uniform(0.0, self.max_blur))
        return out.filter(ImageFilter.GaussianBlur(radius)) if radius > 0.05 else out


class RuleBasedJudge:
    """A ChatBackend for task "judge": scores from image statistics, answered as the judge JSON.

    - consistency: how much of the frame differs from the background (a near-blank or tiny subject scores low);
    - authenticity: edge energy (heavy blur or a flat image scores low);
    - cultural_fidelity: colour-histogram agreement with the concept's reference emoji.
    """

    model_id = OFFLINE_JUDGE_ID
    revision: str | None = "v1"

    def __init__(self, flag_when_missing: bool = False):
        self.flag_when_missing = flag_when_missing

    def generate(self, requests: list[ChatRequest], max_new_tokens: int | None = None) -> list[str]:
        """One judge answer per request."""
        out = []
        for req in requests:
            if req.task != "judge":
                raise ValueError(f"RuleBasedJudge only answers task 'judge', got {req.task!r}")
            out.append(json.dumps(self.scores(_first_image(req), req.fields)))
        return out

    def scores(self, image: Image.Image, fields: dict[str, Any]) -> dict[str, int]:
        """The three 1-5 scores for one image."""
        x = np.asarray(image.convert("RGB"), dtype=np.float32)
        if x.std() < 2.0:  # a blank frame shows nothing
            return {"authenticity": 1, "consistency": 1, "cultural_fidelity": 1}
        border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
        background = np.median(border, axis=0)
        coverage = float((np.abs(x - background).max(axis=2) > 30).mean())
        gray = x.mean(axis=2)
        edges = float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())
        ref = np.asarray(emoji_on_white(reference_emoji(fields, self.flag_when_missing)).resize(image.size), dtype=np.float32)
        fidelity = _hist_overlap(x, ref)
        return {
            "authenticity": _bucket(edges, (1.0, 3.0, 5.0, 8.0)),
            "consistency": _bucket(coverage, (0.03, 0.10, 0.20, 0.35)),
            "cultural_fidelity": _bucket(fidelity, (0.15, 0.30, 0.45, 0.60)),
        }


def _bucket(value: float, edges: tuple[float, float, float, float]) -> int:
    return 1 + sum(value >= e for e in edges)


def _hist_overlap(a: np.ndarray, b: np.ndarray, bins: int = 6) -> float:
    """Overlap (0-1) of coarse RGB histograms of non-white pixels (so background tint matters little)."""

    def hist(x: np.ndarray) -> np.ndarray:
        px = x.reshape(-1, 3)
        px = px[px.min(axis=1) < 200] if (px.min(axis=1) < 200).any() else px
        idx = np.clip((px / 256.0 * bins).astype(int), 0, bins - 1)
        h = np.bincount(idx[:, 0] * bins * bins + idx[:, 1] * bins + idx[:, 2], minlength=bins**3).astype(np.float64)
        return h / h.sum()

    return float(np.minimum(hist(a), hist(b)).sum())


def offline_categories() -> tuple[str, ...]:
    """Categories the template writer has stand-in pools for (all eight)."""
    assert set(_POOLS) == set(CATEGORIES)
    return CATEGORIES
