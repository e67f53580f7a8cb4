"""Benchmark registry: importing this package registers every benchmark class by name."""

from .base import (
    BENCHMARKS, Benchmark, ChoiceItems, EvalSettings, MultipleChoiceBenchmark, TaskResult, get_benchmark, register,
)
from .cultural import CropeTwins, CulTwinHeldOut, CultureVerseMCQ, GlobalRGGrounding, GlobalRGRetrieval
from .general import (
    CocoRetrieval, Country211ZeroShot, DollarStreetZeroShot, Flickr30kRetrieval, GeoDEZeroShot, ImageNetZeroShot,
    RetrievalBenchmark, ZeroShotBenchmark,
)

__all__ = [
    "BENCHMARKS", "Benchmark", "ChoiceItems", "CocoRetrieval", "Country211ZeroShot", "CropeTwins", "CulTwinHeldOut",
    "CultureVerseMCQ", "DollarStreetZeroShot", "EvalSettings", "Flickr30kRetrieval", "GeoDEZeroShot",
    "GlobalRGGrounding", "GlobalRGRetrieval", "ImageNetZeroShot", "MultipleChoiceBenchmark", "RetrievalBenchmark",
    "TaskResult", "ZeroShotBenchmark", "get_benchmark", "register",
]

from .. import vlm as _vlm  # noqa: E402,F401  (registers cultureverse_vlm; imported last, it builds on these tasks)
