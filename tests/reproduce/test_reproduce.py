"""`python reproduce.py`: offline on tiny stand-ins for every Hub input, end to end, killed and resumed; the dry run;
the errors a user meets first."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import CLIPModel

import reproduce as program
from cultureclip_reproduce import ReproduceConfig, ReproduceError, step_names
from cultureclip_reproduce.sources import prepare_released_model
from cultureclip_reproduce.steps import StepStore
from modeling_cultureclip import CultureCLIPModel
from reproduce_helpers import REPO, reproduce_argv

ROW_LABELS = ["base", "released", "release-exact", "ours"]


def _run(argv: list[str]) -> subprocess.Popen:
    # the script's folder (the repository) is first on the child's sys.path; HF_*_OFFLINE come from conftest
    return subprocess.Popen([sys.executable, str(REPO / "reproduce.py"), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            cwd=REPO)


@pytest.mark.slow
def test_reproduce_end_to_end_killed_after_first_training_then_resumed(stand_ins, tmp_path):
    output = tmp_path / "repro"
    argv = reproduce_argv(stand_ins, output)
    first_training = output / "steps" / "train-release-exact.json"

    process = _run(argv)
    deadline = time.monotonic() + 420
    while not first_training.exists():
        assert process.poll() is None, f"run ended before its first training step finished:\n{process.stdout.read()}"
        assert time.monotonic() < deadline, "first training step did not finish in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (output / "comparison.csv").exists()
    trained = output / "runs" / "release-exact" / "model" / "model.safetensors"
    before = (trained.stat().st_mtime_ns, (output / "runs" / "release-exact" / "metrics.jsonl").read_text())

    rerun = _run(argv)
    log, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, log
    for step in ("fetch-base", "import-release-data", "eval-base-crope", "eval-released-zeroshot_dollar_street",
                 "train-release-exact"):
        assert f"[done] {step} (finished earlier; not redone)" in log, step
    assert "[run ] train-release-exact" not in log and "[run ] train-ours" in log
    assert (trained.stat().st_mtime_ns, (output / "runs" / "release-exact" / "metrics.jsonl").read_text()) == before

    with open(output / "comparison.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    header, rows = table[0], table[1:]
    assert [row[0] for row in rows] == ROW_LABELS
    for bench in ("crope/twin_choice", "globalrg_retrieval/region_choice", "globalrg_retrieval/retrieval",
                  "globalrg_grounding/concept_choice", "zeroshot_imagenet/zero_shot", "zeroshot_geode/zero_shot",
                  "zeroshot_dollar_street/zero_shot"):
        column = next(i for i, name in enumerate(header) if name.startswith(bench + " "))
        assert all(0.0 <= float(row[column]) <= 1.0 for row in rows), bench
    markdown = (output / "comparison.md").read_text()
    assert all(f"| {label} |" in markdown for label in ROW_LABELS) and '"release-exact": "release-b32"' in markdown
    assert (output / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((output / "report" / "models").glob("*/README.md"))) == 4
    steps = {p.stem for p in (output / "steps").glob("*.json")}
    assert steps == set(step_names(ReproduceConfig(output_dir=str(output))))
    budget = json.loads((output / "steps" / "report.json").read_text())["inputs"]["provenance"]["budget"]
    assert budget["release-exact"] == budget["ours"] == {"steps": 2, "samples_seen": 16}
    released = json.loads((output / "steps" / "prepare-released-model.json").read_text())["outputs"]
    assert released["kind"] == "merged checkpoint"  # the authors' merged CLIPModel, evaluated as any CLIP


def test_dry_run_prints_plan_sizes_and_estimates_and_writes_nothing(stand_ins, tmp_path, capsys):
    output = tmp_path / "planned"
    assert program.main(reproduce_argv(stand_ins, output) + ["--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not output.exists()
    for step in step_names(ReproduceConfig(output_dir=str(output))):
        assert f" {step} " in text or text.rstrip().endswith(step) or f" {step}\n" in text
    assert "release-exact: release-b32 (plain, fp32), 16 rows -> 2 steps of 8 pairs" in text
    assert "ours: improved-b32 (feature_cache, fp32), 16 rows -> 2 steps of 8 pairs" in text
    assert "crope: 3 rows" in text and "GiB per device" in text and "How these are estimated:" in text
    assert "released data: " in text and "(local, " in text
    assert "imported CulTwin (all caption combinations): 16 train rows" in text
    assert program.main(reproduce_argv(stand_ins, output) + ["--dry-run", "--import-combinations", "matched",
                                                             "--release-data-path", "train.jsonl"]) == 0
    assert "imported CulTwin (matched caption combinations): 8 train rows" in capsys.readouterr().out


def test_the_first_errors_a_user_meets_are_one_line(stand_ins, tmp_path, capsys):
    argv = reproduce_argv(stand_ins, tmp_path / "x")
    sources = ["--output-dir", str(tmp_path / "y"), "--base-model", str(stand_ins["base"]), "--release-data",
               str(stand_ins["release_data"]), "--released-model", str(stand_ins["released"])]
    assert program.main(sources + ["--ours-recipe", "demo"]) == 2  # demo: 8 x 2 pairs, 5 epochs; release 128 x 16, 10
    assert "do not have the same budget" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    without_released = [a for a in argv if a != str(stand_ins["released"])]
    without_released.remove("--released-model")
    assert program.main(without_released) == 2
    assert "--released-model is required" in capsys.readouterr().err
    assert program.main(argv + ["--train-override", "dataset=elsewhere"]) == 2
    assert "set by the reproduction itself" in capsys.readouterr().err
    assert program.main(argv + ["--release-data-path", "../../etc", "--dry-run"]) == 2
    assert "it leaves" in capsys.readouterr().err
    assert program.main(argv + ["--base-model", str(tmp_path / "no-such-base"), "--dry-run"]) == 2
    assert "no-such-base: no such file or folder" in capsys.readouterr().err


def test_a_step_done_with_other_inputs_is_refused(tmp_path):
    store = StepStore(tmp_path, lambda _: None)
    assert store.run("train-ours", {"lr": 1}, lambda: {"ok": True}) == {"ok": True}
    assert store.run("train-ours", {"lr": 1}, lambda: pytest.fail("redone")) == {"ok": True}
    with pytest.raises(ReproduceError, match="finished earlier with other inputs"):
        store.run("train-ours", {"lr": 2}, lambda: {"ok": False})


def test_an_adapter_only_release_is_merged_into_the_base(stand_ins, tmp_path):
    adapter_only = tmp_path / "adapter-only"
    (adapter_only / "lora_adapter").mkdir(parents=True)
    for path in (stand_ins["released"] / "lora_adapter").iterdir():
        (adapter_only / "lora_adapter" / path.name).write_bytes(path.read_bytes())
    ready = prepare_released_model(adapter_only, stand_ins["base"], tmp_path / "merged")
    assert ready["kind"] == "adapter (lora_adapter/) merged into the base"
    g = torch.Generator().manual_seed(0)
    inputs = dict(input_ids=torch.tensor([[1, 5, 6, 3], [1, 7, 8, 3]]), pixel_values=torch.randn(2, 3, 16, 16,
                                                                                                  generator=g))
    on_clip = PeftModel.from_pretrained(CLIPModel.from_pretrained(stand_ins["base"]),
                                        str(stand_ins["released"] / "lora_adapter")).eval()
    with torch.no_grad():
        expected = on_clip.get_base_model()(**inputs).logits_per_image
        merged = CultureCLIPModel.from_pretrained(ready["path"]).eval()(**inputs).logits_per_image
    torch.testing.assert_close(merged, expected, rtol=0, atol=1e-5)
    with pytest.raises(ReproduceError, match="neither a CLIP checkpoint nor a PEFT adapter"):
        prepare_released_model(tmp_path / "merged" / "..", stand_ins["base"], tmp_path / "other")
