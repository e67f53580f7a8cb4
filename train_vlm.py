"""CultureVLM: LoRA fine-tuning of a chat VLM on a CultureVerse-style train split.

    accelerate launch train_vlm.py --recipe vlm-qwen2.5-vl-7b --dataset ./cultureverse [--field value ...]
    python train_vlm.py --recipe vlm-demo --model ./tiny-vlm --dataset ./cultureverse --max_steps 4

Recipes: cultureclip_training/recipes/vlm/*.yaml or a YAML path; every field can be overridden on the command line;
`--resume latest` continues from the newest checkpoint in output_dir. Exit status: 0 done, 2 bad arguments, data
or checkpoint, 3 training diverged (NaN/inf).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from cultureclip_training import CheckpointError, RecipeError, TrainingDiverged
    from cultureclip_training.vlm_sft import VLMDataError, parse_vlm_command_line, train_vlm

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        train_vlm(parse_vlm_command_line(argv))
    except (RecipeError, VLMDataError, CheckpointError, FileNotFoundError) as error:
        print(f"train_vlm.py: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"train_vlm.py: training stopped: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
