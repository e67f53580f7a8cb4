"""Training precision: `mixed_precision: bf16` really autocasts the towers on CPU, while the loss, the logit scale and
the LoRA weights stay fp32, and the bf16 run's losses track the fp32 run's step by step."""

from __future__ import annotations

import pytest
import torch

import cultureclip_training.loop as loop
from cultureclip_training import RecipeError, train
from cultureclip_training.feature_cache import compile_towers

from training_helpers import run_args

STEPS = 8
# bf16 keeps 8 significant bits (relative rounding 2^-9); over 8 steps of the tiny model the per-step losses of the
# two runs stay within 0.5% of each other (measured: at most 0.07%, while the loss falls 2%). A loss computed in
# bf16 would not necessarily break this, which is why the dtypes are checked directly as well.
RELATIVE_TOLERANCE = 0.005


def _run(tmp_path, cultwin_dir, tiny_model_dir, monkeypatch, precision: str, **overrides):
    """Train STEPS LoRA steps (logit scale trained too) and record the dtypes the step saw."""
    seen = {"tower_outputs": set(), "loss_inputs": set(), "loss": set()}
    real_loss = loop.objective_loss

    def spy_loss(features, scale, *args, **kwargs):
        seen["loss_inputs"].update(v.dtype for v in features.values() if v.is_floating_point())
        seen["loss_inputs"].add(scale.dtype)
        terms = real_loss(features, scale, *args, **kwargs)
        seen["loss"].add(terms["loss"].dtype)
        return terms

    def hook(module, inputs, output):
        seen["tower_outputs"].add(output.dtype)

    def register(step, model):
        if step == 1:
            for name, module in model.named_modules():
                if name.endswith("mlp.fc1"):  # a plain Linear inside every tower layer
                    module.register_forward_hook(hook)

    monkeypatch.setattr(loop, "objective_loss", spy_loss)
    values = dict(finetune="lora", lora_dropout=0.0, train_logit_scale=True, max_steps=STEPS,
                  mixed_precision=precision)
    values.update(overrides)
    args = run_args(tmp_path / precision, cultwin_dir, tiny_model_dir, **values)
    result = train(args, callbacks=[register])
    return result, seen


def test_bf16_autocasts_on_cpu_and_tracks_fp32(tmp_path, cultwin_dir, tiny_model_dir, monkeypatch):
    fp32, seen32 = _run(tmp_path, cultwin_dir, tiny_model_dir, monkeypatch, "no")
    bf16, seen16 = _run(tmp_path, cultwin_dir, tiny_model_dir, monkeypatch, "bf16")

    # the towers' matmuls really ran in bf16 (and in fp32 without mixed precision)
    assert seen32["tower_outputs"] == {torch.float32}
    assert seen16["tower_outputs"] == {torch.bfloat16}
    # the loss sees fp32 features and an fp32 logit scale, and is itself fp32
    for seen in (seen32, seen16):
        assert seen["loss_inputs"] == {torch.float32} and seen["loss"] == {torch.float32}
    # master weights stay fp32: LoRA adapters and the (trained) logit scale
    trained = {name: p for name, p in bf16.model.named_parameters() if p.requires_grad}
    assert any("lora_" in name for name in trained) and any(name.endswith("logit_scale") for name in trained)
    assert {p.dtype for p in trained.values()} == {torch.float32}
    assert fp32.history[-1]["logit_scale"] != fp32.history[0]["logit_scale"]  # the scale did train

    losses32 = [row["loss"] for row in fp32.history]
    losses16 = [row["loss"] for row in bf16.history]
    assert len(losses32) == len(losses16) == STEPS
    assert losses32[-1] < losses32[0]  # the runs learn, so tracking is not trivially about a constant
    for step, (a, b) in enumerate(zip(losses32, losses16), start=1):
        assert abs(a - b) <= RELATIVE_TOLERANCE * abs(a), f"step {step}: fp32 loss {a:.5f} vs bf16 {b:.5f}"
    assert losses16 != losses32  # bf16 did change the arithmetic


def test_fp16_on_cpu_is_refused_not_silently_fp32(tmp_path, cultwin_dir, tiny_model_dir):
    args = run_args(tmp_path, cultwin_dir, tiny_model_dir, max_steps=1, mixed_precision="fp16")
    with pytest.raises(RecipeError, match="mixed_precision=fp16 is not available on cpu"):
        train(args)


def test_half_precision_model_is_trained_with_fp32_weights(tmp_path, cultwin_dir, tiny_model_dir):
    from modeling_cultureclip import CultureCLIPModel
    from transformers import CLIPProcessor

    model = CultureCLIPModel.from_pretrained(tiny_model_dir).to(torch.bfloat16)
    processor = CLIPProcessor.from_pretrained(tiny_model_dir)
    args = run_args(tmp_path, cultwin_dir, tiny_model_dir, max_steps=1, mixed_precision="bf16", finetune="full")
    result = train(args, model=model, processor=processor)
    assert {p.dtype for p in result.model.parameters()} == {torch.float32}


def test_compile_towers_keeps_parameter_names():
    from modeling_cultureclip import CultureCLIPModel
    from modeling_cultureclip.tiny import tiny_config

    model = CultureCLIPModel(tiny_config(20))
    names = list(model.state_dict())
    assert compile_towers(model) == ["vision_model", "text_model"]
    assert list(model.state_dict()) == names
    with pytest.raises(ValueError, match="no vision_model / text_model"):
        compile_towers(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, cultwin_dir, tiny_model_dir, monkeypatch):
    eager, _ = _run(tmp_path / "eager", cultwin_dir, tiny_model_dir, monkeypatch, "no", max_steps=2)
    compiled, _ = _run(tmp_path / "compiled", cultwin_dir, tiny_model_dir, monkeypatch, "no", max_steps=2,
                       compile=True)
    for a, b in zip(eager.history, compiled.history):
        assert abs(a["loss"] - b["loss"]) <= 1e-4 * abs(a["loss"])
