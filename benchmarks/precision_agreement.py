"""How often a benchmark's predictions at bf16 (or fp16) agree with fp32, item by item, for a real checkpoint.

For every multiple-choice or zero-shot benchmark named, the benchmark's own items are scored twice with the same
code, once with fp32 towers and once at the reduced precision, and the script prints the share of items whose
prediction agrees, the flipped items' fp32 margins against the median margin, and the primary metric both ways.
Random-weight models (as in eval_throughput.py) have near-tied options everywhere; this is the check to run on a
trained checkpoint and the real data.

    python benchmarks/precision_agreement.py --model openai/clip-vit-base-patch32 \\
        --benchmarks globalrg_retrieval,zeroshot_geode [--data-dir NAME=FOLDER ...] [--dtype bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoModel, AutoProcessor  # noqa: E402

from benchmarks.eval_throughput import RecordingEncoder, agreement, describe_flips, predictions  # noqa: E402
from benchmarks.roofline import check_output, describe_machine, machine_info, write_report  # noqa: E402
from evaluate_suite import load_benchmark_data  # noqa: E402
from evaluate_suite.tasks import EvalSettings, MultipleChoiceBenchmark, get_benchmark  # noqa: E402
from evaluate_suite.tasks.general import ZeroShotBenchmark  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub id (CLIP family)")
    parser.add_argument("--benchmarks", required=True, help="comma-separated multiple-choice / zero-shot names")
    parser.add_argument("--data-dir", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--revision", default=None, help="model revision")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)
    check_output(args.json, args.overwrite)
    folders = {}
    for value in args.data_dir:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            parser.error(f"--data-dir expects NAME=PATH, got {value!r}")
        folders[name] = path
    names = [n.strip() for n in args.benchmarks.split(",") if n.strip()]
    kwargs = {"revision": args.revision, "trust_remote_code": args.trust_remote_code}
    model = AutoModel.from_pretrained(args.model, **kwargs).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(args.model, **kwargs)
    print(describe_machine(machine_info(args.device)))
    report: dict = {"model": args.model, "dtype": args.dtype, "benchmarks": {}}
    for name in names:
        bench = get_benchmark(name)
        if not isinstance(bench, (MultipleChoiceBenchmark, ZeroShotBenchmark)):
            parser.error(f"{name}: only multiple-choice and zero-shot benchmarks have per-item predictions here")
        source = folders.get(name) or bench.dataset_id
        if source is None:
            parser.error(f"{name} has no Hub dataset: pass --data-dir {name}=PATH")
        loaded = load_benchmark_data(source, bench.split, name)
        bench.use_source(loaded)
        data = loaded.dataset
        runs = {}
        for precision in ("fp32", args.dtype):
            encoder = RecordingEncoder(model, processor, batch_size=args.batch_size, dtype=precision)
            with torch.inference_mode():
                evaluate = MultipleChoiceBenchmark.evaluate if isinstance(bench, MultipleChoiceBenchmark) else \
                    type(bench).evaluate
                result = evaluate(bench, encoder, data, EvalSettings(seeds=(0,), bootstrap_resamples=10))[0]
            runs[precision] = (predictions(name, {}, encoder, data), result.metrics[result.primary_metric])
        (pred32, margins), metric32 = runs["fp32"]
        (pred16, _), metric16 = runs[args.dtype]
        flips = describe_flips(pred16, pred32, margins)
        share = agreement(pred16, pred32)
        print(f"[{name}] {share:.2%} of {len(pred32)} predictions agree at {args.dtype}; primary metric fp32 "
              f"{metric32:.4f} vs {args.dtype} {metric16:.4f}; median fp32 margin {flips['median_margin']:.1e}"
              + (f", flipped items' margins <= {flips['largest_margin_flipped']:.1e}" if flips["flips"] else ""))
        report["benchmarks"][name] = {"agreement": share, "metric_fp32": metric32, f"metric_{args.dtype}": metric16,
                                      "source": loaded.provenance, **flips}
    write_report(args.json, report)
    return report


if __name__ == "__main__":
    main()
