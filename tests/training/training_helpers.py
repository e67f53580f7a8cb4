"""Fixtures for the trainer's tests: a tiny CulTwin folder in the exported schema and a tiny model folder."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from dataset_builder.backends.local_server import free_port
from modeling_cultureclip import CultureCLIPModel
from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of

REPO = Path(__file__).resolve().parents[2]
# (concept, country, twin concept, twin country, category)
PAIRS = [
    ("jollof rice", "Nigeria", "paella", "Spain", "Cuisine"),
    ("kimono", "Japan", "hanbok", "South Korea", "Clothing"),
    ("sombrero", "Mexico", "conical hat", "Vietnam", "Clothing"),
    ("didgeridoo", "Australia", "alphorn", "Switzerland", "Art"),
]
SCENES = ["at a market", "in a kitchen", "during a festival", "on a street"]


def _image(seed: int) -> Image.Image:
    """A small RGBA image with a colour and a pattern that differ per seed."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(24, 24, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    return Image.fromarray(pixels, mode="RGBA")


def cultwin_rows(samples: int = len(SCENES)) -> dict[str, list]:
    """Rows of the CulTwin schema: one row per (pair, sample)."""
    rows: dict[str, list] = {name: [] for name in COLUMNS}
    for p, (concept, country, twin, twin_country, category) in enumerate(PAIRS):
        for k in range(samples):
            side = dict(concept_id=f"c{p}", concept=concept, country=country, caption=f"a {concept} {SCENES[k]}",
                        image=_image(100 * p + k), seed=100 * p + k)
            other = dict(concept_id=f"t{p}", concept=twin, country=twin_country,
                         caption=f"a {twin} {SCENES[(k + 1) % len(SCENES)]}", image=_image(100 * p + k + 50),
                         seed=100 * p + k + 50)
            values = {
                "pair_id": f"pair-{p}", "sample_index": k, "iso_code": country[:2].upper(), "continent": "Earth",
                "category": category, "context": f"{side['concept']} from {country}",
                "visual_features": "shape and colour", "all_captions": [side["caption"]],
                "judge_scores": {"authenticity": 4, "consistency": 4, "cultural_fidelity": 5},
                "twin_iso_code": twin_country[:2].upper(), "twin_continent": "Earth",
                "twin_context": f"{twin} from {twin_country}", "twin_visual_features": "shape and colour",
                "twin_all_captions": [other["caption"]],
                "twin_judge_scores": {"authenticity": 4, "consistency": 5, "cultural_fidelity": 4},
                "source": "test", "text_model": "template", "image_model": "noise",
            }
            values.update(side)
            values.update({f"twin_{k2}": v for k2, v in other.items()})
            for name in COLUMNS:
                rows[name].append(values[name])
    return rows


COLUMNS = ["pair_id", "sample_index", "concept_id", "concept", "country", "iso_code", "continent", "category",
           "context", "visual_features", "caption", "all_captions", "image", "seed", "judge_scores",
           "twin_concept_id", "twin_concept", "twin_country", "twin_iso_code", "twin_continent", "twin_context",
           "twin_visual_features", "twin_caption", "twin_all_captions", "twin_image", "twin_seed",
           "twin_judge_scores", "source", "text_model", "image_model"]


def cultwin_dataset(samples: int = len(SCENES)) -> datasets.Dataset:
    rows = cultwin_rows(samples)
    scores = {"authenticity": datasets.Value("int32"), "consistency": datasets.Value("int32"),
              "cultural_fidelity": datasets.Value("int32")}
    features = datasets.Features({
        name: (datasets.Image() if name in ("image", "twin_image")
               else datasets.List(datasets.Value("string")) if name.endswith("all_captions")
               else scores if name.endswith("judge_scores")
               else datasets.Value("int64") if name in ("sample_index", "seed", "twin_seed")
               else datasets.Value("string"))
        for name in COLUMNS
    })
    return datasets.Dataset.from_dict(rows, features=features)


def write_cultwin(directory: Path, dataset: datasets.Dataset, split: str = "train") -> Path:
    """Write `dataset` as the exported layout: DIR/data/{split}-00000-of-00001.parquet."""
    (directory / "data").mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(directory / "data" / f"{split}-00000-of-00001.parquet"))
    return directory


@pytest.fixture(scope="session")
def cultwin_dir(tmp_path_factory) -> Path:
    """A 16-row CulTwin folder (4 twin pairs x 4 samples) readable by datasets.load_dataset."""
    return write_cultwin(tmp_path_factory.mktemp("cultwin"), cultwin_dataset())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny CultureCLIPModel with a word tokenizer covering the fixture's texts, and its processor."""
    import torch

    rows = cultwin_rows()
    tokenizer = build_word_tokenizer(words_of(rows["caption"] + rows["twin_caption"] + rows["concept"]
                                              + rows["twin_concept"]))
    torch.manual_seed(1234)
    model = CultureCLIPModel(tiny_config(len(tokenizer)))
    directory = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(directory)
    tiny_processor(tokenizer).save_pretrained(directory)
    return directory


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, read from /proc (torchrun starts each rank in a session of its own)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def launch(command: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run a multi-process launch (accelerate launch / torchrun) and wait at most `timeout` seconds.

    On timeout every rank first gets SIGABRT, so that faulthandler (PYTHONFAULTHANDLER=1 here) prints where each
    one was stuck into the captured stderr, then the launcher and all ranks get SIGKILL. Killing only the launcher
    would leave the ranks holding the output pipes, and the wait would never end.
    """
    env = {**env, "PYTHONFAULTHANDLER": "1"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            ranks = _descendants(proc.pid)
            for pid in ranks:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGABRT)
            time.sleep(2.0)
            for pid in [proc.pid, *ranks]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += f"\n[killed after {timeout} s: launcher {proc.pid}, ranks and helpers {ranks}]"
        return subprocess.CompletedProcess(command, proc.returncode, out, err)


def launch_on_free_port(command_for_port, env: dict[str, str], cwd: Path,
                        timeout: float) -> subprocess.CompletedProcess:
    """`launch` on a port from free_port(); a launch whose ranks never met (the port was taken) runs once more on
    another port, its output kept for the failure message."""
    done = launch(command_for_port(free_port()), env, cwd, timeout)
    if done.returncode != 0 and ("never started" in done.stderr or "cannot listen" in done.stderr):
        done = launch(command_for_port(free_port()), env, cwd, timeout)
    return done


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: offline, single-threaded torch, this repository importable."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: tiny matmuls are much faster, and results do not depend on the core count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_args(tmp_path: Path, cultwin_dir: Path, model_dir: Path, recipe: str = "demo", **overrides):
    """TrainArgs for a quick run on the fixture: no progress bar, no trackers, no artifacts unless asked."""
    from cultureclip_training import build_args

    values = dict(dataset=str(cultwin_dir), model=str(model_dir), output_dir=str(tmp_path / "out"),
                  progress_bar=False, report_to="none", save_artifacts=False, checkpoint_every=0)
    values.update(overrides)
    return build_args(recipe, values)


def cli_overrides(args) -> list[str]:
    """The command-line form of every field of `args` that differs from its recipe's value."""
    import yaml

    from cultureclip_training.recipes import read_recipe

    recipe = read_recipe(args.recipe) if args.recipe else {}
    items = ["--recipe", args.recipe] if args.recipe else []
    for name, value in args.to_dict().items():
        if name != "recipe" and recipe.get(name, object()) != value:
            text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
            text = text.removesuffix("\n...").strip()
            items += [f"--{name}", "null" if value is None else text]
    return items
