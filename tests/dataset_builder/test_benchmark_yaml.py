"""The CulTwin export's eval.yaml: it parses, follows the Hub's Benchmark format (name, description,
evaluation_framework, tasks with id/config/split), names a split the card really has, is uploaded by `push`, and its
task ids are the ones evaluate_suite's `.eval_results` entries for this dataset refer to."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from dataset_builder.benchmark_yaml import CULTWIN_TASKS, EVALUATION_FRAMEWORK, benchmark_yaml
from dataset_builder.push import files_to_upload


def test_export_writes_a_parseable_benchmark_yaml(reference_build):
    spec = yaml.safe_load((reference_build / "eval.yaml").read_text())
    assert set(spec) == {"name", "description", "evaluation_framework", "tasks"}
    assert spec["evaluation_framework"] == EVALUATION_FRAMEWORK and spec["name"] and spec["description"]
    assert [t["id"] for t in spec["tasks"]] == list(CULTWIN_TASKS)
    card = (reference_build / "README.md").read_text()
    for task in spec["tasks"]:
        assert task["split"] == "test" and task["config"] == "default"
        assert "config_name: default" in card and "split: test" in card  # the config and split exist
    assert "eval.yaml" in {path for path, _ in files_to_upload(reference_build)}
    assert benchmark_yaml("x")["tasks"] == spec["tasks"]


def test_eval_results_refer_to_the_tasks_eval_yaml_registers(reference_build, tmp_path):
    from evaluate_suite import DualEncoder
    from evaluate_suite.report import build_report
    from evaluate_suite.runner import run_benchmarks
    from modeling_cultureclip import CultureCLIPModel
    from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of

    import datasets

    test = datasets.load_dataset(str(reference_build), split="test")
    tokenizer = build_word_tokenizer(words_of(list(test["concept"]) + list(test["twin_concept"])), max_length=16)
    torch.manual_seed(0)
    model = CultureCLIPModel(tiny_config(len(tokenizer), image_size=32, patch_size=8, width=32, heads=2,
                                         projection_dim=16)).eval()
    run_benchmarks("org/tiny", ["cultwin"], tmp_path / "results", data_dirs={"cultwin": str(reference_build)},
                   encoder=DualEncoder(model, tiny_processor(tokenizer, 32)), bootstrap_resamples=20)
    summary = build_report(tmp_path / "results", tmp_path / "report", {"cultwin": "org/cultwin-demo"})
    entries = yaml.safe_load((tmp_path / "report" / "models" / "org_tiny" / ".eval_results" /
                              summary["eval_results"]["org/tiny"][0]).read_text())
    spec = yaml.safe_load((reference_build / "eval.yaml").read_text())
    assert [e["dataset"]["task_id"] for e in entries] == [t["id"] for t in spec["tasks"]]
    assert entries[0]["dataset"]["id"] == "org/cultwin-demo" and "--dataset-id" in entries[0]["notes"]
    record = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    assert record["dataset"]["split"] == "test" and record["dataset"]["kind"] == "local"


@pytest.mark.parametrize("bad", ["", "  "])
def test_benchmark_yaml_needs_a_name(bad, tmp_path):
    from dataset_builder.benchmark_yaml import write_benchmark_yaml

    with pytest.raises(ValueError, match="pretty name"):
        write_benchmark_yaml(tmp_path, bad)
