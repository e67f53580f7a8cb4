"""Country, continent and UN sub-region names for per-group breakdowns.

A thin layer over `dataset_builder.catalog`, the project's one country module (pycountry + country_converter +
an alias table), so evaluation groups countries exactly as the dataset rows do.
"""

from __future__ import annotations

from dataset_builder.catalog import country_by_code, resolve_code


def iso_alpha2(country: str) -> str | None:
    """ISO 3166-1 alpha-2 code (XK for Kosovo) of a country name, alias or code; None when unknown or ambiguous.
    Case does not matter ("united states of america" -> "US")."""
    return resolve_code(country) if isinstance(country, str) else None


def country_name(country: str) -> str:
    """Short common English name for a country name or code (the input unchanged when unknown)."""
    code = iso_alpha2(country)
    return country if code is None else country_by_code(code).name


def continent_of(country: str) -> str | None:
    """Continent of a country name or code; None when the country is unknown."""
    code = iso_alpha2(country)
    return None if code is None else country_by_code(code).continent


def subregion_of(country: str) -> str | None:
    """UN M49 sub-region ("Western Africa", "South-eastern Asia") of a country name or code; None when unknown."""
    code = iso_alpha2(country)
    return None if code is None else country_by_code(code).subregion
