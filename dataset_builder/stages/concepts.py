"""Stage 1, concepts: curated (catalog), top-down (text model per country x category) or bottom-up (corpus)."""

from __future__ import annotations

from typing import Any

from ..catalog import CATEGORIES, all_countries, check_category, lookup_country
from ..parsing import Rejected, parse_concept
from ..prompts import load_prompt, make_request
from ..runstore import derive_seed
from ..schema import Concept, make_concept
from ..twin_catalog import DEFAULT_CATALOG, TwinCatalog, load_twin_catalog
from ..wit import ImageFetcher
from .bottom_up import run_bottom_up
from .common import RunContext, load_records, ok, rejected, run_items
from .concept_records import STAGE, dedupe


def selected_countries(ctx: RunContext) -> list[Any]:
    """Countries named by the recipe (`all` or a list of names/codes); unknown ones raise naming the entry."""
    spec = ctx.recipe.concepts.countries
    if spec == "all":
        return list(all_countries())
    if not isinstance(spec, list):
        raise ValueError(f"recipe field concepts.countries must be 'all' or a list, got {spec!r}")
    out = []
    for i, value in enumerate(spec):
        try:
            out.append(lookup_country(str(value)))
        except ValueError as exc:
            raise ValueError(f"recipe field concepts.countries[{i}]: {exc}") from None
    return out


def selected_categories(ctx: RunContext) -> list[str]:
    """Categories named by the recipe (`all` or a list of the eight)."""
    spec = ctx.recipe.concepts.categories
    if spec == "all":
        return list(CATEGORIES)
    return [check_category(c) for c in spec]


def curated_catalog(ctx: RunContext) -> TwinCatalog:
    """The recipe's curated catalog (validated; pixel distinctness checked at load)."""
    return load_twin_catalog(ctx.recipe.concepts.catalog or DEFAULT_CATALOG)


def curated_pairs(ctx: RunContext, catalog: TwinCatalog) -> list[tuple[str, str]]:
    """Catalog pairs in file order, cut to `limit_pairs`."""
    pairs = catalog.pairs
    return pairs[: ctx.limit_pairs] if ctx.limit_pairs else pairs


def run_curated(ctx: RunContext) -> list[Concept]:
    """Record the catalog concepts used by the (limited) pair list; no model involved."""
    catalog = curated_catalog(ctx)
    ids = sorted({cid for pair in curated_pairs(ctx, catalog) for cid in pair})

    def process(batch: list[str]) -> dict[str, dict[str, Any]]:
        return {cid: ok(concept=catalog.concepts[cid].to_dict()) for cid in batch}

    run_items(ctx, STAGE, ids, 256, process)
    return [Concept.from_dict(load_records(ctx, STAGE, [cid])[cid]["concept"]) for cid in ids]


def run_top_down(ctx: RunContext) -> list[Concept]:
    """Ask the text model for one concept per (country, category); returns kept concepts, deduplicated."""
    prompt = load_prompt(ctx.recipe.concepts.prompt)
    countries = {c.iso_code: c for c in selected_countries(ctx)}
    keys = [f"{iso}|{cat}" for iso in sorted(countries) for cat in selected_categories(ctx)]

    def process(batch: list[str]) -> dict[str, dict[str, Any]]:
        requests = []
        for key in batch:
            iso, cat = key.split("|", 1)
            c = countries[iso]
            fields = {"country": c.name, "iso_code": c.iso_code, "category": cat}
            requests.append(make_request("concept", prompt, fields, derive_seed(ctx.recipe.seed, STAGE, key)))
        answers = ctx.text_backend.generate(requests)
        out = {}
        for key, req, answer in zip(batch, requests, answers):
            try:
                parsed = parse_concept(answer)
                concept = make_concept(parsed["concept"], req.fields["iso_code"], req.fields["category"],
                                       parsed["context"], parsed["visual_features"], source="top-down")
                out[key] = ok(concept=concept.to_dict(), answer=answer, seed=req.seed, prompt=prompt.version)
            except Rejected as exc:
                out[key] = rejected(exc.reason, answer=str(answer)[:2000], seed=req.seed, prompt=prompt.version)
        return out

    run_items(ctx, STAGE, keys, ctx.recipe.text_batch_size, process)
    return dedupe(load_records(ctx, STAGE, keys))[0]


def run(ctx: RunContext, fetch: ImageFetcher | None = None) -> list[Concept]:
    """Dispatch on the recipe's concept source (`fetch` replaces the bottom-up image fetcher)."""
    source = ctx.recipe.concepts.source
    if source == "curated":
        return run_curated(ctx)
    if source == "top-down":
        return run_top_down(ctx)
    if source == "bottom-up":
        return run_bottom_up(ctx, fetch)
    raise ValueError(f"recipe field concepts.source: {source!r} is not curated, top-down or bottom-up")
