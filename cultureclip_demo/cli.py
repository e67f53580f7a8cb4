"""`cultureclip-demo --output-dir DIR [--seeds N] [--quick] [--device cpu] [--config YAML] [--threads N]
[--workers N]`."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from .config import load_config


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cultureclip-demo", description=(
        "Offline CultureCLIP demo: build a mini CulTwin from Twemoji, pretrain a tiny CLIP, fine-tune it with the "
        "plain CLIP loss and with CultureCLIP over several seeds, evaluate on held-out views, write results and "
        "Hub-ready folders."))
    parser.add_argument("--output-dir", required=True, help="folder for results/, hub/ and work/")
    parser.add_argument("--seeds", type=int, default=None, help="fine-tuning seeds per method (default: config's)")
    parser.add_argument("--quick", action="store_true", help="tiny configuration for tests (seconds, not minutes)")
    parser.add_argument("--config", default=None, help="demo config YAML (default: default.yaml, or quick.yaml)")
    parser.add_argument("--device", default="cpu", help="only cpu is supported")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for pretraining and other single-process stages (default: config's)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes running fine-tuning jobs side by side (default: config's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; prints a short summary and returns 0."""
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = load_config(args.config or ("quick.yaml" if args.quick else "default.yaml"))
    if args.seeds is not None:
        config = replace(config, seeds=args.seeds)
    if args.threads is not None:
        config = replace(config, threads=args.threads)
    if args.workers is not None:
        config = replace(config, finetune=replace(config.finetune, workers=args.workers))
    config.validate()
    from .pipeline import run_demo  # heavy imports after argument errors are reported

    summary = run_demo(config, args.output_dir, device=args.device)
    print(format_summary(summary, args.output_dir))
    return 0


def format_summary(summary: dict, output_dir: str) -> str:
    """The short terminal summary."""
    lines = [f"\nCultureCLIP demo: {summary['seeds']} seeds, results in {output_dir}/results/summary.json"]
    for role in ("base", "plain", "cultureclip"):
        twin, general = summary[role]["twin_accuracy"], summary[role]["general_accuracy"]
        lines.append(f"  {role:>11}: twin {100 * twin['mean']:5.1f} ± {100 * twin['std']:4.1f}   "
                     f"general {100 * general['mean']:5.1f} ± {100 * general['std']:4.1f}")
    for style, values in summary["other_styles"].items():
        cells = ", ".join(f"{role} {100 * values[role]['twin_accuracy']['mean']:.1f}"
                          for role in ("base", "plain", "cultureclip"))
        same = len(summary["data"]["styles"][style]["twin_pairs_drawn_identically"])
        note = f" ({same} of {summary['data']['twin_pairs']} pairs drawn identically in this style)" if same else ""
        lines.append(f"  twin accuracy on {style} (never trained on): {cells}{note}")
    claim = summary["claim"]
    lines.append(f"  claim {'HOLDS' if claim['holds'] else 'DOES NOT HOLD'}: twin gap {100 * claim['twin_gap']:.1f} "
                 f"points, general drop vs base {100 * claim['general_drop_vs_base']:.1f} points")
    lines.append(f"  wall time {summary['wall_time_s']['total']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
