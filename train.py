"""Fine-tune CLIP into CultureCLIP.

    accelerate launch train.py --recipe release-b32 --dataset <hub id or folder> [--field value ...]
    python train.py --recipe demo --dataset ./cultwin --max_steps 20

Recipes: release-b32 and release-l14 (the authors' exact launch), faithful-cached-b32/-l14, improved-b32, demo,
or a YAML path (see each recipe's header for how it departs from the release). Every recipe field can be overridden
(`--max_steps 100`, `--output-dir runs/x`, `--push-to-hub --hub-model-id me/cultureclip`); `--resume latest`
continues from the newest checkpoint in output_dir (refused, with the differences listed, when the recipe, data,
batch or LoRA shape changed since). An output_dir holding anything (a finished run, a model) is refused without
`--resume`, unless `--overwrite` starts over there. Several processes meet at start-up within
`--rendezvous_timeout_s` (default 60 s, or CULTURECLIP_RENDEZVOUS_TIMEOUT_S).

Exit status: 0 done; 2 bad input (arguments, recipe, data, model, checkpoint, output folder), one line on stderr;
1 a failure while running (ranks that never started); 3 training diverged (NaN/inf). `--debug` (or
CULTURECLIP_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Train as the command line says; returns the exit status (see the module doc)."""
    from cultureclip_guards import run_command

    return run_command("train.py", _main, argv)


def _main(argv: list[str]) -> int:
    from cultureclip_training import builtin_recipes, parse_command_line, train

    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("built-in recipes:", ", ".join(builtin_recipes()))
        return 0
    train(parse_command_line(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
