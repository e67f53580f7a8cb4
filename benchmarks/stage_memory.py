"""Peak resident memory (RSS) of a build: backends per stage (the default) against everything loaded up front.

One command: `python benchmarks/stage_memory.py` (CPU, offline, ~1-3 minutes on 2 cores).

It writes a ~0.5 GB (fp32) scripted VLM (`build_scripted_chat_vlm` with a wider decoder, so the build really parses
its answers and finishes) and a ~0.3 GB random Stable Diffusion pipeline, then runs the same 4-pair top-down build
three ways, each in a fresh process, and reports each process's peak RSS (`ru_maxrss`) above its RSS before the build:
  per-stage     the default: each backend lives from its first stage with work to its last
  keep-loaded   `runtime.keep_backends_loaded: true`: all resident, text and judge sharing one VLM
  up-front      what the pipeline did before: text VLM, judge VLM (a second copy) and SD built before any stage
Expected: per-stage ~ max(VLM, SD), keep-loaded ~ VLM + SD, up-front ~ 2 x VLM + SD.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTED = {
    '"twin_concept"': json.dumps({"twin_concept": "Icelandic festival loaf", "twin_country": "Iceland",
                                  "twin_context": "A loaf Icelanders bake for winter feasts.",
                                  "twin_visual_features": "round loaf; golden crust; braided top"}),
    '{"captions"': json.dumps({"captions": ["Round loaf with a golden crust at a busy market",
                                            "Braided top bread on a kitchen table"]}),
    '"authenticity"': json.dumps({"authenticity": 4, "consistency": 5, "cultural_fidelity": 4}),
    '"concept": "<short name>"': json.dumps({"concept": "festival bread", "context": "A round bread for festivals.",
                                             "visual_features": "round loaf; golden crust; braided top"}),
}


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, recipe_path: str, out: str) -> None:
    """Run one build in this process and print its memory figures as JSON."""
    import gc

    import torch

    from dataset_builder.backends import make_chat_backend, make_image_backend
    from dataset_builder.backends.diffusers_images import DiffusersImageBackend
    from dataset_builder.backends.transformers_chat import TransformersChatBackend
    from dataset_builder.pipeline import build
    from dataset_builder.recipe import load_recipe

    torch.set_num_threads(1)
    recipe = load_recipe(recipe_path)
    # Warm-up on the smallest models of the same classes, so library code imported on first use is in the baseline.
    warm = Path(recipe_path).parent / "warm"
    TransformersChatBackend.from_pretrained(warm / "vlm").generate([])
    DiffusersImageBackend.from_pretrained(warm / "sd", height=32, width=32)
    gc.collect()
    before = rss_mib()
    injected = {}
    if mode == "up-front":  # the old pipeline: every backend built before the first stage, two VLM copies
        injected = dict(text_backend=make_chat_backend(recipe.text_backend, recipe.text_batch_size),
                        judge_backend=make_chat_backend(recipe.judge_backend, recipe.judge.batch_size),
                        image_backend=make_image_backend(recipe.image_backend, recipe.images))
    summary = build(recipe, out, progress=False, **injected)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "rss_before_mib": round(before, 1), "peak_rss_mib": round(peak, 1),
                      "rows": summary["total_rows"], "loads": summary["memory"]["loads"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "RECIPE", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--hidden", type=int, default=1024, help="VLM decoder width (default 1024: ~0.5 GB fp32)")
    parser.add_argument("--unet-channels", type=int, nargs=2, default=(256, 512))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from dataset_builder.backends.memory import chat_model_size, pipeline_size
    from dataset_builder.backends.tiny import build_scripted_chat_vlm, build_tiny_sd_pipeline

    with tempfile.TemporaryDirectory(prefix="stage-memory-") as tmp:
        root = Path(tmp)
        decoder = {"hidden_size": args.hidden, "intermediate_size": 4 * args.hidden, "num_hidden_layers": 8,
                   "num_attention_heads": 8, "num_key_value_heads": 8}
        vlm = build_scripted_chat_vlm(root / "vlm", SCRIPTED, decoder=decoder)
        build_scripted_chat_vlm(root / "warm" / "vlm", SCRIPTED)
        build_tiny_sd_pipeline(root / "warm" / "sd")
        sd = build_tiny_sd_pipeline(root / "sd", sample_size=32, block_out_channels=tuple(args.unet_channels))
        vlm_mib = chat_model_size(str(vlm)).total * 4 / 2**20
        sd_mib = pipeline_size(str(sd)).total * 4 / 2**20
        spec = {"kind": "transformers-chat", "model_id": str(vlm), "options": {"max_new_tokens": 4}}
        results = {}
        for mode in ("per-stage", "keep-loaded", "up-front"):
            recipe = {"name": f"memory-{mode}", "seed": 0, "text_backend": spec, "judge_backend": spec,
                      "image_backend": {"kind": "diffusers", "model_id": str(sd), "options": {"dtype": "float32"}},
                      "concepts": {"source": "top-down", "countries": ["JP", "PE", "KE", "FR"],
                                   "categories": ["Cuisine"]},
                      "twins": {"embedder": "hashed-ngram"}, "captions": {"per_side": 2},
                      "images": {"width": 32, "height": 32, "steps": 1, "batch_size": 2},
                      "runtime": {"keep_backends_loaded": mode == "keep-loaded"}}
            path = root / f"{mode}.yaml"
            path.write_text(yaml.safe_dump(recipe))
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "DATASET_BUILDER_FSYNC": "0", "PYTHONPATH": str(REPO)}
            res = subprocess.run([sys.executable, __file__, "--child", mode, str(path), str(root / f"out-{mode}")],
                                 capture_output=True, text=True, env=env, timeout=1800)
            if res.returncode != 0:
                raise SystemExit(f"{mode} build failed:\n{res.stderr[-3000:]}")
            results[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average; timings here are not the point, memory is)")
    print(f"VLM weights {vlm_mib:.0f} MiB fp32, SD pipeline {sd_mib:.0f} MiB fp32")
    print(f"{'mode':<12} {'peak RSS':>9} {'above start':>12}  rows  loads")
    for mode, r in results.items():
        print(f"{mode:<12} {r['peak_rss_mib']:>7.0f} M {r['peak_rss_mib'] - r['rss_before_mib']:>10.0f} M  "
              f"{r['rows']:>4}  {r['loads'] or 'injected before the build'}")
    base = results["up-front"]["peak_rss_mib"] - results["up-front"]["rss_before_mib"]
    per_stage = results["per-stage"]["peak_rss_mib"] - results["per-stage"]["rss_before_mib"]
    print(f"ratio (model memory above start), up-front / per-stage: {base / per_stage:.2f}x "
          f"(weights alone predict {(2 * vlm_mib + sd_mib) / max(vlm_mib, sd_mib):.2f}x)")


if __name__ == "__main__":
    main()
