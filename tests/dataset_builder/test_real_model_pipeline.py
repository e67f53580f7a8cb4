"""The pipeline's stages through the real-model backends: a tiny random chat VLM (transformers) as writer and judge
and a tiny random Stable Diffusion pipeline (diffusers) as image source.

Random weights write gibberish, so the text stages must count every answer as a rejection (never crash, never
default); the image stage must store each rendered image with its seed and model and hand it to the judge.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from PIL import Image

from dataset_builder.backends.diffusers_images import DiffusersImageBackend
from dataset_builder.backends.offline import RuleBasedJudge
from dataset_builder.backends.tiny import build_tiny_chat_vlm, build_tiny_sd_pipeline
from dataset_builder.backends.transformers_chat import TransformersChatBackend
from dataset_builder.pipeline import build
from dataset_builder.recipe import load_recipe

SIZE = 32


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory):
    folder = build_tiny_chat_vlm(tmp_path_factory.mktemp("vlm") / "llava", family="llava")
    return TransformersChatBackend.from_pretrained(str(folder), batch_size=4, deterministic=True)


@pytest.fixture(scope="module")
def tiny_diffusion(tmp_path_factory):
    folder = build_tiny_sd_pipeline(tmp_path_factory.mktemp("sd") / "sd", sample_size=SIZE)
    return DiffusersImageBackend.from_pretrained(str(folder), batch_size=4, height=SIZE, width=SIZE,
                                                 num_inference_steps=2)


def small_demo(pairs: int):
    recipe = load_recipe("demo")
    return dataclasses.replace(recipe, limit_pairs=pairs,
                               captions=dataclasses.replace(recipe.captions, per_side=2),
                               images=dataclasses.replace(recipe.images, width=SIZE, height=SIZE, batch_size=4))


def records(folder, stage):
    return [json.loads(p.read_text()) for p in sorted((folder / "run" / stage / "items").glob("*.json"))]


def test_diffusion_images_are_rendered_stored_and_judged(tmp_path, tiny_diffusion):
    # random-weight diffusion output looks nothing like the concept, so the judge drops it and export refuses
    with pytest.raises(ValueError, match="pair"):
        build(small_demo(3), tmp_path / "out", image_backend=tiny_diffusion, judge_backend=RuleBasedJudge(),
              progress=False)
    rendered = [r for r in records(tmp_path / "out", "images") if r["status"] == "ok"]
    assert rendered, records(tmp_path / "out", "images")[:2]
    assert {r["model_id"] for r in rendered} == {tiny_diffusion.model_id}
    assert len({r["sha256"] for r in rendered}) == len(rendered)  # one seed per image: no two alike
    for record in rendered:
        with Image.open(tmp_path / "out" / "run" / record["file"]) as image:
            assert image.size == (SIZE, SIZE)
    judged = records(tmp_path / "out", "judge")
    assert len(judged) == len(rendered)  # every rendered image went to the judge, and its verdict is on record


def test_vlm_judge_verdicts_are_parsed_strictly_and_counted(tmp_path, tiny_chat):
    with pytest.raises(ValueError, match="pair"):  # nothing survives random-weight verdicts, so export refuses
        build(small_demo(3), tmp_path / "out", judge_backend=tiny_chat, progress=False)
    verdicts = records(tmp_path / "out", "judge")
    assert verdicts, "the judge stage wrote no records"
    assert all(r["status"] != "ok" or not r.get("passed", False) for r in verdicts)
    reasons = {r.get("reason", "") for r in verdicts}
    assert any(reason.startswith("judge_unparseable") for reason in reasons), reasons


def test_vlm_writer_answers_are_parsed_strictly_and_counted(tmp_path, tiny_chat):
    recipe = load_recipe("demo")
    recipe = dataclasses.replace(
        recipe, concepts=dataclasses.replace(recipe.concepts, source="top-down", countries=["JP", "RO", "TD"],
                                             categories=["Cuisine"]))
    with pytest.raises(ValueError):
        build(recipe, tmp_path / "out", text_backend=tiny_chat, progress=False)
    concepts = records(tmp_path / "out", "concepts")
    assert len(concepts) == 3  # one request per (country, category), each answered and recorded
    assert all(r["status"] == "rejected" and r["reason"] for r in concepts)
