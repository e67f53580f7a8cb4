"""The demo's word tokenizer spells every name it is built from: accents are folded (NFKD, combining marks
stripped) and `words_of` splits text exactly as the tokenizer does, so no catalog concept name, general emoji
caption or catalog description turns into <unk>, and no two catalog names become the same token sequence."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from cultureclip_demo.emoji_sources import general_emoji
from dataset_builder.twin_catalog import load_twin_catalog
from modeling_cultureclip.tiny import UNK_ID, build_word_tokenizer, normalize_text, words_of


@pytest.fixture(scope="module")
def catalog():
    return load_twin_catalog()


@pytest.fixture(scope="module")
def texts(catalog) -> dict[str, list[str]]:
    general, _ = general_emoji(catalog)  # every general emoji, drawable in Twemoji or not
    concepts = list(catalog.concepts.values())
    return {"concept names": [c.concept for c in concepts],
            "general captions": [c.name for c in general],
            "catalog descriptions": [c.context for c in concepts] + [c.visual_features for c in concepts]}


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_every_name_and_caption_tokenises_without_unknown(texts):
    tokenizer = build_word_tokenizer(words_of([t for group in texts.values() for t in group]))
    for group, values in texts.items():
        unknown = [t for t in values if UNK_ID in _ids(tokenizer, t) or not _ids(tokenizer, t)]
        assert not unknown, f"{group} with <unk>: {unknown[:5]}"
    # the general list really holds the hard cases (accents, apostrophes, '&', dots)
    captions = texts["general captions"]
    assert len(captions) > 1500
    assert any(any(ord(ch) > 127 for ch in c) for c in captions)
    assert any("&" in c for c in captions) and any("." in c for c in captions)


def test_catalog_names_stay_distinct(texts):
    tokenizer = build_word_tokenizer(words_of([t for group in texts.values() for t in group]))
    names = texts["concept names"]
    sequences = {tuple(_ids(tokenizer, name)) for name in names}
    assert len(sequences) == len(names)


def test_accented_names_are_folded_not_lost():
    names = ["flag of Côte d'Ivoire", "döner wrap", "piñata", "São Tomé & Príncipe"]
    tokenizer = build_word_tokenizer(words_of(names))
    tokens = tokenizer.convert_ids_to_tokens(_ids(tokenizer, "flag of Côte d'Ivoire"))
    assert tokens == ["flag", "of", "cote", "d", "'", "ivoire"]
    assert tokenizer.convert_ids_to_tokens(_ids(tokenizer, "döner wrap")) == ["doner", "wrap"]
    assert _ids(tokenizer, "Côte") == _ids(tokenizer, "cote") == _ids(tokenizer, "COTE")
    assert _ids(tokenizer, "São Tomé & Príncipe") == _ids(tokenizer, "sao tome & principe")
    assert UNK_ID not in _ids(tokenizer, "piñata")
    # a word it was not built from is still unknown (the check above could fail)
    assert _ids(tokenizer, "kimono") == [UNK_ID]
    assert normalize_text("Åland Straße") == "aland straße"


def test_saved_tokenizer_keeps_the_folding(tmp_path):
    tokenizer = build_word_tokenizer(words_of(["flag of Côte d'Ivoire", "döner"]))
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in ("flag of Côte d'Ivoire", "DÖNER"):
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert UNK_ID not in loaded(text)["input_ids"]
