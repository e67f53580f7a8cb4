"""Images per second: evaluate_suite's batched, cached evaluator (fp32 and bf16) vs a release-style evaluator.

Release style (as in the CultureCLIP evaluation scripts): for every image, call the processor on the image and all
of its option texts, run the full model forward in fp32, take argmax of logits_per_image; option texts are
re-tokenised and re-encoded for every image. Ours: each distinct option text encoded once, images in batches
decoded and preprocessed by worker threads ahead of the model, one einsum; towers at fp32 and at bf16 (what
`--dtype auto` picks on a CPU with AMX / AVX-512 bf16), optionally torch.compile'd. Same model (a random
ViT-B/32-shaped CLIP from CLIPConfig defaults), same data, in two scenarios: GlobalRG-Retrieval-style 4-way region
choice, and 40-class zero-shot classification (GeoDE layout).

Printed per scenario: images/s of every side (best of alternating rounds), the ratios, how often predictions agree
(ours bf16 vs ours fp32 on every item, ours vs release on the shared images), and the FLOP/s each side achieved as
a fraction of the matmul roofline measured at the start (FLOPs counted by FlopCounterMode over one untimed pass of
the same code, checked against 2 * params * tokens). Then the input pipeline alone vs the image tower alone.

    python benchmarks/eval_throughput.py [--images 128] [--release-images 24] [--no-compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Run as a script from a checkout: make the repository's packages importable without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPConfig, CLIPModel  # noqa: E402

from benchmarks.roofline import (  # noqa: E402
    Rate, best_seconds, check_output, count_flops, describe_machine, describe_peaks, linear_params, machine_info,
    rooflines,
    transformer_flops, write_report,
)
from evaluate_suite import DualEncoder, get_benchmark  # noqa: E402
from evaluate_suite.encoders import cast_for_precision  # noqa: E402
from evaluate_suite.data import ImageRef, ImageTable  # noqa: E402
from evaluate_suite.precision import DTYPES  # noqa: E402
from evaluate_suite.tasks import EvalSettings, MultipleChoiceBenchmark  # noqa: E402
from evaluate_suite.tasks.base import score_choices  # noqa: E402
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
SCENARIOS = {"region choice, 4 options": ("globalrg_retrieval", {}),
             "zero-shot, 40 classes": ("zeroshot_geode", {"templates": (TEMPLATE,)})}


def make_dataset(n: int, seed: int = 0) -> datasets.Dataset:
    """GlobalRG-Retrieval columns (image, region, universal) plus GeoDE's `object`, with 320x240 JPEGs.

    Each image is a smooth colour field plus noise, so images differ the way photos do (in layout and colour) and
    a random-weight model's predictions are not decided by noise alone."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:240, 0:320] / 320.0
    images = []
    for _ in range(n):
        a, b, c = rng.uniform(-1, 1, size=(3, 3))
        field = np.stack([128 + 100 * np.sin(3 * a[k] * xs + 3 * b[k] * ys + c[k] * 3) for k in range(3)], -1)
        pixels = np.clip(field + rng.normal(0, 20, size=field.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
        images.append({"bytes": buffer.getvalue(), "path": None})
    return datasets.Dataset.from_dict(
        {"image": images, "region": [REGIONS[i % len(REGIONS)] for i in range(n)],
         "universal": [UNIVERSALS[(i // len(REGIONS)) % len(UNIVERSALS)] for i in range(n)],
         "object": [OBJECTS[i % len(OBJECTS)] for i in range(n)]},
        features=datasets.Features({"image": datasets.Image(), "region": datasets.Value("string"),
                                    "universal": datasets.Value("string"), "object": datasets.Value("string")}),
    )


def build_model(small: bool = False) -> tuple[CLIPModel, object]:
    """ViT-B/32 shapes (CLIPConfig defaults: 12+12 layers, widths 768/512, 224px, patch 32), random weights.
    `small`: a 2+2-layer, width-64 model for smoke runs (CI)."""
    template = "The picture depicts a kind of {} in {}"
    tokenizer = build_word_tokenizer(words_of([template, TEMPLATE] + UNIVERSALS + REGIONS + OBJECTS), max_length=77)
    text = dict(vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=1, eos_token_id=3)
    vision = {}
    if small:
        shape = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2)
        text.update(shape)
        vision.update(shape, image_size=64)
    config = CLIPConfig(text_config=text, vision_config=vision, **({"projection_dim": 32} if small else {}))
    torch.manual_seed(0)
    return CLIPModel(config).eval(), tiny_processor(tokenizer, config.vision_config.image_size)


class RecordingEncoder(DualEncoder):
    """A DualEncoder that keeps the features of its last encode_images call (to read predictions afterwards)."""

    def encode_images(self, images):
        self.last_image_features = super().encode_images(images)
        return self.last_image_features


def run_ours(model, processor, name: str, params: dict, data, batch_size: int, workers: int,
             compile: bool = False) -> tuple[float, RecordingEncoder]:
    """evaluate_suite on one scenario with a fresh encoder (empty text cache): seconds, the encoder used."""
    bench = get_benchmark(name, **params)
    settings = EvalSettings(seeds=(0,), bootstrap_resamples=100)
    start = time.perf_counter()
    encoder = RecordingEncoder(model, processor, batch_size=batch_size, num_workers=workers, compile=compile)
    with torch.inference_mode():
        if isinstance(bench, MultipleChoiceBenchmark):
            MultipleChoiceBenchmark.evaluate(bench, encoder, data, settings)  # the region-choice task only
        else:
            bench.evaluate(encoder, data, settings)
    return time.perf_counter() - start, encoder


def predictions(name: str, params: dict, encoder: RecordingEncoder, data) -> tuple[np.ndarray, np.ndarray]:
    """What the benchmark predicted per item in the encoder's last run (same items, same scoring code), and each
    item's margin: the cosine of the chosen option minus that of the runner-up."""
    bench = get_benchmark(name, **params)
    prepared = bench.prepare(data)
    features = encoder.last_image_features
    with torch.inference_mode():
        if isinstance(bench, MultipleChoiceBenchmark):
            bench._skipped = Counter()
            items = bench.build_items(prepared, ImageTable(prepared, bench.name), np.random.default_rng(0))
            predicted = score_choices(encoder, features, items)
            cosines = [features[image] @ encoder.encode_texts(options).T
                       for image, options in zip(items.image, items.options)]
        else:
            names = bench.class_names(prepared)[0]
            scores = features @ bench.class_embeddings(encoder, names).T
            predicted, cosines = scores.argmax(dim=1).numpy(), list(scores)
    margins = np.asarray([float(c.topk(2).values[0] - c.topk(2).values[1]) for c in cosines])
    return predicted, margins


def describe_flips(pred: np.ndarray, reference: np.ndarray, margins: np.ndarray) -> dict:
    """How many predictions differ, and how those items' reference margins compare with all items'."""
    flipped = pred != reference
    return {"flips": int(flipped.sum()), "items": int(len(pred)),
            "largest_margin_flipped": float(margins[flipped].max()) if flipped.any() else None,
            "median_margin": float(np.median(margins)),
            "share_below_largest_flipped_margin": float(np.mean(margins <= margins[flipped].max()))
            if flipped.any() else 0.0}


@torch.inference_mode()
def run_release(model, processor, name: str, params: dict, dataset) -> tuple[float, np.ndarray]:
    """Per image: processor(text=its options, images=image) + model(**inputs) in fp32: seconds, predictions."""
    bench = get_benchmark(name, **params)
    prepared = bench.prepare(dataset)
    if isinstance(bench, MultipleChoiceBenchmark):
        bench._skipped = Counter()
        items = bench.build_items(prepared, ImageTable(prepared, bench.name), np.random.default_rng(0))
        rows, options = items.rows, items.options
    else:
        classes = sorted(set(dataset["object"]))
        rows, options = range(len(dataset)), [[TEMPLATE.format(c) for c in classes]] * len(dataset)
    start = time.perf_counter()
    predicted = []
    for row, texts in zip(rows, options):
        image = dataset[row]["image"]  # decoded by datasets, as the release scripts read it
        inputs = processor(text=texts, images=image, return_tensors="pt", padding=True).to(model.device)
        predicted.append(int(model(**inputs).logits_per_image.argmax(dim=1)))
    return time.perf_counter() - start, np.asarray(predicted)


def image_flops(model, processor, image_size: int) -> tuple[int, float]:
    """(counted, analytic) FLOPs of one image through the vision tower and its projection."""
    pixels = processor.image_processor(images=[Image.new("RGB", (image_size, image_size))] * 2,
                                       return_tensors="pt")["pixel_values"].to(model.device)
    with torch.inference_mode():
        counted = count_flops(lambda: model.get_image_features(pixel_values=pixels)) // 2
    vision = model.config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    embedding = model.vision_model.embeddings.patch_embedding
    layers = model.vision_model.encoder
    # the patch embedding is a matmul per patch, the encoder runs on patches + CLS, the projection on CLS only
    analytic = (2.0 * embedding.weight.numel() * patches
                + transformer_flops(linear_params(layers), patches + 1, vision.num_hidden_layers, vision.hidden_size)
                + 2.0 * linear_params(model.visual_projection))
    return counted, analytic


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b)) if len(a) == len(b) and len(a) else float("nan")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="images per round for evaluate_suite")
    parser.add_argument("--release-images", type=int, default=24, help="images per round for the release style")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best round of each side counts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="image-preprocessing threads (default: per core)")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"), help="our reduced precision")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (every side uses it)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--small", action="store_true", help="a tiny model instead of ViT-B/32 (smoke runs)")
    parser.add_argument("--peak-sizes", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="matmul sizes for the roofline, e.g. 1024,2048")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)
    check_output(args.json, args.overwrite)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device)
    info = machine_info(device)
    peaks = rooflines(device, ("fp32", args.dtype), sizes=args.peak_sizes)
    print(describe_machine(info))
    print(describe_peaks(peaks))

    model32, processor = build_model(args.small)
    model32.to(device)
    # ours at reduced precision evaluates a copy cast once, as `load_encoder` loads a checkpoint
    model16 = cast_for_precision(copy.deepcopy(model32), DTYPES[args.dtype])
    data = make_dataset(args.images)
    subset = data.select(range(min(args.release_images, args.images)))
    workers = args.workers
    with torch.inference_mode():  # warm-up: one-off allocations are paid by neither side
        for model in (model32, model16):
            DualEncoder(model, processor).encode_images([Image.new("RGB", (64, 64))] * 2)
        run_release(model32, processor, "globalrg_retrieval", {}, data.select(range(min(12, args.images))))
    size = model32.config.vision_config.image_size
    per_image, per_image_analytic = image_flops(model32, processor, size)
    print(f"model: random CLIP ({'small' if args.small else 'ViT-B/32 shapes'}, "
          f"{sum(p.numel() for p in model32.parameters()) / 1e6:.0f}M params) on {device}; {args.rounds} alternating "
          f"rounds, best round per side; {len(data)} images for ours, {len(subset)} for the release style")
    print(f"FLOPs per image (vision tower + projection): counted {per_image / 1e9:.3f} GFLOP, analytic "
          f"2*params*tokens + attention {per_image_analytic / 1e9:.3f} GFLOP "
          f"(ratio {per_image / per_image_analytic:.3f})")

    report: dict = {"machine": info, "roofline": peaks, "flops_per_image": {"counted": per_image,
                                                                            "analytic": per_image_analytic},
                    "scenarios": {}}
    for label, (name, params) in SCENARIOS.items():
        best = {"release": 0.0, "ours_fp32": 0.0, f"ours_{args.dtype}": 0.0}
        for _ in range(args.rounds):
            seconds, release_pred = run_release(model32, processor, name, params, subset)
            best["release"] = max(best["release"], len(subset) / seconds)
            seconds, enc32 = run_ours(model32, processor, name, params, data, args.batch_size, workers)
            best["ours_fp32"] = max(best["ours_fp32"], len(data) / seconds)
            seconds, enc16 = run_ours(model16, processor, name, params, data, args.batch_size, workers)
            best[f"ours_{args.dtype}"] = max(best[f"ours_{args.dtype}"], len(data) / seconds)
        (pred32, margins32), (pred16, _) = (predictions(name, params, enc32, data),
                                            predictions(name, params, enc16, data))
        _, sub16 = run_ours(model16, processor, name, params, subset, args.batch_size, workers)
        _, sub32 = run_ours(model32, processor, name, params, subset, args.batch_size, workers)
        agree = {f"ours_{args.dtype}_vs_ours_fp32": agreement(pred16, pred32),
                 f"ours_{args.dtype}_vs_release": agreement(predictions(name, params, sub16, subset)[0],
                                                            release_pred),
                 "ours_fp32_vs_release": agreement(predictions(name, params, sub32, subset)[0], release_pred)}
        flips = describe_flips(pred16, pred32, margins32)
        # FLOPs each side executes, counted over one untimed pass of its own code
        flops = {"release": count_flops(lambda: run_release(model32, processor, name, params, subset)) / len(subset),
                 "ours": count_flops(lambda: run_ours(model32, processor, name, params, data, args.batch_size,
                                                      workers)) / len(data)}
        rates = {"release": Rate("release-style (per image, fp32)", best["release"], flops["release"], "fp32"),
                 "ours_fp32": Rate("ours (batched, cached, fp32)", best["ours_fp32"], flops["ours"], "fp32"),
                 f"ours_{args.dtype}": Rate(f"ours (batched, cached, {args.dtype})", best[f"ours_{args.dtype}"],
                                            flops["ours"], args.dtype)}
        if not args.no_compile:
            compiled = copy.deepcopy(model16)
            start = time.perf_counter()
            run_ours(compiled, processor, name, params, data.select(range(min(len(data), 2 * args.batch_size))),
                     args.batch_size, workers, compile=True)
            compile_seconds = time.perf_counter() - start
            rounds = [run_ours(compiled, processor, name, params, data, args.batch_size, workers)[0]
                      for _ in range(args.rounds)]
            rates[f"ours_{args.dtype}_compiled"] = Rate(f"ours ({args.dtype}, torch.compile towers)",
                                                        len(data) / min(rounds), flops["ours"], args.dtype)
        print(f"[{label}]")
        for rate in rates.values():
            print(f"  {rate.label:<40} {rate.items_per_s:8.2f} images/s  {rate.flops_per_item / 1e9:7.2f} GFLOP/image "
                  f"executed  {rate.flops_per_s / 1e9:8.1f} GFLOP/s = {rate.roofline_fraction(peaks):6.1%} of the "
                  f"{rate.precision} roofline")
        ours16 = rates[f"ours_{args.dtype}"].items_per_s
        print(f"  speed-up ours {args.dtype} / release-style: {ours16 / best['release']:.1f}x | ours fp32 / "
              f"release-style: {best['ours_fp32'] / best['release']:.1f}x | ours {args.dtype} / ours fp32: "
              f"{ours16 / best['ours_fp32']:.2f}x")
        print("  predictions agreeing: " + ", ".join(f"{k.replace('_', ' ')} {v:.1%}" for k, v in agree.items())
              + f" ({len(pred16)} items; {len(subset)} shared with the release style)")
        if flips["flips"]:
            print(f"  {flips['flips']} of {flips['items']} items flipped at {args.dtype}; each had an fp32 margin "
                  f"(best minus runner-up cosine) <= {flips['largest_margin_flipped']:.1e}, against a median margin of "
                  f"{flips['median_margin']:.1e}: near-ties ({flips['share_below_largest_flipped_margin']:.0%} of "
                  f"the items are that close)")
        entry = {"images_per_s": {k: r.items_per_s for k, r in rates.items()},
                 "rates": {k: r.to_dict(peaks) for k, r in rates.items()},
                 "speedup_vs_release": ours16 / best["release"], "speedup_vs_fp32": ours16 / best["ours_fp32"],
                 "agreement": agree, "items": int(len(pred16)), "flips": flips}
        if not args.no_compile:
            compiled_rate = rates[f"ours_{args.dtype}_compiled"].items_per_s
            saved = 1 / ours16 - 1 / compiled_rate  # seconds saved per image once compiled
            print(f"  torch.compile: {compile_seconds:.1f} s to compile, then {compiled_rate / ours16:.2f}x the eager "
                  f"{args.dtype} rate" + (f"; pays off after ~{compile_seconds / saved:,.0f} images" if saved > 0
                                          else "; never pays off here"))
            entry["compile"] = {"compile_seconds": compile_seconds, "speedup_vs_eager": compiled_rate / ours16}
        report["scenarios"][label] = entry

    report["pipeline"] = pipeline_rates(model32, model16, processor, data, args, peaks, per_image)
    write_report(args.json, report)
    return report


def pipeline_rates(model32, model16, processor, data, args, peaks, per_image: float) -> dict:
    """The input pipeline alone (decode + preprocess, with and without workers) vs the image tower alone."""
    table = ImageTable(get_benchmark("zeroshot_geode").prepare(data), "zeroshot_geode")
    for row in range(len(data)):
        table.add(ImageRef(row, "image"))
    out: dict = {}
    encoder = DualEncoder(model16, processor, batch_size=args.batch_size, num_workers=args.workers)
    for workers in sorted({0, encoder.num_workers}):
        encoder.num_workers = workers
        seconds = best_seconds(lambda: list(encoder.pixel_batches(table)), args.rounds)
        out[f"input_pipeline_{workers}_workers"] = len(table) / seconds
    pixels = next(encoder.pixel_batches(table))
    for precision, model in (("fp32", model32), (args.dtype, model16)):
        tower = DualEncoder(model, processor, batch_size=args.batch_size)
        seconds = best_seconds(lambda: tower.encode_pixels(pixels), args.rounds, tower.device)
        out[f"image_tower_{precision}"] = len(pixels) / seconds
    towers = []
    for p in ("fp32", args.dtype):
        fraction = Rate("", out[f"image_tower_{p}"], per_image, p).roofline_fraction(peaks)
        towers.append(f"{out[f'image_tower_{p}']:.1f} images/s at {p} ({fraction:.1%} of its roofline)")
    inputs = [f"{v:.0f} images/s with {k.split('_')[2]} worker thread(s)" for k, v in out.items()
              if k.startswith("input")]
    print("[input pipeline vs model] decode + preprocess: " + ", ".join(inputs) + " | image tower alone: "
          + ", ".join(towers))
    bottleneck = "model" if out[f"input_pipeline_{encoder.num_workers}_workers"] > out[f"image_tower_{args.dtype}"] \
        else "input pipeline"
    print(f"  bottleneck at {args.dtype}: the {bottleneck}")
    out["bottleneck"] = bottleneck
    return out


if __name__ == "__main__":
    main()
