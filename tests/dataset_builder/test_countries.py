"""The one country module: names models write, short display names, UN sub-regions, counted rejections."""

from __future__ import annotations

import json

import pycountry
import pytest

from dataset_builder import catalog
from dataset_builder.catalog import (ALIASES, UnknownCountryError, all_countries, countries_mentioned, country_by_code,
                                     lookup_country, resolve_code)
from dataset_builder.schema import make_concept

# SPEC §10: common names pycountry.lookup rejects, with the ISO code each must resolve to.
REJECTED_BY_PYCOUNTRY = {
    "Russia": "RU", "Turkey": "TR", "UK": "GB", "England": "GB", "Ivory Coast": "CI", "The Netherlands": "NL",
    "Palestine": "PS", "Vatican": "VA", "Brunei": "BN", "Kosovo": "XK", "Macau": "MO", "Cape Verde": "CV",
    "Burma": "MM",
}


@pytest.mark.parametrize("name,code", sorted(REJECTED_BY_PYCOUNTRY.items()))
def test_names_pycountry_rejects_resolve_to_the_right_code(name, code):
    with pytest.raises(LookupError):
        pycountry.countries.lookup(name)  # the premise: the bare library does not know this name
    assert lookup_country(name).iso_code == code
    assert lookup_country(name.lower()).iso_code == code and lookup_country(f"  {name.upper()} ").iso_code == code


def test_other_spellings_models_write():
    cases = {"united states of america": "US", "USA": "US", "U.S.": "US", "the UK": "GB", "Great Britain": "GB",
             "Scotland": "GB", "Wales": "GB", "Holland": "NL", "DR Congo": "CD", "Republic of the Congo": "CG",
             "South Korea": "KR", "North Korea": "KP", "Czech Republic": "CZ", "Swaziland": "SZ", "East Timor": "TL",
             "Laos": "LA", "Türkiye": "TR", "Côte d'Ivoire": "CI", "Japanese": "JP", "Chinese": "CN", "French": "FR",
             "Dutch": "NL", "Kosovar": "XK", "XKX": "XK", "jp": "JP", "IND": "IN", "Niger": "NE", "Nigeria": "NG"}
    assert {name: resolve_code(name) for name in cases} == cases


def test_unknown_and_ambiguous_names_raise_with_the_reason():
    for bad in ["Atlantis", "Europe", "", "   ", "Korean"]:
        with pytest.raises(UnknownCountryError):
            lookup_country(bad)
        assert resolve_code(bad) is None
    with pytest.raises(UnknownCountryError, match=r"ambiguous country 'Spain and Portugal'.*'ES', 'PT'"):
        lookup_country("Spain and Portugal")
    with pytest.raises(UnknownCountryError, match="non-empty string"):
        lookup_country(None)  # type: ignore[arg-type]


def test_every_alias_is_one_the_libraries_lack():
    """The hand table holds only what pycountry and country_converter cannot resolve, and agrees with the codes."""
    for alias, code in ALIASES.items():
        assert catalog._library_code(alias) == (None, []), f"{alias!r} is resolved by the libraries; drop it"
        assert code in {c.iso_code for c in all_countries()} | set(catalog.EXTRA_CODES)


def test_short_display_names_and_subregions():
    names = {c.iso_code: c.name for c in all_countries()}
    assert names["CD"] == "DR Congo" and names["RU"] == "Russia" and names["PS"] == "Palestine"
    assert names["VA"] == "Vatican" and names["LC"] == "Saint Lucia" and names["FM"] == "Federated States of Micronesia"
    assert not [n for n in names.values() if ", " in n and n.endswith((" of", " of the"))]  # no inverted ISO names
    assert not [n for n in names.values() if "St." in n or "Is." in n]
    countries = all_countries()
    assert len(countries) == 249 and all(c.continent and c.subregion for c in countries)
    sub = {c.iso_code: c.subregion for c in countries}
    assert (sub["SN"], sub["VN"], sub["DE"], sub["PE"], sub["AU"], sub["US"]) == (
        "Western Africa", "South-eastern Asia", "Western Europe", "South America", "Australia and New Zealand",
        "Northern America")
    assert len(set(sub.values())) == 23  # 22 M49 sub-regions plus Antarctica
    kosovo = country_by_code("XK")
    assert (kosovo.name, kosovo.continent, kosovo.subregion, kosovo.flag_emoji) == (
        "Kosovo", "Europe", "Southern Europe", "\U0001F1FD\U0001F1F0")
    assert "XK" not in {c.iso_code for c in countries}  # `all` stays ISO 3166-1


def test_concepts_carry_the_subregion_and_short_name():
    c = make_concept("attiéké", "Ivory Coast", "Cuisine", "Grated cassava eaten in Abidjan.", "white grains", "top-down")
    assert (c.country, c.iso_code, c.continent, c.subregion) == ("Côte d'Ivoire", "CI", "Africa", "Western Africa")
    assert json.loads(json.dumps(c.to_dict()))["subregion"] == "Western Africa"


def test_countries_mentioned_in_prose():
    text = "Jiaozi are Chinese dumplings, also eaten in Côte d'Ivoire and in St. Lucia; it is no Italian dish."
    assert countries_mentioned(text) == {"CN", "CI", "LC", "IT"}  # "in"/"no"/"it" are words, not codes
    assert countries_mentioned("An extinct camelid genus of the Late Oligocene.") == set()


def test_twins_from_unknown_countries_are_counted_rejections(tmp_path):
    import dataclasses

    from dataset_builder.recipe import load_recipe
    from dataset_builder.stages import twins as twins_stage
    from dataset_builder.stages.common import RunContext, status_counts

    class Writer:
        model_id, revision = "scripted", None

        def generate(self, requests, max_new_tokens=256):
            out = []
            for r in requests:
                country = {"JP": "Atlantis", "DE": "Burma", "IN": "Ivory Coast"}[r.fields["iso_code"]]
                out.append(json.dumps({"twin_concept": f"twin of {r.fields['concept']}", "twin_country": country,
                                       "twin_context": "A look-alike.", "twin_visual_features": r.fields["visual_features"]}))
            return out

    recipe = load_recipe("demo")
    recipe = dataclasses.replace(recipe, concepts=dataclasses.replace(recipe.concepts, source="top-down"))
    seeds = [make_concept("kimono", "JP", "Clothing", "Robe.", "wide sleeves; sash", "top-down"),
             make_concept("dirndl", "DE", "Clothing", "Dress.", "full skirt; apron", "top-down"),
             make_concept("sari", "IN", "Clothing", "Drape.", "long cloth; border", "top-down")]
    ctx = RunContext(run_dir=tmp_path, recipe=recipe, text_backend=Writer(), progress=False)
    pairs, _ = twins_stage.run(ctx, seeds)
    assert status_counts(ctx.store("twins").all_records()) == {"kept": 2, "rejected:unknown_country": 1}
    assert sorted(p.b.iso_code for p in pairs) == ["CI", "MM"]
    assert {p.b.subregion for p in pairs} == {"Western Africa", "South-eastern Asia"}


def test_prompts_show_short_common_names(tmp_path):
    import dataclasses

    from dataset_builder.recipe import load_recipe
    from dataset_builder.stages import concepts as concepts_stage
    from dataset_builder.stages.common import RunContext

    class Recorder:
        model_id, revision = "recorder", None
        prompts: list[str] = []

        def generate(self, requests, max_new_tokens=256):
            Recorder.prompts += [r.messages[0]["content"][-1]["text"] for r in requests]
            return [json.dumps({"concept": "thing", "context": "c.", "visual_features": "red"}) for _ in requests]

    recipe = load_recipe("demo")
    recipe = dataclasses.replace(recipe, concepts=dataclasses.replace(
        recipe.concepts, source="top-down", countries=["COD", "Palestine", "Vatican"], categories=["Art"]))
    concepts_stage.run(RunContext(run_dir=tmp_path, recipe=recipe, text_backend=Recorder(), progress=False))
    shown = sorted(line.split(": ", 1)[1] for p in Recorder.prompts for line in p.splitlines()
                   if line.startswith("Country: "))
    assert shown == ["DR Congo", "Palestine", "Vatican"]
