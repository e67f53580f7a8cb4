"""`build --plan`: parameter counts read offline (safetensors headers, meta-device init), per-stage residency, peak."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from builder_helpers import run_cli

from dataset_builder.backends.memory import chat_model_size, pipeline_size
from dataset_builder.backends.plan import format_plan, plan_build
from dataset_builder.backends.tiny import build_tiny_chat_vlm, build_tiny_sd_pipeline
from dataset_builder.recipe import BackendSpec, load_recipe


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan_models")
    return {"vlm": build_tiny_chat_vlm(root / "vlm", family="llava"), "sd": build_tiny_sd_pipeline(root / "sd")}


def _recipe(models, keep=False, offload=None):
    base = load_recipe("demo")
    vlm = BackendSpec("transformers-chat", str(models["vlm"]), options={"dtype": "float32", "max_new_tokens": 64})
    sd = BackendSpec("diffusers", str(models["sd"]), options={"dtype": "float16", **({"cpu_offload": offload}
                                                                                    if offload else {})})
    return dataclasses.replace(base, text_backend=vlm, judge_backend=vlm, image_backend=sd,
                               runtime=dataclasses.replace(base.runtime, keep_backends_loaded=keep))


def test_parameter_counts_match_the_loaded_models(models, tmp_path):
    from diffusers import AutoPipelineForText2Image
    from transformers import AutoModelForImageTextToText

    vlm = AutoModelForImageTextToText.from_pretrained(models["vlm"])
    size = chat_model_size(str(models["vlm"]))
    assert size.total == sum(p.numel() for p in vlm.parameters()) and "safetensors headers" in size.source
    assert size.text_shape == {"num_hidden_layers": 2, "num_key_value_heads": 1, "head_dim": 16}
    # only the config on disk: the architecture is built on the meta device instead
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(models["vlm"] / "config.json", config_only / "config.json")
    meta = chat_model_size(str(config_only))
    assert meta.total == size.total and "meta-device" in meta.source

    pipe = AutoPipelineForText2Image.from_pretrained(models["sd"])
    sizes = pipeline_size(str(models["sd"]))
    for name, count in sizes.components.items():
        assert count == sum(p.numel() for p in getattr(pipe, name).parameters()), name
    assert set(sizes.components) == {"unet", "vae", "text_encoder"}
    assert chat_model_size("nobody/not-cached-model") is None


def test_plan_peak_is_the_largest_stage_and_keep_loaded_shares_the_vlm(models):
    vlm_bytes = chat_model_size(str(models["vlm"])).total * 4
    sd_bytes = pipeline_size(str(models["sd"])).total * 2
    plan = plan_build(_recipe(models))
    by_stage = {s["stage"]: s for s in plan["stages"]}
    assert by_stage["images"]["resident"] == ["image"] and by_stage["images"]["bytes"] == sd_bytes
    text = plan["backends"]["text"]
    assert text["weights"] == vlm_bytes and text["working"] > 0  # KV cache for the batch
    assert plan["peak_bytes_per_device"] == max(s["bytes"] for s in plan["stages"])

    kept = plan_build(_recipe(models, keep=True))
    judge_stage = [s for s in kept["stages"] if s["stage"] == "judge"][0]
    assert judge_stage["resident"] == ["image", "judge", "text"]
    judge = kept["backends"]["judge"]
    # text and judge name the same weights: counted once (with the larger of their two KV caches)
    assert judge_stage["bytes"] == pytest.approx(sd_bytes + vlm_bytes + max(text["working"], judge["working"]))

    offloaded = plan_build(_recipe(models, offload="model"))
    assert offloaded["backends"]["image"]["weights"] == max(pipeline_size(str(models["sd"])).components.values()) * 2


def test_plan_names_assumptions_for_models_it_cannot_read(models):
    paper = plan_build(load_recipe("paper"))
    assert paper["assumed"] == ["Qwen/Qwen2.5-VL-7B-Instruct", "stabilityai/stable-diffusion-3.5-large-turbo"]
    assert paper["peak_stages"] == ["images"] and 20 * 2**30 < paper["peak_bytes_per_device"] < 32 * 2**30
    unknown = dataclasses.replace(_recipe(models), image_backend=BackendSpec("diffusers", "someone/unknown-pipeline"))
    plan = plan_build(unknown)
    assert plan["backends"]["image"]["weights"] is None and plan["peak_bytes_per_device"] is None
    assert "unknown" in format_plan(plan)
    with pytest.raises(ValueError, match="dtype"):
        plan_build(dataclasses.replace(_recipe(models), image_backend=BackendSpec(
            "diffusers", str(models["sd"]), options={"dtype": "float12"})))


def test_plan_command_loads_nothing_and_exits_zero(tmp_path):
    res = run_cli(["build", "--recipe", "paper", "--plan"])
    assert res.returncode == 0, res.stderr
    assert "Estimated peak per device" in res.stdout and "images" in res.stdout and "assumed" in res.stdout
    res = run_cli(["build", "--recipe", "demo"])
    assert res.returncode == 2 and "--output-dir is required" in res.stderr
