"""Fine-tune CLIP into CultureCLIP.

    accelerate launch train.py --recipe release-b32 --dataset <hub id or folder> [--field value ...]
    python train.py --recipe demo --dataset ./cultwin --max_steps 20

Recipes: release-b32 and release-l14 (the authors' exact launch), faithful-cached-b32/-l14, improved-b32, demo,
or a YAML path (see each recipe's header for how it departs from the release). Every recipe field can be overridden
(`--max_steps 100`, `--output-dir runs/x`, `--push-to-hub --hub-model-id me/cultureclip`); `--resume latest`
continues from the newest checkpoint in output_dir. Exit status: 0 done, 2 bad arguments/data/checkpoint,
3 training diverged (NaN/inf).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from cultureclip_training import (CheckpointError, DatasetSchemaError, RecipeError, TrainingDiverged,
                                      builtin_recipes, parse_command_line, train)

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("built-in recipes:", ", ".join(builtin_recipes()))
        return 0
    try:
        args = parse_command_line(argv)
        train(args)
    except (RecipeError, DatasetSchemaError, CheckpointError) as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"train.py: training stopped: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
