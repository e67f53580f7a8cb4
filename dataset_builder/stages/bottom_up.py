"""Stage 1 (bottom-up option): concepts from an image-text corpus such as WIT, classified by the VLM.

The corpus is a local `.jsonl` or `.parquet` file with a `title` column and an `image` column holding a path
(relative to the corpus file) or embedded bytes (`{"bytes": ...}` as `datasets` stores images). Remote URLs are
rejected and counted: this stage never downloads.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from ..catalog import CATEGORIES, UnknownCountryError
from ..parsing import Rejected, parse_bottom_up
from ..prompts import load_prompt, make_request
from ..runstore import derive_seed, short_hash
from ..schema import make_concept
from .common import RunContext, load_records, ok, rejected, run_items
from .concepts import STAGE, dedupe


class CorpusError(ValueError):
    """The corpus file is malformed; the message names file, row and field."""


def read_corpus(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl/.parquet corpus, each with a string `title` and an `image` path or bytes."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: corpus file not found")
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}: line {i + 1}: invalid JSON ({exc})") from None
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        raise CorpusError(f"{path}: expected a .jsonl or .parquet corpus")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise CorpusError(f"{path}: row {i}: expected an object")
        if not isinstance(row.get("title"), str) or not row["title"].strip():
            raise CorpusError(f"{path}: row {i}: field 'title' missing or not a non-empty string")
        img = row.get("image")
        if not (isinstance(img, str) or (isinstance(img, dict) and isinstance(img.get("bytes"), bytes))):
            raise CorpusError(f"{path}: row {i}: field 'image' must be a path/URL string or {{'bytes': ...}}")
    return rows


def _open_image(value: Any, base: Path) -> Image.Image:
    if isinstance(value, dict):
        im = Image.open(io.BytesIO(value["bytes"]))
    else:
        if value.startswith(("http://", "https://")):
            raise Rejected("remote_image_not_supported", value)
        im = Image.open(base / value)
    im.load()
    return im.convert("RGB")


def run_bottom_up(ctx: RunContext) -> list:
    """Classify each corpus row with the VLM; keep rows it marks as a cultural concept with a known country."""
    corpus = ctx.recipe.concepts.corpus
    if not corpus:
        raise ValueError("recipe field concepts.corpus is required for source 'bottom-up'")
    path = Path(corpus)
    rows = read_corpus(path)
    prompt = load_prompt(ctx.recipe.concepts.bottom_up_prompt)
    keys = {}
    for i, row in enumerate(rows):
        ident = row["image"] if isinstance(row["image"], str) else short_hash(row["image"]["bytes"].hex())
        keys[f"row{i:06d}:{short_hash(row['title'] + '|' + ident)}"] = row

    def process(batch: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        requests, req_keys = [], []
        for key in batch:
            row = keys[key]
            try:
                image = _open_image(row["image"], path.parent)
            except Rejected as exc:
                out[key] = rejected(exc.reason, title=row["title"])
                continue
            except (OSError, ValueError) as exc:
                out[key] = rejected("unreadable_image", title=row["title"], detail=str(exc)[:300])
                continue
            fields = {"title": row["title"], "categories": ", ".join(CATEGORIES)}
            requests.append(make_request("bottomup", prompt, fields, derive_seed(ctx.recipe.seed, "bottomup", key), image))
            req_keys.append(key)
        answers = ctx.text_backend.generate(requests) if requests else []
        for key, req, answer in zip(req_keys, requests, answers):
            try:
                parsed = parse_bottom_up(answer)
                if not parsed["keep"]:
                    raise Rejected("not_cultural")
                try:
                    concept = make_concept(parsed["concept"], parsed["country"], parsed["category"], parsed["context"],
                                           parsed["visual_features"], source="bottom-up")
                except UnknownCountryError as exc:
                    raise Rejected("unknown_country", str(exc)) from None
                except ValueError as exc:
                    raise Rejected("invalid_field", str(exc)) from None
                out[key] = ok(concept=concept.to_dict(), title=keys[key]["title"], answer=answer, seed=req.seed)
            except Rejected as exc:
                out[key] = rejected(exc.reason, title=keys[key]["title"], answer=str(answer)[:2000], seed=req.seed)
        return out

    run_items(ctx, STAGE, list(keys), ctx.recipe.text_batch_size, process)
    return dedupe(load_records(ctx, STAGE, list(keys)))[0]
