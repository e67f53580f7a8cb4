"""Country and continent names for per-group breakdowns (pycountry + pycountry-convert, offline)."""

from __future__ import annotations

from functools import lru_cache

import pycountry
import pycountry_convert

# Names benchmarks use that pycountry does not resolve by lookup.
_ALIASES = {
    "south korea": "KR", "north korea": "KP", "russia": "RU", "iran": "IR", "syria": "SY", "vietnam": "VN",
    "laos": "LA", "bolivia": "BO", "venezuela": "VE", "tanzania": "TZ", "taiwan": "TW", "moldova": "MD",
    "palestine": "PS", "czech republic": "CZ", "ivory coast": "CI", "cote d'ivoire": "CI", "uk": "GB",
    "usa": "US", "us": "US", "united states of america": "US", "england": "GB", "scotland": "GB", "turkey": "TR",
    "democratic republic of the congo": "CD", "republic of the congo": "CG", "brunei": "BN", "micronesia": "FM",
}
_CONTINENT_NAMES = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "SA": "South America",
                    "OC": "Oceania", "AN": "Antarctica"}


@lru_cache(maxsize=4096)
def iso_alpha2(country: str) -> str | None:
    """ISO 3166-1 alpha-2 code of a country name or code, or None when it is not a country pycountry knows."""
    key = country.strip()
    if not key:
        return None
    if key.lower() in _ALIASES:
        return _ALIASES[key.lower()]
    try:
        return pycountry.countries.lookup(key).alpha_2
    except LookupError:
        return None


@lru_cache(maxsize=4096)
def country_name(country: str) -> str:
    """Common English name for a country name or ISO code (the input unchanged when unknown)."""
    code = iso_alpha2(country)
    if code is None:
        return country
    entry = pycountry.countries.get(alpha_2=code)
    return getattr(entry, "common_name", None) or entry.name


@lru_cache(maxsize=4096)
def continent_of(country: str) -> str | None:
    """Continent name of a country name or ISO code; None when the country (or its continent) is unknown."""
    code = iso_alpha2(country)
    if code is None:
        return None
    if code == "TL":  # pycountry-convert lacks Timor-Leste
        return "Asia"
    try:
        return _CONTINENT_NAMES[pycountry_convert.country_alpha2_to_continent_code(code)]
    except KeyError:
        return None
