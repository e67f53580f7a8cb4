"""One process and two gloo processes on the same global batch give the same loss curve.

Robust on a loaded machine: the rendezvous port comes from outside the ephemeral range (free_port), the ranks
meet within CULTURECLIP_RENDEZVOUS_TIMEOUT_S instead of torch's 30 minutes, and a launch whose ranks never met is
retried once on a new port with its output kept for the failure message.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from training_helpers import REPO, free_port, subprocess_env


def _launch(command: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run `command` in its own process group; on timeout kill the whole group (launcher and ranks)."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += f"\n[killed after {timeout} s]"
        return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _curve(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_vs_two_processes_same_loss_curve(tmp_path, cultwin_dir, tiny_model_dir):
    common = ["--recipe", "demo", "--dataset", str(cultwin_dir), "--model", str(tiny_model_dir), "--max_steps", "10",
              "--micro_batches", "2", "--seed", "7", "--report_to", "none", "--progress_bar", "false",
              "--save_artifacts", "false", "--checkpoint_every", "0"]
    # global batch 8 pairs per step either way: 1 x 4 x 2 micro-batches, or 2 ranks x 2 x 2
    launcher = str(Path(sys.executable).with_name("accelerate"))  # the launcher next to this interpreter

    def two(port: int) -> list[str]:
        return [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
                str(REPO / "train.py"), *common, "--per_device_batch_size", "2", "--overwrite",
                "--output_dir", str(tmp_path / "two")]

    one = [sys.executable, str(REPO / "train.py"), *common, "--per_device_batch_size", "4",
           "--output_dir", str(tmp_path / "one")]
    env = {**subprocess_env(), "CULTURECLIP_RENDEZVOUS_TIMEOUT_S": "90"}
    done = _launch(two(free_port()), env, tmp_path, timeout=280)
    if done.returncode != 0 and ("never started" in done.stderr or "cannot listen" in done.stderr):
        done = _launch(two(free_port()), env, tmp_path, timeout=280)  # the port was taken: once more, elsewhere
    assert done.returncode == 0, done.stderr[-3000:]
    done = _launch(one, env, tmp_path, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    single, double = _curve(tmp_path / "one" / "metrics.jsonl"), _curve(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in single] == list(range(1, 11)) == [r["step"] for r in double]
    for a, b in zip(single, double):
        for name in ("loss", "caption_loss", "concept_loss", "logit_scale"):
            assert abs(a[name] - b[name]) <= 1e-5, (a["step"], name, a[name], b[name])
    assert single[0]["loss"] != single[-1]["loss"]  # it trained
