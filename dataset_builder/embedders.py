"""Text embedders for the twin similarity check (cosine similarity of visual-feature descriptions)."""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np


class TextEmbedder(Protocol):
    """Maps strings to L2-normalised vectors (one row per string)."""

    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dim) with unit-norm rows."""
        ...


class HashedNgramEmbedder:
    """Offline embedder: character n-grams hashed into a fixed number of buckets (no model, no download)."""

    def __init__(self, dim: int = 1024, ngram_sizes: tuple[int, ...] = (3, 4)):
        self.dim = dim
        self.ngram_sizes = ngram_sizes
        self.name = f"hashed-ngram(dim={dim},n={','.join(map(str, ngram_sizes))})"

    def _bucket(self, gram: str) -> int:
        # blake2b rather than hash(): Python's str hash is salted per process, which would break determinism.
        return int.from_bytes(hashlib.blake2b(gram.encode("utf-8"), digest_size=8).digest(), "little") % self.dim

    def embed(self, texts: list[str]) -> np.ndarray:
        """Bag of hashed character n-grams of the padded, case-folded text, L2-normalised."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            padded = f" {' '.join(text.casefold().split())} "
            for n in self.ngram_sizes:
                for j in range(len(padded) - n + 1):
                    out[i, self._bucket(padded[j : j + n])] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


class CLIPTextEmbedder:
    """Embeds with the text tower of a transformers CLIP model (projected `pooler_output`, L2-normalised)."""

    def __init__(self, model, tokenizer, name: str | None = None, batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.name = name or f"clip-text:{getattr(model.config, '_name_or_path', '') or 'in-memory'}"

    @classmethod
    def from_pretrained(cls, path: str) -> "CLIPTextEmbedder":
        """Load a local or cached CLIP checkpoint (no network in this environment)."""
        from transformers import AutoTokenizer, CLIPModel

        return cls(CLIPModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), name=f"clip-text:{path}")

    def embed(self, texts: list[str]) -> np.ndarray:
        """Batched, dynamically padded text features."""
        import torch

        chunks = []
        max_len = getattr(self.model.config.text_config, "max_position_embeddings", 77)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[start : start + self.batch_size], padding=True, truncation=True,
                                       max_length=max_len, return_tensors="pt")
                feats = self.model.get_text_features(**batch)
                feats = getattr(feats, "pooler_output", feats)
                chunks.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 1), dtype=np.float32)


def make_embedder(spec: str) -> TextEmbedder:
    """`hashed-ngram` or `clip:<path>`."""
    if spec == "hashed-ngram":
        return HashedNgramEmbedder()
    if spec.startswith("clip:"):
        return CLIPTextEmbedder.from_pretrained(spec[len("clip:"):])
    raise ValueError(f"unknown embedder {spec!r}; expected 'hashed-ngram' or 'clip:<path>'")


def pair_similarity(embedder: TextEmbedder, a: list[str], b: list[str]) -> np.ndarray:
    """Cosine similarity of a[i] and b[i] for each i."""
    ea, eb = embedder.embed(a), embedder.embed(b)
    return (ea * eb).sum(axis=1)
