"""Each local `evaluate` metric module loads with evaluate.load(path) in a fresh offline process and computes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluate_suite.metrics import METRIC_MODULES, module_path

REPO = Path(__file__).resolve().parents[2]
CASES = {
    "cultural_accuracy": ("dict(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], groups=['Japan', 'Japan', 'Chad',"
                          " None], n_resamples=200, min_group_size=1)",
                          {"accuracy": 0.75, "worst_group": "Chad", "best_worst_gap": 1.0}),
    "retrieval_recall": ("dict(predictions=[[0.9, 0.95, 0.2], [0.3, 0.8, 0.7]], references=[[0], [1, 2]], ks=[1])",
                         {"image_to_text_recall@1": 0.5, "text_to_image_recall@1": 2 / 3}),
    "zero_shot_accuracy": ("dict(predictions=[[0.2, 0.9, 0.1], [0.8, 0.1, 0.3], [0.1, 0.2, 0.7]], "
                           "references=[1, 2, 2], top_k=[2], n_resamples=200)",
                           {"top1_accuracy": 2 / 3, "top2_accuracy": 1.0, "balanced_accuracy": 0.75}),
}


def test_every_module_has_a_case_and_a_card():
    assert set(CASES) == set(METRIC_MODULES)
    for name in METRIC_MODULES:
        card = Path(module_path(name)) / "README.md"
        assert card.read_text().startswith("---\n") and "## Limitations" in card.read_text()


def test_modules_load_offline_in_a_fresh_process(tmp_path):
    # One fresh interpreter for all modules (start-up dominates the cost), with the Hub switched off and an empty
    # HF_HOME so nothing can come from a cache.
    code = "import json, evaluate\nout = {}\n" + "".join(
        f"out[{name!r}] = evaluate.load({module_path(name)!r}).compute(**{kwargs})\n"
        for name, (kwargs, _) in CASES.items()
    ) + "print(json.dumps(out))\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (_, expected) in CASES.items():
        for key, value in expected.items():
            assert results[name][key] == (pytest.approx(value) if isinstance(value, float) else value), (name, key)
