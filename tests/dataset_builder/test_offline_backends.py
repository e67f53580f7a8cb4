"""Offline backends: deterministic per item, same answer format as the real models."""

from __future__ import annotations

import numpy as np
from PIL import Image

from dataset_builder.backends.base import ChatBackend, ChatRequest, ImageBackend
from dataset_builder.backends.offline import RuleBasedJudge, TemplateTextWriter, TwemojiImageSource
from dataset_builder.embedders import HashedNgramEmbedder, pair_similarity
from dataset_builder.parsing import parse_captions, parse_concept, parse_judge, parse_twin
from dataset_builder.prompts import load_prompt, make_request


def test_protocols():
    assert isinstance(TemplateTextWriter(), ChatBackend)
    assert isinstance(RuleBasedJudge(), ChatBackend)
    assert isinstance(TwemojiImageSource(), ImageBackend)


def test_twemoji_source_is_seeded_per_item_not_per_batch():
    src = TwemojiImageSource(width=64, height=64)
    f = {"emoji": "🏯"}
    a = src.render(["p1", "p2", "p3"], [1, 2, 3], [f, f, f])
    b = src.render(["p3"], [3], [f])
    assert np.array_equal(np.asarray(a[2]), np.asarray(b[0]))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))
    assert a[0].size == (64, 64) and a[0].mode == "RGB"


def test_template_writer_answers_parse():
    w = TemplateTextWriter()
    p = load_prompt("concept.v1")
    ans = w.generate([make_request("concept", p, {"country": "Peru", "iso_code": "PE", "category": "Cuisine"}, 3)])
    concept = parse_concept(ans[0])
    twin_fields = {"concept": concept["concept"], "country": "Peru", "iso_code": "PE", "category": "Cuisine",
                   "visual_features": concept["visual_features"]}
    twin = parse_twin(w.generate([make_request("twin", load_prompt("twin.v1"), twin_fields, 4)])[0])
    assert twin["twin_country"] != "Peru"
    sim = pair_similarity(HashedNgramEmbedder(), [concept["visual_features"]], [twin["twin_visual_features"]])[0]
    assert sim > 0.8  # same traits, shuffled
    cap_fields = {"concept": "tacos", "country": "Mexico", "category": "Cuisine", "context": "c",
                  "visual_features": "folded tortilla; meat filling", "n": 6, "max_words": 15}
    kept, rejected = parse_captions(w.generate([make_request("captions", load_prompt("captions.v1"), cap_fields, 1)])[0],
                                    15, cap_fields["visual_features"])
    assert len(kept) == 6 and not rejected


def test_rule_judge_rejects_blank_and_accepts_clean_emoji():
    judge = RuleBasedJudge()
    p = load_prompt("judge.v1")
    fields = {"caption": "c", "concept": "kimono", "category": "Clothing", "country": "Japan",
              "visual_features": "wide sleeves", "emoji": "👘", "iso_code": "JP"}
    blank = Image.new("RGB", (64, 64), (250, 250, 250))
    clean = TwemojiImageSource(max_rotation=0, min_scale=0.95, max_scale=0.95, max_shift=0, max_blur=0).render(["c"], [0], [fields])[0]
    a, b = judge.generate([make_request("judge", p, fields, 0, blank), make_request("judge", p, fields, 0, clean)])
    assert parse_judge(a) == {"authenticity": 1, "consistency": 1, "cultural_fidelity": 1}
    sb = parse_judge(b)
    assert min(sb.values()) >= 4
    # the wrong emoji drawn for the concept lowers cultural fidelity
    wrong = TwemojiImageSource(max_rotation=0, min_scale=0.95, max_scale=0.95, max_shift=0, max_blur=0).render(["c"], [0], [{"emoji": "🥻"}])[0]
    sw = parse_judge(judge.generate([make_request("judge", p, fields, 0, wrong)])[0])
    assert sw["cultural_fidelity"] < sb["cultural_fidelity"]


def test_hashed_embedder_ranks_similar_descriptions_higher():
    e = HashedNgramEmbedder()
    v = e.embed(["vertical tricolour; blue yellow red", "vertical tricolour; blue yellow red band", "fluffy grey koala ears"])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]
    assert np.array_equal(e.embed(["abc"]), HashedNgramEmbedder().embed(["abc"]))
