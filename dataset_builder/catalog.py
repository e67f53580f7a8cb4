"""Country and category metadata.

Countries come from `pycountry` (ISO 3166-1) and continents from `pycountry_convert`; nothing is hand-typed except
the short override table below for the few ISO codes `pycountry_convert` has no continent for.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import pycountry
import pycountry_convert

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

CONTINENT_NAMES: dict[str, str] = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}

# pycountry_convert lacks these ISO codes; the assignment follows the usual geographic convention
# (territories with no permanent population are placed where their map position puts them).
CONTINENT_OVERRIDES: dict[str, str] = {
    "AQ": "Antarctica",  # Antarctica
    "TF": "Antarctica",  # French Southern Territories
    "EH": "Africa",  # Western Sahara
    "PN": "Oceania",  # Pitcairn
    "SX": "North America",  # Sint Maarten (Caribbean)
    "TL": "Asia",  # Timor-Leste
    "UM": "Oceania",  # US Minor Outlying Islands (mostly Pacific)
    "VA": "Europe",  # Holy See
}


class UnknownCountryError(ValueError):
    """Raised when a country name or code does not resolve to an ISO 3166-1 entry."""


@dataclass(frozen=True)
class Country:
    """One ISO 3166-1 country or territory."""

    name: str
    iso_code: str  # alpha-2
    continent: str

    @property
    def flag_emoji(self) -> str:
        """The regional-indicator flag emoji for this ISO code."""
        return "".join(chr(0x1F1E6 + ord(c) - ord("A")) for c in self.iso_code)


def _continent(alpha2: str) -> str:
    if alpha2 in CONTINENT_OVERRIDES:
        return CONTINENT_OVERRIDES[alpha2]
    code = pycountry_convert.country_alpha2_to_continent_code(alpha2)
    return CONTINENT_NAMES[code]


def _display_name(entry: object) -> str:
    # Prefer the common name ("Bolivia") over the formal ISO name ("Bolivia, Plurinational State of").
    return getattr(entry, "common_name", None) or entry.name  # type: ignore[attr-defined]


@lru_cache(maxsize=None)
def all_countries() -> tuple[Country, ...]:
    """Every ISO 3166-1 entry, sorted by alpha-2 code."""
    out = [Country(_display_name(c), c.alpha_2, _continent(c.alpha_2)) for c in pycountry.countries]
    return tuple(sorted(out, key=lambda c: c.iso_code))


def lookup_country(value: str) -> Country:
    """Resolve an ISO alpha-2/alpha-3 code or a country name; raise UnknownCountryError otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise UnknownCountryError(f"country must be a non-empty string, got {value!r}")
    try:
        entry = pycountry.countries.lookup(value.strip())
    except LookupError:
        raise UnknownCountryError(f"unknown country {value!r} (not an ISO 3166-1 name or code)") from None
    return Country(_display_name(entry), entry.alpha_2, _continent(entry.alpha_2))


def check_category(value: str) -> str:
    """Return `value` if it is one of the eight categories, else raise ValueError naming the allowed ones."""
    if value not in CATEGORIES:
        raise ValueError(f"unknown category {value!r}; expected one of {list(CATEGORIES)}")
    return value
