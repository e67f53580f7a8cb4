"""Versioned prompt files (`dataset_builder/prompts/<task>.v<N>.txt`) and ChatRequest construction."""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image

from .backends.base import ChatRequest

PROMPT_DIR = Path(__file__).parent / "prompts"
_VERSION_RE = re.compile(r"^[a-z_]+\.v[0-9]+$")


@dataclass(frozen=True)
class Prompt:
    """One prompt file; `version` is its stem (e.g. "concept.v1"), `sha256` pins its exact text."""

    version: str
    text: str
    sha256: str

    def render(self, values: dict[str, Any]) -> str:
        """Fill the `$name` placeholders; a missing value raises KeyError naming it."""
        try:
            return string.Template(self.text).substitute({k: str(v) for k, v in values.items()})
        except KeyError as exc:
            raise KeyError(f"prompt {self.version}: no value for placeholder {exc.args[0]!r}") from None


@lru_cache(maxsize=None)
def load_prompt(version: str) -> Prompt:
    """Load a packaged prompt by version name such as "captions.v1"."""
    if not _VERSION_RE.match(version):
        raise ValueError(f"prompt version {version!r} must look like 'task.vN'")
    path = PROMPT_DIR / f"{version}.txt"
    if not path.exists():
        raise FileNotFoundError(f"prompt file {path} not found")
    text = path.read_text(encoding="utf-8")
    return Prompt(version, text, hashlib.sha256(text.encode("utf-8")).hexdigest())


def make_request(task: str, prompt: Prompt, fields: dict[str, Any], seed: int, image: Image.Image | None = None) -> ChatRequest:
    """A single-turn ChatRequest: optional image part first, then the rendered prompt text."""
    content: list[dict[str, Any]] = []
    if image is not None:
        content.append({"type": "image", "image": image})
    content.append({"type": "text", "text": prompt.render(fields)})
    return ChatRequest(task=task, messages=[{"role": "user", "content": content}], fields=dict(fields), seed=seed)
