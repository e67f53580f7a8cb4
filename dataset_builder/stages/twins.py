"""Stage 2, twins: a visually similar concept from a different culture in the same category.

Generated twins are parsed field by field (the twin's visual features included), must name a known country
different from the concept's, and must describe similar visual features (cosine similarity of the two
`schema.similarity_text` strings under the recipe's text embedder, at least `min_feature_similarity`; the threshold
is calibrated with `python -m dataset_builder calibrate-similarity`). Pairs are deduplicated as unordered pairs.
Curated pairs come from the catalog; their similarity is recorded, not filtered.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..catalog import UnknownCountryError
from ..embedders import TextEmbedder, make_embedder, pair_similarity
from ..parsing import Rejected, parse_twin
from ..prompts import load_prompt, make_request
from ..runstore import derive_seed, short_hash
from ..schema import Concept, make_concept, similarity_text
from .common import RunContext, load_records, ok, rejected, run_items
from .concepts import curated_catalog, curated_pairs

STAGE = "twins"


@dataclass(frozen=True)
class Pair:
    """A twin pair: `a` is the seed concept, `b` its twin."""

    pair_id: str
    a: Concept
    b: Concept
    similarity: float
    source: str


def make_pair_id(a_id: str, b_id: str) -> str:
    """Order-independent pair identity."""
    return "pair-" + short_hash("||".join(sorted((a_id, b_id))), 16)


def run(ctx: RunContext, concepts: list[Concept], embedder: TextEmbedder | None = None) -> tuple[list[Pair], Counter[str]]:
    """Produce the pair list (deterministic, independent of world size) and merge-time drop counts."""
    embedder = embedder or make_embedder(ctx.recipe.twins.embedder)
    if ctx.recipe.concepts.source == "curated":
        return _run_curated(ctx, embedder)
    return _run_generated(ctx, concepts, embedder)


def _run_curated(ctx: RunContext, embedder: TextEmbedder) -> tuple[list[Pair], Counter[str]]:
    catalog = curated_catalog(ctx)
    pairs = curated_pairs(ctx, catalog)
    keys = [make_pair_id(a, b) for a, b in pairs]
    by_key = dict(zip(keys, pairs))

    def process(batch: list[str]) -> dict[str, dict[str, Any]]:
        a = [catalog.concepts[by_key[k][0]] for k in batch]
        b = [catalog.concepts[by_key[k][1]] for k in batch]
        sims = pair_similarity(embedder, [similarity_text(c) for c in a], [similarity_text(c) for c in b])
        return {k: ok(a=x.to_dict(), b=y.to_dict(), similarity=round(float(s), 6), embedder=embedder.name)
                for k, x, y, s in zip(batch, a, b, sims)}

    run_items(ctx, STAGE, keys, 256, process)
    records = load_records(ctx, STAGE, keys)
    out = [_pair(k, records[k], "curated") for k in keys]  # catalog order
    return out, Counter()


def _pair(key: str, rec: dict[str, Any], source: str) -> Pair:
    return Pair(key, Concept.from_dict(rec["a"]), Concept.from_dict(rec["b"]), rec["similarity"], source)


def twin_from_answer(concept: Concept, answer: Any) -> Concept:
    """Parse and validate one twin answer for `concept`; raise Rejected with the reason."""
    parsed = parse_twin(answer)
    try:
        twin = make_concept(parsed["twin_concept"], parsed["twin_country"], concept.category, parsed["twin_context"],
                            parsed["twin_visual_features"], source=concept.source)
    except UnknownCountryError as exc:
        raise Rejected("unknown_country", str(exc)) from None
    if twin.iso_code == concept.iso_code:
        raise Rejected("same_country", twin.iso_code)
    if twin.concept_id == concept.concept_id or twin.concept.casefold() == concept.concept.casefold():
        raise Rejected("same_concept", twin.concept)
    return twin


def _run_generated(ctx: RunContext, concepts: list[Concept], embedder: TextEmbedder) -> tuple[list[Pair], Counter[str]]:
    prompt = load_prompt(ctx.recipe.twins.prompt)
    by_id = {c.concept_id: c for c in concepts}
    keys = sorted(by_id)
    threshold = ctx.recipe.twins.min_feature_similarity

    def process(batch: list[str]) -> dict[str, dict[str, Any]]:
        requests = []
        for key in batch:
            c = by_id[key]
            fields = {"concept": c.concept, "country": c.country, "iso_code": c.iso_code, "category": c.category,
                      "visual_features": c.visual_features}
            requests.append(make_request("twin", prompt, fields, derive_seed(ctx.recipe.seed, STAGE, key)))
        answers = ctx.text_backend.generate(requests)
        out: dict[str, dict[str, Any]] = {}
        parsed: list[tuple[str, Concept, dict[str, Any]]] = []
        for key, req, answer in zip(batch, requests, answers):
            meta = {"answer": str(answer)[:2000], "seed": req.seed, "prompt": prompt.version, "embedder": embedder.name}
            try:
                parsed.append((key, twin_from_answer(by_id[key], answer), meta))
            except Rejected as exc:
                out[key] = rejected(exc.reason, **meta)
        sims = pair_similarity(embedder, [similarity_text(by_id[k]) for k, _, _ in parsed],
                               [similarity_text(t) for _, t, _ in parsed]) if parsed else []
        for (key, twin, meta), sim in zip(parsed, sims):
            sim = round(float(sim), 6)
            if sim < threshold:
                out[key] = rejected("low_feature_similarity", similarity=sim, **meta)
            else:
                out[key] = ok(a=by_id[key].to_dict(), b=twin.to_dict(), similarity=sim, **meta)
        return out

    run_items(ctx, STAGE, keys, ctx.recipe.text_batch_size, process)
    records = load_records(ctx, STAGE, keys)
    pairs: list[Pair] = []
    seen: set[str] = set()
    drops: Counter[str] = Counter()
    for key in keys:
        rec = records[key]
        if rec["status"] != "ok":
            continue
        pid = make_pair_id(rec["a"]["concept_id"], rec["b"]["concept_id"])
        if pid in seen:
            drops["duplicate_pair"] += 1
            continue
        seen.add(pid)
        pairs.append(_pair(pid, rec, ctx.recipe.concepts.source))
    pairs.sort(key=lambda p: p.pair_id)
    if ctx.limit_pairs:
        pairs = pairs[: ctx.limit_pairs]
    return pairs, drops


def pair_concepts(pairs: list[Pair]) -> dict[str, Concept]:
    """Both sides of every pair by concept_id (first occurrence in pair order wins, deterministically)."""
    out: dict[str, Concept] = {}
    for p in pairs:
        for c in (p.a, p.b):
            out.setdefault(c.concept_id, c)
    return out
