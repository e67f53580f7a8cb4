"""Country metadata, the curated twin catalog, recipes and safe file names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dataset_builder.catalog import CATEGORIES, all_countries, lookup_country
from dataset_builder.recipe import load_recipe
from dataset_builder.runstore import StageStore, derive_seed, inside, safe_name
from dataset_builder.twin_catalog import DEFAULT_CATALOG, CatalogError, load_twin_catalog
from dataset_builder.twemoji import pixel_difference


def test_countries_have_continents_from_the_library():
    countries = all_countries()
    assert len(countries) == 249 and all(c.continent for c in countries)
    assert lookup_country("TL").continent == "Asia" and lookup_country("VA").continent == "Europe"
    assert lookup_country("Côte d'Ivoire").iso_code == "CI"
    assert lookup_country("Japan").continent == "Asia"
    with pytest.raises(ValueError, match="unknown country"):
        lookup_country("Atlantis")
    assert len(CATEGORIES) == 8


def test_curated_catalog_pairs_are_real_distinct_twins():
    cat = load_twin_catalog()
    assert 30 <= len(cat.pairs) <= 45
    names = {frozenset((cat.concepts[a].iso_code, cat.concepts[b].iso_code)) for a, b in cat.pairs}
    for expected in [("TD", "RO"), ("ID", "MC"), ("IE", "CI"), ("NL", "LU"), ("AU", "NZ"), ("NO", "IS")]:
        assert frozenset(expected) in names
    for a, b in cat.pairs:
        ca, cb = cat.concepts[a], cat.concepts[b]
        assert ca.iso_code != cb.iso_code and ca.category == cb.category
        assert pixel_difference(ca.emoji, cb.emoji) > 2.0
    # identical images are refused (pixel difference 0)
    assert pixel_difference("🇹🇩", "🇹🇩") == 0.0


def _write_catalog(tmp_path: Path, concepts: list[dict], pairs: list[list[str]]) -> Path:
    path = tmp_path / "cat.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "concepts": concepts, "pairs": pairs}, allow_unicode=True))
    return path


def _concept(name: str, iso: str, emoji: str) -> dict:
    return {"concept": name, "iso_code": iso, "category": "Symbol", "emoji": emoji,
            "context": f"The {name}.", "visual_features": "stripes; colours"}


def test_catalog_missing_field_names_file_row_field(tmp_path):
    bad = _concept("flag of Chad", "TD", "🇹🇩")
    del bad["context"]
    path = _write_catalog(tmp_path, [bad, _concept("flag of Romania", "RO", "🇷🇴")], [])
    with pytest.raises(CatalogError) as info:
        load_twin_catalog(path)
    assert str(path) in str(info.value) and "concepts[0].context" in str(info.value)


def test_catalog_unknown_country(tmp_path):
    path = _write_catalog(tmp_path, [_concept("flag of Nowhere", "XQ", "🇹🇩")], [])
    with pytest.raises(CatalogError, match=r"concepts\[0\].*iso_code.*unknown country 'XQ'"):
        load_twin_catalog(path)


def test_catalog_duplicate_concept_and_pair(tmp_path):
    c = _concept("flag of Chad", "TD", "🇹🇩")
    with pytest.raises(CatalogError, match=r"concepts\[1\].*duplicate concept"):
        load_twin_catalog(_write_catalog(tmp_path, [c, dict(c)], []))
    r = _concept("flag of Romania", "RO", "🇷🇴")
    with pytest.raises(CatalogError, match=r"pairs\[1\].*duplicate pair"):
        load_twin_catalog(_write_catalog(tmp_path, [c, r], [[c["concept"], r["concept"]], [r["concept"], c["concept"]]]))


def test_catalog_rejects_same_country_and_identical_images(tmp_path):
    a, b = _concept("flag A", "TD", "🇹🇩"), _concept("flag B", "TD", "🇷🇴")
    with pytest.raises(CatalogError, match="different countries"):
        load_twin_catalog(_write_catalog(tmp_path, [a, b], [["flag A", "flag B"]]))
    a, b = _concept("flag A", "TD", "🇹🇩"), _concept("flag B", "RO", "🇹🇩")
    with pytest.raises(CatalogError, match="not visually distinguishable"):
        load_twin_catalog(_write_catalog(tmp_path, [a, b], [["flag A", "flag B"]]))


def test_yaml_norway_trap_is_caught(tmp_path):
    path = tmp_path / "cat.yaml"
    path.write_text("concepts:\n  - {concept: flag of Norway, iso_code: NO, category: Symbol, emoji: x, "
                    "context: c, visual_features: v}\npairs: []\n")
    with pytest.raises(CatalogError, match=r"concepts\[0\].iso_code"):
        load_twin_catalog(path)


def test_safe_names_never_escape(tmp_path):
    for key in ["../../etc/x", "..", "/etc/passwd", "a/b\\c", "ñandú 🇯🇵", "", "CON"]:
        name = safe_name(key)
        assert "/" not in name and "\\" not in name and ".." not in name and name
        assert inside(tmp_path, name).parent == tmp_path.resolve()
    assert safe_name("../../etc/x") != safe_name("etc x")  # the hash keeps distinct keys apart
    store = StageStore(tmp_path, "images")
    store.put("../../etc/x", {"status": "ok"})
    assert store.path("../../etc/x").parent == store.items_dir
    assert store.get("../../etc/x")["key"] == "../../etc/x"
    with pytest.raises(ValueError, match="leaves"):
        inside(tmp_path, "../outside")


def test_seeds_depend_on_identity_only():
    assert derive_seed(0, "images", "JP:kimono#3") == derive_seed(0, "images", "JP:kimono#3")
    assert derive_seed(0, "images", "JP:kimono#3") != derive_seed(1, "images", "JP:kimono#3")
    assert 0 <= derive_seed(5, "x") < 2**31


def test_recipes_mirror_the_release_and_demo():
    paper = load_recipe("paper")
    assert paper.concepts.source == "top-down" and paper.concepts.countries == "all"
    assert paper.captions.per_side == 10 and paper.captions.max_words == 15
    assert (paper.images.width, paper.images.height, paper.images.steps, paper.images.guidance) == (1024, 1024, 4, 0.0)
    assert paper.text_backend.model_id == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert paper.image_backend.model_id == "stabilityai/stable-diffusion-3.5-large-turbo"
    assert (paper.judge.drop_if_any_at_most, paper.judge.min_mean) == (1, 3.0)
    demo = load_recipe("demo")
    assert demo.concepts.source == "curated" and demo.image_backend.kind == "offline-twemoji"
    assert DEFAULT_CATALOG.exists()


def test_recipe_errors_name_the_field(tmp_path):
    path = tmp_path / "r.yaml"
    text = (Path(__file__).resolve().parents[2] / "dataset_builder/recipes/demo.yaml").read_text()
    path.write_text(text.replace("per_side: 8", "per_side: 8, per_sid: 3"))
    with pytest.raises(ValueError, match=r"captions: unknown field\(s\) \['per_sid'\]"):
        load_recipe(path)
    with pytest.raises(FileNotFoundError, match="packaged recipes"):
        load_recipe("nope")
