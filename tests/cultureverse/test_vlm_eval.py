"""Generative evaluation of tiny chat VLMs on a built benchmark, CLIP on the same rows, errors and determinism."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import torch

from evaluate_suite import DualEncoder, EvalDataError, evaluate_model
from evaluate_suite.runner import run_benchmarks
from evaluate_suite.report import comparison_rows
from evaluate_suite.vlm import CultureVerseVLM, evaluate_vlm, format_mcq_prompt, run_vlm_benchmark
from cultureclip_training.vlm_sft import format_mcq_prompt as training_prompt

from cultureverse_helpers import FAMILIES, load_vlm


@pytest.fixture(scope="module")
def test_split(offline_benchmark):
    return datasets.load_dataset(str(offline_benchmark))["test"]


def _strip_time(records):
    return {task: {k: v for k, v in r.items() if k != "created_at"} for task, r in records.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_vlm_evaluation_is_complete_and_deterministic(family, tiny_vlm_dirs, test_split):
    model, processor = load_vlm(tiny_vlm_dirs[family])
    first = evaluate_vlm(model, processor, test_split, seed=0, batch_size=4, max_new_tokens=6, bootstrap_resamples=200,
                         min_group_size=1)
    again = evaluate_vlm(model, processor, test_split, seed=0, batch_size=4, max_new_tokens=6, bootstrap_resamples=200,
                         min_group_size=1)
    other_batch = evaluate_vlm(model, processor, test_split, seed=0, batch_size=5, max_new_tokens=6,
                               bootstrap_resamples=200, min_group_size=1)
    assert set(first) == {"all", "recognition", "cultural_knowledge", "scene_reasoning"}
    everything = first["all"]
    n = len(test_split)
    assert everything["counts"]["items"] == n and len(everything["extras"]["predictions"]) == n
    parsed = sum(p["parsed"] is not None for p in everything["extras"]["predictions"])
    assert everything["counts"]["unparseable"] == n - parsed
    assert sum(everything["counts"]["unparseable_reasons"].values()) == n - parsed
    for qtype in ("recognition", "cultural_knowledge", "scene_reasoning"):
        assert f"accuracy_{qtype}" in everything["metrics"]
        assert first[qtype]["counts"]["items"] == n // 3
    assert {"country", "continent", "category"} <= set(everything["breakdowns"])
    assert "continent_gap" in everything["metrics"] and "worst_country_accuracy" in everything["metrics"]
    # At the default minimum group size (20) these few-item groups are listed with their n, not ranked.
    default = evaluate_vlm(model, processor, test_split, seed=0, batch_size=4, max_new_tokens=6,
                           bootstrap_resamples=50)["all"]
    assert "worst_country_accuracy" not in default["metrics"] and "continent_gap" not in default["metrics"]
    country = default["breakdowns"]["country"]
    assert country["worst_group"] is None and country["small_groups"] == country["counts"]
    assert sum(country["counts"].values()) + default["counts"]["ungrouped"]["country"] == n
    ci = everything["confidence_intervals"]["accuracy"]
    assert ci["low"] <= everything["metrics"]["accuracy"] <= ci["high"]
    assert everything["model"]["scoring"] == "generative"
    # Same model, same seed: identical results; another batch size (other left padding) gives the same replies.
    assert _strip_time(first) == _strip_time(again)
    assert other_batch["all"]["extras"] == everything["extras"]
    assert other_batch["all"]["metrics"] == everything["metrics"]


class _Scripted:
    """A stand-in generator that answers in a fixed style from the answer key (tests the scoring, not a model)."""

    family, batch_size, model_id, revision, model = "generative", 3, "scripted", None, torch.nn.Identity()

    def __init__(self, dataset, style):
        self.keys = {format_mcq_prompt(q, o): a for q, o, a in zip(dataset["question"], dataset["options"],
                                                                   dataset["answer"])}
        self.style = style

    def generate(self, chats):
        out = []
        for c in chats:
            out.append(self.style(self.keys[c[0]["content"][1]["text"]]))
        return out


def test_scoring_and_unparseable_counting_with_known_replies(test_split):
    right = evaluate_model(None, None, "cultureverse_vlm", test_split, encoder=_Scripted(test_split, lambda k: f"The answer is ({k.lower()})"),
                           bootstrap_resamples=100)
    assert right["all"]["metrics"]["accuracy"] == 1.0 and right["all"]["counts"]["unparseable"] == 0
    wrong = evaluate_model(None, None, "cultureverse_vlm", test_split,
                           encoder=_Scripted(test_split, lambda k: "A or B"), bootstrap_resamples=100)
    assert wrong["all"]["metrics"]["accuracy"] == 0.0
    assert wrong["all"]["counts"]["unparseable_reasons"] == {"ambiguous": len(test_split)}


def test_clip_and_vlm_results_share_the_recognition_row(tiny_vlm_dirs, test_split, tmp_path):
    from modeling_cultureclip import CultureCLIPModel
    from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of

    texts = [f"a photo of {o}." for opts in test_split["options"] for o in opts]
    tokenizer = build_word_tokenizer(words_of(texts), max_length=32)
    torch.manual_seed(0)
    clip = CultureCLIPModel(tiny_config(len(tokenizer), image_size=32, patch_size=8, width=32, heads=2,
                                        projection_dim=16)).eval()
    clip_records = evaluate_model(clip, tiny_processor(tokenizer, 32), "cultureverse_vlm", test_split,
                                  bootstrap_resamples=100)
    assert set(clip_records) == {"recognition"}
    assert clip_records["recognition"]["counts"]["items"] == len(test_split) // 3
    assert clip_records["recognition"]["counts"]["skipped"] == {"question_type_cultural_knowledge": len(test_split) // 3,
                                                                "question_type_scene_reasoning": len(test_split) // 3}
    folder = split_dir(test_split, tmp_path)
    paths = run_vlm_benchmark(str(tiny_vlm_dirs["llava"]), str(folder), tmp_path / "results", batch_size=4,
                              max_new_tokens=4, bootstrap_resamples=100)
    vlm_records = [json.loads(p.read_text()) for p in paths]
    assert sorted(r["task"] for r in vlm_records) == ["all", "cultural_knowledge", "recognition", "scene_reasoning"]
    # The dual encoder on the same folder: same data fingerprint, so both families share the recognition row.
    clip_paths = run_benchmarks("tiny-clip", ["cultureverse_vlm"], tmp_path / "results",
                                data_dirs={"cultureverse_vlm": str(folder)},
                                encoder=DualEncoder(clip, tiny_processor(tokenizer, 32)), bootstrap_resamples=100)
    clip_record = json.loads(clip_paths[0].read_text())
    assert clip_record["dataset"]["fingerprint"] == vlm_records[0]["dataset"]["fingerprint"]
    header, rows = comparison_rows(vlm_records + [clip_record])
    accuracy_row = next(r for r in rows if r[:2] == ["cultureverse_vlm", "recognition"] and r[3] == "accuracy")
    assert len(header) == 6 and all(cell for cell in accuracy_row[4:])  # both models in one row


def split_dir(dataset, tmp_path):
    """Write a split as a local folder whose only split is `test`."""
    folder = tmp_path / "cv_test"
    if not folder.exists():
        dataset.to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    assert datasets.load_dataset(str(folder))["test"].num_rows == dataset.num_rows
    return folder


def _bad(test_split, column, value, row=2):
    rows = test_split.select(range(4)).to_list()
    rows[row][column] = value
    features = test_split.features
    return datasets.Dataset.from_list(rows, features=features)


@pytest.mark.parametrize("column,value,message", [
    ("answer", None, "no answer key"),
    ("answer", "E", "not among the options"),
    ("answer", "banana", "not among the options"),
    ("image", None, "image is missing"),
])
def test_bad_rows_raise_naming_row_and_field(test_split, column, value, message):
    bench = CultureVerseVLM()
    dataset = bench.prepare(_bad(test_split, column, value))
    from evaluate_suite.data import ImageTable

    with pytest.raises(EvalDataError, match=message) as info:
        bench.build_items(dataset, ImageTable(dataset, bench.name), np.random.default_rng(0))
    assert "row 2" in str(info.value) and repr(column) in str(info.value)


def test_training_prompt_equals_evaluation_prompt():
    assert format_mcq_prompt("Q?", ["x", "y"]) == training_prompt("Q?", ["x", "y"]) == "Q?\nA. x\nB. y\nAnswer with the letter of the correct option."
