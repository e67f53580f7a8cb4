"""Registers this folder's fixtures; they and the shared helpers live in cultureverse_helpers.py, a unique module name
that test files import (every folder's conftest.py is named `conftest`, so importing it by name is ambiguous)."""

from cultureverse_helpers import tiny_vlm_dirs, offline_benchmark  # noqa: F401
