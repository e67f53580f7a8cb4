"""`python -m evaluate_suite run|report` on bad input: one line naming the model, benchmark, file or option, exit
status 2, no traceback, and the inputs and earlier results byte-identical afterwards."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from cli_harness import Case, check_refusal, run_case, run_main, run_process, tree_hashes
from evaluate_suite.__main__ import main
from layouts import crope_repo


def _run(p: dict, *extra: str, model: str = "model", out: str = "results") -> list[str]:
    return ["run", "--model", str(p[model]), "--benchmarks", "crope", "--output-dir", str(p["root"] / out),
            "--data-dir", f"crope={p['crope']}", "--seeds", "0", "--bootstrap-resamples", "5", "--min-group-size",
            "1", *extra]


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_model_dir, cultwin_dir) -> dict:
    root = tmp_path_factory.mktemp("eval_faults")
    p = {"root": root, "model": tiny_model_dir, "dataset": cultwin_dir, "crope": crope_repo(root / "crope")}
    done = run_main(main, _run(p))
    assert done.status == 0, done.err[-3000:]
    p["results"] = root / "results"
    report = run_main(main, ["report", "--results", str(p["results"]), "--output-dir", str(root / "report")])
    assert report.status == 0, report.err[-3000:]
    p["report"] = root / "report"
    p["empty"] = root / "empty"
    p["empty"].mkdir()
    p["corrupt"] = root / "corrupt"
    shutil.copytree(p["crope"], p["corrupt"])
    for shard in p["corrupt"].rglob("*.parquet"):
        shard.write_bytes(b"PAR1 this is not parquet at all")
    p["bad_json"] = root / "bad-json"
    p["bad_json"].mkdir()
    (p["bad_json"] / "r.json").write_text("{\"model\": ")
    p["wrong_fields"] = root / "wrong-fields"
    p["wrong_fields"].mkdir()
    record = json.loads(next(p["results"].rglob("*.json")).read_text())
    record["metrics"] = ["accuracy"]
    (p["wrong_fields"] / "r.json").write_text(json.dumps(record))
    p["file"] = root / "a-file.txt"
    p["file"].write_text("x")
    return p


GUARDED = ("model", "dataset", "crope", "results", "report", "corrupt", "bad_json", "wrong_fields", "file")

CASES = [
    Case("model-missing", "paths", lambda p: [*_run(p, out="o1")[:2], str(p["root"] / "no-model"),
                                              *_run(p, out="o1")[3:]], 2, ("no-model",)),
    Case("model-is-a-dataset", "paths", lambda p: _run(p, model="dataset", out="o1"), 2, ("{dataset}",)),
    Case("model-hub-id-offline", "hub", lambda p: [*_run(p, out="o1")[:2], "someone/not-cached-clip",
                                                   *_run(p, out="o1")[3:]], 2, ("someone/not-cached-clip",)),
    Case("unknown-benchmark", "values", lambda p: ["run", "--model", str(p["model"]), "--benchmarks", "cropee",
                                                   "--output-dir", str(p["root"] / "o1")], 2, ("cropee",)),
    Case("data-dir-without-equals", "values", lambda p: [*_run(p, out="o1"), "--data-dir", "crope"], 2,
         ("--data-dir",)),
    Case("data-dir-missing", "paths", lambda p: [*_run(p, out="o1")[:7], "--data-dir",
                                                 f"crope={p['root'] / 'nowhere'}"], 2, ("nowhere",)),
    Case("data-dir-empty", "paths", lambda p: [*_run(p, out="o1")[:7], "--data-dir", f"crope={p['empty']}"], 2,
         ("crope",)),
    Case("data-dir-corrupt-parquet", "data", lambda p: [*_run(p, out="o1")[:7], "--data-dir",
                                                        f"crope={p['corrupt']}"], 2, ("crope",)),
    Case("seeds-empty", "values", lambda p: [*_run(p, out="o1"), "--seeds", ""], 2, ("--seeds",)),
    Case("seeds-text", "values", lambda p: [*_run(p, out="o1"), "--seeds", "a,b"], 2, ("--seeds", "'a,b'")),
    Case("batch-size-0", "values", lambda p: [*_run(p, out="o1"), "--batch-size", "0"], 2, ("--batch-size",)),
    Case("result-exists", "overwrite", lambda p: _run(p), 2, ("--overwrite",)),
    Case("output-is-a-file", "overwrite", lambda p: _run(p, out="a-file.txt"), 2, ("a-file.txt",)),
    Case("report-results-missing", "paths", lambda p: ["report", "--results", str(p["root"] / "none"),
                                                       "--output-dir", str(p["root"] / "r1")], 2, ("none",)),
    Case("report-bad-json", "syntax", lambda p: ["report", "--results", str(p["bad_json"]), "--output-dir",
                                                 str(p["root"] / "r1")], 2, ("r.json", "not valid JSON")),
    Case("report-wrong-fields", "data", lambda p: ["report", "--results", str(p["wrong_fields"]), "--output-dir",
                                                   str(p["root"] / "r1")], 2, ("r.json", "metrics")),
    Case("report-exists", "overwrite", lambda p: ["report", "--results", str(p["results"]), "--output-dir",
                                                  str(p["report"])], 2, ("--overwrite",)),
    Case("dataset-id-malformed", "values", lambda p: ["report", "--results", str(p["results"]), "--output-dir",
                                                      str(p["root"] / "r2"), "--dataset-id", "crope"], 2,
         ("--dataset-id",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, paths):
    run_case(main, case, paths, [paths[k] for k in GUARDED])


def test_overwrite_replaces_the_result(paths):
    before = tree_hashes([paths["results"]])
    done = run_main(main, _run(paths, "--overwrite"))
    assert done.status == 0, done.err[-2000:]
    assert set(tree_hashes([paths["results"]])) == set(before)  # same files, rewritten in place


def test_console_path(paths):
    bad = run_process([sys.executable, "-m", "evaluate_suite", *_run(paths, out="o3"), "--seeds", ""])
    check_refusal(bad, 2, ["--seeds"], {}, {})
    before = tree_hashes([paths["results"]])
    again = run_process([sys.executable, "-m", "evaluate_suite", *_run(paths)])
    check_refusal(again, 2, ["--overwrite"], before, tree_hashes([paths["results"]]))
