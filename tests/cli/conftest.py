"""Registers the shared fixtures for the CLI fault tests (helpers live in cli_harness.py, a unique module name)."""

import os

os.environ.setdefault("DATASET_BUILDER_FSYNC", "0")
os.environ.setdefault("CULTURECLIP_FSYNC", "0")

import cli_harness  # noqa: E402,F401  (puts tests/training and tests/evaluate_suite on sys.path)
from training_helpers import cultwin_dir, tiny_model_dir  # noqa: E402,F401
