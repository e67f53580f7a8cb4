"""A saved CultureCLIP checkpoint works in a process that has transformers but not this package.

The parent saves a tiny model and processor and computes reference outputs with the installed classes. A child
Python (`-I`, another working directory, and with any editable-install finder for this repository removed) must fail
to import `modeling_cultureclip`, then loads the checkpoint through the Auto classes with `trust_remote_code=True`
and the zero-shot pipeline, and writes its outputs back for comparison.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import pipeline

from modeling_cultureclip import CultureCLIPModel
from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of

from isolation import without_project

REPO_ROOT = Path(__file__).resolve().parents[2]
LABELS = ["red apple", "green leaf", "blue sea"]
TEMPLATE = "This is a photo of {}."  # the pipeline's default hypothesis template
CAPTIONS = ["a red apple on a wooden table", "a green leaf after the rain"]
TWIN_CAPTIONS = ["a red tomato on a wooden table", "a green feather in the wind"]
CONCEPTS, TWIN_CONCEPTS = ["apple", "leaf"], ["tomato", "feather"]
AUTO_MAP_KEYS = {"AutoConfig", "AutoModel", "AutoModelForZeroShotImageClassification"}
TOLERANCE = 1e-6

# Runs in the child. argv: repository root, checkpoint folder, output folder.
CHILD = without_project(
    '''
    import importlib, inspect, json, os, sys
    _, checkpoint, out = (os.path.realpath(a) for a in sys.argv[1:4])
    info = {}
    try:
        import modeling_cultureclip
        info["package_import_error"] = None
        info["package_file"] = modeling_cultureclip.__file__
    except ImportError as error:
        info["package_import_error"] = type(error).__name__
    if info["package_import_error"] is None:
        json.dump(info, open(os.path.join(out, "info.json"), "w"))
        sys.exit("modeling_cultureclip is importable in the child; the isolation failed")

    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor, pipeline

    labels, template = json.loads(sys.argv[4]), sys.argv[5]
    images = [Image.open(os.path.join(checkpoint, "images", name)).convert("RGB")
              for name in sorted(os.listdir(os.path.join(checkpoint, "images")))]
    twin = load_file(os.path.join(checkpoint, "twin_batch.safetensors"))
    results = {}

    processor = AutoProcessor.from_pretrained(checkpoint)
    inputs = processor(text=[template.format(label) for label in labels], images=images, padding=True,
                       return_tensors="pt")
    results.update({f"processed_{k}": v for k, v in inputs.items()})
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    zero_shot = AutoModelForZeroShotImageClassification.from_pretrained(checkpoint, trust_remote_code=True).eval()
    info["classes"] = {name: [type(m).__module__, type(m).__name__, inspect.getfile(type(m))]
                       for name, m in (("AutoModel", model), ("ZeroShot", zero_shot))}
    info["config_class"] = [type(model.config).__module__, type(model.config).__name__]
    with torch.no_grad():
        results["auto_model_logits"] = model(**inputs).logits_per_image
        results["zero_shot_logits"] = zero_shot(**inputs).logits_per_image
        twin_out = model(**twin, return_loss=True)
        for name in ("loss", "caption_loss", "concept_loss"):
            results[f"twin_{name}"] = getattr(twin_out, name)

    classifier = pipeline("zero-shot-image-classification", model=checkpoint, trust_remote_code=True)
    info["pipeline_model"] = [type(classifier.model).__module__, type(classifier.model).__name__]
    info["pipeline_scores"] = [{row["label"]: row["score"] for row in rows}
                               for rows in classifier(images, candidate_labels=labels)]
    save_file({k: v.contiguous() for k, v in results.items()}, os.path.join(out, "results.safetensors"))
    json.dump(info, open(os.path.join(out, "info.json"), "w"))
    '''
)


def _images() -> list[Image.Image]:
    """Distinct small RGB images of different sizes (so resizing is exercised), lossless through PNG."""
    rng = np.random.default_rng(0)
    shapes = [(40, 40), (32, 48), (50, 36), (32, 32)]
    return [Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)) for h, w in shapes]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Tiny model + processor saved to a folder, reference outputs from the installed classes, and the child's."""
    texts = [TEMPLATE.format(label) for label in LABELS] + CAPTIONS + TWIN_CAPTIONS + CONCEPTS + TWIN_CONCEPTS
    tokenizer = build_word_tokenizer(words_of(texts))
    processor = tiny_processor(tokenizer, image_size=32)
    torch.manual_seed(0)
    model = CultureCLIPModel(tiny_config(len(tokenizer))).eval()
    checkpoint = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)

    images = _images()
    (checkpoint / "images").mkdir()
    for index, image in enumerate(images):
        image.save(checkpoint / "images" / f"{index:02d}.png")
    images = [Image.open(checkpoint / "images" / f"{i:02d}.png").convert("RGB") for i in range(len(images))]

    inputs = processor(text=[TEMPLATE.format(label) for label in LABELS], images=images, padding=True,
                       return_tensors="pt")
    twin = _twin_batch(processor, images)
    save_file(twin, checkpoint / "twin_batch.safetensors")
    with torch.no_grad():
        reference = {"logits": model(**inputs).logits_per_image, "twin": model(**twin, return_loss=True)}
    classifier = pipeline("zero-shot-image-classification", model=model, tokenizer=processor.tokenizer,
                          image_processor=processor.image_processor)
    reference["pipeline_scores"] = [{row["label"]: row["score"] for row in rows}
                                    for rows in classifier(images, candidate_labels=LABELS)]
    reference["inputs"] = inputs

    out = tmp_path_factory.mktemp("child-out")
    workdir = tmp_path_factory.mktemp("child-cwd")
    script = workdir / "load_remote.py"
    script.write_text(CHILD)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(workdir / "modules"), TOKENIZERS_PARALLELISM="false")
    child = subprocess.run(
        [sys.executable, "-I", str(script), str(REPO_ROOT), str(checkpoint), str(out), json.dumps(LABELS), TEMPLATE],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    info_path = out / "info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    assert child.returncode == 0, f"child failed (exit {child.returncode}):\n{child.stderr[-4000:]}"
    return dict(checkpoint=checkpoint, workdir=workdir, reference=reference, info=info,
                results=load_file(out / "results.safetensors"))


def _twin_batch(processor, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """A two-pair twin batch with concept names and ids, as the trainer would build it."""
    def text(batch: list[str], prefix: str) -> dict[str, torch.Tensor]:
        encoded = processor.tokenizer(batch, padding=True, return_tensors="pt")
        return {f"{prefix}input_ids": encoded["input_ids"], f"{prefix}attention_mask": encoded["attention_mask"]}

    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    return {
        "pixel_values": pixels[:2], "twin_pixel_values": pixels[2:4],
        **text(CAPTIONS, ""), **text(TWIN_CAPTIONS, "twin_"),
        **text(CONCEPTS, "concept_"), **text(TWIN_CONCEPTS, "twin_concept_"),
        "concept_ids": torch.tensor([0, 1]), "twin_concept_ids": torch.tensor([2, 3]),
    }


def test_checkpoint_files_are_hub_ready(saved):
    checkpoint = saved["checkpoint"]
    names = {path.name for path in checkpoint.iterdir()}
    assert "model.safetensors" in names
    pickled = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert not pickled, f"pickle-format files written: {pickled}"
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "cultureclip"
    assert set(config["auto_map"]) == AUTO_MAP_KEYS
    for reference in config["auto_map"].values():
        module = reference.split(".")[0]
        assert (checkpoint / f"{module}.py").is_file(), f"auto_map names {reference} but {module}.py was not saved"
    # the modeling file imports the objective relatively, so it must travel too
    assert (checkpoint / "loss_cultureclip.py").is_file()
    assert {"tokenizer.json", "tokenizer_config.json"} <= names
    assert names & {"processor_config.json", "preprocessor_config.json"}


def test_child_cannot_import_the_package(saved):
    assert saved["info"]["package_import_error"] == "ModuleNotFoundError"


def test_child_runs_the_remote_code_copy(saved):
    info = saved["info"]
    modules_cache = str((saved["workdir"] / "modules").resolve())
    for name, (module, cls, path) in info["classes"].items():
        assert module.startswith("transformers_modules."), (name, module)
        assert cls == "CultureCLIPModel"
        assert os.path.realpath(path).startswith(modules_cache), f"{name} loaded from {path}, not the modules cache"
    assert info["config_class"][0].startswith("transformers_modules.")
    assert info["config_class"][1] == "CultureCLIPConfig"
    assert info["pipeline_model"][0].startswith("transformers_modules.")


def test_auto_processor_reproduces_the_inputs(saved):
    results, inputs = saved["results"], saved["reference"]["inputs"]
    for key, value in inputs.items():
        torch.testing.assert_close(results[f"processed_{key}"], value, rtol=0, atol=0)


@pytest.mark.parametrize("loader", ["auto_model", "zero_shot"])
def test_remote_logits_match_the_original(saved, loader):
    got = saved["results"][f"{loader}_logits"]
    torch.testing.assert_close(got, saved["reference"]["logits"], rtol=0, atol=TOLERANCE)


def test_pipeline_scores_match_the_original(saved):
    got, expected = saved["info"]["pipeline_scores"], saved["reference"]["pipeline_scores"]
    assert len(got) == len(expected) == len(_images())
    for image_scores, reference_scores in zip(got, expected):
        assert image_scores.keys() == reference_scores.keys() == set(LABELS)
        for label, score in reference_scores.items():
            assert abs(image_scores[label] - score) <= TOLERANCE, (label, image_scores[label], score)
    # and the pipeline's scores are the softmax of the model's logits over the templated labels
    softmax = saved["reference"]["logits"].softmax(dim=-1)
    for row, image_scores in enumerate(got):
        for column, label in enumerate(LABELS):
            assert abs(image_scores[label] - softmax[row, column].item()) <= TOLERANCE


def test_remote_twin_loss_matches_the_installed_class(saved):
    reference = saved["reference"]["twin"]
    for name in ("loss", "caption_loss", "concept_loss"):
        expected = getattr(reference, name)
        assert expected is not None and torch.isfinite(expected)
        torch.testing.assert_close(saved["results"][f"twin_{name}"], expected, rtol=0, atol=TOLERANCE)
