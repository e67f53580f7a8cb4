"""The `eval.yaml` that registers a CulTwin build's test split as a Hub Benchmark (leaderboard).

Format: the Hub's eval-results docs (`docs/hub/eval-results` in huggingface/hub-docs): `name`, `description`,
`evaluation_framework`, and `tasks[]` with `id` (required), `config`, `split`. Model repos then report scores in
`.eval_results/*.yaml` entries whose `dataset.task_id` is one of these task ids; `evaluate_suite`'s `cultwin`
benchmark names its tasks from `CULTWIN_TASKS`, so the two cannot drift apart.

`evaluation_framework` is an identifier the Hub keeps in a list (huggingface.js `packages/tasks/src/eval.ts`);
CultureCLIP's evaluator is not on it, so the file names it and the Hub's push-time validation or its allow-list
may need that identifier added before the leaderboard appears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .runstore import atomic_write_bytes

EVALUATION_FRAMEWORK = "cultureclip-evaluate-suite"
# task id -> what it scores (the evaluator's task of the same name; its primary metric is the leaderboard value)
CULTWIN_TASKS = {
    "twin_choice": "side accuracy on the test split: each image of a twin pair against the names of the concept and "
                   "its twin (percent)",
}


def benchmark_yaml(pretty_name: str, split: str = "test", config: str = "default") -> dict[str, Any]:
    """The eval.yaml content as a dict (one task per `CULTWIN_TASKS` entry, all on `split`)."""
    if not pretty_name or not pretty_name.strip():
        raise ValueError("eval.yaml needs the dataset's pretty name (recipe export.pretty_name), got an empty one")
    tasks_text = "; ".join(f"`{task}`: {what}" for task, what in CULTWIN_TASKS.items())
    return {
        "name": pretty_name,
        "description": (f"Held-out culturally distinct look-alike concept pairs (twins) from a CulTwin build: a "
                        f"model must tell each image's concept from its twin. Tasks: {tasks_text}. Evaluated with "
                        f"`python -m evaluate_suite run --benchmarks cultwin` (CultureCLIP project)."),
        "evaluation_framework": EVALUATION_FRAMEWORK,
        "tasks": [{"id": task, "config": config, "split": split} for task in CULTWIN_TASKS],
    }


def write_benchmark_yaml(output_dir: Path, pretty_name: str, split: str = "test") -> Path:
    """Write `output_dir/eval.yaml` atomically; returns its path."""
    text = yaml.safe_dump(benchmark_yaml(pretty_name, split=split), sort_keys=False, allow_unicode=True, width=100)
    path = Path(output_dir) / "eval.yaml"
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


__all__ = ["CULTWIN_TASKS", "EVALUATION_FRAMEWORK", "benchmark_yaml", "write_benchmark_yaml"]
