"""Cluster behaviour on real tiny models: one device per rank, backends alive only during their stages, text and
judge sharing one VLM, a 2-rank build equal to a 1-rank build, runtime settings free to change on resume."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
import yaml
from builder_helpers import REPO, rows_fingerprint
from server_helpers import SCRIPTED_ANSWERS

import dataset_builder.backends as backends_module
from dataset_builder.backends.devices import local_rank, rank_device
from dataset_builder.backends.diffusers_images import DiffusersImageBackend, pipeline_dtype_kwargs
from dataset_builder.backends.lifecycle import heavy_part
from dataset_builder.backends.tiny import build_scripted_chat_vlm, build_tiny_sd_pipeline
from dataset_builder.backends.transformers_chat import TransformersChatBackend
from dataset_builder.pipeline import RunMismatchError, build
from dataset_builder.recipe import load_recipe

STAGES = ("concepts", "twins", "captions", "images", "judge")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cluster_models")
    return {"vlm": build_scripted_chat_vlm(root / "vlm", SCRIPTED_ANSWERS),
            "sd": build_tiny_sd_pipeline(root / "sd", sample_size=32)}


def tiny_recipe(path: Path, models: dict[str, Path], **runtime) -> Path:
    """Top-down build on the scripted VLM (text and judge, same weights) and the tiny Stable Diffusion pipeline."""
    vlm = {"kind": "transformers-chat", "model_id": str(models["vlm"]), "options": {"max_new_tokens": 8}}
    recipe = {
        "name": "tiny-models", "seed": 5, "text_backend": vlm, "judge_backend": vlm,
        "image_backend": {"kind": "diffusers", "model_id": str(models["sd"]), "options": {"dtype": "float32"}},
        "concepts": {"source": "top-down", "countries": ["JP", "PE", "KE", "FR"], "categories": ["Cuisine"]},
        "twins": {"embedder": "offline-hashed-ngram", "min_feature_similarity": 0.3},
        "captions": {"per_side": 2},
        "images": {"width": 32, "height": 32, "steps": 1, "batch_size": 1},  # batch 1: no batch-rounding differences
        "judge": {"prompt": "judge.v2", "batch_size": 4},
        "export": {"license": "cc-by-4.0"},
        "runtime": runtime,
    }
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


class LiveCounter:
    """Counts, independently of the pool, the models and pipelines the backend factories built that are still alive
    at the end of each stage (weak references, after a full garbage collection)."""

    def __init__(self, monkeypatch):
        self.refs: list[weakref.ref] = []
        self.alive_after: dict[str, int] = {}
        for name in ("make_chat_backend", "make_image_backend"):
            original = getattr(backends_module, name)

            def tracked(*args, _original=original, **kwargs):
                backend = _original(*args, **kwargs)
                self.refs.append(weakref.ref(heavy_part(backend)))
                return backend

            monkeypatch.setattr(backends_module, name, tracked)
        import dataset_builder.pipeline as pipeline

        for stage in STAGES:
            module = getattr(pipeline, f"{stage}_stage")
            original_run = module.run

            def run(*args, _run=original_run, _stage=stage, **kwargs):
                result = _run(*args, **kwargs)
                gc.collect()
                self.alive_after[_stage] = sum(ref() is not None for ref in self.refs)
                return result

            monkeypatch.setattr(module, "run", run)

    def alive_now(self) -> int:
        gc.collect()
        return sum(ref() is not None for ref in self.refs)


@pytest.fixture(scope="module")
def one_rank(tiny_models, tmp_path_factory):
    """A 1-rank build of the tiny-model recipe, watched by a LiveCounter: (summary, alive counts, folder, recipe)."""
    root = tmp_path_factory.mktemp("one_rank")
    with pytest.MonkeyPatch.context() as monkeypatch:
        counter = LiveCounter(monkeypatch)
        recipe = tiny_recipe(root / "r.yaml", tiny_models)
        summary = build(recipe, root / "out", progress=False)
        return summary, dict(counter.alive_after), counter.alive_now(), root / "out", recipe


@pytest.mark.slow
def test_peak_live_backends_is_the_largest_stage_not_the_sum(one_rank, tiny_models, tmp_path, monkeypatch):
    summary, alive_after, alive_at_end, out, recipe = one_rank
    assert summary["total_rows"] == 4 * 2
    # VLM for concepts..captions, released; SD for images, released; the VLM again for the judge.
    assert summary["memory"]["loads"] == ["text", "image", "judge"] and summary["memory"]["leaked"] == []
    assert alive_after == dict.fromkeys(STAGES, 1)
    assert summary["memory"]["live_backends_by_stage"] == dict.fromkeys(STAGES, 1)
    assert alive_at_end == 0  # nothing outlives the build

    # Plain alternative: everything resident. The judge then reuses the text role's VLM (one model, not two), so the
    # judge stage holds VLM + SD = 2: more than per-stage loading, less than the 3 separate loads of before.
    counter = LiveCounter(monkeypatch)
    kept = build(tiny_recipe(tmp_path / "k.yaml", tiny_models, keep_backends_loaded=True), tmp_path / "kept",
                 progress=False)
    assert kept["memory"]["loads"] == ["text", "image"]
    assert counter.alive_after == {"concepts": 1, "twins": 1, "captions": 1, "images": 2, "judge": 2}
    assert rows_fingerprint(tmp_path / "kept") == rows_fingerprint(out)

    # A finished run folder resumes without loading any model, and still names them in its rows and provenance.
    before = rows_fingerprint(out)
    counter.refs.clear()
    again = build(recipe, out, progress=False)
    assert again["memory"]["loads"] == [] and counter.refs == []
    assert rows_fingerprint(out) == before
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["text_model"] == prov["judge_model"] == str(tiny_models["vlm"])
    assert prov["devices"] == [{"world": 1, "rank": 0, "local_rank": 0,
                                **{role: {"device": "cpu", "dtype": "torch.float32"} for role in ("text", "image", "judge")}}]


@pytest.mark.slow
def test_two_ranks_each_use_their_own_device_and_match_one_rank(one_rank, tmp_path):
    one, _, _, one_out, recipe = one_rank
    out = tmp_path / "two"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "DATASET_BUILDER_FSYNC": "0",
           "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "dataset_builder", "build", "--recipe", str(recipe), "--output-dir", str(out),
           "--no-progress"]
    procs = [subprocess.Popen(cmd, cwd=REPO, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    assert one["total_rows"] > 0 and rows_fingerprint(out) == rows_fingerprint(one_out)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["world_size"] == 2
    assert [(d["world"], d["rank"], d["local_rank"]) for d in prov["devices"]] == [(2, 0, 0), (2, 1, 1)]
    for entry in prov["devices"]:  # every rank loaded its own VLM and pipeline, each on its own (here: CPU) device
        assert {role: entry[role]["device"] for role in ("text", "image", "judge")} == dict.fromkeys(
            ("text", "image", "judge"), "cpu")
    shares = [json.loads((out / "run/images" / f"rank-{r}-of-2.json").read_text()) for r in range(2)]
    assert all(s["processed_this_run"] > 0 for s in shares)
    assert "Built on 2 process(es)" in (out / "README.md").read_text()


# ---------------------------------------------------------------------------------------------------------------
# Device choice (no GPU here: torch.cuda is patched to report some; the model loaders are stood in for only to see
# which device they were asked for)
# ---------------------------------------------------------------------------------------------------------------


def fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_each_local_rank_gets_its_own_gpu(monkeypatch):
    fake_gpus(monkeypatch, 4)
    for name in ("LOCAL_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)
    assert local_rank() == 0 and rank_device() == "cuda:0"
    monkeypatch.setenv("RANK", "5")  # plain RANK/WORLD_SIZE processes: one node, RANK is the local rank
    monkeypatch.setenv("LOCAL_RANK", "3")  # torchrun / accelerate: LOCAL_RANK wins
    assert rank_device() == "cuda:3" and rank_device("cpu") == "cpu" and rank_device("cuda:1") == "cuda:1"
    monkeypatch.setenv("LOCAL_RANK", "4")
    with pytest.raises(ValueError, match="local rank 4 has no GPU: only 4"):
        rank_device()
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(ValueError, match="LOCAL_RANK='x'"):
        local_rank()
    fake_gpus(monkeypatch, 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_device() == "cpu"


def test_backends_load_straight_onto_the_rank_device(monkeypatch, tiny_models):
    import diffusers
    import transformers

    fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    asked = {}

    class Stop(Exception):
        pass

    def fake_model(*args, **kwargs):
        asked["vlm"] = kwargs
        raise Stop

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", fake_model)
    with pytest.raises(Stop):
        TransformersChatBackend.from_pretrained(tiny_models["vlm"])
    assert asked["vlm"]["device_map"] == {"": "cuda:1"}
    with pytest.raises(ValueError, match="device_map='auto' with WORLD_SIZE > 1"):
        TransformersChatBackend.from_pretrained(tiny_models["vlm"], device_map="auto")

    real_pipeline = diffusers.AutoPipelineForText2Image.from_pretrained(str(tiny_models["sd"]))
    moved = {}
    monkeypatch.setattr(type(real_pipeline), "to", lambda self, device: moved.setdefault("to", device) and self)
    monkeypatch.setattr(type(real_pipeline), "enable_model_cpu_offload",
                        lambda self, gpu_id=None, device=None: moved.setdefault("offload", device))
    monkeypatch.setattr(diffusers.AutoPipelineForText2Image, "from_pretrained", lambda *a, **k: real_pipeline)
    DiffusersImageBackend.from_pretrained(tiny_models["sd"])
    DiffusersImageBackend.from_pretrained(tiny_models["sd"], cpu_offload="model")
    assert moved == {"to": "cuda:1", "offload": "cuda:1"}


def test_diffusers_dtype_is_honoured_and_offload_needs_a_device(tiny_models):
    backend = DiffusersImageBackend.from_pretrained(tiny_models["sd"], dtype="float16", device="cpu")
    assert backend.pipeline.unet.dtype == torch.float16 and backend.pipeline.text_encoder.dtype == torch.float16
    assert backend.dtype == torch.float16 and backend.device == "cpu"
    assert set(pipeline_dtype_kwargs(torch.float16)) <= {"dtype", "torch_dtype"}
    with pytest.raises(ValueError, match="cpu_offload needs an accelerator"):
        DiffusersImageBackend.from_pretrained(tiny_models["sd"], device="cpu", cpu_offload="model")
    with pytest.raises(ValueError, match="cpu_offload must be"):
        DiffusersImageBackend.from_pretrained(tiny_models["sd"], cpu_offload="disk")


def test_runtime_settings_may_change_on_resume_but_output_settings_may_not(tmp_path):
    recipe = dataclasses.replace(load_recipe("demo"), limit_pairs=3)
    build(recipe, tmp_path / "out", progress=False)
    faster = dataclasses.replace(recipe, runtime=dataclasses.replace(recipe.runtime, keep_backends_loaded=True,
                                                                     barrier_timeout_s=60.0))
    build(faster, tmp_path / "out", progress=False)
    other = dataclasses.replace(recipe, image_backend=dataclasses.replace(
        recipe.image_backend, options={**recipe.image_backend.options, "max_rotation": 1.0}))
    with pytest.raises(RunMismatchError, match="image_backend"):
        build(other, tmp_path / "out", progress=False)
