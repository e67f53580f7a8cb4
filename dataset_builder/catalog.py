"""Country and category metadata: the one country module of the project.

Two maintained libraries, nothing hand-typed beyond the short alias table below:
- `pycountry` (ISO 3166-1): the list of countries/territories and exact names and codes;
- `country_converter` (its packaged `country_data.tsv`): the name regular expressions that resolve what models
  write ("Russia", "Ivory Coast", "Burma", "UK", "England" ...), short common names ("DR Congo", "Palestine"),
  continents and the UN M49 sub-regions ("Western Africa").

The table is read with the `csv` module rather than through `country_converter.CountryConverter`: version 1.3.2
cannot be constructed under pandas 3, which reads Namibia's code "NA" as a missing value.

Kosovo has no ISO 3166-1 code; it resolves to the user-assigned code **XK** (alpha-3 XKX) as the European
Commission, the IMF, Unicode CLDR (whose flag emoji is the XK regional-indicator pair), Country211 and
country_converter use it, with continent Europe and sub-region "Southern Europe" (country_converter; M49 itself
lists no Kosovo). It is accepted wherever a country is resolved, but `all_countries()` stays the 249 ISO 3166-1
entries.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pycountry

from cultureclip_guards import BadInput

# The eight categories of the released CulTwin data.
CATEGORIES: tuple[str, ...] = (
    "Cuisine",
    "Clothing",
    "Animals & Plants",
    "Art",
    "Architecture",
    "Daily Life",
    "Symbol",
    "Festival",
)

# Names neither library resolves. Parts of a country (constituent countries, historic province names) and
# demonyms that name exactly one country; ambiguous ones ("Korean", "Congolese", "Dominican", "Guinean",
# "Sudanese", "Macedonian", "Arab") are left out on purpose. A test checks that every entry is still needed.
ALIASES: dict[str, str] = {
    # parts of a country
    "scotland": "GB", "wales": "GB", "northern ireland": "GB", "holland": "NL",
    # demonyms (many others, "Italian" or "Peruvian", already match country_converter's patterns)
    "american": "US", "bahamian": "BS", "barbadian": "BB", "belgian": "BE", "british": "GB", "burmese": "MM",
    "canadian": "CA", "chinese": "CN", "comoran": "KM", "croat": "HR", "cypriot": "CY", "danish": "DK",
    "dutch": "NL", "emirati": "AE", "english": "GB", "filipino": "PH", "finnish": "FI", "french": "FR",
    "german": "DE", "greek": "GR", "grenadian": "GD", "guyanese": "GY", "honduran": "HN", "hungarian": "HU",
    "irish": "IE", "ivorian": "CI", "kosovar": "XK", "laotian": "LA", "macanese": "MO", "malian": "ML",
    "maldivian": "MV", "maltese": "MT", "mauritian": "MU", "monegasque": "MC", "montenegrin": "ME",
    "moroccan": "MA", "mozambican": "MZ", "norwegian": "NO", "polish": "PL", "puerto rican": "PR",
    "salvadoran": "SV", "sammarinese": "SM", "saudi": "SA", "scottish": "GB", "serb": "RS", "slovene": "SI",
    "spanish": "ES", "swazi": "SZ", "thai": "TH", "timorese": "TL", "turkish": "TR", "welsh": "GB",
}

# Codes outside ISO 3166-1 that resolve anyway (see the module docstring).
EXTRA_CODES: dict[str, str] = {"XK": "XKX"}


class UnknownCountryError(BadInput):
    """Raised when a country name or code does not resolve to exactly one country."""


@dataclass(frozen=True)
class Country:
    """One country or territory: short common name, ISO alpha-2 code, continent and UN M49 sub-region."""

    name: str
    iso_code: str  # alpha-2 (XK for Kosovo)
    continent: str
    subregion: str

    @property
    def flag_emoji(self) -> str:
        """The regional-indicator flag emoji for this code."""
        return "".join(chr(0x1F1E6 + ord(c) - ord("A")) for c in self.iso_code)


@dataclass(frozen=True)
class _Row:
    iso2: str
    iso3: str
    name_short: str
    name_official: str
    regex: re.Pattern[str]
    continent: str
    subregion: str


def _coco_path() -> Path:
    spec = importlib.util.find_spec("country_converter")  # locate the data file without importing pandas
    if spec is None or spec.origin is None:
        raise ImportError("country_converter is not installed (pip install country_converter)")
    return Path(spec.origin).parent / "country_data.tsv"


def _code(cell: str) -> str:
    # A few codes are stored as a regex ("^GB$|^UK$"); the first alternative is the code itself.
    return "".join(ch for ch in cell.split("|")[0] if ch.isalnum()).upper()


@lru_cache(maxsize=None)
def _table() -> dict[str, _Row]:
    """country_converter's current (non-obsolete) entries by alpha-2 code."""
    out: dict[str, _Row] = {}
    with open(_coco_path(), encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if r["obsolete"].strip() or not r["ISO2"].strip():
                continue
            iso2 = _code(r["ISO2"])
            out[iso2] = _Row(iso2, _code(r["ISO3"]), r["name_short"], r["name_official"],
                             re.compile(r["regex"], re.IGNORECASE), r["Continent_7"], r["UNregion"])
    return out


def _row(iso2: str) -> _Row:
    row = _table().get(iso2)
    if row is None or not row.continent or not row.subregion:  # pragma: no cover - guarded by a test over all codes
        raise UnknownCountryError(f"country_converter has no continent/sub-region for {iso2!r}")
    return row


@lru_cache(maxsize=None)
def _known_codes() -> dict[str, str]:
    """Alpha-2 and alpha-3 codes (upper case) -> alpha-2."""
    codes = {c.alpha_2: c.alpha_2 for c in pycountry.countries}
    codes.update({c.alpha_3: c.alpha_2 for c in pycountry.countries})
    for a2, a3 in EXTRA_CODES.items():
        codes[a2], codes[a3] = a2, a2
    return codes


def _pycountry_name(iso2: str) -> str | None:
    entry = pycountry.countries.get(alpha_2=iso2)
    return None if entry is None else (getattr(entry, "common_name", None) or entry.name)


@lru_cache(maxsize=None)
def display_name(iso2: str) -> str:
    """Short common English name for an alpha-2 code ("DR Congo", "Russia", "Palestine", "Vatican").

    country_converter's short name, unless it abbreviates ("St. Lucia"): then pycountry's name when that is not an
    inverted ISO form ("Saint Lucia"), else country_converter's official name ("Federated States of Micronesia").
    """
    row = _row(iso2)
    if "." not in row.name_short:
        return row.name_short
    iso = _pycountry_name(iso2)
    if iso and "," not in iso and "(" not in iso:
        return iso
    return row.name_official


def _clean(value: str) -> str:
    text = " ".join(unicodedata.normalize("NFC", value).split())
    return text.strip(" .\"'")


def _library_code(key: str) -> tuple[str | None, list[str]]:
    """(alpha-2, []) when the libraries resolve `key` to one country, (None, matches) otherwise."""
    if re.fullmatch(r"[A-Za-z]{2,3}", key) and key.upper() in _known_codes():
        return _known_codes()[key.upper()], []
    try:
        return pycountry.countries.lookup(key).alpha_2, []
    except LookupError:
        pass
    hits = sorted({row.iso2 for row in _table().values() if row.regex.search(key)})
    return (hits[0], []) if len(hits) == 1 else (None, hits)


@lru_cache(maxsize=8192)
def _resolve(key: str) -> tuple[str | None, list[str]]:
    code, hits = _library_code(key)
    if code is None and not hits:
        code = ALIASES.get(key.casefold())
    if code is None and not hits and key.casefold().startswith("the "):
        return _resolve(key[4:].strip())  # "the UK", "The Gambia" (when the library wants it bare)
    return code, hits


def resolve_code(value: str) -> str | None:
    """Alpha-2 code of a country name, short name, alias, demonym or code; None when unknown or ambiguous."""
    if not isinstance(value, str) or not _clean(value):
        return None
    return _resolve(_clean(value))[0]


def country_by_code(iso2: str) -> Country:
    """The Country of an alpha-2 code (ISO 3166-1 or XK)."""
    code = iso2.upper()
    if code not in _known_codes() or len(code) != 2:
        raise UnknownCountryError(f"unknown country code {iso2!r}")
    row = _row(code)
    return Country(display_name(code), code, row.continent, row.subregion)


def lookup_country(value: str) -> Country:
    """Resolve a code, a name as models write it ("Ivory Coast", "the Netherlands", "Burma") or an unambiguous
    demonym; raise UnknownCountryError naming the value (and the candidates when it is ambiguous)."""
    if not isinstance(value, str) or not _clean(value):
        raise UnknownCountryError(f"country must be a non-empty string, got {value!r}")
    code, hits = _resolve(_clean(value))
    if code is None:
        if hits:
            raise UnknownCountryError(f"ambiguous country {value!r} (could be any of {hits})")
        raise UnknownCountryError(f"unknown country {value!r} (not a country name, alias or ISO 3166 code)")
    return country_by_code(code)


@lru_cache(maxsize=None)
def all_countries() -> tuple[Country, ...]:
    """Every ISO 3166-1 entry (249), sorted by alpha-2 code."""
    return tuple(sorted((country_by_code(c.alpha_2) for c in pycountry.countries), key=lambda c: c.iso_code))


_WORDS = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.replace("’", "'") for w in _WORDS.findall(unicodedata.normalize("NFC", text).casefold()))


@lru_cache(maxsize=None)
def _name_index() -> dict[tuple[str, ...], str]:
    """Word sequences of every known name, official name, short name and alias -> alpha-2."""
    index: dict[tuple[str, ...], str] = {}
    for c in pycountry.countries:
        for name in (c.name, getattr(c, "common_name", None), getattr(c, "official_name", None)):
            if name:
                index.setdefault(_words(name), c.alpha_2)
    for row in _table().values():
        if row.iso2 in _known_codes():
            for name in (row.name_short, row.name_official, display_name(row.iso2)):
                index.setdefault(_words(name), row.iso2)
    for alias, code in ALIASES.items():
        index.setdefault(_words(alias), code)
    return index


@lru_cache(maxsize=65536)
def _word_code(word: str) -> str | None:
    # One word of prose: an alias/demonym, or a single country_converter pattern hit ("italian" -> IT). Codes are
    # never matched here ("in", "no", "it" are words), nor words under four letters.
    if word in ALIASES:
        return ALIASES[word]
    if len(word) < 4:
        return None
    hits = {row.iso2 for row in _table().values() if row.iso2 in _known_codes() and row.regex.search(word)}
    return hits.pop() if len(hits) == 1 else None


def countries_mentioned(text: str) -> set[str]:
    """Alpha-2 codes of the countries whose name, short name or demonym occurs as whole words in free text: a cheap
    pre-filter for corpus rows ("Jiaozi are Chinese dumplings" -> {"CN"}), not a resolver."""
    words = _words(text)
    index = _name_index()
    longest = max(len(k) for k in index)
    found: set[str] = set()
    for i, word in enumerate(words):
        code = _word_code(word) or index.get((word,))
        if code:
            found.add(code)
        for n in range(2, min(longest, len(words) - i) + 1):
            code = index.get(words[i : i + n])
            if code:
                found.add(code)
    return found


def check_category(value: str) -> str:
    """Return `value` if it is one of the eight categories, else raise ValueError naming the allowed ones."""
    if value not in CATEGORIES:
        raise ValueError(f"unknown category {value!r}; expected one of {list(CATEGORIES)}")
    return value
