"""CultureCLIP evaluation suite: cultural and general benchmarks for CLIP-family models, Hub-ready reports.

Python API for in-memory models: `evaluate_model(model, processor, "cultwin", dataset)`; file-based runs:
`run_benchmarks(...)` / `python -m evaluate_suite run|report`; one benchmark split with its provenance:
`load_benchmark_data(source, split, benchmark)` (a local folder or a Hub id; only that split is fetched).
"""

from .encoders import DualEncoder, load_encoder
from .errors import EvalDataError
from .runner import evaluate_model, load_results, run_benchmarks
from .sources import load_benchmark_data
from .tasks import BENCHMARKS, EvalSettings, get_benchmark

__all__ = ["BENCHMARKS", "DualEncoder", "EvalDataError", "EvalSettings", "evaluate_model", "get_benchmark",
           "load_benchmark_data", "load_encoder", "load_results", "run_benchmarks"]


def build_report(*args, **kwargs):
    """See `evaluate_suite.report.build_report` (imported lazily: it pulls in matplotlib)."""
    from .report import build_report as _build

    return _build(*args, **kwargs)
