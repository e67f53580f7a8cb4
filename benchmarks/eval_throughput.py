"""Images per second: evaluate_suite's batched, cached evaluator vs a release-style evaluator.

Release style (as in the CultureCLIP evaluation scripts): for every image, call the processor on the image and all
of its option texts, run the full model forward, take argmax of logits_per_image; option texts are re-tokenised
and re-encoded for every image. Ours: each distinct option text encoded once, images in batches, one einsum.
Same model (a random ViT-B/32-shaped CLIP from CLIPConfig defaults), same data, same predictions (checked), in two
scenarios: GlobalRG-Retrieval-style 4-way region choice, and 40-class zero-shot classification (GeoDE layout). Run: `python benchmarks/eval_throughput.py [--images N]`.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPConfig, CLIPModel  # noqa: E402

from evaluate_suite import DualEncoder, get_benchmark  # noqa: E402
from evaluate_suite.tasks import EvalSettings, MultipleChoiceBenchmark  # noqa: E402
from modeling_cultureclip.tiny import build_word_tokenizer, tiny_processor, words_of  # noqa: E402

# 40 everyday object classes (GeoDE has 40 objects; these names are our own list).
OBJECTS = ["bag", "bicycle", "boat", "bus", "car", "chair", "cleaning tool", "cooking pot", "dog", "door", "fence",
           "flag", "fruit", "hairbrush", "hand soap", "hat", "house", "jug", "lighter", "light switch", "monument",
           "plate", "religious building", "road sign", "spice", "stall", "storefront", "stove", "streetlight",
           "toothbrush", "toothpaste", "tree", "truck", "waste container", "wheelbarrow", "bottle", "bed", "lamp",
           "clock", "cup"]
TEMPLATE = "a photo of a {}."
UNIVERSALS = ["house", "breakfast", "wedding", "funeral", "market", "school", "toy", "dance"]
REGIONS = ["Japan", "Chad", "Romania", "Peru", "Nigeria", "Italy", "India", "Brazil", "Mexico", "Egypt"]


def make_dataset(n: int, seed: int = 0) -> datasets.Dataset:
    """GlobalRG-Retrieval columns (image, region, universal) with 320x240 noise JPEGs."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=85)
        images.append({"bytes": buffer.getvalue(), "path": None})
    return datasets.Dataset.from_dict(
        {"image": images, "region": [REGIONS[i % len(REGIONS)] for i in range(n)],
         "universal": [UNIVERSALS[(i // len(REGIONS)) % len(UNIVERSALS)] for i in range(n)],
         "object": [OBJECTS[i % len(OBJECTS)] for i in range(n)]},
        features=datasets.Features({"image": datasets.Image(), "region": datasets.Value("string"),
                                    "universal": datasets.Value("string"), "object": datasets.Value("string")}),
    )


def build_model() -> tuple[CLIPModel, object]:
    """ViT-B/32 shapes (CLIPConfig defaults: 12+12 layers, widths 768/512, 224px, patch 32), random weights."""
    template = "The picture depicts a kind of {} in {}"
    tokenizer = build_word_tokenizer(words_of([template, "a photo of a {}."] + UNIVERSALS + REGIONS + OBJECTS),
                                     max_length=77)
    config = CLIPConfig(text_config=dict(vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=1, eos_token_id=3))
    torch.manual_seed(0)
    return CLIPModel(config).eval(), tiny_processor(tokenizer, config.vision_config.image_size)


@torch.inference_mode()
def release_style(model, processor, bench, dataset, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Per image: processor(text=options, images=image) + model(**inputs); returns predictions, answers, seconds."""
    from collections import Counter

    from evaluate_suite.data import ImageTable

    prepared = bench.prepare(dataset)
    bench._skipped = Counter()
    items = bench.build_items(prepared, ImageTable(prepared, bench.name), np.random.default_rng(seed))
    start = time.perf_counter()
    predictions = []
    for row, options in zip(items.rows, items.options):
        image = dataset[row]["image"]  # decoded by datasets, as the release scripts read it
        inputs = processor(text=options, images=image, return_tensors="pt", padding=True).to(model.device)
        predictions.append(int(model(**inputs).logits_per_image.argmax(dim=1)))
    return np.asarray(predictions), np.asarray(items.answer), time.perf_counter() - start


@torch.inference_mode()
def release_style_zero_shot(model, processor, dataset, template: str) -> tuple[float, float]:
    """Per image: processor(text=every class prompt, images=image) + model(**inputs); returns accuracy, seconds."""
    classes = sorted(set(dataset["object"]))
    prompts = [template.format(c) for c in classes]
    start = time.perf_counter()
    hits = []
    for row in range(len(dataset)):
        record = dataset[row]
        inputs = processor(text=prompts, images=record["image"], return_tensors="pt", padding=True).to(model.device)
        hits.append(classes[int(model(**inputs).logits_per_image.argmax(dim=1))] == record["object"])
    return float(np.mean(hits)), time.perf_counter() - start


def ours_choice(model, processor, data, batch_size: int) -> tuple[float, float]:
    """evaluate_suite on the 4-way region choice with a fresh encoder (empty text cache): accuracy, seconds."""
    bench = get_benchmark("globalrg_retrieval")
    start = time.perf_counter()
    with torch.inference_mode():
        result = MultipleChoiceBenchmark.evaluate(bench, DualEncoder(model, processor, batch_size=batch_size), data,
                                                  EvalSettings(seeds=(0,), bootstrap_resamples=100))[0]
    return result.metrics["accuracy"], time.perf_counter() - start


def ours_zero_shot(model, processor, data, batch_size: int) -> tuple[float, float]:
    """evaluate_suite on 40-class zero-shot (GeoDE layout, one template), fresh encoder: top-1, seconds."""
    bench = get_benchmark("zeroshot_geode", templates=(TEMPLATE,))
    start = time.perf_counter()
    with torch.inference_mode():
        result = bench.evaluate(DualEncoder(model, processor, batch_size=batch_size), data,
                                EvalSettings(seeds=(0,), bootstrap_resamples=100))[0]
    return result.metrics["top1_accuracy"], time.perf_counter() - start


def release_choice(model, processor, data) -> tuple[float, float]:
    predictions, answers, seconds = release_style(model, processor, get_benchmark("globalrg_retrieval"), data, seed=0)
    return float(np.mean(predictions == answers)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="images per round for evaluate_suite")
    parser.add_argument("--release-images", type=int, default=24, help="images per round for the release style")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best round of each side counts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (both sides use it)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model, processor = build_model()
    model.to(args.device)
    data = make_dataset(args.images)
    subset = data.select(range(args.release_images))
    with torch.inference_mode():  # warm-up: one-off allocations are paid by neither side
        DualEncoder(model, processor).encode_images([Image.new("RGB", (64, 64))] * 2)
        release_choice(model, processor, data.select(range(2)))

    print(f"model: random CLIP with ViT-B/32 shapes ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
          f"params) on {args.device}, {torch.get_num_threads()} threads; {args.rounds} alternating rounds, best round per side "
          f"(other processes on the machine add noise)")
    scenarios = [("region choice, 4 options", ours_choice, release_choice),
                 ("zero-shot, 40 classes", ours_zero_shot,
                  lambda m, p, d: release_style_zero_shot(m, p, d, TEMPLATE))]
    for label, ours, release in scenarios:
        best_ours = best_release = 0.0
        for _ in range(args.rounds):
            _, seconds = ours(model, processor, data, args.batch_size)
            best_ours = max(best_ours, len(data) / seconds)
            release_value, seconds = release(model, processor, subset)
            best_release = max(best_release, len(subset) / seconds)
        # Same answers on the shared images: our score on the subset equals the release-style score.
        ours_value, _ = ours(model, processor, subset, args.batch_size)
        print(f"[{label}] evaluate_suite {best_ours:.2f} images/s | release-style {best_release:.2f} images/s | "
              f"speed-up {best_ours / best_release:.1f}x | same score on the {len(subset)} shared images: "
              f"{abs(ours_value - release_value) < 1e-9}")


if __name__ == "__main__":
    main()
