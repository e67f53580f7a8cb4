"""CultureVLM: LoRA fine-tuning of a chat VLM on a CultureVerse-style train split.

    accelerate launch train_vlm.py --recipe vlm-qwen2.5-vl-7b --dataset ./cultureverse [--field value ...]
    python train_vlm.py --recipe vlm-demo --model ./tiny-vlm --dataset ./cultureverse --max_steps 4

Recipes: cultureclip_training/recipes/vlm/*.yaml or a YAML path; every field can be overridden on the command line;
`--resume latest` continues from the newest checkpoint in output_dir.

Exit status: 0 done; 2 bad input (arguments, recipe, data, model, checkpoint), one line on stderr; 1 a failure
while running; 3 training diverged (NaN/inf). `--debug` (or CULTURECLIP_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Train as the command line says; returns the exit status (see the module doc)."""
    from cultureclip_guards import run_command

    return run_command("train_vlm.py", _main, argv)


def _main(argv: list[str]) -> int:
    from cultureclip_training.vlm_sft import parse_vlm_command_line, train_vlm

    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    train_vlm(parse_vlm_command_line(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
