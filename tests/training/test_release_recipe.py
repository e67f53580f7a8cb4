"""`release-b32` trains as the authors' release does: its first optimizer steps equal a hand-written reference of the
release's loop (HF Trainer + their CustomTrainer.training_step), written here with transformers' CLIPModel and PEFT.

The reference follows the release line by line: CLIPModel with LoRA on q/v (PEFT, task FEATURE_EXTRACTION, explicit
module names), texts padded to max_length and encoded WITHOUT an attention mask, six separate encoder calls per
micro-batch, the released negclip formulas on unnormalised features, `loss / accumulation_steps` backward per
micro-batch, gradient-norm clipping at 1.0, torch AdamW with weight decay on every LoRA weight, and the linear
warmup/decay schedule written out by hand. Only two things are taken from our side on purpose: the rows of each
micro-batch (the sample order is a documented departure) and the LoRA initial draws (copied, as PEFT's init
depends on RNG order). LoRA dropout is 0 here so that both sides see the same network; the recipe keeps 0.1.
"""

import json
import sys
from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, TaskType, get_peft_model
from transformers import CLIPConfig, CLIPModel, CLIPProcessor

from cultureclip_training import train
from cultureclip_training.data import BatchPlan
from modeling_cultureclip import CultureCLIPModel

from training_helpers import REPO, launch, launch_on_free_port, run_args, subprocess_env

PER_DEVICE, ACCUMULATION, STEPS, WARMUP, LR = 4, 2, 3, 2, 5e-3


def _negclip(image, text, twin_text, scale):
    targets = torch.arange(image.shape[0])
    image_to_text = torch.cat([scale * image @ text.T, scale * image @ twin_text.T], dim=-1)
    return (F.cross_entropy(image_to_text, targets) + F.cross_entropy(scale * text @ image.T, targets)) / 2


def _release_lora_model(model_dir):
    """The release's model set-up: CLIPModel, LoRA on q/v of every layer of both towers, everything else frozen."""
    ours = CultureCLIPModel.from_pretrained(model_dir)
    settings = ours.config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        settings.pop(key, None)
    clip = CLIPModel(CLIPConfig(**{k: v for k, v in settings.items() if k in CLIPConfig().to_dict()}))
    clip.load_state_dict(ours.state_dict(), strict=True)
    targets = []
    for tower, layers in (("vision_model", clip.config.vision_config.num_hidden_layers),
                          ("text_model", clip.config.text_config.num_hidden_layers)):
        for i in range(layers):
            targets += [f"{tower}.encoder.layers.{i}.self_attn.q_proj", f"{tower}.encoder.layers.{i}.self_attn.v_proj"]
    config = LoraConfig(r=4, lora_alpha=16, lora_dropout=0.0, target_modules=targets, bias="none",
                        task_type=TaskType.FEATURE_EXTRACTION)
    return get_peft_model(clip, config)


def _trainable(model):
    return {name.replace(".base_model.model", ""): p for name, p in model.named_parameters() if p.requires_grad}


def _reference_states(model_dir, cultwin_dir, initial):
    """Trainable weights after each of the first STEPS optimizer steps of the release's loop."""
    rows = datasets.load_dataset(str(cultwin_dir))["train"]
    processor = CLIPProcessor.from_pretrained(model_dir)
    model = _release_lora_model(model_dir)
    params = _trainable(model)
    assert params.keys() == initial.keys()
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(initial[name])
    optimizer = torch.optim.AdamW(list(params.values()), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    # the Trainer's default schedule (get_linear_schedule_with_warmup), written out
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: t / WARMUP if t < WARMUP else max(0.0, (STEPS - t) / (STEPS - WARMUP)))
    plan = BatchPlan(len(rows), PER_DEVICE, ACCUMULATION, world_size=1, rank=0, seed=42)
    max_length = model.config.text_config.max_position_embeddings

    def texts(batch, column):
        ids = processor.tokenizer(list(batch[column]), padding="max_length", max_length=max_length,
                                  truncation=True, return_tensors="pt")["input_ids"]
        return model.get_text_features(input_ids=ids).pooler_output  # no attention mask, as released

    def images(batch, column):
        pixels = processor.image_processor([im.convert("RGB") for im in batch[column]], return_tensors="pt")
        return model.get_image_features(pixel_values=pixels["pixel_values"]).pooler_output

    states, losses = [], []
    model.train()
    for step in range(STEPS):
        epoch, in_epoch = divmod(step, plan.steps_per_epoch)
        logged = 0.0
        for indices in plan.step_indices(epoch, in_epoch):
            batch = rows[indices]
            i_pos, c_pos, i_neg, c_neg = (images(batch, "image"), texts(batch, "caption"),
                                          images(batch, "twin_image"), texts(batch, "twin_caption"))
            k_pos, k_neg = texts(batch, "concept"), texts(batch, "twin_concept")
            scale = model.logit_scale.exp()
            caption = _negclip(i_pos, c_pos, c_neg, scale) + _negclip(i_neg, c_neg, c_pos, scale)
            concept = _negclip(i_pos, k_pos, k_neg, scale) + _negclip(i_neg, k_neg, k_pos, scale)
            loss = (0.7 * caption + 0.3 * concept) / ACCUMULATION  # CustomTrainer.training_step
            loss.backward()
            logged += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        states.append({name: p.detach().clone() for name, p in params.items()})
        losses.append(logged)
    return states, losses


def _our_states(tmp_path, cultwin_dir, model_dir, **overrides):
    """Trainable weights before step 1 and after each step of our trainer on the release-b32 recipe."""
    seen = []

    def snapshot(step, model):
        seen.append({name: p.detach().clone() for name, p in _trainable(model).items()})

    args = run_args(tmp_path, cultwin_dir, model_dir, recipe="release-b32", per_device_batch_size=PER_DEVICE,
                    micro_batches=ACCUMULATION, max_steps=STEPS, warmup_steps=WARMUP, learning_rate=LR,
                    lora_dropout=0.0, **overrides)
    result = train(args, callbacks=[snapshot])
    final = {name: p.detach().clone() for name, p in _trainable(result.model).items()}
    return seen[0], seen[1:] + [final], [row["loss"] for row in result.history]


def _max_difference(a, b):
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def test_release_b32_first_steps_equal_the_release_loop(tmp_path, cultwin_dir, tiny_model_dir):
    initial, ours, our_losses = _our_states(tmp_path / "plain", cultwin_dir, tiny_model_dir)
    reference, reference_losses = _reference_states(tiny_model_dir, cultwin_dir, initial)
    for step, (mine, theirs) in enumerate(zip(ours, reference), start=1):
        assert _max_difference(mine, theirs) <= 1e-6, f"step {step}"
    assert our_losses == pytest.approx(reference_losses, rel=1e-6)
    assert _max_difference(initial, reference[-1]) > 1e-3  # the weights really moved (lr 0 only at step 1)

    # the same steps with all-negative feature caching are measurably different: the test can tell them apart
    _, cached, _ = _our_states(tmp_path / "cached", cultwin_dir, tiny_model_dir, accumulation="feature_cache")
    assert _max_difference(cached[-1], reference[-1]) > 1e-4


def test_plain_accumulation_on_two_processes_keeps_negatives_per_device(tmp_path, cultwin_dir, tiny_model_dir):
    """Two gloo ranks x 1 micro-batch of 4 train like one process x 2 plain micro-batches of the same 4 rows each:
    each rank's loss sees only its own rows (no gathered negatives) and DDP averages the gradients, as the
    release's per-device negatives on several GPUs."""
    common = ["--recipe", "release-b32", "--dataset", str(cultwin_dir), "--model", str(tiny_model_dir),
              "--max_steps", "4", "--warmup_steps", "1", "--learning_rate", "5e-3", "--lora_dropout", "0",
              "--per_device_batch_size", "4", "--report_to", "none", "--progress_bar", "false",
              "--save_artifacts", "false", "--checkpoint_every", "0"]

    def two(port: int) -> list[str]:
        return [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                str(port), str(REPO / "train.py"), *common, "--micro_batches", "1", "--overwrite",
                "--output_dir", str(tmp_path / "two")]

    one = [sys.executable, str(REPO / "train.py"), *common, "--micro_batches", "2", "--output_dir",
           str(tmp_path / "one")]
    env = {**subprocess_env(), "CULTURECLIP_RENDEZVOUS_TIMEOUT_S": "90"}
    done = launch_on_free_port(two, env, tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    done = launch(one, env, tmp_path, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    curves = [[json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
              for name in ("one", "two")]
    assert [r["step"] for r in curves[0]] == [1, 2, 3, 4] == [r["step"] for r in curves[1]]
    for a, b in zip(*curves):
        for name in ("loss", "caption_loss", "concept_loss"):
            assert abs(a[name] - b[name]) <= 1e-4 * abs(a[name]), (a["step"], name, a[name], b[name])
    assert curves[0][0]["loss"] != curves[0][-1]["loss"]
