"""`train_vlm.py`, `reproduce.py` and `cultureclip-demo` on bad input: one line naming the option, field, file or
folder, exit status 2, no traceback, inputs and the user's folders byte-identical afterwards."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import reproduce as reproduce_cli
import train_vlm as train_vlm_cli
from cli_harness import REPO, Case, check_refusal, run_case, run_process, tree_hashes
from cultureclip_demo.cli import main as demo_main


@pytest.fixture(scope="module")
def paths(tmp_path_factory, cultwin_dir, tiny_model_dir) -> dict:
    root = tmp_path_factory.mktemp("other_faults")
    p = {"root": root, "data": cultwin_dir, "model": tiny_model_dir}
    p["recipes"] = root / "recipes"
    p["recipes"].mkdir()
    (p["recipes"] / "broken.yaml").write_text("inherit: vlm-demo\nlearning_rate: : 1\n")
    (p["recipes"] / "demo-broken.yaml").write_text("seeds: [1, 2\n")
    (p["recipes"] / "demo-unknown.yaml").write_text("inherit: quick.yaml\ncolour: blue\n")
    p["mine"] = root / "mine"  # a user's folder
    p["mine"].mkdir()
    (p["mine"] / "notes.txt").write_text("my notes")
    p["file"] = root / "a-file.txt"
    p["file"].write_text("x")
    return p


GUARDED = ("data", "model", "recipes", "mine", "file")

VLM_CASES = [
    Case("vlm-unknown-recipe", "paths", lambda p: ["--recipe", "vlm-nope"], 2, ("vlm-nope",)),
    Case("vlm-recipe-yaml-syntax", "syntax", lambda p: ["--recipe", str(p["recipes"] / "broken.yaml")], 2,
         ("broken.yaml", "line 2")),
    Case("vlm-unknown-field", "syntax", lambda p: ["--recipe", "vlm-demo", "--colour", "blue"], 2, ("colour",)),
    Case("vlm-lora-rank-0", "values", lambda p: ["--recipe", "vlm-demo", "--lora_rank", "0"], 2, ("lora_rank",)),
    Case("vlm-seed-abc", "values", lambda p: ["--recipe", "vlm-demo", "--seed", "abc"], 2, ("seed",)),
    Case("vlm-dataset-missing", "paths", lambda p: ["--recipe", "vlm-demo", "--model", str(p["model"]), "--dataset",
                                                    str(p["root"] / "no-data"), "--output_dir",
                                                    str(p["root"] / "vlm-out")], 2, ("no-data",)),
]

REPRODUCE_CASES = [
    Case("reproduce-eval-seeds-empty", "values", lambda p: ["--output-dir", str(p["root"] / "r"), "--eval-seeds",
                                                            "", "--dry-run"], 2, ("--eval-seeds",)),
    Case("reproduce-max-steps-0", "values", lambda p: ["--output-dir", str(p["root"] / "r"), "--max-steps", "0",
                                                       "--dry-run"], 2, ("--max-steps",)),
    Case("reproduce-train-override-malformed", "values", lambda p: ["--output-dir", str(p["root"] / "r"),
                                                                    "--train-override", "max_steps", "--dry-run"], 2,
         ("--train-override",)),
    Case("reproduce-unknown-recipe", "paths", lambda p: ["--output-dir", str(p["root"] / "r"), "--ours-recipe",
                                                         "improved-b33", "--dry-run"], 2, ("improved-b33",)),
    Case("reproduce-data-dir-malformed", "values", lambda p: ["--output-dir", str(p["root"] / "r"), "--data-dir",
                                                              "crope", "--dry-run"], 2, ("--data-dir",)),
    Case("reproduce-release-offline", "hub", lambda p: ["--output-dir", str(p["root"] / "r2"), "--base-model",
                                                        str(p["model"]), "--release-data", "someone/not-cached",
                                                        "--released-model", str(p["model"]),
                                                        "--benchmarks", "crope", "--data-dir",
                                                        f"crope={p['data']}"], 2, ("someone/not-cached",)),
]

DEMO_CASES = [
    Case("demo-seeds-0", "values", lambda p: ["--output-dir", str(p["root"] / "d"), "--quick", "--seeds", "0"], 2,
         ("seeds=0", ">= 1")),
    Case("demo-threads-0", "values", lambda p: ["--output-dir", str(p["root"] / "d"), "--quick", "--threads", "0"],
         2, ("threads=0",)),
    Case("demo-device-gpu", "values", lambda p: ["--output-dir", str(p["root"] / "d"), "--device", "cuda"], 2,
         ("--device",)),
    Case("demo-config-yaml-syntax", "syntax", lambda p: ["--output-dir", str(p["root"] / "d"), "--config",
                                                         str(p["recipes"] / "demo-broken.yaml")], 2,
         ("demo-broken.yaml",)),
    Case("demo-config-missing", "paths", lambda p: ["--output-dir", str(p["root"] / "d"), "--config",
                                                    str(p["root"] / "none.yaml")], 2, ("none.yaml",)),
    Case("demo-output-foreign", "overwrite", lambda p: ["--output-dir", str(p["mine"]), "--quick"], 2,
         ("notes.txt", "--overwrite")),
    Case("demo-output-is-a-file", "overwrite", lambda p: ["--output-dir", str(p["file"]), "--quick"], 2,
         ("not a folder",)),
]


@pytest.mark.parametrize("case", VLM_CASES, ids=[c.name for c in VLM_CASES])
def test_train_vlm_bad_input(case, paths):
    run_case(train_vlm_cli.main, case, paths, [paths[k] for k in GUARDED])


@pytest.mark.parametrize("case", REPRODUCE_CASES, ids=[c.name for c in REPRODUCE_CASES])
def test_reproduce_bad_input(case, paths):
    run_case(reproduce_cli.main, case, paths, [paths[k] for k in GUARDED])


@pytest.mark.parametrize("case", DEMO_CASES, ids=[c.name for c in DEMO_CASES])
def test_demo_bad_input(case, paths):
    run_case(demo_main, case, paths, [paths[k] for k in GUARDED])


def test_console_paths(paths):
    """The real processes: `python train_vlm.py`, `python reproduce.py` and the `cultureclip-demo` script."""
    vlm = run_process([sys.executable, str(REPO / "train_vlm.py"), "--recipe", "vlm-demo", "--lora_rank", "0"])
    check_refusal(vlm, 2, ["lora_rank"], {}, {})
    repro = run_process([sys.executable, str(REPO / "reproduce.py"), "--output-dir", str(paths["root"] / "r"),
                         "--eval-seeds", "", "--dry-run"])
    check_refusal(repro, 2, ["--eval-seeds"], {}, {})
    before = tree_hashes([paths["mine"]])
    demo = run_process([str(Path(sys.executable).with_name("cultureclip-demo")), "--output-dir", str(paths["mine"]),
                        "--quick"])
    check_refusal(demo, 2, ["notes.txt"], before, tree_hashes([paths["mine"]]))



