"""Batched versus one-prompt-at-a-time rendering through the real diffusers image backend (tiny SD pipeline), at
fp32 and bf16, against the matmul roofline measured first.

Builds the tiny random Stable Diffusion pipeline, renders N captions once in batches and once one by one with the
same seeds, checks the images agree (batching must not change a row), and prints both throughputs and the ratio;
then the FLOPs of one image (FlopCounterMode over an untimed batched render: text encoder, every UNet step, VAE
decode) and the achieved FLOP/s as a fraction of the roofline. With several `--dtypes`, each precision is
measured the same way and its images are compared with fp32's (mean absolute pixel difference).

    python -m benchmarks.image_stage_batching --n 32 --batch-size 8 [--dtypes fp32,bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.roofline import (  # noqa: E402
    Rate, check_output, count_flops, describe_machine, describe_peaks, machine_info, rooflines, synchronize,
    write_report,
)
from dataset_builder.backends.diffusers_images import DiffusersImageBackend  # noqa: E402
from dataset_builder.backends.tiny import build_tiny_sd_pipeline  # noqa: E402
from evaluate_suite.precision import DTYPES  # noqa: E402

SUBJECTS = ["castle", "kimono", "sari", "dumpling", "fortune cookie", "mosque", "flag", "lantern"]
SCENES = ["at a market", "in a museum", "on a street at night", "at a family dinner"]


def _captions(n: int) -> list[str]:
    return [f"a photo of a {SUBJECTS[i % len(SUBJECTS)]} {SCENES[(i // 3) % len(SCENES)]}" for i in range(n)]


def _timed(fn, device: torch.device) -> tuple[list, float]:
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def measure(folder: Path, precision: str, args, device: torch.device) -> dict:
    """Batched and one-by-one rates, FLOPs per image and the images, for one precision."""
    common = dict(height=args.size, width=args.size, num_inference_steps=args.steps)
    batched_backend = DiffusersImageBackend.from_pretrained(folder, batch_size=args.batch_size,
                                                            dtype=DTYPES[precision], device=str(device), **common)
    single_backend = DiffusersImageBackend(
        batched_backend.pipeline, model_id=batched_backend.model_id, batch_size=1, **common
    )
    prompts = _captions(args.n)
    seeds = [1000 + i for i in range(args.n)]
    fields = [{} for _ in prompts]
    batched_backend.render(prompts[:2], seeds[:2], fields[:2])  # warm-up: first call pays one-off costs
    batched, t_batched = _timed(lambda: batched_backend.render(prompts, seeds, fields), device)
    single, t_single = _timed(lambda: single_backend.render(prompts, seeds, fields), device)
    flops = count_flops(lambda: batched_backend.render(prompts[:args.batch_size], seeds[:args.batch_size],
                                                       fields[:args.batch_size])) / min(args.batch_size, args.n)
    diffs = [int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max()) for a, b in zip(batched, single)]
    return {"batched": Rate(f"batched ({precision})", args.n / t_batched, flops, precision),
            "single": Rate(f"one-by-one ({precision})", args.n / t_single, flops, precision),
            "max_batch_pixel_difference": max(diffs), "images": batched}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="number of prompts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    parser.add_argument("--dtypes", default="fp32", help="comma-separated precisions, e.g. fp32,bf16")
    parser.add_argument("--peak-sizes", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)
    check_output(args.json, args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precisions = [p.strip() for p in args.dtypes.split(",") if p.strip()]
    unknown = [p for p in precisions if p not in DTYPES]
    if unknown:
        parser.error(f"--dtypes: unknown {unknown}; expected some of {', '.join(DTYPES)}")
    info = machine_info(device)
    peaks = rooflines(device, sorted(set(precisions) | {"fp32"}), sizes=args.peak_sizes)
    print(describe_machine(info))
    print(describe_peaks(peaks))
    print(f"device={device} threads={torch.get_num_threads()} n={args.n} batch_size={args.batch_size} "
          f"size={args.size} steps={args.steps}")

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_sd_pipeline(Path(tmp) / "tiny-sd", sample_size=args.size)
        for precision in precisions:
            results[precision] = measure(folder, precision, args, device)
    report: dict = {"machine": info, "roofline": peaks, "precisions": {}}
    reference = results.get("fp32")
    for precision, row in results.items():
        batched, single = row["batched"], row["single"]
        print(f"[{precision}] {batched.flops_per_item / 1e9:.3f} GFLOP per image (counted)")
        for rate in (batched, single):
            print(f"  {rate.label:<22}{rate.items_per_s:8.2f} images/s  {rate.flops_per_s / 1e9:8.1f} GFLOP/s = "
                  f"{rate.roofline_fraction(peaks):6.1%} of the {precision} roofline")
        print(f"  speed-up (batched / one-by-one throughput): {batched.items_per_s / single.items_per_s:.2f}x; "
              f"max pixel difference batched vs single: {row['max_batch_pixel_difference']} (0-255 scale)")
        entry = {"batched": batched.to_dict(peaks), "single": single.to_dict(peaks),
                 "speedup_batched": batched.items_per_s / single.items_per_s,
                 "max_batch_pixel_difference": row["max_batch_pixel_difference"]}
        if reference is not None and precision != "fp32":
            diff = float(np.mean([np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean()
                                  for a, b in zip(row["images"], reference["images"])]))
            ratio = batched.items_per_s / reference["batched"].items_per_s
            print(f"  vs fp32: {ratio:.2f}x the batched rate; mean absolute pixel difference {diff:.2f} (0-255)")
            entry.update(speed_vs_fp32=ratio, mean_pixel_difference_vs_fp32=diff)
        report["precisions"][precision] = entry
    write_report(args.json, report)
    bad = [p for p, row in results.items() if row["max_batch_pixel_difference"] > (1 if p == "fp32" else 8)]
    if bad:
        raise SystemExit(f"batched images differ from single renders at {bad}: batching changed the output")
    return report


if __name__ == "__main__":
    main()
