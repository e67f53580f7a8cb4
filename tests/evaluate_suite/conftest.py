"""Pytest fixtures for the evaluation-suite tests: a tiny random CultureCLIP (vocabulary covering every fixture
text) and its saved checkpoint folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from evalsuite_fixtures import VOCAB_TEXTS  # noqa: E402
from layouts import CAPTIONS, CLASSNAMES, GLOBALRG_REGIONS, TEMPLATES  # noqa: E402
from modeling_cultureclip import CultureCLIPModel  # noqa: E402
from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of  # noqa: E402


@pytest.fixture(scope="session")
def tiny():
    """(model, processor) with a word tokenizer covering every fixture text; fixed seed."""
    texts = VOCAB_TEXTS + CLASSNAMES + TEMPLATES + GLOBALRG_REGIONS + [c for pair in CAPTIONS for c in pair]
    tokenizer = build_word_tokenizer(words_of(texts), max_length=32)
    torch.manual_seed(0)
    model = CultureCLIPModel(tiny_config(len(tokenizer), image_size=32, patch_size=8, width=32, heads=2,
                                         projection_dim=16)).eval()
    return model, tiny_processor(tokenizer, 32)


@pytest.fixture(scope="session")
def tiny_dir(tiny, tmp_path_factory) -> Path:
    """The tiny model saved as a checkpoint folder (safetensors + processor)."""
    path = tmp_path_factory.mktemp("tiny_model")
    model, processor = tiny
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
