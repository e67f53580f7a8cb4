"""bf16 autocast vs fp32 for the offline demo's model shape: which trains faster on this CPU?

Runs `cultureclip_training.train` on the demo's tiny CLIP shape (default.yaml: width 96, 3 + 2 layers, 48 px, patch
8) with random images, for the demo's two kinds of step: pretraining (full fine-tuning, plain CLIP loss, batch
256, 2 threads) and fine-tuning (LoRA on q/v, CultureCLIP loss, 32 twin rows, 1 thread). Each precision runs in
alternating rounds in this process after an unmeasured warm-up round; the best round counts. Prints
steps/s per precision and the ratio.

    python benchmarks/demo_precision.py [--steps 12] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rows(count: int, size: int):
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    names = [f"flag of country{i}" for i in range(16)]
    data = {k: [] for k in ("image", "twin_image", "caption", "twin_caption", "concept", "twin_concept",
                            "concept_id", "twin_concept_id")}
    for i in range(count):
        a, b = names[(2 * i) % 16], names[(2 * i + 1) % 16]
        for prefix, name in (("", a), ("twin_", b)):
            data[f"{prefix}image"].append(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
            data[f"{prefix}caption"].append(f"a {name} on a pole in the wind")
            data[f"{prefix}concept"].append(name)
            data[f"{prefix}concept_id"].append(name)
    return datasets.Dataset.from_dict(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch

    from cultureclip_demo.config import load_config
    from cultureclip_training import build_args, train
    from modeling_cultureclip import CultureCLIPModel
    from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of

    shape = load_config("default.yaml").model
    data = rows(512, shape.image_size)
    tokenizer = build_word_tokenizer(words_of(list(data["caption"]) + list(data["concept"])))
    processor = tiny_processor(tokenizer, shape.image_size)
    kinds = {
        "pretrain (full, clip loss, batch 256, 2 threads)": (
            2, {"objective": "clip", "finetune": "full", "per_device_batch_size": 256}),
        "fine-tune (LoRA q/v, cultureclip loss, 32 rows, 1 thread)": (
            1, {"objective": "cultureclip", "finetune": "lora", "per_device_batch_size": 32,
                "lora_targets": ["q_proj", "v_proj"]}),
    }
    for kind, (threads, settings) in kinds.items():
        torch.set_num_threads(threads)
        best: dict[str, float] = {}
        # round 0 is an unmeasured warm-up of both precisions (first calls pay for kernels and allocator growth)
        for round_index in range(args.rounds + 1):
            for precision in ("no", "bf16"):
                torch.manual_seed(0)
                model = CultureCLIPModel(tiny_config(len(tokenizer), image_size=shape.image_size,
                                                     patch_size=shape.patch_size, width=shape.width,
                                                     vision_layers=shape.vision_layers, text_layers=shape.text_layers,
                                                     heads=shape.heads, projection_dim=shape.projection_dim))
                with tempfile.TemporaryDirectory() as out:
                    train_args = build_args(None, {**settings, "model": "tiny", "max_steps": args.steps,
                                                   "warmup_steps": 1, "mixed_precision": precision,
                                                   "save_artifacts": False, "progress_bar": False,
                                                   "report_to": "none", "output_dir": out, "log_every": 1000})
                    result = train(train_args, dataset=data, model=model, processor=processor)
                if round_index == 0:
                    continue
                steps_per_s = result.samples_per_second / result.samples_seen * result.steps
                best[precision] = max(best.get(precision, 0.0), steps_per_s)
        print(f"{kind}: fp32 {best['no']:.2f} steps/s, bf16 {best['bf16']:.2f} steps/s, "
              f"bf16/fp32 = {best['bf16'] / best['no']:.2f}x")


if __name__ == "__main__":
    main()
