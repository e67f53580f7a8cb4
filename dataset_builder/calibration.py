"""Calibrating the twin text-similarity threshold on a curated twin catalog.

Positives are the catalog's twin pairs; negatives are every other pair of concepts from the same category and
different countries (the full population that "random same-category pairs" sample from). Both are scored exactly
as the twins stage scores a proposal (`schema.similarity_text` under the given embedder). The recommended threshold
keeps a chosen share of the true twins (default 95 %), rounded down to 0.01; the report also gives the two other
operating points a reader wants: the threshold that keeps every twin, and the one that rejects 90 % of negatives.

With `image_reference`, every pair is also measured on the catalog's own Twemoji images (mean absolute pixel
difference). That tells a catalog author whether its "negatives" really look different. For flat designs such as
flags pixels track looks (though a colour swap counts as unalike), and a non-twin flag that differs no more than its
category's least-alike twin is, by this measure, as much a look-alike as that twin. For drawn objects pixels are a
crude measure, which the image AUC shows.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .embedders import TextEmbedder
from .schema import similarity_text
from .twemoji import EmojiNotFoundError, emoji_rgba, pixel_difference
from .twin_catalog import TwinCatalog


@dataclass(frozen=True)
class ScoredPair:
    """One scored pair of concept names."""

    a: str
    b: str
    category: str
    similarity: float
    pixel_difference: float | None = None  # of the two Twemoji images, only with `image_reference`


@dataclass
class Calibration:
    """Similarities of true twins and same-category negatives under one embedder, and the threshold they give."""

    embedder: str
    catalog: str
    keep_twins: float
    twins: list[ScoredPair]
    negatives: list[ScoredPair]
    recommended: float = field(init=False)

    def __post_init__(self) -> None:
        if not self.twins or not self.negatives:
            raise ValueError(f"{self.catalog}: calibration needs twin pairs and same-category negatives")
        sims = np.array([p.similarity for p in self.twins])
        # The largest 0.01 step that keeps at least `keep_twins` of the true twins.
        q = float(np.quantile(sims, 1.0 - self.keep_twins, method="lower"))
        self.recommended = math.floor(q * 100 + 1e-9) / 100

    def categories(self) -> list[str]:
        """The categories of the scored pairs, sorted."""
        return sorted({p.category for p in self.twins + self.negatives})

    def kept_twins(self, threshold: float) -> float:
        """Share of true twins scoring at least `threshold` (the twins stage keeps similarity >= threshold)."""
        return float(np.mean([p.similarity >= threshold for p in self.twins]))

    def rejected_negatives(self, threshold: float, category: str | None = None) -> float:
        """Share of negatives (optionally of one category) scoring below `threshold`."""
        sims = [p.similarity for p in self.negatives if category is None or p.category == category]
        return float(np.mean([s < threshold for s in sims])) if sims else float("nan")

    def auc(self, category: str | None = None) -> float:
        """Probability that a true twin outscores a same-category negative (ties count half), over all pairs or
        within one category (nan where the category lacks twins or negatives).

        Within a category the question is the twins stage's own (is this proposal more alike than its category's
        usual pair?); pooled, one threshold must also serve categories whose usual pairs differ in similarity."""
        return _auc([p.similarity for p in self.twins if category is None or p.category == category],
                    [p.similarity for p in self.negatives if category is None or p.category == category])

    def image_reference(self) -> dict[str, dict[str, float]]:
        """Per category with twins and negatives (and "all"), measured on the catalog's images: the image AUC (a twin
        differs less in pixels than a negative), the share of negatives at least as alike in pixels as the category's
        least-alike twin, and the share of negatives text similarity rejects at the category's own keep-every-twin
        threshold (the best one threshold per category could do). Empty without `image_reference`."""
        if any(p.pixel_difference is None for p in self.twins + self.negatives):
            return {}
        out: dict[str, dict[str, float]] = {}
        alike = rejected = total = 0
        for category in self.categories():
            t_px, n_px = (np.array([p.pixel_difference for p in pairs if p.category == category], dtype=float)
                          for pairs in (self.twins, self.negatives))
            if t_px.size == 0 or n_px.size == 0:
                continue
            lowest_twin = min(p.similarity for p in self.twins if p.category == category)
            c_alike = int(np.sum(n_px <= t_px.max()))
            c_rejected = round(self.rejected_negatives(lowest_twin, category) * n_px.size)
            out[category] = {"image_auc": round(_auc(-t_px, -n_px), 4),  # a twin differs less in pixels
                             "negatives_alike_by_image": round(c_alike / n_px.size, 4),
                             "text_rejects_keeping_every_twin": round(c_rejected / n_px.size, 4),
                             "negatives": int(n_px.size)}
            alike, rejected, total = alike + c_alike, rejected + c_rejected, total + int(n_px.size)
        if total:
            out["all"] = {"negatives_alike_by_image": round(alike / total, 4),
                          "text_rejects_keeping_every_twin": round(rejected / total, 4), "negatives": total}
        return out

    def operating_points(self) -> dict[str, float]:
        """Named thresholds: recommended, keep every twin, reject 90 % of negatives."""
        negatives = np.array([p.similarity for p in self.negatives])
        return {
            f"recommended (keeps >= {self.keep_twins:.0%} of twins)": self.recommended,
            "keeps every twin": math.floor(min(p.similarity for p in self.twins) * 100 + 1e-9) / 100,
            "rejects 90% of negatives": math.ceil(float(np.quantile(negatives, 0.9)) * 100 - 1e-9) / 100,
        }

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable summary (for `--json`)."""
        return {
            "embedder": self.embedder, "catalog": self.catalog, "recommended_threshold": self.recommended,
            "keep_twins": self.keep_twins, "auc": round(self.auc(), 4),
            "auc_by_category": {c: round(a, 4) for c in self.categories() if not math.isnan(a := self.auc(c))},
            "operating_points": {k: {"threshold": t, "twins_kept": round(self.kept_twins(t), 4),
                                     "negatives_rejected": round(self.rejected_negatives(t), 4)}
                                 for k, t in self.operating_points().items()},
            "twins": [p.__dict__ for p in self.twins], "negatives": len(self.negatives),
            **({"image_reference": ref} if (ref := self.image_reference()) else {}),
        }


def _auc(twins: Any, negatives: Any) -> float:
    """Probability that a twin's score exceeds a negative's (ties count half); nan if either side is empty."""
    t, n = np.asarray(twins, dtype=float)[:, None], np.asarray(negatives, dtype=float)[None, :]
    if t.size == 0 or n.size == 0:
        return float("nan")
    return float(np.mean((t > n) + 0.5 * (t == n)))


def calibrate(catalog: TwinCatalog, embedder: TextEmbedder, keep_twins: float = 0.95,
              image_reference: bool = False) -> Calibration:
    """Score every twin pair and every same-category, different-country non-twin pair of `catalog` (and, with
    `image_reference`, measure each pair's pixel difference on the catalog's Twemoji images)."""
    if not 0.0 < keep_twins <= 1.0:
        raise ValueError(f"keep_twins must be in (0, 1], got {keep_twins}")
    concepts = list(catalog.concepts.values())
    vectors = embedder.embed([similarity_text(c) for c in concepts])
    row = {c.concept_id: i for i, c in enumerate(concepts)}

    def score(a: Any, b: Any) -> ScoredPair:
        sim = float(vectors[row[a.concept_id]] @ vectors[row[b.concept_id]])
        pixels = round(pixel_difference(a.emoji, b.emoji), 4) if image_reference else None
        return ScoredPair(a.concept, b.concept, a.category, round(sim, 6), pixels)

    twin_ids = {frozenset(p) for p in catalog.pairs}
    twins = [score(catalog.concepts[a], catalog.concepts[b]) for a, b in catalog.pairs]
    negatives = [score(x, y) for x, y in itertools.combinations(concepts, 2)
                 if x.category == y.category and x.iso_code != y.iso_code
                 and frozenset((x.concept_id, y.concept_id)) not in twin_ids]
    return Calibration(embedder.name, str(catalog.path), keep_twins, twins, negatives)


def _quantiles(values: list[float]) -> str:
    if not values:
        return f"{'-':>6} {'-':>6} {'-':>6}"
    lo, mid, hi = np.quantile(values, [0.1, 0.5, 0.9])
    return f"{lo:6.3f} {mid:6.3f} {hi:6.3f}"


def format_report(cal: Calibration) -> str:
    """The human-readable calibration report the command prints."""
    lines = [f"twin similarity calibration: embedder {cal.embedder}", f"catalog {cal.catalog}: {len(cal.twins)} twin "
             f"pairs, {len(cal.negatives)} same-category negatives (all non-twin pairs, different countries)", ""]
    lines.append(f"{'category':<18} {'twins':>5} {'p10':>6} {'p50':>6} {'p90':>6}   {'negs':>5} {'p10':>6} {'p50':>6} "
                 f"{'p90':>6}   rejected at {cal.recommended:.2f}    AUC")
    for category in cal.categories():
        t = [p.similarity for p in cal.twins if p.category == category]
        n = [p.similarity for p in cal.negatives if p.category == category]
        rej, auc = cal.rejected_negatives(cal.recommended, category), cal.auc(category)
        lines.append(f"{category:<18} {len(t):>5} {_quantiles(t)}   {len(n):>5} {_quantiles(n)}   "
                     f"{'-' if math.isnan(rej) else f'{rej:.0%}':>15} {'-' if math.isnan(auc) else f'{auc:.3f}':>6}")
    lines.append(f"{'all':<18} {len(cal.twins):>5} {_quantiles([p.similarity for p in cal.twins])}   "
                 f"{len(cal.negatives):>5} {_quantiles([p.similarity for p in cal.negatives])}   "
                 f"{cal.rejected_negatives(cal.recommended):>15.0%} {cal.auc():>6.3f}")
    lines += ["", f"AUC (a twin outscores a same-category negative): {cal.auc():.3f} over all pairs, per category in "
              "the last column", "(pooled, one threshold must also serve categories whose usual pairs differ in "
              "similarity)", "",
              f"{'operating point':<42} {'threshold':>9} {'twins kept':>11} {'negatives rejected':>19}"]
    for name, t in cal.operating_points().items():
        lines.append(f"{name:<42} {t:9.2f} {cal.kept_twins(t):11.0%} {cal.rejected_negatives(t):19.0%}")
    if ref := cal.image_reference():
        lines += ["", "image reference (mean pixel difference of the catalog's Twemoji images: it tracks looks for "
                  "flat designs such as flags,", "crude for drawn objects, as its AUC shows):",
                  f"{'category':<18} {'negs':>5} {'image AUC':>9} {'negatives as alike as the least-alike twin':>43} "
                  f"{'text rejects, keeping every twin':>33}"]
        for category, r in ref.items():
            auc = f"{r['image_auc']:.3f}" if "image_auc" in r else "-"
            lines.append(f"{category:<18} {r['negatives']:>5} {auc:>9} {r['negatives_alike_by_image']:>43.0%} "
                         f"{r['text_rejects_keeping_every_twin']:>33.0%}")
        lines.append("(last column: at each category's own lowest twin similarity, the most one threshold per "
                     "category could reject)")
    lines += ["", "lowest-scoring twins:"]
    lines += [f"  {p.similarity:.3f}  {p.a} / {p.b} ({p.category})"
              for p in sorted(cal.twins, key=lambda p: p.similarity)[:5]]
    lines += ["highest-scoring negatives:"]
    lines += [f"  {p.similarity:.3f}  {p.a} / {p.b} ({p.category})"
              for p in sorted(cal.negatives, key=lambda p: -p.similarity)[:5]]
    lines += ["", f"recommended twins.min_feature_similarity: {cal.recommended:.2f}"]
    return "\n".join(lines)


def run_cli(args: Any) -> str:
    """`calibrate-similarity`: the report (or JSON) for the chosen embedder and catalog."""
    import json

    from cultureclip_guards import BadInput

    from .embedders import check_embedder_spec, make_embedder
    from .recipe import load_recipe
    from .twin_catalog import DEFAULT_CATALOG, load_twin_catalog

    spec = args.embedder or load_recipe("paper").twins.embedder
    check_embedder_spec(spec, "--embedder")
    catalog = load_twin_catalog(args.catalog or DEFAULT_CATALOG, check_pixels=False)
    if args.image_reference:
        for c in catalog.concepts.values():
            try:
                emoji_rgba(c.emoji or "")
            except EmojiNotFoundError as exc:
                raise BadInput(f"{catalog.path}: concept {c.concept!r}: --image-reference needs its Twemoji image: "
                               f"{exc}") from None
    cal = calibrate(catalog, make_embedder(spec), keep_twins=args.keep_twins, image_reference=args.image_reference)
    return json.dumps(cal.to_dict(), indent=1, ensure_ascii=False) if args.json else format_report(cal)
