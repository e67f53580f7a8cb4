"""Fixtures for the CultureVLM tests: tiny random chat VLMs (LLaVA and Qwen2.5-VL styles) and an offline build."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DATASET_BUILDER_FSYNC", "0")

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ("llava", "qwen2_5_vl")


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: offline, repo importable, one thread (stable numerics)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="session")
def tiny_vlm_dirs(tmp_path_factory) -> dict[str, Path]:
    from dataset_builder.backends.tiny import build_tiny_chat_vlm

    root = tmp_path_factory.mktemp("cv_tiny_vlms")
    return {family: build_tiny_chat_vlm(root / family, family=family) for family in FAMILIES}


@pytest.fixture(scope="session")
def offline_benchmark(tmp_path_factory) -> Path:
    """A benchmark built with the offline template writer and Twemoji images (24 concepts, 72 rows)."""
    from dataset_builder.backends.offline import TwemojiImageSource
    from dataset_builder.cultureverse import BuildSettings, CultureVerseTemplateWriter, build_cultureverse

    out = tmp_path_factory.mktemp("cv_bench") / "cultureverse"
    summary = build_cultureverse(out, CultureVerseTemplateWriter(), TwemojiImageSource(width=48, height=48),
                                 settings=BuildSettings(seed=3, limit=24))
    assert summary["statistics"]["accepted"] == 24
    return out


def load_vlm(folder: Path):
    """(model, processor) of a tiny chat VLM folder."""
    from transformers import AutoModelForImageTextToText

    from dataset_builder.backends.tiny import load_tiny_chat_processor

    return AutoModelForImageTextToText.from_pretrained(folder), load_tiny_chat_processor(folder)


sys.path.insert(0, str(Path(__file__).parent))
