"""`cultureclip-demo --output-dir DIR [--seeds N] [--quick] [--ablation] [--overwrite] [--device cpu] [--config YAML]
[--threads N] [--workers N]`.

Exit status: 0 done; 2 bad input (an option, config, recipe, style, or an output folder holding files the demo
did not make), reported in one line (`cultureclip-demo: error: ...`) before any work starts; 1 a failure while
running; 3 a training run diverged. `--debug` (or CULTURECLIP_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from cultureclip_guards import run_command
from cultureclip_guards.arguments import DEBUG_HELP

from .config import DemoConfig, DemoConfigError, load_config, resolve

PROG = "cultureclip-demo"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, epilog=__doc__.split("\n\n", 1)[1], description=(
        "Offline CultureCLIP demo: build a mini CulTwin from Twemoji, pretrain a tiny CLIP, fine-tune it with the "
        "plain CLIP loss and with CultureCLIP over several seeds, choose each run's WiSE-FT alpha on validation "
        "views, score everything once on test views, write results and Hub-ready folders."))
    parser.add_argument("--output-dir", required=True, help="folder for results/, hub/ and work/")
    parser.add_argument("--seeds", type=int, default=None, help="fine-tuning seeds per method (default: config's)")
    parser.add_argument("--quick", action="store_true", help="tiny configuration for tests (seconds, not minutes)")
    parser.add_argument("--ablation", action="store_true",
                        help="also run the config's ablation variants (faithful objective, each improved switch off)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an output folder that holds files the demo did not make (only the demo's "
                             "own work/, results/ and hub/ there are replaced)")
    parser.add_argument("--config", default=None, help="demo config YAML (default: default.yaml, or quick.yaml)")
    parser.add_argument("--device", default="cpu", choices=["cpu"], help="only cpu is supported")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for pretraining and other single-process stages (default: config's)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes running fine-tuning jobs side by side (default: config's)")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser.parse_args(argv)


def configure(args: argparse.Namespace) -> DemoConfig:
    """The config the options ask for, checked; raises DemoConfigError."""
    config = load_config(args.config or ("quick.yaml" if args.quick else "default.yaml"))
    if args.seeds is not None:
        config = replace(config, seeds=args.seeds)
    if args.threads is not None:
        config = replace(config, threads=args.threads)
    if args.workers is not None:
        config = replace(config, finetune=replace(config.finetune, workers=args.workers))
    config.validate()
    return config


def preflight(config: DemoConfig, ablation: bool, output_dir: Path, overwrite: bool) -> None:
    """Check everything the run will need from the config before any work: the trainer recipes with their
    overrides, the art styles, and the output folder. Raises DemoConfigError with one line."""
    from cultureclip_training import RecipeError, build_args
    from cultureclip_training.loop import OBJECTIVE_FIELDS
    from modeling_cultureclip.tiny import tiny_config

    from .emoji_sources import get_style
    from .output import DemoOutputError, check_output_dir

    runs = {"pretrain": (config.pretrain.recipe, config.pretrain.overrides)}
    runs.update({f"method {name}": (variant.recipe, {**config.finetune.overrides, **variant.overrides})
                 for name, variant in config.methods(ablation).items()})
    for what, (recipe, overrides) in runs.items():
        path = resolve(recipe)
        if not path.is_file():
            raise DemoConfigError(f"{config.source}: {what}: trainer recipe {recipe!r} does not exist")
        try:
            args = build_args(str(path), {**overrides, "seed": 0, "wise_ft_alpha": None})
            objective = tiny_config(8)  # the objective settings are checked where the trainer writes them
            for name in OBJECTIVE_FIELDS:
                setattr(objective, name, getattr(args, name))
            objective.validate_objective()
        except (RecipeError, ValueError) as error:
            raise DemoConfigError(f"{config.source}: {what} ({path.name}): {error}") from None
    for style in config.evaluation.other_styles:
        try:
            get_style(style)
        except RuntimeError as error:
            raise DemoConfigError(f"{config.source}: evaluation.other_styles: {error}") from None
    try:
        check_output_dir(output_dir.resolve(), overwrite)
    except DemoOutputError as error:
        raise DemoConfigError(str(error), hint=error.hint) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; prints a short summary and returns the exit status (module doc)."""
    return run_command(PROG, _main, argv)


def _main(argv: list[str]) -> int:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = configure(args)
    preflight(config, args.ablation, Path(args.output_dir), args.overwrite)
    from .pipeline import run_demo  # heavy imports after input errors are reported

    summary = run_demo(config, args.output_dir, device=args.device, ablation=args.ablation,
                       overwrite=args.overwrite)
    print(format_summary(summary, args.output_dir))
    return 0


def format_summary(summary: dict, output_dir: str) -> str:
    """The short terminal summary: chosen alphas, test accuracies per kind, the paired gaps and the claim."""
    def pct(stat: dict) -> str:
        return f"{100 * stat['mean']:5.1f}"

    lines = [f"\nCultureCLIP demo: {summary['seeds']} seeds; results in {output_dir}/results/summary.json "
             f"(tables in results/results.md)"]
    selection = summary["selection"]
    lines.append(f"  WiSE-FT alpha per seed, chosen on validation views ({selection['name']}, "
                 f"max general drop {100 * selection['max_general_drop']:g} points):")
    for method, alphas in selection["chosen_alpha"].items():
        lines.append(f"    {method:>11}: " + ", ".join(f"{a:g}" for a in alphas))
    for style in summary["styles"]:
        lines.append(f"  test views, {style} (blended models; twin all / flag / object, general; mean over seeds):")
        for role, values in summary["results"]["blended"][style].items():
            twin = values["twin"]
            lines.append(f"    {role:>11}: twin {pct(twin['all'])} / {pct(twin['flag'])} / {pct(twin['object'])}"
                         f"   general {pct(values['general'])}")
        same = summary["data"]["styles"][style]["twin_pairs_drawn_identically"]
        if same:
            lines.append(f"    ({len(same)} of {summary['data']['twin_pairs']} pairs are drawn identically in "
                         f"{style}: {'; '.join(same)})")
    claim = summary["claim"]
    lines.append(f"  claim {'HOLDS' if claim['holds'] else 'DOES NOT HOLD'} (headline: twemoji, all twins, and "
                 "general accuracy):")
    lines += [f"    - {statement}" for statement in claim["statements"]]
    lines.append(f"  wall time {summary['wall_time_s']['total']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
