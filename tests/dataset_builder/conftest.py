"""Registers this folder's fixtures; they and the shared helpers live in builder_helpers.py, a unique module name
that test files import (every folder's conftest.py is named `conftest`, so importing it by name is ambiguous)."""

from builder_helpers import reference_build  # noqa: F401
