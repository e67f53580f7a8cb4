"""`python -m evaluate_suite run` in a fresh process on every real-layout fixture: the webdataset repos, CROPE's
parquet, GlobalRG's parquet, a loading-script repo and bad rows (one error line, exit 2), and the default Hub ids
served by the fake Hub (the same entry point run through runpy with only the Hub seam replaced)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evaluate_suite.report import build_report

from evalsuite_fixtures import write_folder
from layouts import (
    FakeHub, classification_wds, crope_dataset, crope_repo, globalrg_repo, loading_script_repo, retrieval_wds,
)

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# `python -m evaluate_suite` with the Hub seam replaced by the fake Hub (its repos and cache come from the env).
FAKE_HUB_MAIN = """
import json, os, runpy, sys
from pathlib import Path
from layouts import FakeHub
import evaluate_suite.hub as hub
repos = {k: Path(v) for k, v in json.loads(os.environ["FAKE_HUB_REPOS"]).items()}
hub.fetch_hub_snapshot = FakeHub(Path(os.environ["FAKE_HUB_CACHE"]), repos)
sys.argv[0] = "evaluate_suite"
runpy.run_module("evaluate_suite", run_name="__main__", alter_sys=True)
"""


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, fake_hub: bool = False
            ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]), **(env or {})}
    head = [sys.executable, "-c", FAKE_HUB_MAIN] if fake_hub else [sys.executable, "-m", "evaluate_suite"]
    return subprocess.run(head + args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The single `error:` line of a failed run (anything else on stderr is library progress output).

    Every CLI now prints `PROG: error: ...` (argparse's form, one dialect for all commands, issue 16)."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("python -m evaluate_suite: error:")]
    assert len(lines) == 1 and proc.stderr.rstrip().endswith(lines[0])
    return lines[0]


def records(paths: str) -> dict[str, dict]:
    out = {}
    for line in paths.split():
        record = json.loads(Path(line).read_text())
        out[f"{record['benchmark']}/{record['task']}"] = record
    return out


def test_run_on_every_local_real_layout(tiny_dir, tmp_path):
    data = {"zeroshot_imagenet": classification_wds(tmp_path / "wds_imagenet1k"),
            "retrieval_flickr30k": retrieval_wds(tmp_path / "wds_flickr30k"),
            "crope": crope_repo(tmp_path / "crope"), "globalrg_retrieval": globalrg_repo(tmp_path / "grg")}
    args = ["run", "--model", str(tiny_dir), "--benchmarks", ",".join(data), "--output-dir", str(tmp_path / "out"),
            "--seeds", "0", "--bootstrap-resamples", "20", "--min-group-size", "1"]
    for name, folder in data.items():
        args += ["--data-dir", f"{name}={folder}"]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = records(proc.stdout)
    assert set(got) == {"zeroshot_imagenet/zero_shot", "retrieval_flickr30k/retrieval", "crope/twin_choice",
                        "globalrg_retrieval/region_choice", "globalrg_retrieval/retrieval"}
    for record in got.values():
        assert record["dataset"]["kind"] == "local" and len(record["dataset"]["fingerprint"]) == 64
        assert record["model"]["name"] == "tiny_model0" and record["protocol"]["follows"]
    assert got["zeroshot_imagenet/zero_shot"]["dataset"]["layout"] == "webdataset"
    assert got["crope/twin_choice"]["dataset"]["rows_skipped"] == {"answer_yes_no_twin": 1, "empty_concept": 1}
    assert "United States" in got["globalrg_retrieval/region_choice"]["breakdowns"]["country"]["counts"]


def test_loading_script_and_bad_rows_give_one_error_line(tiny_dir, tmp_path):
    script = loading_script_repo(tmp_path / "flickr_script")
    proc = run_cli(["run", "--model", str(tiny_dir), "--benchmarks", "retrieval_flickr30k", "--output-dir",
                    str(tmp_path / "out"), "--data-dir", f"retrieval_flickr30k={script}"], tmp_path)
    line = error_line(proc)
    assert "benchmark 'retrieval_flickr30k'" in line and str(script) in line and "loading script" in line
    assert not (tmp_path / "out").exists()

    bad = crope_dataset().to_dict()
    bad["answer"][1] = "maybe"
    import datasets

    folder = write_folder(tmp_path / "bad_crope", {"test": datasets.Dataset.from_dict(
        bad, features=crope_dataset().features)})
    proc = run_cli(["run", "--model", str(tiny_dir), "--benchmarks", "crope", "--output-dir", str(tmp_path / "out"),
                    "--data-dir", f"crope={folder}"], tmp_path)
    line = error_line(proc)
    assert f"benchmark 'crope', source '{folder}', row 1, field 'answer'" in line


def test_default_hub_ids_through_the_fake_hub_then_report(tiny_dir, tmp_path):
    repos = {"clip-benchmark/wds_geode": classification_wds(tmp_path / "wds_geode", with_region=True),
             "Malvinan/CROPE": crope_repo(tmp_path / "crope")}
    env = {"FAKE_HUB_REPOS": json.dumps({k: str(v) for k, v in repos.items()}),
           "FAKE_HUB_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "out"
    proc = run_cli(["run", "--model", str(tiny_dir), "--name", "tiny-clip", "--benchmarks", "zeroshot_geode,crope",
                    "--output-dir", str(out), "--seeds", "0", "--bootstrap-resamples", "20", "--min-group-size", "4"],
                   tmp_path, env=env, fake_hub=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = records(proc.stdout)
    assert set(got) == {"zeroshot_geode/zero_shot", "zeroshot_geode/worst_region", "crope/twin_choice"}
    for key, record in got.items():
        repo = "clip-benchmark/wds_geode" if key.startswith("zeroshot_geode") else "Malvinan/CROPE"
        assert (record["dataset"]["kind"], record["dataset"]["id"]) == ("hub", repo)
        assert record["dataset"]["revision"] == FakeHub.commit_of(repo)
    assert not [f for f in got["zeroshot_geode/zero_shot"]["dataset"]["files"] if f["path"].startswith("train/")]
    summary = build_report(out, tmp_path / "report")
    names = summary["eval_results"]["tiny-clip"]
    assert names == ["crope__twin_choice.yaml", "zeroshot_geode__worst_region.yaml", "zeroshot_geode__zero_shot.yaml"]
    entry = yaml.safe_load((tmp_path / "report" / "models" / "tiny-clip" / ".eval_results" / names[0]).read_text())
    assert entry[0]["dataset"] == {"id": "Malvinan/CROPE", "task_id": "twin_choice",
                                   "revision": FakeHub.commit_of("Malvinan/CROPE")}


@pytest.mark.parametrize("argv,message", [
    (["--hub-dataset", "crope=not-an-id"], "expected OWNER/NAME[@REVISION]"),
    (["--data-dir", "crope"], "--data-dir expects NAME=VALUE"),
    (["--min-group-size", "0"], "min_group_size must be >= 1"),
])
def test_bad_options_are_one_line(tiny_dir, tmp_path, capsys, argv, message):
    from evaluate_suite.__main__ import main

    assert main(["run", "--model", str(tiny_dir), "--benchmarks", "crope", "--output-dir", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
