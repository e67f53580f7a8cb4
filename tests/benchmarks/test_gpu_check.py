"""benchmarks/gpu_check.sh on the CPU with tiny shapes: every scenario runs and the merged JSON has the structure a
GPU visit relies on (figures are not checked: timings never go into tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_runs_every_scenario_on_cpu(tmp_path):
    out = tmp_path / "check.json"
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
               OMP_NUM_THREADS="1")
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--small", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ok"] and report["device"] == "cpu" and report["small"]
    runs = report["runs"]
    assert set(runs) == {"eval", "train", "image_generation"}
    assert all(run["rc"] == 0 for run in runs.values())

    evaluation = runs["eval"]["result"]
    assert set(evaluation["roofline"]) == {"fp32", "bf16"}
    assert all(peak["flops_per_s"] > 0 for peak in evaluation["roofline"].values())
    assert set(evaluation["scenarios"]) == {"region choice, 4 options", "zero-shot, 40 classes"}
    for scenario in evaluation["scenarios"].values():
        assert set(scenario["rates"]) == {"release", "ours_fp32", "ours_bf16"}
        assert all(rate["items_per_s"] > 0 and rate["flops_per_item"] > 0 for rate in scenario["rates"].values())
        assert set(scenario["agreement"]) == {"ours_bf16_vs_ours_fp32", "ours_bf16_vs_release",
                                              "ours_fp32_vs_release"}
        assert all(0 <= value <= 1 for value in scenario["agreement"].values())
    assert {"input_pipeline_0_workers", "image_tower_fp32", "image_tower_bf16", "bottleneck"} <= set(
        evaluation["pipeline"])

    training = runs["train"]["result"]
    assert set(training["scenarios"]) == {"b32-lora", "demo"}
    for scenario in training["scenarios"].values():
        assert set(scenario["variants"]) == {"fp32", "bf16"}
        for variant in scenario["variants"].values():
            assert variant["samples_per_s"] > 0 and variant["flops_per_sample"] > 0
            assert len(variant["losses"]) == 3  # 2 warm-up + 1 measured step
        assert set(scenario["loss_agreement"]) == {"bf16"}

    images = runs["image_generation"]["result"]
    assert set(images["precisions"]) == {"fp32", "bf16"}
    assert "mean_pixel_difference_vs_fp32" in images["precisions"]["bf16"]

    # a second run refuses to replace the file unless told to
    again = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--small", "--out", str(out)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_gpu_check_rejects_bad_arguments():
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--device", "tpu"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "expected cpu or cuda" in done.stderr
