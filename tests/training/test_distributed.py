"""One process and two gloo processes on the same global batch give the same loss curve.

Robust on a loaded machine: the rendezvous port comes from outside the ephemeral range (free_port), the ranks
meet within CULTURECLIP_RENDEZVOUS_TIMEOUT_S instead of torch's 30 minutes, and a launch whose ranks never met is
retried once on a new port with its output kept for the failure message.
"""

import json
import sys
from pathlib import Path

from training_helpers import REPO, launch, launch_on_free_port, subprocess_env


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
    done = launch_on_free_port(two, env, tmp_path, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    done = launch(one, env, tmp_path, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    single, double = _curve(tmp_path / "one" / "metrics.jsonl"), _curve(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in single] == list(range(1, 11)) == [r["step"] for r in double]
    for a, b in zip(single, double):
        for name in ("loss", "caption_loss", "concept_loss", "logit_scale"):
            assert abs(a[name] - b[name]) <= 1e-5, (a["step"], name, a[name], b[name])
    assert single[0]["loss"] != single[-1]["loss"]  # it trained


END_PROCESSES_CHILD = """
import sys, weakref
import torch, torch.distributed as dist
from accelerate import Accelerator
from cultureclip_training.distributed import end_processes

dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
accelerator = Accelerator(cpu=True)
wrapped = accelerator.prepare(torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 3)))
wrapped(torch.ones(2, 3)).sum().backward()
dist.barrier()
alive = weakref.ref(wrapped)
del wrapped
seen, destroy = [], dist.destroy_process_group

def watched(group=None):
    seen.append(alive() is None)
    destroy(group)

dist.destroy_process_group = watched
end_processes(accelerator)
print("freed-before-destroy", seen, "still-initialised", dist.is_initialized())
"""


def test_end_processes_frees_the_ddp_wrapper_before_the_process_group(tmp_path):
    """The order that keeps a gloo rank from hanging at exit: when the group is destroyed, no DDP Reducer (held
    by accelerate's list of prepared models) may own it any more, and after end_processes the group is gone."""
    done = launch([sys.executable, "-c", END_PROCESSES_CHILD, str(tmp_path / "store")], subprocess_env(), tmp_path,
                  timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "freed-before-destroy [True] still-initialised False" in done.stdout, done.stdout
