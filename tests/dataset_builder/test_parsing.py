"""Strict answer parsers on realistic well-formed and malformed model answers."""

from __future__ import annotations

import json

import pytest

from dataset_builder.parsing import Rejected, parse_bottom_up, parse_captions, parse_concept, parse_judge, parse_twin

CONCEPT = {"concept": "injera", "context": "A sour flatbread eaten with stews at family meals.",
           "visual_features": "round flat shape; spongy surface; grey-brown colour"}


def test_concept_plain_and_fenced():
    assert parse_concept(json.dumps(CONCEPT)) == CONCEPT
    fenced = "```json\n" + json.dumps(CONCEPT, indent=2) + "\n```"
    assert parse_concept(fenced)["concept"] == "injera"
    assert parse_concept("  \n" + json.dumps(CONCEPT) + "\n")["visual_features"].startswith("round")


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("Sure! Here is the concept: " + json.dumps(CONCEPT), "extra_text"),
        (json.dumps(CONCEPT) + "\nI hope this helps.", "extra_text"),
        ("```json\n" + json.dumps(CONCEPT) + "\n```\nLet me know!", "extra_text"),
        ('{"concept": "injera", "context": "x", "visual_features": "a; b",}', "invalid_json"),
        (json.dumps({k: v for k, v in CONCEPT.items() if k != "visual_features"}), "missing_field:visual_features"),
        (json.dumps({**CONCEPT, "concept": ["injera"]}), "wrong_type:concept"),
        (json.dumps({**CONCEPT, "concept": "  "}), "empty_field:concept"),
        (json.dumps({**CONCEPT, "rating": 5}), "unexpected_field:rating"),
        ("[" + json.dumps(CONCEPT) + "]", "extra_text"),
        ("", "empty_answer"),
        (None, "not_text"),
    ],
)
def test_concept_malformed(answer, reason):
    with pytest.raises(Rejected) as info:
        parse_concept(answer)
    assert info.value.reason == reason


def test_twin_requires_every_field_including_visual_features():
    good = {"twin_concept": "lahoh", "twin_country": "Yemen", "twin_context": "A spongy pancake bread.",
            "twin_visual_features": "round flat shape; bubbly surface"}
    assert parse_twin(json.dumps(good))["twin_visual_features"] == "round flat shape; bubbly surface"
    with pytest.raises(Rejected) as info:
        parse_twin(json.dumps({k: v for k, v in good.items() if k != "twin_visual_features"}))
    assert info.value.reason == "missing_field:twin_visual_features"


def test_judge_scores_strict():
    assert parse_judge('{"authenticity": 4, "consistency": 5, "cultural_fidelity": 3}') == {
        "authenticity": 4, "consistency": 5, "cultural_fidelity": 3}
    cases = {
        '{"authenticity": 4, "consistency": 6, "cultural_fidelity": 3}': "score_out_of_range:consistency",
        '{"authenticity": "4", "consistency": 5, "cultural_fidelity": 3}': "wrong_type:authenticity",
        '{"authenticity": 4.5, "consistency": 5, "cultural_fidelity": 3}': "wrong_type:authenticity",
        '{"authenticity": true, "consistency": 5, "cultural_fidelity": 3}': "wrong_type:authenticity",
        '{"authenticity": 4, "consistency": 5}': "missing_field:cultural_fidelity",
        "Authenticity: 4\nConsistency: 5\nCultural fidelity: 3": "extra_text",
    }
    for answer, reason in cases.items():
        with pytest.raises(Rejected) as info:
            parse_judge(answer)
        assert info.value.reason == reason, answer


def test_captions_filters_and_counts():
    features = "round red lantern; gold tassels; glowing paper"
    answer = json.dumps({"captions": [
        "A round red lantern hangs above a busy night market",
        "Gold tassels sway under a lantern at a temple fair",
        "A lantern hangs above a busy night market",  # no visual feature word... 'lantern' is one: kept
        "People walk past shops in the evening",  # no feature
        "A glowing paper lantern lights a narrow alley filled with families celebrating the spring festival together",
        "A round red lantern hangs above a busy night market",  # duplicate
        42,
    ]})
    kept, rejected = parse_captions(answer, max_words=15, visual_features=features)
    assert kept[:2] == ["A round red lantern hangs above a busy night market",
                        "Gold tassels sway under a lantern at a temple fair"]
    assert len(kept) == 3
    assert rejected == {"caption_no_feature": 1, "caption_too_long": 1, "caption_duplicate": 1, "wrong_type:caption": 1}


def test_captions_whole_answer_malformed():
    with pytest.raises(Rejected) as info:
        parse_captions('{"captions": "one long string"}', 15, "red")
    assert info.value.reason == "wrong_type:captions"
    with pytest.raises(Rejected):
        parse_captions("1. A red lantern\n2. A red lantern at night", 15, "red")


def test_bottom_up_keep_and_drop():
    drop = {"keep": False, "country": "", "category": "", "context": "", "visual_features": ""}
    assert parse_bottom_up(json.dumps(drop))["keep"] is False
    keep = {**drop, "keep": True, "country": "South Korea", "category": "Clothing",
            "context": "Worn at holidays.", "visual_features": "high waist; flared skirt"}
    assert parse_bottom_up(json.dumps(keep))["country"] == "South Korea"
    with pytest.raises(Rejected) as info:
        parse_bottom_up(json.dumps({**keep, "category": "Music"}))
    assert info.value.reason == "unknown_category"
    with pytest.raises(Rejected) as info:
        parse_bottom_up(json.dumps({**keep, "context": ""}))
    assert info.value.reason == "empty_field:context"
    with pytest.raises(Rejected) as info:  # the page title is the concept: a concept field is not part of v2
        parse_bottom_up(json.dumps({**keep, "concept": "hanbok"}))
    assert info.value.reason == "unexpected_field:concept"