"""benchmarks/precision_agreement.py on a saved tiny checkpoint and a local zero-shot folder: it scores the
benchmark's own items at fp32 and bf16 and reports the agreement (behaviour only, no timings)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import datasets
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.precision_agreement import main  # noqa: E402
from modeling_cultureclip import CultureCLIPModel  # noqa: E402
from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of  # noqa: E402

OBJECTS = ["bag", "car", "stove", "dog"]
COLOURS = ["red", "green", "blue", "yellow", "white", "black", "purple", "orange"]


def _png(colour: str, stripe: int) -> dict:
    image = Image.new("RGB", (24, 24), colour)
    for x in range(0, 24, stripe + 2):
        for y in range(24):
            image.putpixel((x, y), (40 * stripe % 255, 90, 160))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def test_reports_bf16_agreement_on_the_benchmark_items(tmp_path):
    tokenizer = build_word_tokenizer(words_of(["a photo of a {}.", "a bad photo of the {}."] + OBJECTS +
                                              ["itap", "my", "origami", "rendering", "cartoon"]), max_length=32)
    torch.manual_seed(0)
    model = CultureCLIPModel(tiny_config(len(tokenizer), image_size=32, patch_size=8, width=32, heads=2,
                                         projection_dim=16))
    model.save_pretrained(tmp_path / "model")
    tiny_processor(tokenizer, 32).save_pretrained(tmp_path / "model")
    rows = 16
    data = datasets.Dataset.from_dict(
        {"image": [_png(COLOURS[i % 8], i // 8) for i in range(rows)], "object": [OBJECTS[i % 4] for i in range(rows)],
         "region": ["Europe"] * rows, "ip_country": ["Italy"] * rows},
        features=datasets.Features({"image": datasets.Image(), "object": datasets.Value("string"),
                                    "region": datasets.Value("string"), "ip_country": datasets.Value("string")}))
    (tmp_path / "geode" / "data").mkdir(parents=True)
    data.to_parquet(str(tmp_path / "geode" / "data" / "test-00000-of-00001.parquet"))
    out = tmp_path / "agreement.json"
    report = main(["--model", str(tmp_path / "model"), "--benchmarks", "zeroshot_geode", "--data-dir",
                   f"zeroshot_geode={tmp_path / 'geode'}", "--json", str(out)])
    entry = report["benchmarks"]["zeroshot_geode"]
    assert entry["items"] == rows and 0.0 <= entry["agreement"] <= 1.0
    assert entry["flips"] == round((1 - entry["agreement"]) * rows)
    assert {"metric_fp32", "metric_bf16", "median_margin"} <= set(entry)
    assert json.loads(out.read_text())["benchmarks"]["zeroshot_geode"]["agreement"] == entry["agreement"]
