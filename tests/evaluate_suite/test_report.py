"""`run` then `report` through the CLI on two tiny checkpoints: JSON per task, comparison table, model-index card that
huggingface_hub parses, `.eval_results` YAML that round-trips through EvalResultEntry, and valid PNG plots."""

import csv
import json

import pytest
import torch
import yaml
from huggingface_hub import EvalResultEntry, ModelCard, eval_result_entries_to_yaml, parse_eval_result_entries
from PIL import Image

from evaluate_suite.__main__ import main
from modeling_cultureclip import CultureCLIPModel

from evalsuite_fixtures import cultwin_dataset, geode_dataset, globalrg_retrieval_dataset, write_folder


@pytest.fixture(scope="module")
def report_dir(tiny, tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    model, processor = tiny
    # A second "model": same shapes, other random weights.
    torch.manual_seed(7)
    other = CultureCLIPModel(model.config)
    other_dir = root / "other-model"
    other.save_pretrained(other_dir)
    processor.save_pretrained(other_dir)
    data = {
        "cultwin": write_folder(root / "cultwin", dict(cultwin_dataset())),
        "globalrg_retrieval": write_folder(root / "grg", {"test": globalrg_retrieval_dataset()}),
        "zeroshot_geode": write_folder(root / "geode", {"train": geode_dataset()}),
    }
    results = root / "results"
    for checkpoint in (tiny_dir, other_dir):
        args = ["run", "--model", str(checkpoint), "--benchmarks", ",".join(data), "--output-dir", str(results),
                "--seeds", "0,1", "--batch-size", "8", "--bootstrap-resamples", "200"]
        for name, folder in data.items():
            args += ["--data-dir", f"{name}={folder}"]
        assert main(args) == 0
    out = root / "out"
    assert main(["report", "--results", str(results), "--output-dir", str(out),
                 "--dataset-id", "cultwin=example-org/cultwin-mini"]) == 0
    return root, results, out


def test_one_json_per_model_benchmark_task(report_dir):
    _, results, _ = report_dir
    files = sorted(p.name for p in results.glob("*.json"))
    assert len(files) == 2 * 4  # cultwin, region_choice, retrieval, zero_shot per model
    record = json.loads(next(results.glob("*__globalrg_retrieval__region_choice.json")).read_text())
    assert record["config"]["seeds"] == [0, 1] and record["config"]["batch_size"] == 8
    assert record["dataset"]["source"].endswith("grg") and record["dataset"]["rows"] == 10
    assert {"accuracy", "accuracy_std"} <= set(record["metrics"])
    assert record["confidence_intervals"]["accuracy"]["n_resamples"] == 200


def test_comparison_table_has_both_models(report_dir):
    _, results, out = report_dir
    rows = list(csv.reader((out / "comparison.csv").open()))
    assert rows[0][:3] == ["benchmark", "task", "metric"] and len(rows[0]) == 5
    twin = next(r for r in rows if r[:3] == ["cultwin", "twin_choice", "accuracy"])
    record = json.loads(next(results.glob("*tiny_model*__cultwin__twin_choice.json")).read_text())
    column = next(i for i, h in enumerate(rows[0]) if "tiny_model" in h)
    assert twin[column].startswith(f"{100 * record['metrics']['accuracy']:.2f} [")
    assert "| benchmark | task | metric |" in (out / "comparison.md").read_text()


def test_model_index_parses_with_model_card(report_dir):
    _, _, out = report_dir
    cards = sorted((out / "models").glob("*/README.md"))
    assert len(cards) == 2
    card = ModelCard.load(cards[0])
    results = card.data.eval_results
    assert {r.dataset_name for r in results} == {"cultwin", "globalrg_retrieval", "zeroshot_geode"}
    twin = next(r for r in results if r.dataset_name == "cultwin")
    assert twin.dataset_type == "example-org/cultwin-mini" and 0 <= twin.metric_value <= 100
    assert card.data.to_dict()["model-index"][0]["name"] == card.data.model_name


def test_eval_results_yaml_round_trips(report_dir):
    _, _, out = report_dir
    files = sorted((out / "models").glob("*/.eval_results/*.yaml"))
    assert {f.name for f in files} == {"cultwin.yaml", "globalrg_retrieval.yaml", "zeroshot_geode.yaml"}
    for path in files:
        data = yaml.safe_load(path.read_text())
        entries = parse_eval_result_entries(data)
        assert entries and all(isinstance(e, EvalResultEntry) for e in entries)
        assert eval_result_entries_to_yaml(entries) == data
    grg = parse_eval_result_entries(yaml.safe_load(next(p for p in files if p.name == "globalrg_retrieval.yaml")
                                                   .read_text()))
    assert {e.task_id for e in grg} == {"region_choice", "retrieval"}
    assert all(e.dataset_id == "UBC-VL/GlobalRG-Retrieval" for e in grg)


def test_plots_are_valid_pngs(report_dir):
    _, _, out = report_dir
    plots = sorted((out / "plots").glob("*.png"))
    names = {p.name.split("__")[0] for p in plots}
    assert names == {"continents", "twin_confusion"}
    for path in plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
    summary = json.loads((out / "report.json").read_text())
    assert summary["eval_results_left_out"] == {}
    assert all(len(h) == 64 for h in summary["files"].values())
