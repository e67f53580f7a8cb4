"""Backends: the fixed interfaces (`base`), offline stand-ins (`offline`) and real-model wrappers.

`make_chat_backend` / `make_image_backend` build a backend from a recipe's `BackendSpec`; the real-model modules
are imported only when asked for, so the offline demo never loads torch models.
"""

from __future__ import annotations

from typing import Any

from .base import ChatBackend, ChatRequest, ImageBackend

__all__ = ["ChatBackend", "ChatRequest", "ImageBackend", "make_chat_backend", "make_image_backend"]


def _torch_dtype(value: Any) -> Any:
    if isinstance(value, str):
        import torch

        return getattr(torch, value)
    return value


def make_chat_backend(spec: Any, batch_size: int = 8) -> ChatBackend:
    """A ChatBackend for `spec.kind` in {offline-template, offline-rule-judge, transformers-chat}."""
    opts = dict(spec.options or {})
    if spec.kind == "offline-template":
        from .offline import TemplateTextWriter

        return TemplateTextWriter(**opts)
    if spec.kind == "offline-rule-judge":
        from .offline import RuleBasedJudge

        return RuleBasedJudge(**opts)
    if spec.kind == "transformers-chat":
        from .transformers_chat import TransformersChatBackend

        if "dtype" in opts:
            opts["dtype"] = _torch_dtype(opts["dtype"])
        opts.setdefault("batch_size", batch_size)
        return TransformersChatBackend.from_pretrained(spec.model_id, revision=spec.revision, **opts)
    raise ValueError(f"unknown chat backend kind {spec.kind!r}; expected offline-template, offline-rule-judge or transformers-chat")


def make_image_backend(spec: Any, images: Any) -> ImageBackend:
    """An ImageBackend for `spec.kind` in {offline-twemoji, diffusers}, sized by the recipe's image settings."""
    opts = dict(spec.options or {})
    if spec.kind == "offline-twemoji":
        from .offline import TwemojiImageSource

        return TwemojiImageSource(width=images.width, height=images.height, **opts)
    if spec.kind == "diffusers":
        from .diffusers_images import DiffusersImageBackend

        if "dtype" in opts:
            opts["dtype"] = _torch_dtype(opts["dtype"])
        return DiffusersImageBackend.from_pretrained(
            spec.model_id, revision=spec.revision, batch_size=images.batch_size, height=images.height,
            width=images.width, num_inference_steps=images.steps, guidance_scale=images.guidance, **opts,
        )
    raise ValueError(f"unknown image backend kind {spec.kind!r}; expected offline-twemoji or diffusers")
