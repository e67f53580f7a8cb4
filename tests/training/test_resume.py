"""A run killed with SIGKILL and resumed with --resume latest ends with the uninterrupted run's weights."""

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from cultureclip_training import train
from cultureclip_training.checkpointing import list_checkpoints

from training_helpers import REPO, cli_overrides, run_args, subprocess_env

KILLED_RUN = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from cultureclip_training import TrainArgs, train

def kill_at(step, model):
    if step == {kill_step}:
        os.kill(os.getpid(), signal.SIGKILL)  # mid-run: after the step-4 checkpoint, inside step 6

train(TrainArgs(**json.loads(sys.argv[1])), callbacks=[kill_at])
"""


def _args(tmp_path, cultwin_dir, tiny_model_dir, name):
    # LoRA with dropout 0.1 so the RNG state must be restored; 2 steps per epoch so the run crosses epochs
    return run_args(tmp_path / name, cultwin_dir, tiny_model_dir, recipe="faithful-cached-b32", per_device_batch_size=4,
                    micro_batches=2, max_steps=8, checkpoint_every=2, keep_checkpoints=2, learning_rate=1e-2,
                    warmup_steps=2, train_logit_scale=True, save_artifacts=True)


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, cultwin_dir, tiny_model_dir):
    reference = train(_args(tmp_path, cultwin_dir, tiny_model_dir, "straight"))

    args = _args(tmp_path, cultwin_dir, tiny_model_dir, "killed")
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN.format(kill_step=6), json.dumps(args.to_dict())],
                            capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert [p.name for p in list_checkpoints(args.output_dir)] == ["step-00000002", "step-00000004"]
    assert not (tmp_path / "killed" / "out" / "model").exists()

    resumed = subprocess.run([sys.executable, str(REPO / "train.py"), *cli_overrides(args), "--resume", "latest"],
                             capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "step 4" in resumed.stdout

    straight = load_file(str(tmp_path / "straight" / "out" / "model" / "model.safetensors"))
    again = load_file(str(tmp_path / "killed" / "out" / "model" / "model.safetensors"))
    assert straight.keys() == again.keys()
    moved = 0.0
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    for name in straight:
        torch.testing.assert_close(again[name], straight[name], atol=1e-6, rtol=0, msg=name)
        moved = max(moved, (straight[name] - base[name]).abs().max().item())
    assert moved > 1e-4  # training changed the weights, so equality is not trivial
    curve = [json.loads(line) for line in (tmp_path / "killed" / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == list(range(1, 9))
    for a, b in zip(curve, reference.history):
        assert abs(a["loss"] - b["loss"]) <= 1e-6
