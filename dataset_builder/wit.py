"""WIT (Wikipedia-based Image Text) as a source of bottom-up concepts.

Rows have WIT's real columns (google/wit: `language`, `page_url`, `image_url`, `page_title`, `section_title`,
`hierarchical_section_title`, `caption_reference_description`, `caption_attribution_description`,
`caption_alt_text_description`, `mime_type`, `original_height`, `original_width`, `is_main_image`,
`attribution_passes_lang_id`, `page_changed_recently`, `context_page_description`, `context_section_description`).
They are read with `datasets` in streaming mode, from a Hub id, a local folder or file, or a builder name plus data
files (Google's `wit_v1.*.tsv.gz` files: `corpus: csv`, `data_files: [...]`, `load_options: {sep: "\\t"}`).
`google/wit` on the Hub is a loading script, which `datasets` >= 4 refuses.

The Hub's parquet copy, `wikimedia/wit_base`, has one row per image: the image itself (about 300 px), `image_url`,
`mime_type`, sizes, `caption_attribution_description`, a ResNet `embedding`, and the page fields per language in
`wit_features`. `open_corpus` turns each of its rows into one row per language entry with the columns above, and
keeps the embedded image (undecoded) under `image`, so the stage uses it instead of fetching the URL.

`screen` is the text-only pre-filter that runs before any image is fetched or any VLM is asked; it bounds the number
of rows read and kept and counts every drop by reason. `HttpImageFetcher` fetches `image_url`; the stage takes any
callable `url -> bytes`, so tests and other transports inject their own.
"""

from __future__ import annotations

import math
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cultureclip_guards import BadInput

from .catalog import countries_mentioned

WIT_COLUMNS = (
    "language", "page_url", "image_url", "page_title", "section_title", "hierarchical_section_title",
    "caption_reference_description", "caption_attribution_description", "caption_alt_text_description", "mime_type",
    "original_height", "original_width", "is_main_image", "attribution_passes_lang_id", "page_changed_recently",
    "context_page_description", "context_section_description",
)
REQUIRED_COLUMNS = ("page_title", "image_url")
# wikimedia/wit_base: the image-level columns copied onto every language entry of `wit_features`.
IMAGE_LEVEL_COLUMNS = ("image_url", "mime_type", "original_height", "original_width",
                       "caption_attribution_description")
# Text the pre-filter searches for a country mention.
TEXT_COLUMNS = ("page_title", "section_title", "caption_reference_description", "context_page_description",
                "context_section_description")
# Titles that name lists, years or wiki namespaces rather than one photographable thing.
_NOT_A_THING = re.compile(r"^(list of|lists of|outline of|index of|timeline of|history of)\b|^\d{1,4}(s| bc| ad)?$|"
                          r"^(category|file|template|portal|wikipedia|help):", re.IGNORECASE)

ImageFetcher = Callable[[str], bytes]


class CorpusError(BadInput):
    """The corpus cannot be read or lacks WIT's columns; the message names the corpus and what is missing."""


class FetchError(OSError):
    """An image URL could not be fetched (the message says why)."""


def text(value: Any) -> str:
    """A cell as text: None, NaN (pandas-read TSVs) and non-strings become ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value.strip() if isinstance(value, str) else ""


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


def open_corpus(corpus: str, settings: Any) -> Iterator[dict[str, Any]]:
    """Stream the rows of `corpus` (see the module docstring); `settings` is the recipe's BottomUpSettings."""
    from datasets import Image, load_dataset

    options: dict[str, Any] = dict(settings.load_options)
    path = Path(corpus)
    if path.is_file():
        suffixes = "".join(path.suffixes[-2:]).lower()
        builder = ("parquet" if suffixes.endswith(".parquet") else "json" if ".json" in suffixes else
                   "csv" if ".tsv" in suffixes or ".csv" in suffixes else None)
        if builder is None:
            raise CorpusError(f"{corpus}: expected a .parquet, .jsonl or .tsv[.gz] file, a folder or a Hub id")
        if ".tsv" in suffixes:
            options.setdefault("sep", "\t")
        args: dict[str, Any] = {"path": builder, "data_files": str(path)}
    else:
        args = {"path": corpus, "revision": settings.revision}
        if settings.data_files:
            args["data_files"] = settings.data_files
        if corpus in ("csv", "parquet", "json") and not settings.data_files:
            raise CorpusError(f"corpus {corpus!r} is a datasets builder: set concepts.bottom_up.data_files")
    try:
        stream = load_dataset(**args, split=settings.split, streaming=True, **options)
        if isinstance((stream.features or {}).get("image"), Image):
            stream = stream.cast_column("image", Image(decode=False))  # decode only the candidates' images
        iterator = iter(stream)
        first = next(iterator, None)
    except (FileNotFoundError, ValueError, RuntimeError, ConnectionError) as exc:
        hint = (" (a loading script: for WIT use wikimedia/wit_base, or Google's wit_v1 .tsv.gz files with "
                "corpus: csv)" if "scripts are no longer supported" in str(exc) else "")
        detail = f"{type(exc).__name__}: {str(exc)[:300]}"
        raise CorpusError(f"{corpus}: cannot open it with datasets ({detail}){hint}") from None
    if first is None:
        return
    wikimedia = "wit_features" in first
    required = ("wit_features", "image_url") if wikimedia else REQUIRED_COLUMNS
    missing = [c for c in required if c not in first]
    if missing:
        raise CorpusError(f"{corpus}: not a WIT layout: missing column(s) {missing}; found {sorted(first)}")
    row: dict[str, Any] | None = first
    index = 0
    while row is not None:
        yield from language_rows(row) if wikimedia else (row,)
        index += 1
        try:
            row = next(iterator, None)
        except (TypeError, ValueError, OSError) as exc:  # a shard with another schema, a truncated file, ...
            raise CorpusError(f"{corpus}: cannot read row {index} ({type(exc).__name__}: {str(exc)[:300]})") from None


def language_rows(row: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One google/wit-layout row per language entry of a wikimedia/wit_base row, each carrying the row's image.

    `wit_features` arrives as a list of entries from a bare parquet file, or as a dict of equal-length lists where
    the dataset card declares it a `sequence` (datasets' `Sequence` of a dict), as wikimedia/wit_base's does."""
    entries = row.get("wit_features") or []
    if isinstance(entries, dict):
        n = len(next(iter(entries.values()), []))
        entries = [{k: v[i] for k, v in entries.items()} for i in range(n)]
    for entry in entries:
        flat = {**entry, **{c: row.get(c) for c in IMAGE_LEVEL_COLUMNS}, "image": row.get("image")}
        flat["image_url"] = text(row.get("image_url")) or text(entry.get("image_url"))
        yield flat


def embedded_image(row: dict[str, Any]) -> bytes | None:
    """The encoded image a row carries (wikimedia/wit_base's `image`, undecoded), or None."""
    value = row.get("image")
    if isinstance(value, dict) and isinstance(value.get("bytes"), bytes) and value["bytes"]:
        return value["bytes"]
    return None


@dataclass
class Candidate:
    """A row that passed the text pre-filter; `index` is its position in the stream."""

    index: int
    title: str
    image_url: str
    row: dict[str, Any]
    countries: list[str]


@dataclass
class Screening:
    """Result of the pre-filter: candidates in stream order and the counts behind them."""

    candidates: list[Candidate] = field(default_factory=list)
    screened: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    stopped_by: str | None = None  # "max_screened", "max_candidates" or None (stream exhausted)

    def summary(self) -> dict[str, Any]:
        """Counts for the run summary."""
        return {"screened": self.screened, "candidates": len(self.candidates), "stopped_by": self.stopped_by,
                "dropped": dict(sorted(self.dropped.items()))}


def drop_reason(row: dict[str, Any], settings: Any, seen_titles: set[str]) -> str | None:
    """Why the text pre-filter drops `row` (None: it passes). Checks run cheapest first."""
    if settings.languages and text(row.get("language")) not in settings.languages:
        return "language"
    title = text(row.get("page_title"))
    if not title:
        return "no_page_title"
    url = text(row.get("image_url"))
    if not url.startswith(("http://", "https://")):
        return "no_image_url"
    mime = text(row.get("mime_type")).lower()
    if mime and settings.mime_types and mime not in settings.mime_types:
        return "mime_type"
    if _NOT_A_THING.search(title):
        return "not_a_thing_title"
    if settings.require_main_image and not _flag(row.get("is_main_image")):
        return "not_main_image"
    if settings.require_country_mention and not countries_mentioned(" \n ".join(text(row.get(c)) for c in TEXT_COLUMNS)):
        return "no_country_mention"
    if title.casefold() in seen_titles:
        return "duplicate_title"  # WIT has one row per (page, image); one concept per page
    return None


def screen(rows: Iterable[dict[str, Any]], settings: Any) -> Screening:
    """Apply the text pre-filter to a row stream, reading at most `max_screened` rows and keeping at most
    `max_candidates`."""
    out = Screening()
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if out.screened >= settings.max_screened:
            out.stopped_by = "max_screened"
            break
        out.screened += 1
        reason = drop_reason(row, settings, seen)
        if reason:
            out.dropped[reason] += 1
            continue
        title = text(row["page_title"])
        seen.add(title.casefold())
        mentions = sorted(countries_mentioned(" \n ".join(text(row.get(c)) for c in TEXT_COLUMNS)))
        out.candidates.append(Candidate(index, title, text(row["image_url"]), row, mentions))
        if len(out.candidates) >= settings.max_candidates:
            out.stopped_by = "max_candidates"
            break
    return out


class HttpImageFetcher:
    """GET an image URL with a timeout, a size cap, a descriptive User-Agent (Wikimedia asks for one) and retries
    with exponential backoff on 429/5xx and connection errors."""

    def __init__(self, timeout_s: float = 20.0, retries: int = 2, max_bytes: int = 20_000_000,
                 user_agent: str = "CultureCLIP-dataset-builder/0.1", backoff_s: float = 1.0):
        self.timeout_s, self.retries, self.max_bytes = timeout_s, retries, max_bytes
        self.user_agent, self.backoff_s = user_agent, backoff_s

    def __call__(self, url: str) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise FetchError(f"not an http(s) URL: {url[:200]}")
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(url, headers={"User-Agent": self.user_agent})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    data = response.read(self.max_bytes + 1)
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code == 429 or exc.code >= 500:
                    continue
                raise FetchError(last) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            if len(data) > self.max_bytes:
                raise FetchError(f"larger than {self.max_bytes} bytes")
            return data
        raise FetchError(f"gave up after {self.retries + 1} attempts ({last})")
