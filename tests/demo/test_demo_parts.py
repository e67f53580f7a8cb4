"""Small parts of the demo, without running it: which words count as new to the base, config checks, art styles."""

from pathlib import Path

import datasets
import pytest

from cultureclip_demo.config import DemoConfigError, load_config
from cultureclip_demo.data import words_new_to


def test_words_new_to_lists_fine_tuning_words_no_pretraining_caption_used():
    mixture = datasets.Dataset.from_dict({
        "caption": ["flag of Chad at sunset", "a red apple"],
        "twin_caption": ["flag of Romania in a park", "a green apple"],
        "concept": ["flag of Chad", "red apple"],
        "twin_concept": ["flag of Romania", "green apple"],
    })
    new = words_new_to(mixture, ["flag of France", "red apple", "green apple", "sunset"])
    assert new == ["a", "at", "chad", "in", "park", "romania"]
    assert words_new_to(mixture, list(mixture["caption"]) + list(mixture["twin_caption"])) == []


def test_workers_must_be_positive(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("inherit: quick.yaml\nfinetune: {workers: 0}\n")
    with pytest.raises(DemoConfigError, match="workers=0"):
        load_config(str(path))


# Pairs a style draws pixel for pixel alike (OpenMoji uses one blue for Chad and Romania, one red for Indonesia and
# Monaco); the demo reports them per style.
IDENTICAL = {"twemoji": [], "openmoji": ["flag of Chad / flag of Romania", "flag of Indonesia / flag of Monaco"],
             "noto": []}


@pytest.mark.parametrize("name", ["twemoji", "openmoji", "noto"])
def test_styles_draw_every_twin_and_report_identical_pairs(name):
    import numpy as np

    from cultureclip_demo.emoji_sources import ICON_SIZE, NotoColorStyle, get_style, pairs_drawn_identically
    from dataset_builder.twin_catalog import load_twin_catalog

    if name == "noto" and not Path(NotoColorStyle.FONT).is_file():
        pytest.skip(f"{NotoColorStyle.FONT} is not installed (Debian package fonts-noto-color-emoji)")
    style = get_style(name)
    catalog = load_twin_catalog()
    for concept in catalog.concepts.values():
        icon = np.asarray(style.icon(concept.emoji).convert("RGBA"))
        assert icon.shape == (ICON_SIZE, ICON_SIZE, 4) and icon[..., 3].max() > 0, concept.concept
    assert pairs_drawn_identically(catalog, style) == IDENTICAL[name]
    assert not style.has("\U000E0FFE")  # unassigned: no glyph (the fonts' fallback is recognised)
