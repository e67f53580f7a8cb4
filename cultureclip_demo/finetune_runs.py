"""The demo's fine-tuning runs: one job per (method, seed) fine-tunes the saved base on the saved mixture and
scores the result. Jobs are independent, so they run in worker processes (one per core by default); each worker
reads the base model, processor and datasets from disk and returns plain data (records, summaries, paths)."""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm
from transformers import CLIPProcessor

from cultureclip_training import build_args, train
from cultureclip_training.artifacts import Artifacts
from modeling_cultureclip import CultureCLIPModel

from .config import DemoConfig, resolve
from .evaluation import evaluate_one

FINETUNE_SPLIT = "finetune"


def twin_split(style: str) -> str:
    return f"{style}_twin"


def general_split(style: str) -> str:
    return f"{style}_general"


@dataclass(frozen=True)
class FinetuneJob:
    """One fine-tuning run and its evaluation; everything a worker process needs, by value or by path."""

    method: str
    seed: int
    config: DemoConfig
    base_dir: str  # the pretrained base (model + processor)
    data_dir: str  # DatasetDict: FINETUNE_SPLIT and the per-style evaluation sets
    output_dir: str
    styles: tuple[str, ...]
    new_words: tuple[str, ...] = ()


@dataclass
class FinetuneOutcome:
    """What a job returns to the main process."""

    method: str
    seed: int
    record: dict[str, dict[str, dict]]  # evaluate_one's output
    summary: dict[str, Any]  # TrainResult.summary()
    artifacts: Artifacts
    wise_ft_alpha: float | None
    seconds: dict[str, float] = field(default_factory=dict)


def evaluated_model(result) -> CultureCLIPModel:
    """The model a fine-tuning run is judged by: its WiSE-FT blend when the recipe asks for one, else the merged
    model."""
    artifacts = result.artifacts
    if artifacts is not None and artifacts.wise_ft_dir is not None:
        return CultureCLIPModel.from_pretrained(artifacts.wise_ft_dir)
    return result.model


def finetune_and_evaluate(job: FinetuneJob) -> FinetuneOutcome:
    """Fine-tune the base with the job's recipe and seed, then score it on every style."""
    config = job.config
    threads = torch.get_num_threads()
    torch.set_num_threads(config.finetune.threads_per_worker)
    try:
        return _finetune_and_evaluate(job)
    finally:
        torch.set_num_threads(threads)  # matters when the job ran in the main process


def _finetune_and_evaluate(job: FinetuneJob) -> FinetuneOutcome:
    config = job.config
    data = datasets.load_from_disk(job.data_dir)
    processor = CLIPProcessor.from_pretrained(job.base_dir)
    model = CultureCLIPModel.from_pretrained(job.base_dir)
    args = build_args(str(resolve(config.finetune.recipes[job.method])),
                      {**config.finetune.overrides, "seed": job.seed, "output_dir": job.output_dir,
                       "progress_bar": False, "lora_trainable_tokens": list(job.new_words)})
    started = time.perf_counter()
    result = train(args, dataset=data[FINETUNE_SPLIT], model=model, processor=processor)
    trained = time.perf_counter()
    record = evaluate_one(evaluated_model(result), processor,
                          {style: data[twin_split(style)] for style in job.styles},
                          {style: data[general_split(style)] for style in job.styles}, config)
    return FinetuneOutcome(job.method, job.seed, record, result.summary(), result.artifacts, args.wise_ft_alpha,
                           {"fine-tune": round(trained - started, 2),
                            "evaluate": round(time.perf_counter() - trained, 2)})


def run_jobs(jobs: list[FinetuneJob], workers: int, progress: bool = True) -> list[FinetuneOutcome]:
    """Every job's outcome, in job order: in this process when `workers` is 1, else in `workers` spawned processes
    (spawn, not fork: a forked copy of a process that already ran torch can hang in its thread pools)."""
    bar = tqdm(total=len(jobs), desc="fine-tuning runs", disable=not progress, file=sys.stderr)
    outcomes: dict[int, FinetuneOutcome] = {}
    for index, outcome in _completed(jobs, workers):
        outcomes[index] = outcome
        bar.update(1)
        bar.set_postfix_str(f"{outcome.method} seed {outcome.seed} done")
    bar.close()
    return [outcomes[index] for index in range(len(jobs))]


def _completed(jobs: list[FinetuneJob], workers: int) -> Iterator[tuple[int, FinetuneOutcome]]:
    if workers <= 1 or len(jobs) <= 1:
        for index, job in enumerate(jobs):
            yield index, finetune_and_evaluate(job)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(finetune_and_evaluate, job): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def save_job_data(directory: Path, mixture: datasets.Dataset, twin_sets: dict[str, datasets.Dataset],
                  general_sets: dict[str, datasets.Dataset]) -> Path:
    """Write the mixture and evaluation sets where the workers read them."""
    splits = {FINETUNE_SPLIT: mixture}
    for style in twin_sets:
        splits[twin_split(style)] = twin_sets[style]
        splits[general_split(style)] = general_sets[style]
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar per split would bury the demo's own progress lines
    try:
        datasets.DatasetDict(splits).save_to_disk(str(directory))
    finally:
        if shown:
            datasets.enable_progress_bars()
    return directory


__all__ = ["FinetuneJob", "FinetuneOutcome", "evaluated_model", "finetune_and_evaluate", "run_jobs",
           "save_job_data"]
