"""Reproduce the authors' released CultureCLIP run and compare it with theirs and ours, in one command.

    python reproduce.py --output-dir runs/repro --released-model lukahh/cultureclip_lora_<variant> \\
        --data-dir zeroshot_dollar_street=/data/dollar_street [--data-dir BENCH=PATH ...]
    python reproduce.py ... --dry-run        # the plan, sizes and time/memory estimates; nothing is run

Steps: get the base CLIP (--base-model, default openai/clip-vit-base-patch32) and the released data (--release-data,
default lukahh/CulTwin), import the data (`python -m dataset_builder import-release`), get the authors' checkpoint
(a merged CLIPModel, or a PEFT adapter that is merged into the base), evaluate base and released, train
release-b32 (the authors' exact launch) and our improved recipe (--ours-recipe, default improved-b32) with the
same budget, evaluate both, and write OUTPUT/comparison.{csv,md,png} plus per-model cards under OUTPUT/report/.
Benchmarks (--benchmarks): CROPE, GlobalRG retrieval and grounding, ImageNet / GeoDE / Dollar Street zero-shot;
those without a public Hub copy need --data-dir BENCH=PATH. Every finished step is recorded under OUTPUT/steps/
and not redone on a rerun; a killed training run resumes from its last checkpoint. Local folders work in place
of every Hub id (this is how the offline test runs it on tiny stand-ins).

--train-override KEY=VALUE sets a training field for BOTH runs (e.g. num_workers=16, max_steps=500), so the two
keep the same budget. One process and one GPU; for several GPUs train each recipe with `accelerate launch
train.py` and evaluate with `python -m evaluate_suite`.

Exit status: 0 done; 2 bad input (an argument, source, checkpoint or data), one line on stderr; 1 a failure while
running; 3 training diverged. `--debug` (or CULTURECLIP_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import argparse
import sys

from cultureclip_guards import run_command
from cultureclip_guards.arguments import DEBUG_HELP, int_at_least, int_list


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reproduce.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--base-model", default="openai/clip-vit-base-patch32")
    parser.add_argument("--base-revision", default=None)
    parser.add_argument("--release-data", default="lukahh/CulTwin", help="Hub dataset id or local folder/file")
    parser.add_argument("--data-revision", default=None)
    parser.add_argument("--release-data-path", default=None,
                        help="the file or folder to import inside the released data (default: all of it)")
    parser.add_argument("--image-root", default=None, help="where the released JSON's image paths resolve")
    parser.add_argument("--skip-missing-images", action="store_true")
    parser.add_argument("--import-combinations", choices=("all", "matched"), default="all",
                        help="all released (caption, twin caption) rows, as the release trains (default), or matched")
    parser.add_argument("--released-model", default=None, help="the authors' checkpoint (Hub id or folder)")
    parser.add_argument("--released-revision", default=None)
    parser.add_argument("--release-recipe", default="release-b32")
    parser.add_argument("--ours-recipe", default="improved-b32")
    parser.add_argument("--max-steps", type=int_at_least(1), default=None, help="cap both training runs at N steps")
    parser.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--benchmarks", default=None, help="comma-separated evaluate_suite benchmark names")
    parser.add_argument("--data-dir", action="append", default=[], metavar="BENCH=PATH")
    parser.add_argument("--eval-seeds", type=int_list, default=[0, 1, 2], help="comma-separated, at least one")
    parser.add_argument("--eval-batch-size", type=int_at_least(1), default=256)
    parser.add_argument("--bootstrap-resamples", type=int_at_least(1), default=1000)
    parser.add_argument("--device", default=None, help="evaluation device (default: cuda when available)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and estimates; run nothing")
    parser.add_argument("--assumed-tflops", type=float, default=None,
                        help="sustained TFLOP/s for the time estimates (default by precision, see the plan)")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """Run (or plan) the reproduction; returns the exit status (see the module doc)."""
    return run_command("reproduce.py", _main, argv)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from cultureclip_reproduce import DEFAULT_BENCHMARKS, ReproduceConfig, format_plan, make_plan, reproduce

    overrides = _pairs(args.train_override, "--train-override")
    if args.max_steps is not None:
        overrides["max_steps"] = str(args.max_steps)
    seeds = tuple(args.eval_seeds)
    config = ReproduceConfig(
        output_dir=args.output_dir, base_model=args.base_model, base_revision=args.base_revision,
        release_data=args.release_data, data_revision=args.data_revision, image_root=args.image_root,
        release_data_path=args.release_data_path, import_combinations=args.import_combinations,
        skip_missing_images=args.skip_missing_images, released_model=args.released_model,
        released_revision=args.released_revision, release_recipe=args.release_recipe,
        ours_recipe=args.ours_recipe, train_overrides=overrides,
        benchmarks=tuple(b.strip() for b in args.benchmarks.split(",") if b.strip()) if args.benchmarks
        else DEFAULT_BENCHMARKS,
        data_dirs=_pairs(args.data_dir, "--data-dir"), eval_seeds=seeds, eval_batch_size=args.eval_batch_size,
        bootstrap_resamples=args.bootstrap_resamples, device=args.device)
    if args.dry_run:
        print(format_plan(make_plan(config, args.assumed_tflops)))
        return 0
    outputs = reproduce(config)
    print(f"comparison: {outputs['markdown']} ({outputs['csv']}, {outputs['plot']}); cards: {len(outputs['cards'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
