"""Benchmark registry: importing this package registers every benchmark class by name.

Nothing here imports the runner or `evaluate_suite.vlm` (which import this package): the dependency runs one way.
"""

from .base import (
    BENCHMARKS, Benchmark, ChoiceItems, EvalSettings, MultipleChoiceBenchmark, TaskResult, get_benchmark, register,
)
from .cultural import CropeTwins, CulTwinHeldOut, CultureVerseMCQ, GlobalRGGrounding, GlobalRGRetrieval
from .cultureverse import CultureVerseVLM
from .general import (
    CocoRetrieval, Country211ZeroShot, DollarStreetZeroShot, Flickr30kRetrieval, GeoDEZeroShot, ImageNetZeroShot,
    RetrievalBenchmark, ZeroShotBenchmark,
)

__all__ = [
    "BENCHMARKS", "Benchmark", "ChoiceItems", "CocoRetrieval", "Country211ZeroShot", "CropeTwins", "CulTwinHeldOut",
    "CultureVerseMCQ", "CultureVerseVLM", "DollarStreetZeroShot", "EvalSettings", "Flickr30kRetrieval",
    "GeoDEZeroShot", "GlobalRGGrounding", "GlobalRGRetrieval", "ImageNetZeroShot", "MultipleChoiceBenchmark",
    "RetrievalBenchmark", "TaskResult", "ZeroShotBenchmark", "get_benchmark", "register",
]
