"""Real-model backends on tiny random models: the same transformers/diffusers code paths as the 7B VLM and SD3.5.

Random weights produce gibberish, so the tests check what must hold for any weights: one answer per request in
order, only new text returned, batch composition and left padding do not change an answer, seeds control sampling,
a batch of images equals the same images rendered one by one, and bad outputs raise instead of passing through.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_builder.backends.base import ChatBackend, ChatRequest, ImageBackend
from dataset_builder.backends.diffusers_images import DiffusersImageBackend, ImageRenderError, check_image
from dataset_builder.backends.tiny import (
    CHAT_FAMILIES,
    build_tiny_chat_vlm,
    build_tiny_sd_pipeline,
    load_tiny_chat_processor,
)
from dataset_builder.backends.transformers_chat import TransformersChatBackend

MAX_NEW = 6


@pytest.fixture(scope="session")
def tiny_vlm_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_vlms")
    return {family: build_tiny_chat_vlm(root / family, family=family) for family in CHAT_FAMILIES}


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd") / "sd")


@pytest.fixture(scope="session")
def image_backend(tiny_sd_dir) -> DiffusersImageBackend:
    return DiffusersImageBackend.from_pretrained(tiny_sd_dir, height=32, width=32, batch_size=3)


def _chat_backend(folder: Path, **kwargs) -> TransformersChatBackend:
    return TransformersChatBackend.from_pretrained(folder, processor=load_tiny_chat_processor(folder), **kwargs)


def _picture(seed: int, size=(40, 52)) -> Image.Image:
    pixels = np.random.RandomState(seed).randint(0, 256, (*size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _text(prompt: str, seed: int = 0) -> ChatRequest:
    return ChatRequest("concept", [{"role": "user", "content": [{"type": "text", "text": prompt}]}], seed=seed)


def _image(prompt: str, picture: Image.Image, seed: int = 0) -> ChatRequest:
    content = [{"type": "image", "image": picture}, {"type": "text", "text": prompt}]
    return ChatRequest("judge", [{"role": "user", "content": content}], seed=seed)


def _mixed_requests() -> list[ChatRequest]:
    # Prompts of very different lengths so left padding really happens inside each batch.
    return [
        _text("Name one dish from Japan.", seed=1),
        _image("Score this image.", _picture(0), seed=2),
        _text("Propose a visually similar concept from a different country in the same category, please.", seed=3),
        _image("Describe the flag.", _picture(1, size=(32, 32)), seed=4),
        _text("Hi", seed=5),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Chat backend
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_chat_backend_batches_mixed_requests_like_single_ones(tiny_vlm_dirs, family):
    backend = _chat_backend(tiny_vlm_dirs[family], batch_size=4)
    assert isinstance(backend, ChatBackend)
    assert backend.model_id == str(tiny_vlm_dirs[family]) and backend.revision is None
    requests = _mixed_requests()
    batched = backend.generate(requests, max_new_tokens=MAX_NEW)
    assert len(batched) == len(requests) and all(isinstance(a, str) for a in batched)
    # Greedy answers must not depend on batch neighbours or on how much left padding a prompt received.
    alone = [backend.generate([r], max_new_tokens=MAX_NEW)[0] for r in requests]
    assert batched == alone
    reordered = backend.generate(list(reversed(requests)), max_new_tokens=MAX_NEW)
    assert list(reversed(reordered)) == batched


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_chat_backend_returns_only_new_tokens(tiny_vlm_dirs, family):
    backend = _chat_backend(tiny_vlm_dirs[family], batch_size=2)
    requests = _mixed_requests()[:2]
    inputs = backend.processor.apply_chat_template(
        [r.messages for r in requests], add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt", processor_kwargs={"padding": True},
    )
    # The shorter prompt really was padded, and on the left.
    mask = inputs["attention_mask"]
    assert (mask == 0).any() and (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any()
    full = backend.model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
    expected = backend.processor.tokenizer.batch_decode(
        full[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True, clean_up_tokenization_spaces=False
    )
    assert backend.generate(requests, max_new_tokens=MAX_NEW) == expected
    prompt_text = backend.processor.apply_chat_template(requests[0].messages, add_generation_prompt=True, tokenize=False)
    assert not backend.generate(requests[:1], max_new_tokens=MAX_NEW)[0].startswith(prompt_text)


def test_chat_backend_matches_image_text_to_text_pipeline(tiny_vlm_dirs):
    from transformers import pipeline

    pipe = pipeline("image-text-to-text", model=str(tiny_vlm_dirs["llava"]))
    backend = TransformersChatBackend.from_pipeline(pipe, batch_size=3)
    requests = _mixed_requests()
    ours = backend.generate(requests, max_new_tokens=MAX_NEW)
    theirs = [
        pipe(text=r.messages, max_new_tokens=MAX_NEW, return_full_text=False, do_sample=False)[0]["generated_text"]
        for r in requests
    ]
    assert ours == theirs


def test_chat_backend_sampling_is_seeded_per_request(tiny_vlm_dirs):
    backend = _chat_backend(tiny_vlm_dirs["qwen2_5_vl"], batch_size=5, deterministic=False, temperature=1.5)
    requests = _mixed_requests()
    first = backend.generate(requests, max_new_tokens=MAX_NEW)
    torch.manual_seed(12345)  # the global RNG must play no part
    assert backend.generate(requests, max_new_tokens=MAX_NEW) == first
    assert [backend.generate([r], max_new_tokens=MAX_NEW)[0] for r in requests] == first
    reseeded = [ChatRequest(r.task, r.messages, r.fields, seed=r.seed + 100) for r in requests]
    changed = backend.generate(reseeded, max_new_tokens=MAX_NEW)
    assert sum(a != b for a, b in zip(first, changed)) >= 3
    backend.deterministic = True
    assert backend.generate(requests, max_new_tokens=MAX_NEW) != first


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "non-empty"),
        ([{"role": "user"}], "role' and 'content"),
        ([{"role": "user", "content": [{"type": "image", "image": "flag.png"}]}], "PIL image"),
        ([{"role": "user", "content": [{"type": "video", "video": None}]}], "unknown part type"),
    ],
)
def test_chat_backend_rejects_malformed_requests(tiny_vlm_dirs, messages, match):
    backend = _chat_backend(tiny_vlm_dirs["llava"])
    requests = [_text("fine"), ChatRequest("twin", messages)]
    with pytest.raises(ValueError, match=rf"request 1 \(task='twin'\).*{match}"):
        backend.generate(requests, max_new_tokens=2)


# ---------------------------------------------------------------------------------------------------------------
# Image backend
# ---------------------------------------------------------------------------------------------------------------

PROMPTS = ["a Japanese castle on a hill", "a flag with three stripes", "a silk kimono", "steamed dumplings"]
SEEDS = [11, 22, 33, 44]


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_image_backend_batch_equals_single_renders(image_backend):
    assert isinstance(image_backend, ImageBackend)
    batched = image_backend.render(PROMPTS, SEEDS, [{} for _ in PROMPTS])  # batches of 3 + 1
    assert [im.size for im in batched] == [(32, 32)] * 4 and all(im.mode == "RGB" for im in batched)
    for prompt, seed, image in zip(PROMPTS, SEEDS, batched):
        alone = image_backend.render([prompt], [seed], [{}])[0]
        assert np.abs(_pixels(alone) - _pixels(image)).max() <= 1
    again = image_backend.render(PROMPTS, SEEDS, [{} for _ in PROMPTS])
    assert all(np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(batched, again))


def test_image_backend_seed_and_prompt_change_the_image(image_backend):
    base = image_backend.render(PROMPTS[:1], SEEDS[:1], [{}])[0]
    other_seed = image_backend.render(PROMPTS[:1], [SEEDS[0] + 1], [{}])[0]
    other_prompt = image_backend.render(PROMPTS[1:2], SEEDS[:1], [{}])[0]
    assert np.abs(_pixels(base) - _pixels(other_seed)).mean() > 2
    assert np.abs(_pixels(base) - _pixels(other_prompt)).max() > 0


def test_image_backend_rejects_bad_inputs(image_backend):
    with pytest.raises(ValueError, match="differ in length"):
        image_backend.render(PROMPTS, SEEDS[:2], [{}] * 4)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        image_backend.render(["ok", "  "], [1, 2], [{}, {}])


def test_unusable_images_raise_instead_of_passing():
    with pytest.raises(ImageRenderError, match="image 3: constant image"):
        check_image(Image.new("RGB", (32, 32), (0, 0, 0)), 3)
    with pytest.raises(ImageRenderError, match="not a PIL image"):
        check_image(np.zeros((32, 32, 3)), 0)
    with pytest.raises(ImageRenderError, match="size"):
        check_image(_picture(0, size=(16, 16)), 0, size=(32, 32))
    assert check_image(_picture(0, size=(32, 32)), 0, size=(32, 32)).mode == "RGB"


def test_image_backend_surfaces_a_failed_decode(tiny_sd_dir):
    # fp16-style failure: NaN latents decode to a black frame, which must raise, not enter the dataset.
    backend = DiffusersImageBackend.from_pretrained(tiny_sd_dir, height=32, width=32, batch_size=2)
    vae = backend.pipeline.vae
    original = vae.decode

    def poisoned(latents, *args, **kwargs):
        return original(latents * float("nan"), *args, **kwargs)

    vae.decode = poisoned
    with pytest.raises(ImageRenderError, match="image 0: constant image"):
        backend.render(PROMPTS[:2], SEEDS[:2], [{}, {}])


def test_tiny_builders_are_reproducible(tmp_path):
    from safetensors.torch import load_file

    first = build_tiny_chat_vlm(tmp_path / "a", family="qwen2_5_vl")
    second = build_tiny_chat_vlm(tmp_path / "b", family="qwen2_5_vl")
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="unknown tiny VLM family"):
        build_tiny_chat_vlm(tmp_path / "c", family="gpt2")
