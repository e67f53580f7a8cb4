"""The CultureCLIP twin-aware contrastive objective.

One function serves every variant. For a text kind (contextual captions or bare concept names) it builds the
contrastive problem over both sides of each twin pair: images X = [I+; I-] against texts Y = [T+; T-]. Columns are
masked to recover each variant:
- twin negatives off: a side only sees its own side (plain CLIP per side);
- asymmetric (released NegCLIP): image->text sees both sides, text->image only its own side;
- false-negative masking: columns showing the row's own concept, other than its target, are dropped.

Across processes, rows stay local and columns are gathered with gradients (open_clip's local-loss scheme): the
caller passes a `FeatureGather`; this file never touches torch.distributed so it can ship as Hub remote code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Protocol

import torch
import torch.nn.functional as F


class FeatureGather(Protocol):
    """Differentiable all-gather: returns the tensors of every rank concatenated on dim 0, in rank order."""

    rank: int
    world_size: int

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor: ...


@dataclass
class TwinFeatures:
    """Projected (unnormalised) features of a batch of B twin pairs; `+` side first, twin side `twin_*`."""

    image: torch.Tensor
    twin_image: torch.Tensor
    caption: torch.Tensor
    twin_caption: torch.Tensor
    concept: torch.Tensor | None = None
    twin_concept: torch.Tensor | None = None
    concept_ids: torch.Tensor | None = None
    twin_concept_ids: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.image.shape[0]

    def check(self) -> None:
        """Raise ValueError if the sides' batch sizes or feature widths disagree."""
        size = self.batch_size
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value.shape[0] != size:
                raise ValueError(
                    f"twin batch mismatch: `{f.name}` has {value.shape[0]} rows but `image` has {size}; "
                    "every twin input must hold one row per pair"
                )
        if (self.concept is None) != (self.twin_concept is None):
            raise ValueError("twin batch: give both `concept` and `twin_concept` features, or neither")
        if (self.concept_ids is None) != (self.twin_concept_ids is None):
            raise ValueError("twin batch: give both `concept_ids` and `twin_concept_ids`, or neither")


@dataclass(frozen=True)
class ObjectiveSettings:
    """Resolved switches of the objective (see CultureCLIPConfig.resolved_objective)."""

    caption_loss_weight: float = 0.5
    concept_loss_weight: float = 0.5
    use_twin_negatives: bool = True
    normalize_features: bool = True
    symmetric_twin_negatives: bool = True
    mask_false_negatives: bool = True
    logit_scale_max: float | None = 100.0
    sum_sides: bool = False

    @classmethod
    def from_config(cls, config) -> ObjectiveSettings:
        resolved = config.resolved_objective()
        return cls(**{f.name: resolved[f.name] for f in fields(cls)})


def _gather(tensor: torch.Tensor, gather: FeatureGather | None) -> torch.Tensor:
    return tensor if gather is None else gather(tensor)


def twin_contrastive_loss(
    image: torch.Tensor,
    twin_image: torch.Tensor,
    text: torch.Tensor,
    twin_text: torch.Tensor,
    logit_scale: torch.Tensor,
    settings: ObjectiveSettings,
    ids: torch.Tensor | None = None,
    twin_ids: torch.Tensor | None = None,
    gather: FeatureGather | None = None,
) -> torch.Tensor:
    """Contrastive loss of one text kind over both sides of B local twin pairs.

    Returns the mean of the image->text and text->image cross-entropies. Per side that is the SPEC's clip or
    negclip term; the two sides are averaged, or summed when `settings.sum_sides` (the released objective).
    """
    if settings.normalize_features:
        image, twin_image = F.normalize(image, dim=-1), F.normalize(twin_image, dim=-1)
        text, twin_text = F.normalize(text, dim=-1), F.normalize(twin_text, dim=-1)
    rank, world = (0, 1) if gather is None else (gather.rank, gather.world_size)
    local = image.shape[0]

    images = torch.cat([image, twin_image])  # 2B local rows: + side then twin side
    texts = torch.cat([text, twin_text])
    all_images = torch.cat([_gather(image, gather), _gather(twin_image, gather)])  # 2WB columns, same layout
    all_texts = torch.cat([_gather(text, gather), _gather(twin_text, gather)])
    total = all_images.shape[0] // 2

    device = images.device
    offset = rank * local + torch.arange(local, device=device)
    targets = torch.cat([offset, offset + total])
    row_side = torch.cat([torch.zeros(local, dtype=torch.bool, device=device),
                          torch.ones(local, dtype=torch.bool, device=device)])
    col_side = torch.cat([torch.zeros(total, dtype=torch.bool, device=device),
                          torch.ones(total, dtype=torch.bool, device=device)])
    other_side = row_side[:, None] != col_side[None, :]

    not_target = torch.ones(2 * local, 2 * total, dtype=torch.bool, device=device)
    not_target[torch.arange(2 * local, device=device), targets] = False
    same_concept = torch.zeros_like(not_target)
    if settings.mask_false_negatives:
        if ids is None or twin_ids is None:
            raise ValueError("mask_false_negatives needs `concept_ids` and `twin_concept_ids` for every pair")
        row_ids = torch.cat([ids, twin_ids])
        col_ids = torch.cat([_gather(ids, gather), _gather(twin_ids, gather)])
        same_concept = (row_ids[:, None] == col_ids[None, :]) & not_target

    image_to_text_mask = same_concept.clone()
    text_to_image_mask = same_concept.clone()
    if not settings.use_twin_negatives:
        image_to_text_mask |= other_side
        text_to_image_mask |= other_side
    elif not settings.symmetric_twin_negatives:
        text_to_image_mask |= other_side

    max_log = None if settings.logit_scale_max is None else math.log(settings.logit_scale_max)
    scale = logit_scale.clamp(max=max_log).exp() if max_log is not None else logit_scale.exp()
    image_logits = (scale * images @ all_texts.T).masked_fill(image_to_text_mask, float("-inf"))
    text_logits = (scale * texts @ all_images.T).masked_fill(text_to_image_mask, float("-inf"))
    loss = (F.cross_entropy(image_logits, targets) + F.cross_entropy(text_logits, targets)) / 2
    return loss * 2 if settings.sum_sides else loss


def cultureclip_loss(
    features: TwinFeatures,
    logit_scale: torch.Tensor,
    settings: ObjectiveSettings,
    gather: FeatureGather | None = None,
) -> dict[str, torch.Tensor]:
    """Weighted CultureCLIP loss and its named terms: `loss`, `caption_loss` and, if weighted, `concept_loss`."""
    features.check()
    terms: dict[str, torch.Tensor] = {}
    ids = dict(ids=features.concept_ids, twin_ids=features.twin_concept_ids, gather=gather)
    if settings.caption_loss_weight > 0:
        terms["caption_loss"] = twin_contrastive_loss(
            features.image, features.twin_image, features.caption, features.twin_caption, logit_scale, settings, **ids
        )
    if settings.concept_loss_weight > 0:
        if features.concept is None:
            raise ValueError("concept_loss_weight > 0 needs concept-name inputs for both sides (concept, twin_concept)")
        terms["concept_loss"] = twin_contrastive_loss(
            features.image, features.twin_image, features.concept, features.twin_concept, logit_scale, settings, **ids
        )
    loss = settings.caption_loss_weight * terms.get("caption_loss", 0.0) + settings.concept_loss_weight * terms.get(
        "concept_loss", 0.0
    )
    return {"loss": loss, **terms}


__all__ = ["FeatureGather", "ObjectiveSettings", "TwinFeatures", "cultureclip_loss", "twin_contrastive_loss"]
