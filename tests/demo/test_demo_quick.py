"""The offline demo end to end in --quick mode, and the artifacts it leaves: summary.json, the remote-code model,
the PEFT adapter, the CulTwin dataset folder and the model card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from isolation import without_project

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLES = ("base", "plain", "cultureclip")
SEEDS = 2  # quick.yaml

# Runs in a child Python that must not see this repository's packages; prints features of one image and two texts.
CHILD = without_project(
    '''
    import importlib, json, os, sys
    _, model_dir, image_path = sys.argv[1:4]
    ours = ("modeling_cultureclip", "cultureclip_training", "dataset_builder", "evaluate_suite", "cultureclip_demo")
    blocked = []
    for name in ours:
        try:
            importlib.import_module(name)
        except ImportError:
            blocked.append(name)
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    inputs = processor(text=["flag of Chad", "flag of Romania"], images=[Image.open(image_path).convert("RGB")],
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    print(json.dumps({"blocked": blocked, "class": type(model).__name__, "module": type(model).__module__,
                      "logits": out.logits_per_image.tolist()}))
    '''
)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    completed = subprocess.run([sys.executable, "-m", "cultureclip_demo", "--output-dir", str(out), "--quick"],
                               capture_output=True, text=True, env=env, cwd=str(out), timeout=480)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "claim" in completed.stdout and "twin" in completed.stdout  # the short terminal summary
    return out


def _check_stat(stat: dict, count: int) -> None:
    assert set(stat) >= {"mean", "std", "per_seed"}
    assert len(stat["per_seed"]) == count
    assert all(0.0 <= v <= 1.0 for v in stat["per_seed"])
    assert stat["mean"] == pytest.approx(float(np.mean(stat["per_seed"])))
    assert stat["std"] >= 0.0


def test_summary_schema(demo_dir: Path) -> None:
    summary = json.loads((demo_dir / "results" / "summary.json").read_text())
    for role in ROLES:
        for metric in ("twin_accuracy", "general_accuracy"):
            _check_stat(summary[role][metric], 1 if role == "base" else SEEDS)
    openmoji = summary["other_styles"]["openmoji"]
    assert summary["data"]["styles"]["openmoji"]["twin_pairs_drawn_identically"] == [
        "flag of Chad / flag of Romania", "flag of Indonesia / flag of Monaco"]
    for role in ROLES:
        _check_stat(openmoji[role]["twin_accuracy"], 1 if role == "base" else SEEDS)
    claim = summary["claim"]
    assert claim["twin_gap"] == pytest.approx(summary["cultureclip"]["twin_accuracy"]["mean"]
                                              - summary["plain"]["twin_accuracy"]["mean"])
    assert isinstance(claim["holds"], bool)
    # same budget: both methods see the same number of examples per step and the same steps
    per_step = summary["training"]["examples_per_step"]
    assert per_step["plain"] == per_step["cultureclip"]
    steps = {name: run["steps"] for name, run in summary["training"]["finetune"].items()}
    assert len(set(steps.values())) == 1 and len(steps) == 2 * SEEDS
    # one result record per (model, style, task): base once, each method once per seed
    records = sorted((demo_dir / "results" / "records").glob("*.json"))
    assert len(records) == (1 + 2 * SEEDS) * 2 * 2
    assert json.loads((demo_dir / "hub" / "results" / "summary.json").read_text())["claim"] == claim


def test_pretraining_excludes_twin_catalog(demo_dir: Path) -> None:
    summary = json.loads((demo_dir / "results" / "summary.json").read_text())
    # 78 catalog emoji are skipped from the general list (and so from pretraining and replay)
    assert summary["data"]["general_emoji_skipped"]["twin_catalog_emoji"] >= 78


def test_model_loads_with_remote_code_without_this_package(demo_dir: Path, tmp_path: Path) -> None:
    model_dir = demo_dir / "hub" / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert "AutoModel" in config["auto_map"]
    image_path = tmp_path / "flag.png"
    from dataset_builder.twemoji import emoji_on_white

    emoji_on_white("🇹🇩").save(image_path)
    child = subprocess.run([sys.executable, "-I", "-c", CHILD, str(REPO_ROOT), str(model_dir), str(image_path)],
                           capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert child.returncode == 0, child.stderr[-4000:]
    info = json.loads(child.stdout.strip().splitlines()[-1])
    assert set(info["blocked"]) == {"modeling_cultureclip", "cultureclip_training", "dataset_builder",
                                    "evaluate_suite", "cultureclip_demo"}
    assert info["class"] == "CultureCLIPModel" and info["module"].startswith("transformers_modules")

    from modeling_cultureclip import CultureCLIPModel
    from transformers import AutoProcessor

    model = CultureCLIPModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    inputs = processor(text=["flag of Chad", "flag of Romania"], images=[Image.open(image_path).convert("RGB")],
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**inputs).logits_per_image
    assert torch.allclose(torch.tensor(info["logits"]), expected, atol=1e-5)


def test_shipped_model_is_adapter_on_base_blended_by_wise_ft(demo_dir: Path) -> None:
    from transformers import AutoTokenizer

    from cultureclip_training.lora import load_adapter, merge_lora, wise_ft
    from modeling_cultureclip import CultureCLIPModel

    hub = demo_dir / "hub"
    summary = json.loads((demo_dir / "results" / "summary.json").read_text())
    alpha = summary["training"]["wise_ft_alpha"]["cultureclip"]
    assert alpha is not None and 0.0 < alpha < 1.0
    assert json.loads((hub / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == "../base"
    merged = merge_lora(load_adapter(CultureCLIPModel.from_pretrained(hub / "base"), hub / "adapter"))
    base = CultureCLIPModel.from_pretrained(hub / "base")
    blended = wise_ft(base, merged, alpha)
    shipped = CultureCLIPModel.from_pretrained(hub / "model")
    mine, theirs, start = blended.state_dict(), shipped.state_dict(), base.state_dict()
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.allclose(mine[name], theirs[name], atol=1e-6), name
    # fine-tuning changed attention weights and the embedding rows of words new to the base, and nothing else there
    assert any(not torch.equal(theirs[n], start[n]) for n in theirs if "q_proj.weight" in n)
    embedding = "text_model.embeddings.token_embedding.weight"
    changed = (theirs[embedding] - start[embedding]).abs().sum(dim=1).nonzero().flatten().tolist()
    tokenizer = AutoTokenizer.from_pretrained(hub / "model")
    assert changed and set(tokenizer.convert_ids_to_tokens(changed)) <= set(summary["data"]["new_words"])


def test_worker_processes_compute_what_this_process_computes(demo_dir: Path, tmp_path: Path) -> None:
    from cultureclip_demo.config import load_config
    from cultureclip_demo.finetune_runs import FinetuneJob, finetune_and_evaluate
    from modeling_cultureclip.tiny import words_of

    summary = json.loads((demo_dir / "results" / "summary.json").read_text())
    assert summary["config"]["finetune"]["workers"] == 2
    config = load_config("quick.yaml")
    work = demo_dir / "work"
    base_dir = work / "pretrain" / "model"
    data = datasets.load_from_disk(str(work / "finetune-data"))
    new_words = summary["data"]["new_words"]
    assert len(new_words) == summary["data"]["new_words_trained"] and "chad" in new_words
    finetune = data["finetune"]
    texts = [text for column in ("caption", "twin_caption", "concept", "twin_concept") for text in finetune[column]]
    assert set(new_words) <= set(words_of(texts))
    job = FinetuneJob("plain", 1, config, str(base_dir), str(work / "finetune-data"),
                      str(tmp_path / "plain-seed1"), ("twemoji", "openmoji"), tuple(new_words))
    here = finetune_and_evaluate(job)
    for style in ("twemoji", "openmoji"):
        for task in ("twin", "general"):
            worker = json.loads((demo_dir / "results" / "records" / f"plain-seed1__{style}__{task}.json").read_text())
            assert here.record[style][task]["metrics"] == worker["metrics"], (style, task)


def test_dataset_loads_with_load_dataset(demo_dir: Path) -> None:
    loaded = datasets.load_dataset(str(demo_dir / "hub" / "dataset"))
    assert set(loaded) == {"train", "validation", "test"}
    assert sum(len(split) for split in loaded.values()) == 250
    row = loaded["train"][0]
    for column in ("pair_id", "concept", "twin_concept", "caption", "twin_caption", "concept_id", "twin_concept_id"):
        assert isinstance(row[column], str) and row[column]
    assert isinstance(row["image"], Image.Image) and isinstance(row["twin_image"], Image.Image)
    assert not (demo_dir / "hub" / "dataset" / "run").exists()


def test_model_card(demo_dir: Path) -> None:
    card = ModelCard.load(demo_dir / "hub" / "model" / "README.md")
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert "| cultureclip |" in card.text and "| plain |" in card.text and "| base |" in card.text
    assert "openmoji" in card.text
    assert (demo_dir / "hub" / "model" / "results.png").stat().st_size > 1000
