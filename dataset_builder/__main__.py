"""Command line: `python -m dataset_builder build|push|build-cultureverse|import-release|calibrate-similarity`.

Exit status: 0 done; 2 bad input (recipe, catalog, arguments, data, an output folder holding something the command
did not make: nothing is written then); 1 a failure while running (an inference server that stays down, ranks of a
multi-process build that never started); every finished item is kept, so rerunning the same command resumes.
One line says what is wrong; `--debug` (or CULTURECLIP_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from cultureclip_guards import run_command
from cultureclip_guards.arguments import DEBUG_HELP, float_between, int_at_least

PROG = "python -m dataset_builder"


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command; returns the exit status (known faults are one line on stderr, see the module doc)."""
    return run_command(PROG, _main, argv)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Build and publish CulTwin.", epilog=__doc__.split(
        "\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build or resume a CulTwin folder")
    b.add_argument("--recipe", default="demo", help="packaged recipe name (demo, paper) or a YAML path")
    b.add_argument("--output-dir", help="the CulTwin folder to build or resume (required unless --plan)")
    b.add_argument("--limit-pairs", type=int_at_least(1), default=None, help="keep only the first N twin pairs (N >= 1)")
    b.add_argument("--seed", type=int, default=None, help="override the recipe seed")
    b.add_argument("--overwrite", action="store_true",
                   help="build into a folder that holds files this build did not make (its export files are replaced "
                        "only once the new export is complete), or start a run folder over whose recipe or catalog "
                        "changed")
    b.add_argument("--rendezvous-timeout", type=float, default=None, metavar="SECONDS",
                   help="multi-process builds: how long ranks wait for each other at start-up (default 60, or "
                        "CULTURECLIP_RENDEZVOUS_TIMEOUT_S)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars (the summary is still printed)")
    b.add_argument("--plan", "--dry-run", dest="plan", action="store_true",
                   help="print per-stage models, dtypes and estimated peak memory per device, then exit (loads nothing)")
    from .cultureverse import add_cli as _add_cultureverse

    _add_cultureverse(sub)
    cal = sub.add_parser("calibrate-similarity", help="score the twin catalog's twins vs same-category non-twins and "
                                                        "recommend twins.min_feature_similarity")
    cal.add_argument("--embedder", default=None, help="embedder spec (default: the paper recipe's)")
    cal.add_argument("--catalog", default=None, help="twin catalog YAML (default: the packaged Twemoji catalog)")
    cal.add_argument("--keep-twins", type=float_between(0.0, 1.0), default=0.95, help="share of true twins the threshold keeps")
    cal.add_argument("--image-reference", action="store_true",
                     help="also measure every pair on the catalog's Twemoji images (are the negatives really unalike?)")
    cal.add_argument("--json", action="store_true", help="print the summary as JSON instead of the report")
    p = sub.add_parser("push", help="upload an exported folder to the Hub")
    p.add_argument("folder")
    p.add_argument("--repo-id", required=True, help="owner/name of the Hub dataset repo (checked before any upload)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="list the files and sizes that would be uploaded")
    r = sub.add_parser("import-release", help="convert the authors' released CulTwin JSON into this layout")
    r.add_argument("source", help="a released JSON/JSONL file, or a folder of them (train/val/test by file name)")
    r.add_argument("--output-dir", required=True)
    r.add_argument("--image-root", default=None, help="folder the image paths are resolved under (default: the "
                   "JSON file's folder; absolute paths of the authors' machines are re-based under it)")
    r.add_argument("--skip-missing-images", action="store_true", help="drop rows whose image is missing or "
                   "unreadable (counted in the card) instead of stopping")
    r.add_argument("--rows-per-shard", type=int_at_least(1), default=500)
    r.add_argument("--source-id", default=None, help="where SOURCE came from, for the card (e.g. lukahh/CulTwin)")
    r.add_argument("--revision", default=None, help="the source's revision, for the card (default: a fingerprint)")
    r.add_argument("--license", default="unknown", help="licence for the card (the release states none in its data)")
    r.add_argument("--combinations", choices=("all", "matched"), default="all", help="all: every released "
                   "(caption, twin caption) row, as the release trains; matched: caption k with twin caption k only")
    r.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    args = parser.parse_args(argv)

    if args.command == "build-cultureverse":
        from .cultureverse import run_cli as _run_cultureverse

        summary = _run_cultureverse(args)
        print(json.dumps({"output_dir": args.output_dir, "rows": summary["rows"], "statistics": summary["statistics"]}))
        return 0
    if args.command == "calibrate-similarity":
        from .calibration import run_cli as _run_calibration

        print(_run_calibration(args))
        return 0
    if args.command == "build" and args.plan:
        from .backends.plan import format_plan, plan_build
        from .recipe import load_recipe

        print(format_plan(plan_build(load_recipe(args.recipe))))
        return 0
    if args.command == "build":
        from .pipeline import build, print_summary

        if not args.output_dir:
            parser.error("build: --output-dir is required (or pass --plan to only print the plan)")

        summary = build(args.recipe, args.output_dir, limit_pairs=args.limit_pairs, seed=args.seed,
                        progress=not args.no_progress, overwrite=args.overwrite,
                        rendezvous_timeout_s=args.rendezvous_timeout)
        if summary.get("exported") is False:
            print(f"rank {summary['rank']}/{summary['world']}: stages done; rank 0 exports", file=sys.stderr)
            return 0
        if args.no_progress:
            print_summary(summary)
        print(json.dumps({"output_dir": args.output_dir, "rows": summary["rows"], "total_rows": summary["total_rows"],
                          "wall_time_s": summary["wall_time_s"]}))
        return 0
    if args.command == "import-release":
        from .release_import import import_release

        summary = import_release(args.source, args.output_dir, image_root=args.image_root,
                                 overwrite=args.overwrite, skip_missing_images=args.skip_missing_images,
                                 rows_per_shard=args.rows_per_shard, source_id=args.source_id,
                                 revision=args.revision, license=args.license, combinations=args.combinations)
        print(json.dumps({"output_dir": summary["output_dir"], "rows": summary["rows"],
                          "statistics": summary["statistics"]}))
        return 0
    from .push import push

    result = push(args.folder, args.repo_id, private=args.private, dry_run=args.dry_run,
                  token=os.environ.get("HF_TOKEN"))
    for rel, size in result["files"]:
        print(f"{size:>12,d}  {rel}")
    verb = "would upload" if args.dry_run else "uploaded"
    print(f"{verb} {len(result['files'])} files, {result['total_bytes']:,d} bytes to dataset repo {args.repo_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
