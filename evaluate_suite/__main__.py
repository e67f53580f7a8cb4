"""Command line: `python -m evaluate_suite run ...` and `python -m evaluate_suite report ...`.

Exit status: 0 done; 2 bad input (a model or dataset path or Hub id that cannot be used, offline Hub, bad data,
a result file that exists without --overwrite), reported in one line (`python -m evaluate_suite: error: ...`);
1 a failure while running. `--debug` (or CULTURECLIP_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from cultureclip_guards import run_command
from cultureclip_guards.arguments import DEBUG_HELP, int_at_least, int_list

PROG = "python -m evaluate_suite"


def _pairs(values: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise ValueError(f"{flag} expects NAME=VALUE, got {value!r}")
        out[name] = rest
    return out


def build_parser() -> argparse.ArgumentParser:
    from .precision import PRECISIONS
    from .tasks import BENCHMARKS

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="evaluate a model and write one JSON per (benchmark, task)")
    run.add_argument("--model", required=True, help="checkpoint path or Hub id")
    run.add_argument("--benchmarks", required=True, help=f"comma-separated: {', '.join(sorted(BENCHMARKS))}")
    run.add_argument("--output-dir", required=True)
    run.add_argument("--data-dir", action="append", default=[], metavar="NAME=PATH",
                     help="local folder (parquet or webdataset layout) replacing a benchmark's Hub dataset "
                          "(repeatable)")
    run.add_argument("--hub-dataset", action="append", default=[], metavar="NAME=ID[@REV]",
                     help="another Hub copy (and revision) for a benchmark than its default (repeatable)")
    run.add_argument("--name", default=None, help="model name in results and reports (default: the Hub id, or the "
                                                  "checkpoint folder's name)")
    run.add_argument("--min-group-size", type=int, default=20,
                     help="groups (countries, regions, ...) smaller than this are listed with their n, not ranked "
                          "as worst/best (default 20)")
    run.add_argument("--overwrite", action="store_true", help="replace result files of this model that exist")
    run.add_argument("--batch-size", type=int_at_least(1), default=64)
    run.add_argument("--seeds", type=int_list, default=[0, 1, 2], help="distractor seeds, e.g. 0,1,2 (at least one)")
    run.add_argument("--revision", default=None)
    run.add_argument("--trust-remote-code", action="store_true")
    run.add_argument("--bootstrap-resamples", type=int_at_least(1), default=1000)
    run.add_argument("--device", default=None)
    run.add_argument("--dtype", choices=PRECISIONS, default="auto",
                     help="precision of the towers (auto: bf16 on CPUs/GPUs with bf16 units, else fp32); "
                          "scores are computed in fp32 and the record names what ran")
    run.add_argument("--compile", action="store_true", help="torch.compile the towers (pays off on long runs)")
    report = sub.add_parser("report", help="tables, model-index, .eval_results and plots from result JSONs")
    report.add_argument("--results", required=True)
    report.add_argument("--output-dir", required=True)
    report.add_argument("--dataset-id", action="append", default=[], metavar="NAME=HUB_ID",
                        help="publish a benchmark evaluated from local data under this Hub dataset id; its "
                             ".eval_results notes then say the data was a local copy (repeatable)")
    report.add_argument("--overwrite", action="store_true", help="replace an existing report folder's files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a sub-command; returns the exit status (known faults are one line on stderr, see the module doc)."""
    return run_command(PROG, _main, argv)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "run":
        from .runner import run_benchmarks
        from .tasks import BENCHMARKS

        unknown = [b.strip() for b in args.benchmarks.split(",") if b.strip() and b.strip() not in BENCHMARKS]
        if unknown or not args.benchmarks.strip(","):
            parser.error(f"--benchmarks: unknown {unknown or [args.benchmarks]}; expected some of "
                         f"{', '.join(sorted(BENCHMARKS))}")

        paths = run_benchmarks(
            args.model, [b.strip() for b in args.benchmarks.split(",") if b.strip()], args.output_dir,
            data_dirs=_pairs(args.data_dir, "--data-dir"), seeds=args.seeds, batch_size=args.batch_size,
            revision=args.revision, trust_remote_code=args.trust_remote_code,
            bootstrap_resamples=args.bootstrap_resamples, device=args.device,
            name=args.name, hub_datasets=_pairs(args.hub_dataset, "--hub-dataset"),
            min_group_size=args.min_group_size, overwrite=args.overwrite, dtype=args.dtype,
            compile=args.compile,
        )
        for path in paths:
            print(os.fspath(path))
    else:
        from .report import build_report

        summary = build_report(args.results, args.output_dir, _pairs(args.dataset_id, "--dataset-id"),
                               overwrite=args.overwrite)
        print(json.dumps({k: v for k, v in summary.items() if k != "files"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
