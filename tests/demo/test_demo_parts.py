"""Small parts of the demo, without running it: which words count as new to the base, and config checks."""

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
