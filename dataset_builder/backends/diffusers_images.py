"""Image backend on a diffusers text-to-image pipeline (default: SD3.5-large-turbo, 4 steps, guidance 0).

Each batch is one pipeline call with a list of prompts and a list of generators, one `torch.Generator` seeded per
image: diffusers draws image i's initial latents from generator i alone, so image i depends only on (prompt i,
seed i) and a batch of N equals N single renders up to float rounding. That is what lets the image stage batch
for throughput and still resume or shard without changing a single row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .base import ImageRenderError
from .transformers_chat import hub_commit

DEFAULT_IMAGE_MODEL = "stabilityai/stable-diffusion-3.5-large-turbo"


def _default_dtype() -> torch.dtype:
    """fp16 on a GPU (the released setup); fp32 on CPU, where half-precision convolutions are slow or missing."""
    return torch.float16 if torch.cuda.is_available() else torch.float32


class DiffusersImageBackend:
    """Renders one image per (prompt, seed) with a diffusers text-to-image pipeline, `batch_size` prompts per call."""

    def __init__(
        self,
        pipeline: Any,
        *,
        model_id: str,
        revision: str | None = None,
        batch_size: int = 4,
        height: int = 512,
        width: int = 512,
        num_inference_steps: int = 4,
        guidance_scale: float = 0.0,
        generator_device: str | None = None,
        device: str | None = None,
    ) -> None:
        """Wrap a built pipeline. `generator_device` defaults to the pipeline's device (CPU generators on CPU);
        `device` is where it computes (recorded in provenance; defaults to the pipeline's execution device)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.pipeline = pipeline
        self.model_id = model_id
        self.revision = revision
        self.batch_size = batch_size
        self.height = height
        self.width = width
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.device = device or str(getattr(pipeline, "_execution_device", pipeline.device))
        self.generator_device = generator_device or str(pipeline.device)
        # Progress bars per call would flood the stage logs; the stage reports its own progress.
        pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | Path = DEFAULT_IMAGE_MODEL,
        *,
        revision: str | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | None = None,
        cpu_offload: str | None = None,
        **kwargs: Any,
    ) -> "DiffusersImageBackend":
        """Load through `AutoPipelineForText2Image` onto this rank's device; fp16 on a GPU, fp32 on CPU by default.

        `device` defaults to `cuda:<LOCAL_RANK>` (or cpu), see `devices.rank_device`. `cpu_offload="model"` keeps the
        pipeline in CPU memory and moves one component at a time to the device (`enable_model_cpu_offload`: the
        device then holds only the largest component, e.g. SD3.5's 8B transformer, not the 4.8B T5 encoder beside
        it); `"sequential"` moves layer by layer (`enable_sequential_cpu_offload`: least memory, much slower).
        The dtype goes in under the keyword the installed diffusers reads (`pipeline_dtype_kwargs`).
        Remaining keyword arguments go to `__init__` (batch_size, height, width, num_inference_steps, ...).
        """
        from diffusers import AutoPipelineForText2Image

        from .devices import rank_device

        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        dtype = _default_dtype() if dtype is None else dtype
        if cpu_offload not in (None, "model", "sequential"):
            raise ValueError(f"cpu_offload must be null, 'model' or 'sequential', got {cpu_offload!r}")
        device = rank_device(device)
        pipeline = AutoPipelineForText2Image.from_pretrained(model_id, revision=revision, **pipeline_dtype_kwargs(dtype))
        if cpu_offload is None:
            pipeline = pipeline.to(device)
        elif device == "cpu":
            raise ValueError("cpu_offload needs an accelerator device; on CPU the pipeline already lives in CPU memory")
        elif cpu_offload == "model":
            pipeline.enable_model_cpu_offload(device=device)
        else:
            pipeline.enable_sequential_cpu_offload(device=device)
        return cls(pipeline, model_id=str(model_id), revision=hub_commit(model_id, "model_index.json", revision),
                   device=device, **kwargs)

    @property
    def dtype(self) -> torch.dtype:
        """The pipeline's compute dtype."""
        return self.pipeline.dtype

    def render(self, prompts: list[str], seeds: list[int], fields: list[dict[str, Any]]) -> list[Image.Image]:
        """Return one RGB PIL image per prompt, in order. Raises `ImageRenderError` on an unusable output."""
        if not len(prompts) == len(seeds) == len(fields):
            raise ValueError(f"prompts, seeds and fields differ in length: {len(prompts)}, {len(seeds)}, {len(fields)}")
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"prompt {index} is empty or not a string: {prompt!r}")
        images: list[Image.Image] = []
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            images.extend(self._render_batch(prompts[start:stop], seeds[start:stop], start))
        return images

    @torch.inference_mode()
    def _render_batch(self, prompts: list[str], seeds: list[int], offset: int) -> list[Image.Image]:
        generators = [torch.Generator(self.generator_device).manual_seed(int(seed)) for seed in seeds]
        result = self.pipeline(
            prompt=prompts,
            generator=generators,
            num_images_per_prompt=1,
            height=self.height,
            width=self.width,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            output_type="pil",
        )
        images = list(getattr(result, "images", None) or [])
        if len(images) != len(prompts):
            raise ImageRenderError(f"pipeline returned {len(images)} images for {len(prompts)} prompts")
        return [check_image(image, offset + i, (self.width, self.height)) for i, image in enumerate(images)]


def pipeline_dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The dtype keyword for `DiffusionPipeline.from_pretrained` on the installed diffusers.

    Releases since mid-2026 (diffusers PR 14205) read `dtype` and deprecate `torch_dtype` (removal planned for 1.0);
    older ones, down to the 0.35 floor, read only `torch_dtype` and pass an unknown `dtype` on to the components,
    which then load in fp32 without a word. `_resolve_dtype` arrived with that change, so its presence tells which.
    """
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401 (only its presence matters)
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def check_image(image: Any, index: int, size: tuple[int, int] | None = None) -> Image.Image:
    """Validate one rendered image: a PIL image of the expected size whose pixels are not all one value.

    A black frame from a safety filter or a NaN-poisoned fp16 decode must not slip into the dataset as if it
    were a sample, so such outputs raise and the stage counts them as rejections.
    """
    if not isinstance(image, Image.Image):
        raise ImageRenderError(f"image {index}: pipeline returned {type(image).__name__}, not a PIL image")
    if size is not None and image.size != size:
        raise ImageRenderError(f"image {index}: size {image.size} differs from the requested {size}")
    pixels = np.asarray(image.convert("RGB"))
    if pixels.size == 0:
        raise ImageRenderError(f"image {index}: empty image")
    if pixels.max() == pixels.min():
        raise ImageRenderError(f"image {index}: constant image (value {int(pixels.max())}), likely a failed decode")
    return image.convert("RGB")
