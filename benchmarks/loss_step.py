"""One training step of the CultureCLIP objective: ours versus the release-style step.

Release style: each of the six inputs (two images, two captions, two concept names) goes through its own encoder
call and every text is padded to 77 tokens. Ours: one vision call for both images and one text call for all texts,
padded to the longest in the batch. Same random-weight ViT-B/32-shaped model, same batch, same (faithful) loss.

    python benchmarks/loss_step.py [--pairs 16] [--steps 3]

Each path's FLOPs per step are counted with FlopCounterMode (forward and backward, `benchmarks/roofline.py`) and
its achieved FLOP/s is printed as a fraction of the fp32 matmul roofline measured at the start of the run. The
release style runs more FLOPs for the same batch (every text padded to 77 tokens), so its fraction can look better
while its pairs/s is worse.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.roofline` when run as a script

from benchmarks.roofline import count_flops, describe_machine, describe_peaks, machine_info, rooflines
from modeling_cultureclip import CultureCLIPConfig, CultureCLIPModel, TwinFeatures
from modeling_cultureclip.tiny import build_word_tokenizer, words_of

SCENES = ["at a busy street market", "on a wooden table at home", "during a family festival", "in a museum display",
          "beside a river at dusk", "in a school classroom", "at a wedding celebration", "on a sunny balcony"]
THINGS = [("red lacquered tiered pagoda", "grey stone castle with round towers"),
          ("silk kimono with wide obi belt", "bright sari draped over one shoulder"),
          ("steamed dumpling with pleated top", "folded fortune cookie with paper slip")]


def make_texts(pairs: int, seed: int = 0) -> tuple[list[str], list[str], list[str], list[str]]:
    """Captions under 15 words and short concept names for `pairs` twin pairs."""
    rng = random.Random(seed)
    captions, twin_captions, concepts, twin_concepts = [], [], [], []
    for i in range(pairs):
        a, b = THINGS[i % len(THINGS)]
        captions.append(f"a {a} seen {rng.choice(SCENES)} with people nearby")
        twin_captions.append(f"a {b} seen {rng.choice(SCENES)} in soft light")
        concepts.append(a.split()[-1])
        twin_concepts.append(b.split()[-1])
    return captions, twin_captions, concepts, twin_concepts


def release_style_features(model, tokenizer, images, twin_images, texts) -> TwinFeatures:
    """Six encoder calls, each text padded to 77 tokens."""
    def encode(strings):
        t = tokenizer(strings, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        return model.get_text_features(**t).pooler_output
    return TwinFeatures(
        image=model.get_image_features(pixel_values=images).pooler_output,
        twin_image=model.get_image_features(pixel_values=twin_images).pooler_output,
        caption=encode(texts[0]), twin_caption=encode(texts[1]), concept=encode(texts[2]), twin_concept=encode(texts[3]),
    )


def our_features(model, tokenizer, images, twin_images, texts) -> TwinFeatures:
    """The model's batched path: texts tokenised with dynamic padding."""
    t = [tokenizer(strings, padding=True, return_tensors="pt") for strings in texts]
    return model.get_twin_features(
        pixel_values=images, twin_pixel_values=twin_images,
        input_ids=t[0].input_ids, attention_mask=t[0].attention_mask,
        twin_input_ids=t[1].input_ids, twin_attention_mask=t[1].attention_mask,
        concept_input_ids=t[2].input_ids, concept_attention_mask=t[2].attention_mask,
        twin_concept_input_ids=t[3].input_ids, twin_concept_attention_mask=t[3].attention_mask,
    )


def time_steps(step, steps: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    texts = make_texts(args.pairs)
    tokenizer = build_word_tokenizer(words_of(sum(texts, [])), max_length=77)
    config = CultureCLIPConfig(loss_mode="faithful", caption_loss_weight=0.7, concept_loss_weight=0.3,
                               text_config=dict(eos_token_id=3, bos_token_id=1, pad_token_id=0))  # B/32 shapes
    model = CultureCLIPModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    images = torch.randn(args.pairs, 3, 224, 224)
    twin_images = torch.randn(args.pairs, 3, 224, 224)

    def run(features_fn):
        def step():
            loss = model.compute_twin_loss(features_fn(model, tokenizer, images, twin_images, texts))["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    with torch.no_grad():  # the two paths compute the same loss
        a = model.compute_twin_loss(release_style_features(model, tokenizer, images, twin_images, texts))["loss"]
        b = model.compute_twin_loss(our_features(model, tokenizer, images, twin_images, texts))["loss"]
    peaks = rooflines(precisions=("fp32",))
    flops = {name: count_flops(run(fn)) for name, fn in (("release", release_style_features), ("ours", our_features))}
    release = time_steps(run(release_style_features), args.steps)
    ours = time_steps(run(our_features), args.steps)
    print(f"model: ViT-B/32-shaped CultureCLIP, random weights, {sum(p.numel() for p in model.parameters())/1e6:.0f}M "
          f"params; batch {args.pairs} twin pairs; threads {torch.get_num_threads()}")
    print(f"loss agreement (same weights, before training): release {a.item():.6f}  ours {b.item():.6f}")
    print(describe_machine(machine_info()))
    print(describe_peaks(peaks))
    peak = peaks["fp32"]["flops_per_s"]
    for label, name, seconds in (("release-style step (6 encoder calls, pad 77)", "release", release),
                                 ("ours (1 vision + 1 text call, dynamic pad)  ", "ours", ours)):
        achieved = flops[name] / seconds
        print(f"{label}: {args.pairs / seconds:8.2f} pairs/s, {flops[name] / 1e9:7.1f} GFLOP/step, "
              f"{achieved / 1e9:6.1f} GFLOP/s = {achieved / peak:5.1%} of the fp32 roofline")
    print(f"speed-up: {release / ours:.2f}x")


if __name__ == "__main__":
    main()
