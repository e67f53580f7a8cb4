"""Registers the reproduction's stand-in fixtures (defined in reproduce_helpers.py, a unique module name)."""

from reproduce_helpers import stand_ins  # noqa: F401
