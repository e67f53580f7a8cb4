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


def _summary(demo_dir: Path) -> dict:
    return json.loads((demo_dir / "results" / "summary.json").read_text())


def _check_stat(stat: dict, count: int) -> None:
    assert set(stat) >= {"mean", "std", "per_seed"}
    assert len(stat["per_seed"]) == count
    assert all(0.0 <= v <= 1.0 for v in stat["per_seed"])
    assert stat["mean"] == pytest.approx(float(np.mean(stat["per_seed"])))
    assert stat["std"] >= 0.0


def _check_ci(entry: dict, seeds: int) -> None:
    assert set(entry) >= {"mean", "ci_low", "ci_high", "level", "resamples", "unit", "per_seed"}
    assert entry["ci_low"] <= entry["mean"] + 1e-12 and entry["mean"] <= entry["ci_high"] + 1e-12
    assert entry["level"] == 0.95 and entry["unit"] == "group" and len(entry["per_seed"]) == seeds
    assert entry["mean"] == pytest.approx(float(np.mean(entry["per_seed"])))


def test_summary_schema(demo_dir: Path) -> None:
    summary = _summary(demo_dir)
    assert summary["schema_version"] == 2 and summary["seeds"] == SEEDS
    assert summary["methods"] == ["plain", "cultureclip"] and summary["styles"] == ["twemoji", "openmoji"]
    # accuracies on test views: both variants, every style and role, twins per kind
    for variant in ("blended", "unblended"):
        for style in summary["styles"]:
            for role in ROLES:
                values = summary["results"][variant][style][role]
                for kind in ("all", "flag", "object"):
                    _check_stat(values["twin"][kind], 1 if role == "base" else SEEDS)
                _check_stat(values["general"], 1 if role == "base" else SEEDS)
            paired = summary["paired_difference"][variant][style]
            for kind in ("all", "flag", "object"):
                _check_ci(paired["twin_minus_plain"]["cultureclip"][kind], SEEDS)
            for method in ("plain", "cultureclip"):
                _check_ci(paired["general_drop_vs_base"][method], SEEDS)
    # the paired difference is seed s minus seed s, item by item: its per-seed values are the accuracy differences
    twin = summary["results"]["blended"]["twemoji"]
    for seed in range(SEEDS):
        assert summary["paired_difference"]["blended"]["twemoji"]["twin_minus_plain"]["cultureclip"]["all"][
            "per_seed"][seed] == pytest.approx(twin["cultureclip"]["twin"]["all"]["per_seed"][seed]
                                               - twin["plain"]["twin"]["all"]["per_seed"][seed])
    # the chosen alpha per (method, seed), with the rule and every alpha tried on validation views
    selection = summary["selection"]
    assert "validation" in selection["rule"] and selection["name"] == "largest_alpha_within_general_drop"
    for method in ("plain", "cultureclip"):
        assert len(selection["chosen_alpha"][method]) == SEEDS
        for alpha, tried in zip(selection["chosen_alpha"][method], selection["tried"][method]):
            assert alpha in selection["alphas"] and tried[-1]["alpha"] == alpha
            assert [t["alpha"] for t in tried] == selection["alphas"][:len(tried)]
    assert set(selection["base_validation"]) == {"twin", "general"}
    # the claim: from the CIs, stated per style and kind
    claim = summary["claim"]
    headline = summary["paired_difference"]["blended"]["twemoji"]["twin_minus_plain"]["cultureclip"]["all"]
    assert claim["twin_gap"] == headline["mean"]
    assert claim["checks"]["twemoji_all_twins_above_plain"] == (headline["ci_low"] > 0)
    assert claim["holds"] == (claim["checks"]["twemoji_all_twins_above_plain"]
                              and claim["checks"]["twemoji_general_within_limit_of_base"])
    assert len(claim["statements"]) == 2 * 3 + 1 and all(
        ("holds" in line) or ("does NOT hold" in line) for line in claim["statements"])
    assert set(summary["claim_unblended"]) == set(claim)
    # pairing: seed s of both methods trained on the same rows in the same order from the same initial weights
    assert summary["pairing"]["shared_training_rows_and_order"] and summary["pairing"]["shared_initial_weights"]
    per_seed = summary["pairing"]["per_seed"]
    assert per_seed["0"]["plain"]["data"] != per_seed["1"]["plain"]["data"]  # seeds differ in replay rows
    assert per_seed["0"]["plain"]["init"] != per_seed["1"]["plain"]["init"]
    assert summary["data"]["styles"]["openmoji"]["twin_pairs_drawn_identically"] == [
        "flag of Chad / flag of Romania", "flag of Indonesia / flag of Monaco"]
    assert summary["data"]["twin_pairs_by_kind"] == {"flag": 18, "object": 22}
    # same budget: both methods see the same number of examples per step and the same steps
    per_step = summary["training"]["examples_per_step"]
    assert per_step["plain"] == per_step["cultureclip"]
    steps = {name: run["steps"] for name, run in summary["training"]["finetune"].items()}
    assert len(set(steps.values())) == 1 and len(steps) == 2 * SEEDS
    # one record per distinct model, style and task: the base once; per run the unblended model, and the blend
    # unless the run chose alpha 1 (then the blend is the unblended model)
    records = sorted((demo_dir / "results" / "records").glob("*.json"))
    blends = sum(alpha < 1.0 for alphas in selection["chosen_alpha"].values() for alpha in alphas)
    assert len(records) == (1 + 2 * SEEDS + blends) * 2 * 2
    assert json.loads((demo_dir / "hub" / "results" / "summary.json").read_text())["claim"] == claim
    assert "ablation" not in summary


def test_per_item_answers_agree_with_the_suite_records(demo_dir: Path) -> None:
    """The paired statistics come from per-item answers; their means equal evaluate_suite's own accuracies, and the
    per-kind accuracies are the means over that kind's items."""
    answers = json.loads((demo_dir / "results" / "answers.json").read_text())
    summary = _summary(demo_dir)
    assert answers["views"] == "test"
    chosen = summary["selection"]["chosen_alpha"]
    for model, styles in answers["models"].items():
        name = model
        if model.endswith("-blended"):
            method, seed = model[: -len("-blended")].rsplit("-seed", 1)
            if chosen[method][int(seed)] == 1.0:  # the blend is the unblended model, recorded once
                name = model.replace("-blended", "-unblended")
        for style, tasks in styles.items():
            for task, values in tasks.items():
                record = json.loads((demo_dir / "results" / "records" / f"{name}__{style}__{task}.json").read_text())
                key = "accuracy" if task == "twin" else "top1_accuracy"
                assert float(np.mean(values)) == pytest.approx(record["metrics"][key], abs=1e-12), (model, style, task)
                dataset = record["dataset"]
                assert dataset["kind"] == "in-memory" and dataset["id"] is None
                assert dataset["name"].startswith(f"cultureclip-demo {style} ") and dataset["fingerprint"]
                assert "/" not in (record["model"].get("name") or record["model"]["id"])
    kinds = np.asarray(answers["layout"]["twemoji"]["twin"]["kinds"])
    for seed in range(SEEDS):
        values = np.asarray(answers["models"][f"cultureclip-seed{seed}-blended"]["twemoji"]["twin"])
        for kind in ("flag", "object"):
            assert summary["results"]["blended"]["twemoji"]["cultureclip"]["twin"][kind]["per_seed"][seed] == \
                pytest.approx(values[kinds == kind].mean())


def test_selection_sees_only_validation_views(demo_dir: Path, tmp_path: Path) -> None:
    """A job chooses its alpha before it opens the test views, and other test views change its test scores but not
    one number of its choice."""
    from cultureclip_demo import data as demo_data
    from cultureclip_demo.config import load_config
    from cultureclip_demo.emoji_sources import ViewRange, general_emoji, get_style
    from cultureclip_demo.finetune_runs import FinetuneJob, finetune_and_evaluate, load_sets, save_sets
    from dataset_builder.twin_catalog import load_twin_catalog

    config = load_config("quick.yaml")
    work = demo_dir / "work" / "data"
    catalog, twemoji = load_twin_catalog(), get_style("twemoji")
    general, _ = general_emoji(catalog, twemoji.has)
    other_view = ViewRange(40.0, 50.0, 0.7, 0.8, 0.0)
    other = {"twemoji": demo_data.EvalSets(
        demo_data.twin_eval_set(catalog, twemoji, 1, 32, other_view, seed=7),
        demo_data.general_eval_set(general, twemoji, 20, 1, 32, other_view, seed=7))}
    other_dir = save_sets(tmp_path / "other-test", other)
    assert load_sets(str(other_dir), ("twemoji",))["twemoji"].twin["image"][0].tobytes() != \
        load_sets(str(work / "test"), ("twemoji",))["twemoji"].twin["image"][0].tobytes()
    # a base general accuracy no blend reaches, so the rule walks every alpha (and falls back)
    base_validation = {"twin": 0.5, "general": 1.0}

    def job(test_dir: Path, name: str) -> FinetuneJob:
        return FinetuneJob("cultureclip", 0, config, config.methods()["cultureclip"],
                           str(demo_dir / "work" / "pretrain" / "model"), str(work / "finetune-seed0" / "finetune"),
                           str(work / "validation"), str(test_dir), str(tmp_path / name), ("twemoji",),
                           base_validation)

    first, second = finetune_and_evaluate(job(work / "test", "a")), finetune_and_evaluate(job(other_dir, "b"))
    assert first.selection.to_dict() == second.selection.to_dict()
    assert [t["alpha"] for t in first.selection.tried] == [1.0, 0.5, 0.0] and first.selection.fallback
    for outcome in (first, second):
        opened = outcome.events.index("test views opened")
        assert all(e.startswith(("trained", "validation", "chose")) for e in outcome.events[:opened])
        assert not any(e.startswith(("validation", "chose")) for e in outcome.events[opened:])
    assert first.tested["unblended"].answers["twemoji"] != second.tested["unblended"].answers["twemoji"]


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
    summary = _summary(demo_dir)
    alpha = summary["selection"]["chosen_alpha"]["cultureclip"][0]
    assert 0.0 <= alpha <= 1.0
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

    summary = _summary(demo_dir)
    assert summary["config"]["finetune"]["workers"] == 2
    config = load_config("quick.yaml")
    work = demo_dir / "work"
    base_dir = work / "pretrain" / "model"
    finetune = datasets.load_from_disk(str(work / "data" / "finetune-seed1" / "finetune"))
    new_words = summary["data"]["new_words"]
    assert len(new_words) == summary["data"]["new_words_trained"] and "chad" in new_words and "cote" in new_words
    texts = [text for column in ("caption", "twin_caption", "concept", "twin_concept") for text in finetune[column]]
    assert set(new_words) <= set(words_of(texts))
    job = FinetuneJob("plain", 1, config, config.methods()["plain"], str(base_dir),
                      str(work / "data" / "finetune-seed1" / "finetune"), str(work / "data" / "validation"),
                      str(work / "data" / "test"), str(tmp_path / "plain-seed1"), ("twemoji", "openmoji"),
                      summary["selection"]["base_validation"], tuple(new_words))
    here = finetune_and_evaluate(job)
    assert here.selection.alpha == summary["selection"]["chosen_alpha"]["plain"][1]
    assert here.selection.to_dict()["tried"] == summary["selection"]["tried"]["plain"][1]
    variants = ("unblended", "blended") if here.selection.alpha < 1.0 else ("unblended",)  # alpha 1: one model
    for variant in variants:
        for style in ("twemoji", "openmoji"):
            for task in ("twin", "general"):
                name = f"plain-seed1-{variant}__{style}__{task}.json"
                worker = json.loads((demo_dir / "results" / "records" / name).read_text())
                assert here.tested[variant].records[style][task]["metrics"] == worker["metrics"], name


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
    summary = _summary(demo_dir)
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert "| cultureclip |" in card.text and "| plain |" in card.text and "| base |" in card.text
    assert "openmoji" in card.text and "Unblended models" in card.text
    alpha = summary["selection"]["chosen_alpha"]["cultureclip"][0]
    assert "Which model this is, and why" in card.text and f"WiSE-FT at alpha {alpha:g}" in card.text
    assert summary["selection"]["rule"] in card.text
    for statement in summary["claim"]["statements"]:
        assert statement in card.text
    assert (demo_dir / "hub" / "model" / "results.png").stat().st_size > 1000


@pytest.mark.slow
def test_rerun_replaces_a_larger_run_without_leftovers(tmp_path: Path) -> None:
    """--quick into a folder holding a (stand-in) 5-seed run: no record of seed 4 survives anywhere."""
    from cultureclip_demo.output import ENTRIES, MARKER

    out = tmp_path / "demo"
    for name in ENTRIES:
        (out / name / "records").mkdir(parents=True)
        (out / name / "records" / "plain-seed4-blended__twemoji__twin.json").write_text("{}")
    (out / "hub" / "results").mkdir()
    (out / "hub" / "results" / "summary.json").write_text('{"seeds": 5}')
    (out / MARKER).write_text('{"made_by": "cultureclip-demo", "seeds": 5}')
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    completed = subprocess.run([sys.executable, "-m", "cultureclip_demo", "--output-dir", str(out), "--quick"],
                               capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=480)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert not list(out.rglob("*seed4*")) and not list(out.glob(".staging-*"))
    assert json.loads((out / "hub" / "results" / "summary.json").read_text())["seeds"] == SEEDS
    assert json.loads((out / MARKER).read_text())["seeds"] == SEEDS
