"""Training throughput against the machine's roofline: precisions, torch.compile, and a Trainer-style baseline.

Scenarios (each variant runs in its own process, so its peak memory is its own):
- `b32-lora`: the paper recipe's model shape (ViT-B/32: 12+12 layers, widths 768/512, 224 px, patch 32; random
  weights from the config), LoRA r=4 on q/v of both towers, faithful objective, a small batch; ours at fp32 and
  under bf16 autocast (`mixed_precision: bf16`), optionally with the towers torch.compile'd.
- `demo`: the offline demo's tiny CLIP (width 96, 48 px, patch 8, 3 vision + 2 text layers, batch 64 examples,
  LoRA r=8 as its fine-tuning runs, 1 thread as its fine-tuning workers), fp32 vs bf16.
- `trainer`: ours (`cultureclip_training.train`: one vision call for both sides' images, one text call for all
  four text groups, text padded to the longest in the batch) vs a `transformers.Trainer` whose `compute_loss`
  runs six encoder calls on text padded to 77 tokens, as the released code does (width 256, full fine-tuning).

Printed per variant: samples/s (twin pairs, or examples for the clip objective), peak memory, FLOPs per sample
(counted by FlopCounterMode over the unmeasured warm-up steps, next to the analytic 2 * params * tokens forward
estimate times 2 for LoRA (activation gradients only) or 3 for full fine-tuning), achieved FLOP/s as a fraction of
the matmul roofline measured at the start with the same thread count, the ratio against the scenario's plain
alternative, and how closely the reduced-precision losses track fp32 step by step.

    python benchmarks/train_throughput.py [--scenario b32-lora,demo,trainer] [--steps 10] [--compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORDS = ("market kitchen festival street table wedding temple garden red blue green golden woven carved painted "
         "silk wooden clay a the on in at with of during").split()
CONCEPTS = ["jollof rice", "paella", "kimono", "hanbok", "sombrero", "conical hat", "didgeridoo", "alphorn"]

# model shape, training setup and default batch / threads of each scenario
SCENARIOS = {
    "b32-lora": dict(shape="b32", finetune="lora", objective="cultureclip", batch=16, threads=None, image_size=224,
                     variants=["fp32", "bf16"], baseline="fp32"),
    "demo": dict(shape="demo", finetune="lora", objective="clip", batch=64, threads=1, image_size=48,
                 variants=["fp32", "bf16"], baseline="fp32"),
    "trainer": dict(shape="width", finetune="full", objective="cultureclip", batch=32, threads=1, image_size=64,
                    variants=["fp32", "trainer"], baseline="trainer"),
}
SMALL = dict(width=32, layers=1, image_size=32)  # --small: every scenario shrunk to a smoke test


def build_data(rows: int, image_size: int):
    """Synthetic CulTwin rows (random images, varied-length captions) as a datasets.Dataset."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)

    def caption(concept: str) -> str:
        return f"a {concept} " + " ".join(rng.choice(WORDS, size=int(rng.integers(4, 14))))

    def image() -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8))

    values = {name: [] for name in ("image", "twin_image", "caption", "twin_caption", "concept", "twin_concept",
                                    "concept_id", "twin_concept_id")}
    for i in range(rows):
        p = i % (len(CONCEPTS) // 2)
        concept, twin = CONCEPTS[2 * p], CONCEPTS[2 * p + 1]
        values["image"].append(image())
        values["twin_image"].append(image())
        values["caption"].append(caption(concept))
        values["twin_caption"].append(caption(twin))
        values["concept"].append(concept)
        values["twin_concept"].append(twin)
        values["concept_id"].append(f"c{p}")
        values["twin_concept_id"].append(f"t{p}")
    features = datasets.Features({name: datasets.Image() if "image" in name else datasets.Value("string")
                                  for name in values})
    return datasets.Dataset.from_dict(values, features=features)


def build_model(opts):
    """The scenario's CultureCLIPModel (random weights, fixed seed) and its processor."""
    import torch

    from modeling_cultureclip import CultureCLIPConfig, CultureCLIPModel
    from modeling_cultureclip.tiny import EOS_ID, BOS_ID, PAD_ID, build_word_tokenizer, tiny_config, tiny_processor
    from modeling_cultureclip.tiny import words_of

    tokenizer = build_word_tokenizer(words_of(WORDS + CONCEPTS), max_length=77)
    objective = dict(loss_mode="faithful", caption_loss_weight=0.7, concept_loss_weight=0.3)
    torch.manual_seed(0)
    if opts.small:
        config = tiny_config(len(tokenizer), image_size=opts.image_size, patch_size=8, width=SMALL["width"],
                             vision_layers=SMALL["layers"], text_layers=SMALL["layers"], heads=2,
                             projection_dim=SMALL["width"], max_text_length=77, **objective)
    elif opts.shape == "b32":  # CLIPConfig's defaults are ViT-B/32's
        config = CultureCLIPConfig(text_config=dict(vocab_size=len(tokenizer), pad_token_id=PAD_ID,
                                                    bos_token_id=BOS_ID, eos_token_id=EOS_ID), **objective)
    elif opts.shape == "demo":  # cultureclip_demo.config.ModelSettings
        config = tiny_config(len(tokenizer), image_size=48, patch_size=8, width=96, vision_layers=3, text_layers=2,
                             heads=4, projection_dim=64, max_text_length=77, **objective)
    else:
        config = tiny_config(len(tokenizer), image_size=opts.image_size, patch_size=16, width=opts.width,
                             vision_layers=opts.layers, text_layers=opts.layers, heads=max(1, opts.width // 64),
                             projection_dim=opts.width, max_text_length=77, **objective)
    return CultureCLIPModel(config), tiny_processor(tokenizer, config.vision_config.image_size)


def analytic_flops_per_sample(model, processor, data, opts) -> float:
    """2 * matmul params * tokens per forward (vision on patches + CLS, text padded to the longest caption),
    times 2 for LoRA (activation gradients only) or 3 for full fine-tuning (weight gradients too)."""
    from benchmarks.roofline import linear_params, transformer_flops

    vision, text = model.config.vision_config, model.config.text_config
    patches = (vision.image_size // vision.patch_size) ** 2
    image = (2.0 * model.vision_model.embeddings.patch_embedding.weight.numel() * patches
             + transformer_flops(linear_params(model.vision_model.encoder), patches + 1, vision.num_hidden_layers,
                                 vision.hidden_size) + 2.0 * linear_params(model.visual_projection))
    length = max(len(ids) for ids in processor.tokenizer(list(data["caption"]) + list(data["twin_caption"]))
                 ["input_ids"])
    one_text = (transformer_flops(linear_params(model.text_model.encoder), length, text.num_hidden_layers,
                                  text.hidden_size) + 2.0 * linear_params(model.text_projection))
    # per sample: a twin pair has 2 images and 4 texts (2 captions, 2 concepts); a clip example 1 image, 1 caption
    forward = 2 * image + 4 * one_text if opts.objective == "cultureclip" else image + one_text
    return forward * (2 if opts.finetune == "lora" else 3)


class FlopWindow:
    """A train() callback that counts FLOPs (FlopCounterMode) from the start of step `first` to that of `stop`."""

    def __init__(self, first: int, stop: int):
        from torch.utils.flop_counter import FlopCounterMode

        from benchmarks.roofline import CPU_ATTENTION_FLOPS

        self.first, self.stop, self.flops = first, stop, None
        self.mode = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)

    def __call__(self, step: int, _model) -> None:
        if step == self.first:
            self.mode.__enter__()
        elif step == self.stop:
            self.mode.__exit__(None, None, None)
            self.flops = self.mode.get_total_flops()


def run_ours(opts, data, model, processor, output: str) -> dict:
    from cultureclip_training import build_args, train

    args = build_args("faithful-cached-b32", dict(
        model="in-memory", dataset="in-memory", output_dir=output, objective=opts.objective, finetune=opts.finetune,
        lora_rank=8 if opts.shape == "demo" else 4, lora_dropout=0.0 if opts.shape == "demo" else 0.1,
        per_device_batch_size=opts.batch, micro_batches=1, max_steps=opts.steps + opts.warmup, warmup_steps=0,
        learning_rate=1e-4 if opts.finetune == "lora" else 1e-5, checkpoint_every=0, save_artifacts=False,
        report_to="none", progress_bar=False, max_grad_norm=1.0, compile=opts.compile_towers,
        mixed_precision="bf16" if opts.variant == "bf16" else "no"))
    timings = []
    # FLOPs of the warm-up steps after the first (the first may compile); eager code only: compiled kernels do not
    # pass through FlopCounterMode, so a compiled variant borrows the eager count of the same model
    window = FlopWindow(2, opts.warmup + 1) if opts.warmup >= 2 and not opts.compile_towers else None
    callbacks = [lambda step, _m: timings.append((step, time.perf_counter()))] + ([window] if window else [])
    result = train(args, dataset=data, model=model, processor=processor, callbacks=callbacks)
    timings.append((timings[-1][0] + 1, time.perf_counter()))  # the end of the last step
    (first_step, first), (last_step, last) = timings[opts.warmup], timings[-1]
    samples_per_step = opts.batch
    flops = window.flops / ((opts.warmup - 1) * samples_per_step) if window and window.flops else None
    return {"samples_per_s": (last_step - first_step) * samples_per_step / (last - first),
            "losses": [row["loss"] for row in result.history], "flops_per_sample": flops,
            "first_step_s": timings[1][1] - timings[0][1]}


def run_trainer(opts, data, model, processor, output: str) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import Trainer, TrainerCallback, TrainingArguments

    tokenizer, image_processor = processor.tokenizer, processor.image_processor

    def encode(batch):
        out = {}
        for column, key in (("image", "pixel_values"), ("twin_image", "twin_pixel_values")):
            out[key] = image_processor(images=[im.convert("RGB") for im in batch[column]],
                                       return_tensors="pt")["pixel_values"]
        for column in ("caption", "twin_caption", "concept", "twin_concept"):
            tokens = tokenizer(list(batch[column]), padding="max_length", max_length=77, truncation=True,
                               return_tensors="pt")
            out[f"{column}_ids"], out[f"{column}_mask"] = tokens["input_ids"], tokens["attention_mask"]
        return out

    def negclip(image, text, twin_text, scale):
        targets = torch.arange(image.shape[0])
        return (F.cross_entropy(scale * torch.cat([image @ text.T, image @ twin_text.T], 1), targets)
                + F.cross_entropy(scale * text @ image.T, targets)) / 2

    class ReleaseTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            image = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
            twin_image = model.get_image_features(pixel_values=inputs["twin_pixel_values"]).pooler_output
            text = {c: model.get_text_features(input_ids=inputs[f"{c}_ids"],
                                               attention_mask=inputs[f"{c}_mask"]).pooler_output
                    for c in ("caption", "twin_caption", "concept", "twin_concept")}
            scale = model.logit_scale.exp()
            caption = (negclip(image, text["caption"], text["twin_caption"], scale)
                       + negclip(twin_image, text["twin_caption"], text["caption"], scale))
            concept = (negclip(image, text["concept"], text["twin_concept"], scale)
                       + negclip(twin_image, text["twin_concept"], text["concept"], scale))
            loss = 0.7 * caption + 0.3 * concept
            return (loss, {}) if return_outputs else loss

    timings, window = [], FlopWindow(2, opts.warmup + 1) if opts.warmup >= 2 else None

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            timings.append((state.global_step, time.perf_counter()))
            if window:
                window(state.global_step + 1, None)

    model.logit_scale.requires_grad_(False)  # as in our run (faithful recipe: temperature frozen)
    arguments = TrainingArguments(output_dir=output, per_device_train_batch_size=opts.batch,
                                  max_steps=opts.steps + opts.warmup, learning_rate=1e-5, weight_decay=0.1,
                                  lr_scheduler_type="cosine", max_grad_norm=1.0, save_strategy="no", report_to=[],
                                  use_cpu=opts.device == "cpu", dataloader_num_workers=0,
                                  remove_unused_columns=False, disable_tqdm=True, logging_strategy="no", seed=42)
    trainer = ReleaseTrainer(model=model, args=arguments, train_dataset=data.with_transform(encode),
                             callbacks=[Clock()])
    trainer.train()
    (first_step, first), (last_step, last) = timings[opts.warmup], timings[-1]
    flops = window.flops / ((opts.warmup - 1) * opts.batch) if window and window.flops else None
    return {"samples_per_s": (last_step - first_step) * opts.batch / (last - first), "losses": [],
            "flops_per_sample": flops, "first_step_s": timings[1][1] - timings[0][1]}


def measure(opts) -> dict:
    """One variant's figures (run in the variant's own process unless --in-process)."""
    import torch

    torch.set_num_threads(opts.threads)
    data = build_data(opts.rows, opts.image_size)
    model, processor = build_model(opts)
    analytic = analytic_flops_per_sample(model, processor, data, opts)
    with tempfile.TemporaryDirectory() as output:
        runner = run_trainer if opts.variant == "trainer" else run_ours
        row = runner(opts, data, model, processor, output)
    if torch.cuda.is_available():
        row["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
        row["memory_kind"] = "CUDA max allocated"
    else:
        row["peak_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        row["memory_kind"] = "peak RSS" + (" of the shared process (--in-process)" if opts.in_process else "")
    row.update(variant=opts.variant, compiled=opts.compile_towers, analytic_flops_per_sample=analytic,
               params_m=sum(p.numel() for p in model.parameters()) / 1e6)
    return row


def run_variant(opts, scenario: str, variant: str, compile_towers: bool, threads: int) -> dict:
    """One variant in a fresh process (its own peak memory); returns the child's JSON line."""
    setup = SCENARIOS[scenario]
    if opts.in_process:  # smoke runs: no process start-up per variant, peak memory shared
        child_opts = argparse.Namespace(**{**vars(opts), "scenario": scenario, "variant": variant,
                                           "compile_towers": compile_towers, "threads": threads,
                                           "batch": opts.batch or setup["batch"], "shape": setup["shape"],
                                           "finetune": setup["finetune"], "objective": setup["objective"],
                                           "image_size": SMALL["image_size"] if opts.small else setup["image_size"]})
        return measure(child_opts)
    command = [sys.executable, __file__, "--child", "--scenario", scenario, "--variant", variant,
               "--threads", str(threads), "--steps", str(opts.steps), "--warmup", str(opts.warmup),
               "--batch", str(opts.batch or setup["batch"]), "--rows", str(opts.rows),
               "--width", str(opts.width), "--layers", str(opts.layers), "--device", opts.device,
               "--image-size", str(SMALL["image_size"] if opts.small else setup["image_size"])]
    command += ["--small"] if opts.small else []
    command += ["--compile-towers"] if compile_towers else []
    env = dict(os.environ)
    if opts.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # accelerate would otherwise pick a GPU
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=opts.timeout)
    if done.returncode != 0:
        raise SystemExit(f"{scenario}/{variant} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def loss_agreement(reference: list[float], other: list[float]) -> float:
    """Largest relative difference of per-step losses between two runs of the same steps."""
    pairs = list(zip(reference, other))
    return max(abs(a - b) / abs(a) for a, b in pairs) if pairs else float("nan")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="b32-lora,demo,trainer", help=f"comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--steps", type=int, default=10, help="measured steps")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured first steps (FLOPs counted on 2..warmup)")
    parser.add_argument("--batch", type=int, default=None, help="per-step samples (default: the scenario's)")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--width", type=int, default=256, help="trainer scenario: width of both towers")
    parser.add_argument("--layers", type=int, default=4, help="trainer scenario: layers per tower")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the scenario's)")
    parser.add_argument("--compile", action="store_true", help="also run bf16 with the towers torch.compile'd")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    parser.add_argument("--small", action="store_true", help="tiny shapes for a smoke run (CI)")
    parser.add_argument("--peak-sizes", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--in-process", action="store_true",
                        help="run the variants in this process (smoke runs; peak memory is then not per variant)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per variant process")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--compile-towers", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=64, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.child:
        setup = SCENARIOS[opts.scenario]
        opts.shape, opts.finetune, opts.objective = setup["shape"], setup["finetune"], setup["objective"]
        print(json.dumps(measure(opts)))
        return {}
    import torch

    from benchmarks.roofline import (Rate, check_output, describe_machine, describe_peaks, machine_info, rooflines,
                                     write_report)

    check_output(opts.json, opts.overwrite)

    scenarios = [s.strip() for s in opts.scenario.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"--scenario: unknown {unknown}; expected some of {', '.join(SCENARIOS)}")
    device = torch.device(opts.device)
    report: dict = {"scenarios": {}, "roofline": {}}
    peaks_by_threads: dict[int, dict] = {}
    for scenario in scenarios:
        setup = SCENARIOS[scenario]
        threads = opts.threads or setup["threads"] or os.cpu_count() or 1
        if threads not in peaks_by_threads:
            torch.set_num_threads(threads)
            peaks_by_threads[threads] = rooflines(device, sizes=opts.peak_sizes)
            info = machine_info(device)
            report["machine"] = info
            report["roofline"][f"{threads}_threads"] = peaks_by_threads[threads]
            print(describe_machine(info))
            print(describe_peaks(peaks_by_threads[threads]))
        peaks = peaks_by_threads[threads]
        variants = [(v, False) for v in setup["variants"]]
        if opts.compile and "bf16" in setup["variants"]:
            variants.append(("bf16", True))
        rows = {}
        for variant, compiled in variants:
            key = variant + ("+compile" if compiled else "")
            rows[key] = run_variant(opts, scenario, variant, compiled, threads)
        eager_flops = next((r["flops_per_sample"] for r in rows.values() if r["flops_per_sample"]), None)
        batch = opts.batch or setup["batch"]
        print(f"[{scenario}] {setup['finetune']} fine-tuning, {setup['objective']} objective, "
              f"{next(iter(rows.values()))['params_m']:.0f}M params, batch {batch}, {opts.steps} measured steps after "
              f"{opts.warmup} warm-up, {threads} thread(s), device {opts.device}")
        header = (f"  {'variant':<34}{'samples/s':>10}{'peak MiB':>10}{'GFLOP/sample':>14}{'analytic':>10}"
                  f"{'GFLOP/s':>9}{'of roofline':>13}")
        print(header)
        entry: dict = {"variants": {}, "threads": threads, "batch": batch}
        for key, row in rows.items():
            flops = row["flops_per_sample"] or eager_flops or row["analytic_flops_per_sample"]
            precision = "bf16" if key.startswith("bf16") else "fp32"
            rate = Rate(key, row["samples_per_s"], flops, precision)
            name = {"trainer": "Trainer (6 encoder calls, pad to 77)", "fp32": "ours fp32",
                    "bf16": "ours bf16 autocast", "bf16+compile": "ours bf16 autocast + torch.compile"}[key]
            if scenario == "trainer" and key == "fp32":
                name = "ours (2 encoder calls, dynamic pad)"
            print(f"  {name:<34}{row['samples_per_s']:>10.2f}{row['peak_memory_mib']:>10.0f}{flops / 1e9:>14.3f}"
                  f"{row['analytic_flops_per_sample'] / 1e9:>10.3f}{rate.flops_per_s / 1e9:>9.1f}"
                  f"{rate.roofline_fraction(peaks):>12.1%}")
            entry["variants"][key] = {**row, **rate.to_dict(peaks)}
        base = rows[setup["baseline"]]
        ratios = {key: row["samples_per_s"] / base["samples_per_s"] for key, row in rows.items()
                  if key != setup["baseline"]}
        print("  speed vs " + ("Trainer" if setup["baseline"] == "trainer" else "fp32") + ": "
              + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
              + " | peak memory vs baseline: " + ", ".join(
                  f"{k} {rows[k]['peak_memory_mib'] / base['peak_memory_mib']:.2f}x" for k in ratios))
        entry["speed_vs_baseline"] = ratios
        if "bf16" in rows and rows["fp32"]["losses"]:
            agreement = {k: loss_agreement(rows["fp32"]["losses"], rows[k]["losses"]) for k in rows
                         if k.startswith("bf16")}
            print("  loss agreement with fp32 (largest relative per-step difference over all "
                  f"{len(rows['fp32']['losses'])} steps): " + ", ".join(f"{k} {v:.2%}" for k, v in agreement.items()))
            entry["loss_agreement"] = agreement
        if "bf16+compile" in rows:
            print(f"  torch.compile: first step {rows['bf16+compile']['first_step_s']:.1f} s (compiling) vs "
                  f"{rows['bf16']['first_step_s']:.1f} s eager")
        report["scenarios"][scenario] = entry
    write_report(opts.json, report)
    return report


if __name__ == "__main__":
    main()
