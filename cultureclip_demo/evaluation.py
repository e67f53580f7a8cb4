"""How the demo scores one model: twin choice and general zero-shot accuracy on every style's held-out views,
through the evaluation suite's in-memory API."""

from __future__ import annotations

import datasets

from evaluate_suite.encoders import DualEncoder
from evaluate_suite.runner import evaluate_model
from evaluate_suite.tasks import get_benchmark

from .config import DemoConfig

GENERAL_TEMPLATES = ("{}",)  # the names alone, as in pretraining


def evaluate_one(model, processor, twin_sets: dict[str, datasets.Dataset], general_sets: dict[str, datasets.Dataset],
                 config: DemoConfig) -> dict[str, dict[str, dict]]:
    """{style: {"twin": cultwin record, "general": zero-shot record}} for one model."""
    evaluation = config.evaluation
    encoder = DualEncoder(model, processor, batch_size=evaluation.batch_size, device="cpu")
    out: dict[str, dict[str, dict]] = {}
    for style in twin_sets:
        twin = evaluate_model(model, processor, "cultwin", twin_sets[style], encoder=encoder,
                              bootstrap_resamples=evaluation.bootstrap_resamples, seeds=(evaluation.seed,))
        general = evaluate_model(model, processor, get_benchmark("zeroshot_imagenet", templates=GENERAL_TEMPLATES),
                                 general_sets[style], encoder=encoder, seeds=(evaluation.seed,),
                                 bootstrap_resamples=evaluation.bootstrap_resamples)
        out[style] = {"twin": twin["twin_choice"], "general": general["zero_shot"]}
    return out


__all__ = ["GENERAL_TEMPLATES", "evaluate_one"]
