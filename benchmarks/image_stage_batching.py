"""Batched versus one-prompt-at-a-time rendering through the real diffusers image backend (tiny SD pipeline).

Builds the tiny random Stable Diffusion pipeline, renders N captions once in batches and once one by one with the
same seeds, checks the images agree (batching must not change a row), and prints both throughputs and the ratio.

    python -m benchmarks.image_stage_batching --n 32 --batch-size 8   (from the repository root)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dataset_builder.backends.diffusers_images import DiffusersImageBackend  # noqa: E402
from dataset_builder.backends.tiny import build_tiny_sd_pipeline  # noqa: E402

SUBJECTS = ["castle", "kimono", "sari", "dumpling", "fortune cookie", "mosque", "flag", "lantern"]
SCENES = ["at a market", "in a museum", "on a street at night", "at a family dinner"]


def _captions(n: int) -> list[str]:
    return [f"a photo of a {SUBJECTS[i % len(SUBJECTS)]} {SCENES[(i // 3) % len(SCENES)]}" for i in range(n)]


def _timed(fn) -> tuple[list, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="number of prompts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_sd_pipeline(Path(tmp) / "tiny-sd", sample_size=args.size)
        common = dict(height=args.size, width=args.size, num_inference_steps=args.steps)
        batched_backend = DiffusersImageBackend.from_pretrained(folder, batch_size=args.batch_size, **common)
        single_backend = DiffusersImageBackend(
            batched_backend.pipeline, model_id=batched_backend.model_id, batch_size=1, **common
        )
        prompts = _captions(args.n)
        seeds = [1000 + i for i in range(args.n)]
        fields = [{} for _ in prompts]
        batched_backend.render(prompts[:2], seeds[:2], fields[:2])  # warm-up: first call pays one-off costs

        batched, t_batched = _timed(lambda: batched_backend.render(prompts, seeds, fields))
        single, t_single = _timed(lambda: single_backend.render(prompts, seeds, fields))

    diffs = [np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() for a, b in zip(batched, single)]
    print(f"device=cpu threads={torch.get_num_threads()} n={args.n} batch_size={args.batch_size} "
          f"size={args.size} steps={args.steps}")
    print(f"batched:   {t_batched:7.2f} s  {args.n / t_batched:7.2f} images/s")
    print(f"one-by-one:{t_single:7.2f} s  {args.n / t_single:7.2f} images/s")
    print(f"speed-up (batched / one-by-one throughput): {t_single / t_batched:.2f}x")
    print(f"max pixel difference batched vs single: {max(diffs)} (0-255 scale)")
    if max(diffs) > 1:
        raise SystemExit("batched images differ from single renders: batching changed the output")


if __name__ == "__main__":
    main()
