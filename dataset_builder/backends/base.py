"""Backend interfaces the pipeline stages talk to.

Stages never import a model library directly: they render a prompt, hand a batch of requests to an injected
backend and parse the answers themselves. The same stage code therefore runs with a 7B chat VLM on a GPU and with
the offline template writer in tests and the demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image


from cultureclip_guards import RunFailure


@dataclass
class ChatRequest:
    """One conversation to answer.

    `messages` is in transformers' chat format; a user turn's content is a list of
    `{"type": "text", "text": ...}` and `{"type": "image", "image": PIL.Image}` parts. `task` names the prompt
    (e.g. "concept", "twin", "captions", "judge") and `fields` holds the structured values the prompt was rendered
    from, so an offline writer can answer without reading free text. `seed` makes sampling reproducible per item.
    """

    task: str
    messages: list[dict[str, Any]]
    fields: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@runtime_checkable
class ChatBackend(Protocol):
    """Answers chat requests (text generation and image judging)."""

    model_id: str
    revision: str | None

    def generate(self, requests: list[ChatRequest], max_new_tokens: int | None = None) -> list[str]:
        """Return one answer string per request, in order (`max_new_tokens` None: the backend's own budget)."""
        ...


class ImageRenderError(RunFailure):
    """A backend produced no usable image for a prompt (failed decode, filtered frame, wrong size or type)."""


@runtime_checkable
class ImageBackend(Protocol):
    """Renders one image per prompt; image i depends only on (prompts[i], seeds[i], fields[i])."""

    model_id: str
    revision: str | None

    def render(self, prompts: list[str], seeds: list[int], fields: list[dict[str, Any]]) -> list[Image.Image]:
        """Return one PIL image per prompt, in order; raise ImageRenderError when an output is unusable."""
        ...
