"""The demo's fine-tuning runs: one job per (method, seed) fine-tunes the saved base on that seed's saved mixture,
chooses WiSE-FT's alpha on the validation views, and only then scores the unblended and the blended model on the
test views. Jobs are independent, so they run in worker processes (one per core by default); each worker reads the
base model, processor and datasets from disk and returns plain data (answers, records, summaries, paths)."""

from __future__ import annotations

import hashlib
import multiprocessing
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm
from transformers import CLIPProcessor

from cultureclip_training import build_args, train
from cultureclip_training.artifacts import Artifacts, atomic_dir
from cultureclip_training.lora import wise_ft
from modeling_cultureclip import CultureCLIPModel

from .config import DemoConfig, VariantSettings, resolve
from .data import EvalSets, content_fingerprint
from .scoring import Scored, score_model
from .selection import Selection, select_alpha

FINETUNE_SPLIT = "finetune"
VARIANTS = ("unblended", "blended")  # alpha 1 (the fine-tuned model itself), and the chosen alpha


def twin_split(style: str) -> str:
    return f"{style}_twin"


def general_split(style: str) -> str:
    return f"{style}_general"


@dataclass(frozen=True)
class FinetuneJob:
    """One fine-tuning run, its alpha choice and its test evaluation; everything a worker needs, by value or path."""

    method: str
    seed: int
    config: DemoConfig
    variant: VariantSettings  # the trainer recipe and overrides of this method
    base_dir: str  # the pretrained base (model + processor)
    data_dir: str  # this seed's fine-tuning mixture (shared by every method of the seed)
    validation_dir: str  # validation sets (Twemoji)
    test_dir: str  # test sets, per style; opened only after the alpha is chosen
    output_dir: str
    styles: tuple[str, ...]
    base_validation: dict[str, float]  # the base's validation accuracies, which the rule compares with
    new_words: tuple[str, ...] = ()
    save_selected: bool = False  # write the blend at the chosen alpha (the Hub model candidate)


@dataclass
class FinetuneOutcome:
    """What a job returns to the main process."""

    method: str
    seed: int
    summary: dict[str, Any]  # TrainResult.summary()
    artifacts: Artifacts
    selection: Selection
    tested: dict[str, Scored]  # by VARIANTS
    fingerprints: dict[str, str]  # "data": the mixture's content, "init": the trainable weights before step 1
    events: list[str] = field(default_factory=list)  # the order things happened in, for the tests
    seconds: dict[str, float] = field(default_factory=dict)
    selected_dir: str | None = None


def load_sets(directory: str, styles: tuple[str, ...]) -> dict[str, EvalSets]:
    """Evaluation sets saved by `save_sets`."""
    data = datasets.load_from_disk(directory)
    return {style: EvalSets(data[twin_split(style)], data[general_split(style)]) for style in styles}


def save_sets(directory: Path, sets: dict[str, EvalSets]) -> Path:
    """Write one view family's sets where the workers read them."""
    splits = {}
    for style, pair in sets.items():
        splits[twin_split(style)] = pair.twin
        splits[general_split(style)] = pair.general
    return save_splits(directory, splits)


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars inside (one per split or cast would bury the demo's own progress lines)."""
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def save_splits(directory: Path, splits: dict[str, datasets.Dataset]) -> Path:
    with quiet_datasets():
        datasets.DatasetDict(splits).save_to_disk(str(directory))
    return directory


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (16 hex digits) of the trainable parameters, by name: equal starts give equal fingerprints."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def model_name(run: str, alpha: float) -> str:
    """How records name a run's model: the run and its WiSE-FT alpha (alpha 1: the fine-tuned model itself). Not a
    Hub id and not a path."""
    return f"cultureclip-demo-{run}-alpha{alpha:g}"


def blend(base: CultureCLIPModel, tuned: CultureCLIPModel, alpha: float) -> CultureCLIPModel:
    """WiSE-FT (1 - alpha) x base + alpha x tuned; alpha 1 and 0 are the models themselves."""
    if alpha == 1.0:
        return tuned
    if alpha == 0.0:
        return base
    return wise_ft(base, tuned, alpha)


def finetune_and_evaluate(job: FinetuneJob) -> FinetuneOutcome:
    """Fine-tune, choose alpha on validation views, then score on test views."""
    threads = torch.get_num_threads()
    torch.set_num_threads(job.config.finetune.threads_per_worker)
    try:
        return _finetune_and_evaluate(job)
    finally:
        torch.set_num_threads(threads)  # matters when the job ran in the main process


def _finetune_and_evaluate(job: FinetuneJob) -> FinetuneOutcome:
    config, evaluation = job.config, job.config.evaluation
    name = f"{job.method}-seed{job.seed}"
    events: list[str] = []
    mixture = datasets.load_from_disk(job.data_dir)
    processor = CLIPProcessor.from_pretrained(job.base_dir)
    args = build_args(str(resolve(job.variant.recipe)),
                      {**config.finetune.overrides, **job.variant.overrides, "seed": job.seed,
                       "output_dir": job.output_dir, "progress_bar": False,
                       "lora_trainable_tokens": list(job.new_words), "wise_ft_alpha": None})
    start: dict[str, str] = {}

    def remember_start(step: int, model: torch.nn.Module) -> None:
        if step == 1:
            start["init"] = weights_fingerprint(model)

    started = time.perf_counter()
    result = train(args, dataset=mixture, model=CultureCLIPModel.from_pretrained(job.base_dir), processor=processor,
                   callbacks=[remember_start])
    tuned, base = result.model, CultureCLIPModel.from_pretrained(job.base_dir)
    trained = time.perf_counter()
    events.append("trained")

    validation = load_sets(job.validation_dir, ("twemoji",))

    def score_validation(alpha: float) -> dict[str, float]:
        events.append(f"validation alpha={alpha:g}")
        scored = score_model(blend(base, tuned, alpha), processor, validation, model_id=model_name(name, alpha),
                             batch_size=evaluation.batch_size, seed=evaluation.validation.seed, with_records=False)
        return {task: scored.accuracy("twemoji", task) for task in ("twin", "general")}

    selection = select_alpha(config.selection, score_validation, job.base_validation)
    events.append(f"chose alpha={selection.alpha:g}")
    selected = time.perf_counter()

    test = load_sets(job.test_dir, job.styles)  # opened only now that the choice is fixed
    events.append("test views opened")
    tested: dict[str, Scored] = {}
    for variant, alpha in (("unblended", 1.0), ("blended", selection.alpha)):
        if variant == "blended" and alpha == 1.0:
            tested[variant] = tested["unblended"]  # the same model
            continue
        tested[variant] = score_model(blend(base, tuned, alpha), processor, test,
                                      model_id=model_name(name, alpha),
                                      batch_size=evaluation.batch_size, seed=evaluation.test.seed, with_records=True,
                                      bootstrap_resamples=evaluation.bootstrap_resamples,
                                      family_settings=evaluation.test.view)
    selected_dir = None
    if job.save_selected:
        model = blend(base, tuned, selection.alpha)

        def write(directory: Path) -> None:
            model.save_pretrained(directory)
            processor.save_pretrained(directory)

        selected_dir = str(atomic_dir(Path(job.output_dir) / f"model-selected-alpha{selection.alpha:g}", write))
    done = time.perf_counter()
    return FinetuneOutcome(
        job.method, job.seed, result.summary(), result.artifacts, selection, tested,
        {"data": content_fingerprint(mixture.select_columns(["concept_id", "twin_concept_id", "caption",
                                                             "twin_caption"])), **start},
        events, {"fine-tune": round(trained - started, 2), "select": round(selected - trained, 2),
                 "test": round(done - selected, 2)}, selected_dir)


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


__all__ = ["FINETUNE_SPLIT", "FinetuneJob", "FinetuneOutcome", "VARIANTS", "blend", "finetune_and_evaluate",
           "load_sets", "model_name", "quiet_datasets", "run_jobs", "save_sets", "save_splits", "weights_fingerprint"]
