"""Training throughput: our feature-cached step vs a transformers `Trainer` loop with the release's data path.

Both train the same model (a CLIP-shaped CultureCLIPModel, random weights) on the same synthetic CulTwin rows with
the faithful objective for the same number of steps and the same batch:
- ours: `cultureclip_training.train` (one vision call for both sides' images, one text call for all four text
  groups, text padded to the longest in the batch);
- baseline: `transformers.Trainer` whose `compute_loss` runs six encoder calls (I+, I-, C+, C-, K+, K-) on text
  padded to 77 tokens, as the released code does.
Each variant runs in its own process so peak resident memory (ru_maxrss) is its own. Prints samples/s, peak
memory and the ratios.

    python benchmarks/train_throughput.py [--steps 20] [--batch 32] [--width 256] [--threads 1]
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


def build_model(width: int, layers: int, image_size: int):
    import torch

    from modeling_cultureclip import CultureCLIPModel
    from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of

    tokenizer = build_word_tokenizer(words_of(WORDS + CONCEPTS), max_length=77)
    torch.manual_seed(0)
    config = tiny_config(len(tokenizer), image_size=image_size, patch_size=16, width=width, vision_layers=layers,
                         text_layers=layers, heads=max(1, width // 64), projection_dim=width, max_text_length=77,
                         loss_mode="faithful", caption_loss_weight=0.7, concept_loss_weight=0.3)
    return CultureCLIPModel(config), tiny_processor(tokenizer, image_size)


def run_ours(opts, data, model, processor, output: str) -> float:
    from cultureclip_training import build_args, train

    args = build_args("faithful-cached-b32", dict(model="in-memory", dataset="in-memory", output_dir=output,
                                        finetune="full", per_device_batch_size=opts.batch, micro_batches=1,
                                        max_steps=opts.steps + opts.warmup, warmup_steps=0, learning_rate=1e-5,
                                        checkpoint_every=0, save_artifacts=False, report_to="none",
                                        progress_bar=False, max_grad_norm=1.0))
    timings = []
    train(args, dataset=data, model=model, processor=processor,
          callbacks=[lambda step, _m: timings.append((step, time.perf_counter()))])
    # time from the start of the first measured step to the start of the last one (warm-up steps excluded)
    (first_step, first), (last_step, last) = timings[opts.warmup], timings[-1]
    return (last_step - first_step) * opts.batch / (last - first)


def run_trainer(opts, data, model, processor, output: str) -> float:
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

    timings = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            timings.append((state.global_step, time.perf_counter()))

    model.logit_scale.requires_grad_(False)  # as in our run (faithful recipe: temperature frozen)
    arguments = TrainingArguments(output_dir=output, per_device_train_batch_size=opts.batch,
                                  max_steps=opts.steps + opts.warmup, learning_rate=1e-5, weight_decay=0.1,
                                  lr_scheduler_type="cosine", max_grad_norm=1.0, save_strategy="no", report_to=[],
                                  use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False,
                                  disable_tqdm=True, logging_strategy="no", seed=42)
    trainer = ReleaseTrainer(model=model, args=arguments, train_dataset=data.with_transform(encode),
                             callbacks=[Clock()])
    trainer.train()
    (first_step, first), (last_step, last) = timings[opts.warmup], timings[-1]
    return (last_step - first_step) * opts.batch / (last - first)


def child(opts) -> None:
    import torch

    torch.set_num_threads(opts.threads)
    data = build_data(opts.rows, opts.image_size)
    model, processor = build_model(opts.width, opts.layers, opts.image_size)
    with tempfile.TemporaryDirectory() as output:
        runner = run_ours if opts.variant == "ours" else run_trainer
        speed = runner(opts, data, model, processor, output)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"variant": opts.variant, "samples_per_s": speed, "peak_rss_mib": peak_mib}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="measured steps")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured first steps")
    parser.add_argument("--batch", type=int, default=32, help="twin pairs per step")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variant", choices=("ours", "trainer"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.variant:
        child(opts)
        return
    results = {}
    for variant in ("ours", "trainer"):
        command = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            raise SystemExit(f"{variant} run failed:\n{done.stderr[-3000:]}")
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"model: CLIP-shaped, width {opts.width}, {opts.layers}+{opts.layers} layers, image {opts.image_size}px; "
          f"batch {opts.batch} twin pairs, {opts.steps} measured steps, {opts.threads} thread(s), faithful loss")
    print(f"{'variant':<44}{'samples/s':>12}{'peak RSS MiB':>15}")
    names = {"ours": "ours (2 encoder calls, dynamic padding)", "trainer": "Trainer (6 encoder calls, pad to 77)"}
    for variant, row in results.items():
        print(f"{names[variant]:<44}{row['samples_per_s']:>12.1f}{row['peak_rss_mib']:>15.0f}")
    ours, base = results["ours"], results["trainer"]
    print(f"speed ratio ours/Trainer: {ours['samples_per_s'] / base['samples_per_s']:.2f}x; "
          f"peak memory ratio ours/Trainer: {ours['peak_rss_mib'] / base['peak_rss_mib']:.2f}x")


if __name__ == "__main__":
    main()
