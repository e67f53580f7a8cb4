"""Dual-encoder wrapper: any CLIP-family checkpoint (CLIP, CultureCLIP, SigLIP) as batched, cached feature maps.

Texts are embedded once per distinct string (a benchmark's candidate texts repeat across thousands of images),
images in batches; features are the models' `pooler_output`, L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor, PreTrainedModel

import modeling_cultureclip  # noqa: F401  (registers CultureCLIP with the Auto classes)

_SIGMOID_FAMILIES = ("siglip", "siglip2")


class DualEncoder:
    """Batched, cached text/image features and similarity logits of a CLIP-family model."""

    def __init__(self, model: PreTrainedModel, processor, batch_size: int = 64, device: str | torch.device | None = None,
                 model_id: str | None = None, revision: str | None = None):
        for method in ("get_text_features", "get_image_features"):
            if not hasattr(model, method):
                raise TypeError(f"{type(model).__name__} has no `{method}`: not a CLIP-family dual encoder")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", None)
        self.image_processor = getattr(processor, "image_processor", None)
        if self.tokenizer is None or self.image_processor is None:
            raise TypeError("processor must have `tokenizer` and `image_processor` (e.g. CLIPProcessor)")
        self.batch_size = batch_size
        self.model_id = model_id or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.revision = revision
        self.family = "sigmoid" if model.config.model_type in _SIGMOID_FAMILIES else "softmax"
        self._text_cache: dict[str, torch.Tensor] = {}
        self.text_calls = 0  # forward calls of the text tower, for tests of the cache
        text_config = getattr(model.config, "text_config", None)
        positions = getattr(text_config, "max_position_embeddings", None)
        limits = [x for x in (positions, self.tokenizer.model_max_length) if isinstance(x, int) and x < 10**6]
        self.max_text_length = min(limits) if limits else 77

    # -- text ---------------------------------------------------------------------------------------------------
    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        # SigLIP was trained on max_length padding and pools the last token; CLIP pools EOS, so dynamic padding works.
        padding = "max_length" if self.family == "sigmoid" else True
        tokens = self.tokenizer(texts, padding=padding, truncation=True, max_length=self.max_text_length,
                                return_tensors="pt")
        return {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), dim) L2-normalised features; each distinct string is encoded once per encoder lifetime."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        # Sorting by length keeps padding small within a batch.
        missing.sort(key=len)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            tokens = self._tokenize(chunk)
            if self.family == "sigmoid":
                tokens.pop("attention_mask", None)  # SigLIP's text tower is run without a mask
            features = self.model.get_text_features(**tokens).pooler_output
            self.text_calls += 1
            features = torch.nn.functional.normalize(features.float(), dim=-1).cpu()
            self._text_cache.update(zip(chunk, features))
        if not texts:
            return torch.empty(0, self.embedding_dim)
        return torch.stack([self._text_cache[t] for t in texts])

    # -- images -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(len(images), dim) L2-normalised features, computed batch by batch (images may be a lazy sequence)."""
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            pixels = self.image_processor(images=list(batch), return_tensors="pt")["pixel_values"]
            features = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype)).pooler_output
            chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        if not chunks:
            return torch.empty(0, self.embedding_dim)
        return torch.cat(chunks)

    # -- scores -------------------------------------------------------------------------------------------------
    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.projection_dim) if hasattr(self.model.config, "projection_dim") else 0

    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp()) if hasattr(self.model, "logit_scale") else 1.0

    def logits(self, cosine: torch.Tensor) -> torch.Tensor:
        """Model logits from cosine similarities (scaled; SigLIP adds its bias). Ranking equals cosine ranking."""
        out = cosine * self.logit_scale()
        if self.family == "sigmoid" and hasattr(self.model, "logit_bias"):
            out = out + float(self.model.logit_bias.detach())
        return out

    def probabilities(self, cosine: torch.Tensor) -> torch.Tensor:
        """Per-option probabilities: softmax over options for CLIP, independent sigmoids for SigLIP."""
        logits = self.logits(cosine)
        return torch.sigmoid(logits) if self.family == "sigmoid" else logits.softmax(dim=-1)


def load_encoder(model_id: str, revision: str | None = None, trust_remote_code: bool = False, batch_size: int = 64,
                 device: str | None = None, dtype: torch.dtype | None = None) -> DualEncoder:
    """Load a CLIP-family checkpoint (local path or Hub id) and its processor as a DualEncoder."""
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    model = AutoModel.from_pretrained(model_id, **kwargs, **({"dtype": dtype} if dtype is not None else {}))
    processor = AutoProcessor.from_pretrained(model_id, **kwargs)
    return DualEncoder(model, processor, batch_size=batch_size, device=device or "cpu", model_id=model_id,
                       revision=revision)
