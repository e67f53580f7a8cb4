"""Tiny stand-ins for everything the reproduction fetches from the Hub.

- a tiny CLIP saved as a local "base" (transformers' CLIPModel, model_type "clip", as openai's checkpoints are);
- the released data: `release_fixtures.write_release` (the authors' JSON-lines layout with image files);
- the authors' checkpoint as their run script leaves it: the merged CLIPModel with its processor at the folder's
  root and the PEFT adapter (task FEATURE_EXTRACTION) in `lora_adapter/`;
- the six benchmarks as local folders in the layouts of their Hub copies (SPEC §10: parquet for CROPE and GlobalRG,
  clip-benchmark webdataset shards for the zero-shot sets), read through `--data-dir BENCH=PATH` exactly as a
  downloaded copy would be.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of
from release_fixtures import release_texts, write_release

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluate_suite"))  # its layout writers, when run alone
from layouts import write_wds_repo  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = ("crope", "globalrg_retrieval", "globalrg_grounding", "zeroshot_imagenet", "zeroshot_geode",
              "zeroshot_dollar_street")
# words of the benchmarks' prompts and labels, so the tiny tokenizer knows most of them
BENCHMARK_TEXTS = [
    "There is jiaozi pierogi hanbok kimono in the image.",
    "The picture depicts a kind of house breakfast in japan chad romania peru nigeria",
    "The item in the picture is tagine couscous harira msemen in morocco",
    "a photo of the a close-up picture cropped bright dark goldfish tabby cat bag car stove",
    "a photo of the in a home someone's toothbrush stove bed",
]


def _png(seed: int) -> dict:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _folder(root: Path, split: str, rows: dict, features: datasets.Features) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


def write_benchmarks(root: Path) -> dict[str, str]:
    """benchmark name -> local folder, each in the split and columns evaluate_suite reads from the Hub copy."""
    image = datasets.Image()
    text = datasets.Value("string")
    dirs = {}
    crope_meta = {"definition_concept": text, "image_en_concept": text, "image_concept": text,
                  "source_language": text}
    dirs["crope"] = _folder(root / "crope", "test", {
        "sample_id": ["c0", "c1", "c2"], "image": [_png(i) for i in range(3)],
        "question": ["Is there jiaozi?"] * 3, "answer": ["no", "no", "yes"],
        "definition_images": [[_png(10)], [_png(11), _png(12)], []],
        "definition_captions": [["pierogi"], ["kimono", "kimono"], []], "definition_summary": ["", "", ""],
        "chapter": ["food", "clothing", "food"],
        "metadata": [{"definition_concept": "pierogi", "image_en_concept": "jiaozi", "image_concept": "jiaozi",
                      "source_language": "zh"},
                     {"definition_concept": "kimono", "image_en_concept": "hanbok", "image_concept": "hanbok",
                      "source_language": "ko"},
                     {"definition_concept": "jiaozi", "image_en_concept": "jiaozi", "image_concept": "jiaozi",
                      "source_language": "zh"}],
    }, datasets.Features({"sample_id": text, "image": image, "question": text, "answer": text,
                          "definition_images": datasets.List(image), "definition_captions": datasets.List(text),
                          "definition_summary": text, "chapter": text, "metadata": crope_meta}))
    regions = ["japan", "chad", "romania", "peru", "nigeria", "japan", "chad", "romania"]
    dirs["globalrg_retrieval"] = _folder(root / "globalrg_retrieval", "test", {
        "image": [_png(20 + i) for i in range(8)], "region": regions, "universal": ["house"] * 5 + ["breakfast"] * 3,
    }, datasets.Features({"image": image, "region": text, "universal": text}))
    dirs["globalrg_grounding"] = _folder(root / "globalrg_grounding", "test", {
        "image": [_png(40 + i) for i in range(4)], "region": ["morocco"] * 4,
        "concept": ["tagine", "couscous", "harira", "msemen"],
    }, datasets.Features({"image": image, "region": text, "concept": text}))
    # the zero-shot benchmarks as their clip-benchmark/wds_* repos: {split}/N.tar shards, root class names/templates,
    # and for GeoDE / Dollar Street the DataComp group code as the first .npy value (written by evaluate_suite's
    # own layout fixture writer)
    templates = ["a photo of a {c}.", "a picture of the {c}."]
    dirs["zeroshot_imagenet"] = write_wds_repo(
        root / "zeroshot_imagenet", {"test": [{"image": 60 + i, "cls": i % 3} for i in range(6)]},
        classnames=["goldfish", "tabby cat", "car"], templates=templates)
    dirs["zeroshot_geode"] = write_wds_repo(
        root / "zeroshot_geode", {"test": [{"image": 80 + i, "cls": i % 3, "npy": [i % 2]} for i in range(6)]},
        classnames=["bag", "car", "stove"], templates=templates)
    dirs["zeroshot_dollar_street"] = write_wds_repo(
        root / "zeroshot_dollar_street", {"test": [{"image": 100 + i, "cls": i % 3, "npy": [i % 2, 10 * i, 3]}
                                                   for i in range(6)]},
        classnames=["toothbrush", "stove", "bed"], templates=templates)
    return {name: str(path) for name, path in dirs.items()}


def write_base_and_released(root: Path) -> tuple[Path, Path]:
    """root/base (tiny CLIPModel + processor) and root/released (merged CLIPModel + processor + lora_adapter/)."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import CLIPConfig, CLIPModel

    tokenizer = build_word_tokenizer(words_of(release_texts() + BENCHMARK_TEXTS))
    settings = tiny_config(vocab_size=len(tokenizer), image_size=16, patch_size=8, width=32).to_dict()
    clip_fields = CLIPConfig().to_dict()
    torch.manual_seed(0)
    base = CLIPModel(CLIPConfig(**{k: v for k, v in settings.items() if k in clip_fields and k != "model_type"}))
    processor = tiny_processor(tokenizer, image_size=16)
    base.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    targets = [f"{tower}.encoder.layers.{i}.self_attn.{p}" for tower in ("vision_model", "text_model")
               for i in range(2) for p in ("q_proj", "v_proj")]
    released = get_peft_model(CLIPModel.from_pretrained(root / "base"), LoraConfig(
        r=4, lora_alpha=16, lora_dropout=0.1, target_modules=targets, task_type=TaskType.FEATURE_EXTRACTION))
    with torch.no_grad():
        for name, p in released.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    released.save_pretrained(root / "released" / "lora_adapter")
    released.merge_and_unload().save_pretrained(root / "released")
    processor.save_pretrained(root / "released")
    return root / "base", root / "released"


@pytest.fixture(scope="session")
def stand_ins(tmp_path_factory) -> dict:
    """Paths of every stand-in: base, released, release_data, benchmark data dirs."""
    root = tmp_path_factory.mktemp("stand-ins")
    base, released = write_base_and_released(root)
    return {"base": base, "released": released, "release_data": write_release(root / "cultwin-release"),
            "data_dirs": write_benchmarks(root / "benchmarks")}


def reproduce_argv(stand_ins: dict, output: Path) -> list[str]:
    """The command line that runs the whole reproduction on the stand-ins, quickly."""
    argv = ["--output-dir", str(output), "--base-model", str(stand_ins["base"]),
            "--release-data", str(stand_ins["release_data"]), "--released-model", str(stand_ins["released"]),
            "--max-steps", "2", "--eval-seeds", "0", "--eval-batch-size", "16", "--bootstrap-resamples", "20",
            "--device", "cpu"]
    for key, value in (("per_device_batch_size", 4), ("micro_batches", 2), ("warmup_steps", 0),
                       ("checkpoint_every", 1), ("progress_bar", "false"), ("report_to", "none"),
                       ("num_workers", 0)):
        argv += ["--train-override", f"{key}={value}"]
    for bench, folder in stand_ins["data_dirs"].items():
        argv += ["--data-dir", f"{bench}={folder}"]
    return argv
