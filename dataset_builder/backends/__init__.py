"""Backends: the fixed interfaces (`base`), offline stand-ins (`offline`) and real-model wrappers.

`make_chat_backend` / `make_image_backend` build a backend from a recipe's `BackendSpec`; the real-model modules
are imported only when asked for, so the offline demo never loads torch models.
"""

from __future__ import annotations

from typing import Any

from .base import ChatBackend, ChatRequest, ImageBackend

__all__ = ["ChatBackend", "ChatRequest", "ImageBackend", "make_chat_backend", "make_image_backend", "make_role_specs"]

CHAT_KINDS = ("offline-template", "offline-rule-judge", "transformers-chat", "openai-server")
IMAGE_KINDS = ("offline-twemoji", "diffusers")


def _torch_dtype(value: Any) -> Any:
    if isinstance(value, str):
        import torch

        return getattr(torch, value)
    return value


def make_chat_backend(spec: Any, batch_size: int = 8) -> ChatBackend:
    """A ChatBackend for `spec.kind` in {offline-template, offline-rule-judge, transformers-chat, openai-server}."""
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
    if spec.kind == "openai-server":
        from .openai_server import OpenAIChatBackend

        opts.setdefault("model", spec.model_id)
        return OpenAIChatBackend(revision=spec.revision, **opts)
    raise ValueError(f"unknown chat backend kind {spec.kind!r}; expected one of {list(CHAT_KINDS)}")


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
    raise ValueError(f"unknown image backend kind {spec.kind!r}; expected one of {list(IMAGE_KINDS)}")


def make_role_specs(recipe: Any) -> dict[str, Any]:
    """How the pipeline's `BackendPool` builds each role of a recipe (nothing is loaded here).

    A role's generation settings (batch size and sampling options) are kept apart so that the text and judge roles
    can share one loaded model when they name the same weights.
    """
    from .lifecycle import GENERATION_OPTIONS, RoleSpec

    def generation(spec: Any, batch_size: int) -> dict[str, Any]:
        gen = {k: v for k, v in (spec.options or {}).items() if k in GENERATION_OPTIONS}
        gen.setdefault("batch_size", batch_size)
        return gen

    text, judge, image = recipe.text_backend, recipe.judge_backend, recipe.image_backend
    for role, spec, kinds in (("text", text, CHAT_KINDS), ("judge", judge, CHAT_KINDS), ("image", image, IMAGE_KINDS)):
        if spec.kind not in kinds:
            raise ValueError(f"recipe field {role}_backend.kind: {spec.kind!r} is not one of {list(kinds)}")
    return {
        "text": RoleSpec(text, lambda: make_chat_backend(text, recipe.text_batch_size),
                         generation(text, recipe.text_batch_size)),
        "judge": RoleSpec(judge, lambda: make_chat_backend(judge, recipe.judge.batch_size),
                          generation(judge, recipe.judge.batch_size)),
        "image": RoleSpec(image, lambda: make_image_backend(image, recipe.images)),
    }
