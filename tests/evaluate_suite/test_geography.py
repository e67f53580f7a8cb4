"""evaluate_suite.geography is a thin layer over dataset_builder.catalog: the same answers, the same API."""

from __future__ import annotations

from dataset_builder.catalog import all_countries
from evaluate_suite.geography import continent_of, country_name, iso_alpha2, subregion_of


def test_benchmark_spellings_resolve():
    # GlobalRG writes lowercase names; Country211 uses alpha-2 codes (Kosovo included as XK).
    assert iso_alpha2("united states of america") == "US" and iso_alpha2("south korea") == "KR"
    assert iso_alpha2("uk") == "GB" and iso_alpha2("XK") == "XK" and iso_alpha2("russia") == "RU"
    assert (country_name("TD"), continent_of("TD"), subregion_of("TD")) == ("Chad", "Africa", "Middle Africa")
    assert (country_name("ivory coast"), subregion_of("ivory coast")) == ("Côte d'Ivoire", "Western Africa")


def test_unknown_names_pass_through():
    assert iso_alpha2("Atlantis") is None and iso_alpha2("") is None
    assert country_name("Atlantis") == "Atlantis"
    assert continent_of("Atlantis") is None and subregion_of("Atlantis") is None


def test_agrees_with_the_dataset_rows_for_every_country():
    for c in all_countries():
        for key in (c.iso_code, c.name):
            assert (iso_alpha2(key), country_name(key), continent_of(key), subregion_of(key)) == (
                c.iso_code, c.name, c.continent, c.subregion), key
