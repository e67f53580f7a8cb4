"""Dual-encoder wrapper: any CLIP-family checkpoint (CLIP, CultureCLIP, SigLIP) as batched, cached feature maps.

Texts are embedded once per distinct string (a benchmark's candidate texts repeat across thousands of images),
images in batches whose decoding and preprocessing run in worker threads ahead of the model; features are the
models' `pooler_output`, L2-normalised and returned in fp32 whatever precision the towers ran at.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor, PreTrainedModel

import modeling_cultureclip  # noqa: F401  (registers CultureCLIP with the Auto classes)

from .precision import DTYPES, device_has_bf16, precision_name, resolve_precision

logger = logging.getLogger(__name__)
_SIGMOID_FAMILIES = ("siglip", "siglip2")
_TOWERS = ("vision_model", "text_model")
_SCALARS = ("logit_scale", "logit_bias")
_MATMUL_MODULES = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def default_workers() -> int:
    """Image-preprocessing threads by default: one per core, at most 4 (PIL releases the GIL while resizing)."""
    return min(4, os.cpu_count() or 1)


def _target_dtype(dtype: str | torch.dtype | None, model: torch.nn.Module, device: torch.device) -> torch.dtype:
    if dtype is None:
        return _matmul_dtype(image_side(model))
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype {dtype}: expected torch.float32, torch.bfloat16 or torch.float16")
        return dtype
    return DTYPES[resolve_precision(dtype, device)]


def image_side(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that turn pixels into image features: the vision tower and its projection (the whole model
    when it has no `vision_model`)."""
    tower = getattr(model, "vision_model", None)
    if not isinstance(tower, torch.nn.Module):
        return [model]
    projection = getattr(model, "visual_projection", None)
    return [tower] + ([projection] if isinstance(projection, torch.nn.Module) else [])


def _matmul_modules(modules: list[torch.nn.Module]) -> list[torch.nn.Module]:
    return [m for root in modules for m in root.modules() if isinstance(m, _MATMUL_MODULES)]


def _matmul_dtype(modules: list[torch.nn.Module]) -> torch.dtype:
    """The dtype the matmul weights under `modules` are stored in (the first Linear's; else the first parameter's)."""
    found = _matmul_modules(modules)
    return found[0].weight.dtype if found else next(modules[0].parameters()).dtype


def _laid_out_for(model: torch.nn.Module, dtype: torch.dtype) -> bool:
    """True when the image side's matmul weights are in `dtype` and every other floating parameter is fp32."""
    matmul = {id(p) for m in _matmul_modules(image_side(model)) for p in m.parameters(recurse=False)}
    return all(p.dtype == (dtype if id(p) in matmul else torch.float32) for p in model.parameters()
               if p.is_floating_point())


def cast_for_precision(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Store the image side's matmul weights (Linear / Conv) in `dtype` and everything else in fp32, in place.

    Run under `torch.autocast(dtype)`, the image tower then computes exactly what autocast computes on the fp32
    model, without re-casting every weight on every batch. The text tower stays fp32: its features are computed
    once per distinct string and cached, so reduced precision would save nothing there and only add rounding to
    every score."""
    model.float()
    if dtype != torch.float32:
        for module in _matmul_modules(image_side(model)):
            module.to(dtype)
    return model


class DualEncoder:
    """Batched, cached text/image features and similarity logits of a CLIP-family model.

    `dtype` ('auto', 'fp32', 'bf16', 'fp16' or a torch dtype; None keeps the model as it is) is the precision the
    image tower's matmuls run at: their weights are stored in it once and the tower runs under torch.autocast, so
    norms, embeddings and the residual stream stay fp32 (autocast's numerics without re-casting weights every
    batch). The text tower stays fp32 (see `cast_for_precision`).
    When the model is not laid out so, a cast copy is evaluated and the caller's model is left as it was, unless
    `cast_in_place` (for models the caller owns, as `load_encoder` does). `compile=True` compiles the
    vision and text towers with `torch.compile` (in place; state-dict keys are unchanged). `num_workers` threads
    decode and preprocess the next image batches while the model runs (0: in the calling thread).
    """

    def __init__(self, model: PreTrainedModel, processor, batch_size: int = 64, device: str | torch.device | None = None,
                 model_id: str | None = None, revision: str | None = None, dtype: str | torch.dtype | None = None,
                 compile: bool = False, num_workers: int | None = None, cast_in_place: bool = False):
        for method in ("get_text_features", "get_image_features"):
            if not hasattr(model, method):
                raise TypeError(f"{type(model).__name__} has no `{method}`: not a CLIP-family dual encoder")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        num_workers = default_workers() if num_workers is None else num_workers
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        target = _target_dtype(dtype, model, self.device)
        # logit scale and bias are read in fp32: from the caller's (live) parameters, or copied before a cast
        self._scalars = {name: getattr(model, name) for name in _SCALARS if isinstance(getattr(model, name, None),
                                                                                   torch.Tensor)}
        if dtype is not None and not _laid_out_for(model, target):
            if cast_in_place:
                self._scalars = {name: value.detach().float().clone() for name, value in self._scalars.items()}
            else:
                model = copy.deepcopy(model)
            cast_for_precision(model, target)
            if target == torch.bfloat16 and not device_has_bf16(self.device):
                logger.warning("bf16 requested on %s, which has no bf16 units: expect it slower than fp32",
                               self.device)
        self.model = model.eval()
        self.model.to(self.device)
        self.dtype = target
        self.precision = precision_name(target)
        text_tower = getattr(model, "text_model", None)
        self.text_dtype = (_matmul_dtype([text_tower]) if isinstance(text_tower, torch.nn.Module) and
                           text_tower not in image_side(model) else target)
        self.compiled = False
        if compile:
            self._compile_towers()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", None)
        self.image_processor = getattr(processor, "image_processor", None)
        if self.tokenizer is None or self.image_processor is None:
            raise TypeError("processor must have `tokenizer` and `image_processor` (e.g. CLIPProcessor)")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.model_id = model_id or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.revision = revision
        self.family = "sigmoid" if model.config.model_type in _SIGMOID_FAMILIES else "softmax"
        self._text_cache: dict[str, torch.Tensor] = {}
        self.text_calls = 0  # forward calls of the text tower, for tests of the cache
        text_config = getattr(model.config, "text_config", None)
        positions = getattr(text_config, "max_position_embeddings", None)
        limits = [x for x in (positions, self.tokenizer.model_max_length) if isinstance(x, int) and x < 10**6]
        self.max_text_length = min(limits) if limits else 77

    def _compile_towers(self) -> None:
        towers = [getattr(self.model, name) for name in _TOWERS if isinstance(getattr(self.model, name, None),
                                                                              torch.nn.Module)]
        if not towers:
            raise ValueError(f"compile=True: {type(self.model).__name__} has no {' / '.join(_TOWERS)} to compile")
        for tower in towers:
            tower.compile()
        self.compiled = True

    def autocast(self, dtype: torch.dtype | None = None) -> contextlib.AbstractContextManager:
        """The context a tower runs in: autocast to bf16/fp16 at reduced precision, nothing at fp32."""
        dtype = self.dtype if dtype is None else dtype
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def describe(self) -> dict[str, object]:
        """How the towers run, for result records: image-tower precision, text-tower precision, device, compiled."""
        return {"precision": self.precision, "text_precision": precision_name(self.text_dtype),
                "device": str(self.device), "compiled": self.compiled}

    # -- text ---------------------------------------------------------------------------------------------------
    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        # SigLIP was trained on max_length padding and pools the last token; CLIP pools EOS, so dynamic padding works.
        padding = "max_length" if self.family == "sigmoid" else True
        tokens = self.tokenizer(texts, padding=padding, truncation=True, max_length=self.max_text_length,
                                return_tensors="pt")
        return {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), dim) L2-normalised fp32 features; each distinct string is encoded once per encoder."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        # Sorting by length keeps padding small within a batch.
        missing.sort(key=len)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            tokens = self._tokenize(chunk)
            if self.family == "sigmoid":
                tokens.pop("attention_mask", None)  # SigLIP's text tower is run without a mask
            with self.autocast(self.text_dtype):
                features = self.model.get_text_features(**tokens).pooler_output
            self.text_calls += 1
            features = torch.nn.functional.normalize(features.float(), dim=-1).cpu()
            self._text_cache.update(zip(chunk, features))
        if not texts:
            return torch.empty(0, self.embedding_dim)
        return torch.stack([self._text_cache[t] for t in texts])

    # -- images -------------------------------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """fp32 pixel values of one batch (pinned when the towers run on a GPU)."""
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"].float()
        return pixels.pin_memory() if self.device.type == "cuda" else pixels

    def pixel_batches(self, images: Sequence[Image.Image]) -> Iterator[torch.Tensor]:
        """Preprocessed batches of `images`, in order. With workers, up to `num_workers` batches are read, decoded
        and preprocessed ahead in threads (so `images` is sliced from several threads; lists and the benchmarks'
        image tables allow that); an error in a batch is raised when that batch's turn comes."""
        bounds = [(start, min(start + self.batch_size, len(images))) for start in range(0, len(images),
                                                                                        self.batch_size)]
        if self.num_workers == 0 or len(bounds) == 1:
            for start, stop in bounds:
                yield self.preprocess(images[start:stop])
            return
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="image-preprocess")
        try:
            pending: deque = deque()
            for start, stop in bounds:
                pending.append(pool.submit(lambda a, b: self.preprocess(images[a:b]), start, stop))
                if len(pending) > self.num_workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(batch, dim) L2-normalised fp32 features of preprocessed pixel values."""
        pixels = pixels.to(self.device, non_blocking=True)
        with self.autocast():
            features = self.model.get_image_features(pixel_values=pixels).pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(len(images), dim) L2-normalised fp32 features, batch by batch (images may be a lazy sequence)."""
        chunks = [self.encode_pixels(pixels) for pixels in self.pixel_batches(images)]
        if not chunks:
            return torch.empty(0, self.embedding_dim)
        return torch.cat(chunks)

    # -- scores -------------------------------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.projection_dim) if hasattr(self.model.config, "projection_dim") else 0

    def logit_scale(self) -> float:
        return float(self._scalars["logit_scale"].detach().float().exp()) if "logit_scale" in self._scalars else 1.0

    def logits(self, cosine: torch.Tensor) -> torch.Tensor:
        """Model logits from cosine similarities (scaled; SigLIP adds its bias). Ranking equals cosine ranking."""
        out = cosine.float() * self.logit_scale()
        if self.family == "sigmoid" and "logit_bias" in self._scalars:
            out = out + float(self._scalars["logit_bias"].detach().float())
        return out

    def probabilities(self, cosine: torch.Tensor) -> torch.Tensor:
        """Per-option probabilities: softmax over options for CLIP, independent sigmoids for SigLIP."""
        logits = self.logits(cosine)
        return torch.sigmoid(logits) if self.family == "sigmoid" else logits.softmax(dim=-1)


def load_encoder(model_id: str, revision: str | None = None, trust_remote_code: bool = False, batch_size: int = 64,
                 device: str | None = None, dtype: str | torch.dtype | None = "auto", compile: bool = False,
                 num_workers: int | None = None) -> DualEncoder:
    """Load a CLIP-family checkpoint (local path or Hub id) and its processor as a DualEncoder.

    `dtype` 'auto' runs bf16 where the device has bf16 units and fp32 elsewhere (see `evaluate_suite.precision`).
    The checkpoint is loaded in its stored precision and cast once, after its logit scale is read in fp32.
    """
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    model = AutoModel.from_pretrained(model_id, **kwargs)
    processor = AutoProcessor.from_pretrained(model_id, **kwargs)
    return DualEncoder(model, processor, batch_size=batch_size, device=device or "cpu", model_id=model_id,
                       revision=revision, dtype=dtype, compile=compile, num_workers=num_workers, cast_in_place=True)
