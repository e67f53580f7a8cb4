"""One process and two gloo processes on the same global batch give the same loss curve."""

import json
import socket
import subprocess
import sys
from pathlib import Path

from training_helpers import REPO, subprocess_env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _curve(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_vs_two_processes_same_loss_curve(tmp_path, cultwin_dir, tiny_model_dir):
    common = ["--recipe", "demo", "--dataset", str(cultwin_dir), "--model", str(tiny_model_dir), "--max_steps", "10",
              "--micro_batches", "2", "--seed", "7", "--report_to", "none", "--progress_bar", "false",
              "--save_artifacts", "false", "--checkpoint_every", "0"]
    # global batch 8 pairs per step either way: 1 x 4 x 2 micro-batches, or 2 ranks x 2 x 2
    two = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(REPO / "train.py"), *common, "--per_device_batch_size", "2", "--output_dir", str(tmp_path / "two")]
    one = [sys.executable, str(REPO / "train.py"), *common, "--per_device_batch_size", "4",
           "--output_dir", str(tmp_path / "one")]
    env = subprocess_env()
    for command in (two, one):
        if command[0] == "accelerate":  # the launcher next to this interpreter
            command[0] = str(Path(sys.executable).with_name("accelerate"))
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    single, double = _curve(tmp_path / "one" / "metrics.jsonl"), _curve(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in single] == list(range(1, 11)) == [r["step"] for r in double]
    for a, b in zip(single, double):
        for name in ("loss", "caption_loss", "concept_loss", "logit_scale"):
            assert abs(a[name] - b[name]) <= 1e-5, (a["step"], name, a[name], b[name])
    assert single[0]["loss"] != single[-1]["loss"]  # it trained
