"""Registers this folder's fixtures; they and the shared helpers live in training_helpers.py, a unique module name
that test files import (every folder's conftest.py is named `conftest`, so importing it by name is ambiguous)."""

from training_helpers import cultwin_dir, tiny_model_dir, _one_thread  # noqa: F401
