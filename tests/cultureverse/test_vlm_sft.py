"""CultureVLM LoRA fine-tuning: a few steps on both tiny families, PEFT adapter, SIGKILL + resume, bad data."""

from __future__ import annotations

import json
import subprocess
import sys

import datasets
import pytest
import torch
from safetensors.torch import load_file

from cultureclip_training import RecipeError
from cultureclip_training.checkpointing import list_checkpoints
from cultureclip_training.vlm_sft import VLMDataError, VLMTrainArgs, parse_vlm_command_line, read_vlm_recipe, train_vlm

from cultureverse_helpers import FAMILIES, REPO, load_vlm, subprocess_env


def _args(out, model_dir, bench, **over):
    values = {**read_vlm_recipe("vlm-demo"), "model": str(model_dir), "dataset": str(bench), "output_dir": str(out),
              "max_train_samples": 8, "progress_bar": False, **over}
    return VLMTrainArgs(**values)


@pytest.mark.parametrize("family", FAMILIES)
def test_few_steps_write_a_peft_adapter(family, tiny_vlm_dirs, offline_benchmark, tmp_path):
    from peft import PeftModel

    args = _args(tmp_path / family, tiny_vlm_dirs[family], offline_benchmark, max_steps=3, checkpoint_every=0)
    result = train_vlm(args)
    assert result.steps == 3 and [h["step"] for h in result.history] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(h["loss"])) and h["loss"] > 0 for h in result.history)
    adapter = result.adapter_dir
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert weights and all("language_model" in k for k in weights)  # the vision tower stays frozen
    assert max(v.abs().max().item() for k, v in weights.items() if "lora_B" in k) > 0  # B starts at 0: it trained
    base, _ = load_vlm(tiny_vlm_dirs[family])
    loaded = PeftModel.from_pretrained(base, str(adapter))
    assert sum(1 for n, _ in loaded.named_parameters() if "lora_" in n) == len(weights)
    assert "library_name: peft" in (adapter / "README.md").read_text()


KILLED_RUN = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from cultureclip_training.vlm_sft import VLMTrainArgs, train_vlm

def kill_at(step, model):
    if step == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # inside step 5, after the step-4 checkpoint

train_vlm(VLMTrainArgs(**json.loads(sys.argv[1])), callbacks=[kill_at])
"""


def test_sigkill_then_resume_matches_uninterrupted(tiny_vlm_dirs, offline_benchmark, tmp_path):
    # LoRA dropout 0.1 needs the RNG restored; 8 rows / 4 per step = 2 steps per epoch, so the run crosses epochs.
    common = dict(max_steps=6, checkpoint_every=2, keep_checkpoints=2, learning_rate=2e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count as the child processes, so the float sums agree
    try:
        straight = train_vlm(_args(tmp_path / "straight", tiny_vlm_dirs["llava"], offline_benchmark, **common))
    finally:
        torch.set_num_threads(threads)

    args = _args(tmp_path / "killed", tiny_vlm_dirs["llava"], offline_benchmark, **common)
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, json.dumps(args.to_dict())], capture_output=True,
                            text=True, env=subprocess_env(), cwd=tmp_path, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert [p.name for p in list_checkpoints(args.output_dir)] == ["step-00000002", "step-00000004"]
    assert not (tmp_path / "killed" / "adapter").exists()

    overrides = [f"--{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in args.to_dict().items()
                 if v is not None and k != "recipe"]
    resumed = subprocess.run([sys.executable, str(REPO / "train_vlm.py"), *overrides, "--resume", "latest"],
                             capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "step 4" in resumed.stdout

    expected = load_file(str(straight.adapter_dir / "adapter_model.safetensors"))
    again = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    assert expected.keys() == again.keys()
    assert max(v.abs().max().item() for k, v in expected.items() if "lora_B" in k) > 1e-4  # not trivially equal
    for name in expected:
        torch.testing.assert_close(again[name], expected[name], atol=1e-6, rtol=0, msg=name)
    curve = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == list(range(1, 7))
    for a, b in zip(curve, straight.history):
        assert abs(a["loss"] - b["loss"]) <= 1e-6


@pytest.mark.parametrize("column,value,message", [
    ("answer", None, "no answer key"),
    ("answer", "F", "not among the option letters"),
    ("image", None, "field 'image': missing"),
])
def test_bad_training_rows_name_the_row(offline_benchmark, tiny_vlm_dirs, tmp_path, column, value, message):
    train = datasets.load_dataset(str(offline_benchmark))["train"].select(range(4))
    rows = train.to_list()
    rows[3][column] = value
    bad = datasets.Dataset.from_list(rows, features=train.features)
    args = _args(tmp_path, tiny_vlm_dirs["llava"], offline_benchmark, max_steps=1)
    with pytest.raises(VLMDataError, match=message) as info:
        train_vlm(args, dataset=bad)
    assert "row 3" in str(info.value)


def test_recipe_and_command_line():
    args = parse_vlm_command_line(["--recipe", "vlm-demo", "--max_steps", "3", "--lora_targets", "q_proj,o_proj"])
    assert args.max_steps == 3 and args.lora_targets == ["q_proj", "o_proj"] and args.recipe == "vlm-demo"
    assert read_vlm_recipe("vlm-qwen2.5-vl-7b")["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    with pytest.raises(RecipeError, match="unknown field 'lora_rnak'"):
        parse_vlm_command_line(["--lora_rnak", "4"])
    with pytest.raises(RecipeError, match="max_steps"):
        parse_vlm_command_line(["--max_steps", "0"])
