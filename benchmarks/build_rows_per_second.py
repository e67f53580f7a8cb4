"""Rows per second of the offline demo build (not a test; prints figures).

Runs the demo recipe twice in fresh temporary folders: with the recipe's batch sizes and with every batch size set
to 1 (the plain one-item-at-a-time alternative), and prints rows/s for both and their ratio.

    python benchmarks/build_rows_per_second.py [--limit-pairs N] [--no-fsync]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit-pairs", type=int, default=None)
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync of each record (power-loss safety only)")
    args = parser.parse_args()
    if args.no_fsync:
        os.environ["DATASET_BUILDER_FSYNC"] = "0"
    from dataset_builder.pipeline import build
    from dataset_builder.recipe import load_recipe

    base = load_recipe("demo")
    single = dataclasses.replace(base, text_batch_size=1, images=dataclasses.replace(base.images, batch_size=1),
                                 judge=dataclasses.replace(base.judge, batch_size=1))
    results = {}
    for label, recipe in (("batched", base), ("one-at-a-time", single)):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = build(recipe, Path(tmp) / "cultwin", limit_pairs=args.limit_pairs, progress=False)
            wall = time.perf_counter() - t0
        rows = summary["total_rows"]
        results[label] = rows / wall
        print(f"{label:>14}: {rows} rows in {wall:.2f} s -> {rows / wall:.1f} rows/s")
    print(f"batched / one-at-a-time: {results['batched'] / results['one-at-a-time']:.2f}x "
          f"(fsync {'off' if args.no_fsync else 'on'}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
