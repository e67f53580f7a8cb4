"""Reproduce the authors' released CultureCLIP run and put it side by side with ours.

One call, `reproduce(ReproduceConfig(...))` (the `reproduce.py` program), gets the base CLIP, the released data
and the authors' checkpoint, trains `release-b32` (their exact launch) and our improved recipe with the same
budget, evaluates all four models on the cultural and general benchmarks, and writes one comparison table (CSV,
markdown, plot) and the models' cards. Every step is recorded and skipped on a rerun; `make_plan` is the dry run.

This package sits at the end of the data flow: it uses dataset_builder (import), cultureclip_training (train)
and evaluate_suite (evaluate, report); none of them imports it.
"""

from .config import DEFAULT_BENCHMARKS, ROWS, ReproduceConfig, ReproduceError
from .plan import format_plan, make_plan
from .steps import reproduce, step_names

__all__ = ["DEFAULT_BENCHMARKS", "ROWS", "ReproduceConfig", "ReproduceError", "format_plan", "make_plan",
           "reproduce", "step_names"]
