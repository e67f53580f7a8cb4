"""Pytest set-up for tests/modeling: the helper's folder on sys.path, markers of transformers' common tests.

Our pytest runs with `--strict-markers`; transformers registers these in its own conftest, which is not part of
the files we import (see transformers_suite.py), so they are declared here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# test_modeling_common.py imports the helper `transformers_suite` from this folder; pytest's default import mode
# puts the folder on sys.path already, this keeps it importable under --import-mode=importlib too.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

# Markers that transformers' test_modeling_common.py / testing_utils apply (all are for hardware or opt-in runs
# that skip here: accelerators, flash attention, compile, distributed).
TRANSFORMERS_MARKERS = (
    "accelerate_tests: needs accelerate and several devices (transformers)",
    "flash_attn_test: flash attention 2 (transformers)",
    "flash_attn_3_test: flash attention 3 (transformers)",
    "flash_attn_4_test: flash attention 4 (transformers)",
    "torch_compile_test: torch.compile (transformers)",
    "torch_export_test: torch.export (transformers)",
    "order: run order hint from pytest-order (transformers' run_first)",
    "is_training_test: training test (transformers)",
    "is_pipeline_test: pipeline test (transformers)",
    "is_staging_test: staging Hub test (transformers)",
    "is_agent_test: agent test (transformers)",
    "is_tensor_parallel_test: tensor parallel (transformers)",
    "is_expert_parallel_test: expert parallel (transformers)",
    "is_fsdp_test: FSDP (transformers)",
)


def pytest_configure(config: pytest.Config) -> None:
    for line in TRANSFORMERS_MARKERS:
        config.addinivalue_line("markers", line)
