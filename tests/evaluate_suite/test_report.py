"""Reports that never label one dataset as another: records like the offline demo's (in-memory, local data) publish
no `.eval_results` and keep their own names in the model-index; records loaded from a Hub dataset (revision faked
through the one Hub seam) give one `.eval_results` file per benchmark task that round-trips through
huggingface_hub's EvalResultEntry; `--dataset-id` maps local data only with a note; names are never paths."""

import csv
import json
import shutil

import pytest
import torch
import yaml
from huggingface_hub import EvalResultEntry, ModelCard, eval_result_entries_to_yaml, parse_eval_result_entries
from PIL import Image

from dataset_builder.benchmark_yaml import write_benchmark_yaml
from evaluate_suite import DualEncoder, evaluate_model
from evaluate_suite import hub as hub_module
from evaluate_suite.__main__ import main
from evaluate_suite.report import build_report
from evaluate_suite.runner import run_benchmarks, write_json_atomic
from evaluate_suite.tasks import get_benchmark
from modeling_cultureclip import CultureCLIPModel

from evalsuite_fixtures import cultwin_dataset, geode_dataset, write_folder
from layouts import FakeHub, classification_wds, globalrg_repo

BENCH_REPOS = ("clip-benchmark/wds_geode", "UBC-VL/GlobalRG-Retrieval", "example-org/cultwin-mini")


@pytest.fixture(scope="module")
def models(tiny, tiny_dir, tmp_path_factory):
    """Two checkpoints (same shapes, other weights) in folders whose paths would collide as file names."""
    root = tmp_path_factory.mktemp("models")
    model, processor = tiny
    torch.manual_seed(7)
    other = CultureCLIPModel(model.config).eval()
    first, second = root / "runs" / "b32" / "model", root / "runs_b32" / "model"
    shutil.copytree(tiny_dir, first)
    other.save_pretrained(second)
    processor.save_pretrained(second)
    return {"first": first, "second": second, "other": other, "root": root}


@pytest.fixture(scope="module")
def demo_results(tiny, models, tmp_path_factory):
    """Records as the offline demo makes them: evaluate_model on in-memory twin and emoji sets, named by style."""
    out = tmp_path_factory.mktemp("demo_results")
    model, processor = tiny
    general = geode_dataset().rename_column("object", "label").class_encode_column("label")
    for role, net in (("base", model), ("cultureclip", models["other"])):
        encoder = DualEncoder(net, processor, batch_size=8)
        for style in ("twemoji", "openmoji"):
            twin = evaluate_model(net, processor, "cultwin", cultwin_dataset()["test"], encoder=encoder,
                                  bootstrap_resamples=50, dataset_name=f"{style} twin views", model_name=role)
            zero = evaluate_model(net, processor, get_benchmark("zeroshot_imagenet", templates=("{}",)), general,
                                  encoder=encoder, bootstrap_resamples=50, dataset_name=f"{style} general views",
                                  model_name=role)
            for record in (twin["twin_choice"], zero["zero_shot"]):
                write_json_atomic(out / f"{role}__{style}__{record['task']}.json", record)
    return out


@pytest.fixture(scope="module")
def local_results(models, tmp_path_factory):
    """Both checkpoints run through the CLI on local folders."""
    root = tmp_path_factory.mktemp("local")
    data = {"cultwin": write_folder(root / "cultwin", dict(cultwin_dataset())), "globalrg_retrieval":
            globalrg_repo(root / "grg")}
    results = root / "results"
    for checkpoint in (models["first"], models["second"]):
        args = ["run", "--model", str(checkpoint), "--benchmarks", ",".join(data), "--output-dir", str(results),
                "--seeds", "0,1", "--batch-size", "8", "--bootstrap-resamples", "50", "--min-group-size", "2"]
        for name, folder in data.items():
            args += ["--data-dir", f"{name}={folder}"]
        assert main(args) == 0
    return results


@pytest.fixture(scope="module")
def hub_results(tiny, tmp_path_factory):
    """Results whose data came from Hub datasets (the fake Hub serves fixture folders under fake commits)."""
    root = tmp_path_factory.mktemp("hub")
    cultwin = write_folder(root / "cultwin_repo", dict(cultwin_dataset()))
    write_benchmark_yaml(cultwin, "CulTwin mini")
    fake = FakeHub(root / "cache", dict(zip(BENCH_REPOS, (classification_wds(root / "wds_geode", with_region=True),
                                                          globalrg_repo(root / "grg"), cultwin))))
    model, processor = tiny
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hub_module, "fetch_hub_snapshot", fake)
        run_benchmarks("org/tiny-clip", ["zeroshot_geode", "globalrg_retrieval", "cultwin"], root / "results",
                       hub_datasets={"cultwin": "example-org/cultwin-mini"}, encoder=DualEncoder(model, processor),
                       seeds=(0, 1), bootstrap_resamples=50, min_group_size=4)
    return root / "results", fake, cultwin


def _written_text(out):
    return "\n".join(p.read_text(errors="replace") for p in out.rglob("*") if p.suffix in (".md", ".csv", ".yaml",
                                                                                          ".json"))


def test_demo_like_records_publish_nothing_and_keep_their_names(demo_results, models, tmp_path):
    out = tmp_path / "report"
    summary = build_report(demo_results, out)
    assert not list(out.rglob(".eval_results")) and summary["eval_results"] == {}
    assert set(summary["eval_results_left_out"]) == {"base", "cultureclip"}
    for card_path in sorted((out / "models").glob("*/README.md")):
        card = ModelCard.load(card_path)
        results = card.data.eval_results
        assert {r.dataset_name for r in results} == {"twemoji twin views", "openmoji twin views",
                                                     "twemoji general views", "openmoji general views"}
        assert all(r.dataset_type == f"local:{r.dataset_name}" and r.dataset_revision is None for r in results)
        keys = [(*r.unique_identifier, r.metric_type) for r in results]
        assert len(keys) == len(set(keys))  # no two entries with the same metric for one dataset
        assert {r.metric_type for r in results} == {"twin_choice/accuracy", "zero_shot/top1_accuracy"}
    text = _written_text(out)
    for hub_id in ("ILSVRC", "clip-benchmark", "imagenet-1k"):
        assert hub_id not in text
    # Results on different data never share a table row.
    rows = list(csv.reader((out / "comparison.csv").open()))
    assert rows[0] == ["benchmark", "task", "data", "metric", "base", "cultureclip"]
    zero = [r for r in rows if r[:2] == ["zeroshot_imagenet", "zero_shot"] and r[3] == "top1_accuracy"]
    assert sorted(r[2] for r in zero) == ["openmoji general views", "twemoji general views"]


def test_hub_loaded_results_one_file_per_benchmark_task_round_trip(hub_results, tmp_path):
    results, fake, cultwin_repo = hub_results
    out = tmp_path / "report"
    summary = build_report(results, out)
    folder = out / "models" / "org_tiny-clip" / ".eval_results"
    names = sorted(p.name for p in folder.glob("*.yaml"))
    assert names == ["cultwin__twin_choice.yaml", "globalrg_retrieval__region_choice.yaml",
                     "globalrg_retrieval__retrieval.yaml", "zeroshot_geode__worst_region.yaml",
                     "zeroshot_geode__zero_shot.yaml"]
    assert summary["eval_results"] == {"org/tiny-clip": names} and summary["eval_results_left_out"] == {}
    by_name = {}
    for path in folder.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        entries = parse_eval_result_entries(data)
        assert len(entries) == 1 and isinstance(entries[0], EvalResultEntry)
        assert eval_result_entries_to_yaml(entries) == data
        by_name[path.name] = entries[0]
    for name, entry in by_name.items():
        assert entry.dataset_id in BENCH_REPOS and entry.dataset_revision == fake.commit_of(entry.dataset_id)
        assert "evaluate_suite protocol" in entry.notes and "mapped" not in entry.notes
        record = json.loads(next(results.glob(f"*__{name[:-5]}.json")).read_text())
        assert entry.value == round(100 * record["metrics"][record["primary_metric"]], 2)
        assert entry.task_id == record["task"]
    # The CulTwin entry names a task its eval.yaml registers.
    eval_yaml = yaml.safe_load((cultwin_repo / "eval.yaml").read_text())
    assert by_name["cultwin__twin_choice.yaml"].task_id in {t["id"] for t in eval_yaml["tasks"]}
    card = ModelCard.load(out / "models" / "org_tiny-clip" / "README.md")
    assert {r.dataset_type for r in card.data.eval_results} == set(BENCH_REPOS)
    geode = [r for r in card.data.eval_results if r.dataset_type == "clip-benchmark/wds_geode"]
    assert sorted(r.metric_type for r in geode) == ["worst_region/worst_region_accuracy",
                                                    "zero_shot/top1_accuracy"]
    assert all(r.dataset_revision == fake.commit_of(r.dataset_type) for r in card.data.eval_results)


def test_dataset_id_maps_local_data_only_with_a_note(local_results, hub_results, tmp_path):
    out = tmp_path / "mapped"
    assert main(["report", "--results", str(local_results), "--output-dir", str(out),
                 "--dataset-id", "cultwin=example-org/cultwin-mini"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob(".eval_results/*.yaml"))
    assert len(files) == 2 and all(f.endswith("/.eval_results/cultwin__twin_choice.yaml") for f in files)
    entry = parse_eval_result_entries(yaml.safe_load((out / files[0]).read_text()))[0]
    assert entry.dataset_id == "example-org/cultwin-mini" and entry.dataset_revision is None
    assert "evaluated on local data 'cultwin'" in entry.notes and "--dataset-id" in entry.notes
    # Hub-loaded data cannot be re-labelled as another dataset.
    with pytest.raises(ValueError, match=r"loaded from Hub dataset 'UBC-VL/GlobalRG-Retrieval'"):
        build_report(hub_results[0], tmp_path / "bad", {"globalrg_retrieval": "someone/else"})


def test_model_names_never_paths_and_result_files_do_not_collide(local_results, models, tmp_path):
    files = sorted(p.name for p in local_results.glob("*.json"))
    assert len(files) == 2 * 3  # cultwin, region_choice, retrieval per model: runs/b32/model vs runs_b32/model
    assert len({f.split("__")[0] for f in files}) == 2 and all(f.startswith("model-") for f in files)
    record = json.loads((local_results / files[0]).read_text())
    assert record["model"]["name"] == "model" and record["model"]["source"] == "local"
    out = tmp_path / "report"
    summary = build_report(local_results, out)
    assert sorted(summary["models"]) == sorted(f"model ({f.split('__')[0][len('model-'):]})" for f in
                                               {files[0], files[-1]})
    assert len(list((out / "models").glob("*/README.md"))) == 2
    assert str(models["root"]) not in _written_text(out)


def test_existing_results_and_reports_are_not_overwritten(local_results, models, tmp_path, capsys):
    args = ["run", "--model", str(models["first"]), "--benchmarks", "globalrg_retrieval", "--output-dir",
            str(local_results), "--data-dir", f"globalrg_retrieval={globalrg_repo(tmp_path / 'grg')}",
            "--bootstrap-resamples", "20"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists already" in err and "--overwrite" in err
    out = tmp_path / "report"
    assert main(["report", "--results", str(local_results), "--output-dir", str(out)]) == 0
    stale = out / "models" / "stale.txt"
    stale.write_text("user file")
    assert main(["report", "--results", str(local_results), "--output-dir", str(out)]) == 2
    assert "a report exists already" in capsys.readouterr().err
    assert main(["report", "--results", str(local_results), "--output-dir", str(out), "--overwrite"]) == 0
    assert stale.read_text() == "user file"  # only the files the earlier report wrote are replaced


def test_plots_are_valid_pngs(demo_results, tmp_path):
    out = tmp_path / "report"
    build_report(demo_results, out)
    plots = sorted((out / "plots").glob("*.png"))
    assert {p.name.split("__")[0] for p in plots} == {"continents", "twin_confusion"}
    assert len([p for p in plots if p.name.startswith("twin_confusion")]) == 4  # 2 models x 2 twin sets
    for path in plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
    summary = json.loads((out / "report.json").read_text())
    assert all(len(h) == 64 for h in summary["files"].values())
