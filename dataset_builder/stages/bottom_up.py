"""Stage 1 (bottom-up option): concepts from WIT pages, as in the release.

1. Stream the corpus (`dataset_builder.wit.open_corpus`) and apply the text-only pre-filter (`wit.screen`): bounded
   rows, every drop counted by reason; no image is fetched and no model is asked for a dropped row.
2. For each candidate, take the image the corpus carries (wikimedia/wit_base embeds one) or else fetch `image_url`
   (the injectable `fetch`, by default `wit.HttpImageFetcher`); decode and downscale it. Failures are counted
   rejections (`fetch_failed`, `unreadable_image`); each record says whether its image was embedded or fetched.
3. Ask the VLM (bottomup.v2) whether the page is a cultural concept, and for its country, category, context and
   visual features. The page title is kept as the concept name. The country goes through the catalog's resolver
   (names models write, aliases); an unresolvable one is the counted rejection `unknown_country`.

The screening counts are written to `run/concepts/screening.json` (see `screening_summary`) and logged.
"""

from __future__ import annotations

import io
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from ..catalog import CATEGORIES, UnknownCountryError
from ..parsing import Rejected, parse_bottom_up
from ..prompts import load_prompt, make_request
from ..runstore import atomic_write_json, derive_seed, read_json, sha256_bytes, short_hash
from ..schema import make_concept
from ..wit import (Candidate, FetchError, HttpImageFetcher, ImageFetcher, embedded_image, open_corpus, screen,
                   text)
from .common import RunContext, load_records, ok, rejected, run_items
from .concept_records import STAGE, dedupe

_CONTEXT_CHARS = 600  # of the page description shown to the VLM


def _decode(data: bytes, max_side: int) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size when possible
        rgb = im.convert("RGB")
    rgb.thumbnail((max_side, max_side))
    return rgb


def candidate_key(c: Candidate) -> str:
    """Stable record key: stream position plus a hash of the title and URL."""
    return f"wit{c.index:08d}:{short_hash(c.title + '|' + c.image_url)}"


def screening_summary(ctx: RunContext) -> dict[str, Any] | None:
    """The pre-filter counts of the last bottom-up run in this run folder, or None."""
    path = ctx.store(STAGE).root / "screening.json"
    return read_json(path) if path.exists() else None


def run_bottom_up(ctx: RunContext, fetch: ImageFetcher | None = None) -> list:
    """Screen, fetch and classify WIT rows; returns the kept concepts, deduplicated."""
    corpus = ctx.recipe.concepts.corpus
    settings = ctx.recipe.concepts.bottom_up
    if not corpus:
        raise ValueError("recipe field concepts.corpus is required for source 'bottom-up' (a WIT Hub id, folder or file)")
    fetch = fetch or HttpImageFetcher(settings.fetch_timeout_s, settings.fetch_retries, settings.max_image_bytes,
                                      settings.user_agent)
    screening = screen(open_corpus(corpus, settings), settings)
    summary = {"corpus": corpus, "revision": settings.revision, "split": settings.split, **screening.summary()}
    atomic_write_json(ctx.store(STAGE).root / "screening.json", summary)
    ctx.log(f"bottom-up: screened {screening.screened} rows of {corpus}, {len(screening.candidates)} candidates; "
            f"dropped {dict(sorted(screening.dropped.items()))}")
    prompt = load_prompt(ctx.recipe.concepts.bottom_up_prompt)
    by_key = {candidate_key(c): c for c in screening.candidates}

    def load_image(key: str) -> tuple[str, Image.Image | dict[str, Any], str | None, str]:
        c = by_key[key]
        data, source = embedded_image(c.row), "embedded"
        if data is None:
            source = "fetched"
            try:
                data = fetch(c.image_url)
            except (FetchError, OSError, ValueError) as exc:
                failed = rejected("fetch_failed", title=c.title, url=c.image_url, detail=str(exc)[:300])
                return key, failed, None, source
        try:
            return key, _decode(data, settings.max_image_side), sha256_bytes(data), source
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            return key, rejected("unreadable_image", title=c.title, url=c.image_url, image_source=source,
                                 detail=str(exc)[:300]), None, source

    def process(batch: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        requests, req_keys, digests, sources = [], [], {}, {}
        with ThreadPoolExecutor(max_workers=max(1, settings.fetch_workers)) as pool:
            results = list(pool.map(load_image, batch))
        for key, image, digest, source in results:
            if isinstance(image, dict):
                out[key] = image
                continue
            sources[key] = source
            c = by_key[key]
            fields = {"title": c.title, "context": text(c.row.get("context_page_description"))[:_CONTEXT_CHARS],
                      "caption": text(c.row.get("caption_reference_description")) or "(none)",
                      "categories": ", ".join(CATEGORIES)}
            requests.append(make_request("bottomup", prompt, fields, derive_seed(ctx.recipe.seed, "bottomup", key),
                                         image))
            req_keys.append(key)
            digests[key] = digest
        answers = ctx.text_backend.generate(requests) if requests else []
        for key, req, answer in zip(req_keys, requests, answers):
            c = by_key[key]
            meta = {"title": c.title, "url": c.image_url, "image_sha256": digests[key], "image_source": sources[key],
                    "answer": str(answer)[:2000], "seed": req.seed, "prompt": prompt.version}
            try:
                parsed = parse_bottom_up(answer)
                if not parsed["keep"]:
                    raise Rejected("not_cultural")
                try:
                    concept = make_concept(c.title, parsed["country"], parsed["category"], parsed["context"],
                                           parsed["visual_features"], source="bottom-up")
                except UnknownCountryError as exc:
                    raise Rejected("unknown_country", str(exc)) from None
                except ValueError as exc:
                    raise Rejected("invalid_field", str(exc)) from None
                out[key] = ok(concept=concept.to_dict(), **meta)
            except Rejected as exc:
                out[key] = rejected(exc.reason, **meta)
        return out

    keys = list(by_key)
    run_items(ctx, STAGE, keys, ctx.recipe.text_batch_size, process)
    records = load_records(ctx, STAGE, keys)
    sources = Counter(r.get("image_source", "fetched") for r in records.values() if r.get("reason") != "fetch_failed")
    ctx.log(f"bottom-up images: {sources['embedded']} carried by the corpus, {sources['fetched']} fetched, "
            f"{sum(r.get('reason') == 'fetch_failed' for r in records.values())} failed to fetch")
    return dedupe(records)[0]
