"""The CultureCLIP twin-aware contrastive objective.

One function serves every variant. For a text kind (contextual captions or bare concept names) it builds the
contrastive problem over both sides of each twin pair: images X = [I+; I-] against texts Y = [T+; T-]. Columns are
masked to recover each variant:
- twin negatives off: a side only sees its own side (plain CLIP per side);
- asymmetric (released NegCLIP): image->text sees both sides, text->image only its own side;
- false-negative masking: columns showing the row's own concept, other than its target, are dropped.
A second, smaller function gives plain CLIP on the `+` side alone (the released `clip` ablations). Which terms make
the loss is chosen by `loss_terms`, with the released code's `loss_type` names (see LOSS_TERMS).

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


# loss_terms name -> (caption term, concept term, weighted): a term is "negclip" (the twin-aware term over both
# sides, `twin_contrastive_loss`), "clip" (`+` side only, `plus_side_clip_loss`) or None. The released code applies
# lambda_caption / lambda_concept only when both text kinds are used; a single term enters unweighted.
LOSS_TERMS: dict[str, tuple[str | None, str | None, bool]] = {
    "cultureclip": ("negclip", "negclip", True),
    "clip": ("clip", None, False),  # the release's "standard CLIP loss": + images against + captions
    "caption_clip": ("clip", None, False),
    "concept_clip": (None, "clip", False),
    "caption_negclip": ("negclip", None, False),
    "concept_negclip": (None, "negclip", False),
    "caption_concept_clip": ("clip", "clip", True),
    "caption_neg_concept_clip": ("negclip", "clip", True),
    "caption_concept_neg": ("clip", "negclip", True),
}


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
    loss_terms: str = "cultureclip"
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

    def __post_init__(self) -> None:
        if self.loss_terms not in LOSS_TERMS:
            raise ValueError(f"loss_terms={self.loss_terms!r}: expected one of {tuple(LOSS_TERMS)}")

    def term_weights(self) -> dict[str, tuple[str, float]]:
        """The terms the loss is made of: {"caption" | "concept": (term kind, weight)}; zero-weight terms dropped."""
        caption, concept, weighted = LOSS_TERMS[self.loss_terms]
        terms = {}
        for kind, term, weight in (("caption", caption, self.caption_loss_weight),
                                   ("concept", concept, self.concept_loss_weight)):
            if term is not None and (weight > 0 or not weighted):
                terms[kind] = (term, weight if weighted else 1.0)
        if not terms:
            raise ValueError(f"loss_terms={self.loss_terms!r} with caption_loss_weight={self.caption_loss_weight} "
                             f"and concept_loss_weight={self.concept_loss_weight}: no term left")
        return terms

    @property
    def uses_concepts(self) -> bool:
        """Whether the loss needs the concept-name features of both sides."""
        return "concept" in self.term_weights()


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


def plus_side_clip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    settings: ObjectiveSettings,
    ids: torch.Tensor | None = None,
    gather: FeatureGather | None = None,
) -> torch.Tensor:
    """Plain CLIP of the `+` side alone: ½ [CE(s·I·Tᵀ) + CE(s·T·Iᵀ)] over B pairs (the released `clip` ablations).

    Features are normalised, false negatives masked and the scale clamped as `settings` says, like the twin term.
    """
    if settings.normalize_features:
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    rank = 0 if gather is None else gather.rank
    all_images, all_texts = _gather(image, gather), _gather(text, gather)
    local, device = image.shape[0], image.device
    targets = rank * local + torch.arange(local, device=device)
    mask = torch.zeros(local, all_texts.shape[0], dtype=torch.bool, device=device)
    if settings.mask_false_negatives:
        if ids is None:
            raise ValueError("mask_false_negatives needs `concept_ids` for every pair")
        mask = ids[:, None] == _gather(ids, gather)[None, :]
        mask[torch.arange(local, device=device), targets] = False
    max_log = None if settings.logit_scale_max is None else math.log(settings.logit_scale_max)
    scale = logit_scale.clamp(max=max_log).exp() if max_log is not None else logit_scale.exp()
    image_logits = (scale * image @ all_texts.T).masked_fill(mask, float("-inf"))
    text_logits = (scale * text @ all_images.T).masked_fill(mask, float("-inf"))
    return (F.cross_entropy(image_logits, targets) + F.cross_entropy(text_logits, targets)) / 2


def cultureclip_loss(
    features: TwinFeatures,
    logit_scale: torch.Tensor,
    settings: ObjectiveSettings,
    gather: FeatureGather | None = None,
) -> dict[str, torch.Tensor]:
    """The loss `settings.loss_terms` names and its unweighted terms: `loss`, `caption_loss`, `concept_loss`."""
    features.check()
    plan = settings.term_weights()
    if "concept" in plan and features.concept is None:
        raise ValueError(f"loss_terms={settings.loss_terms!r} with concept_loss_weight > 0 needs concept-name inputs "
                         "for both sides (concept, twin_concept)")
    texts = {"caption": (features.caption, features.twin_caption), "concept": (features.concept, features.twin_concept)}
    terms: dict[str, torch.Tensor] = {}
    loss: torch.Tensor | float = 0.0
    for kind, (term, weight) in plan.items():
        text, twin_text = texts[kind]
        if term == "negclip":
            value = twin_contrastive_loss(features.image, features.twin_image, text, twin_text, logit_scale, settings,
                                          ids=features.concept_ids, twin_ids=features.twin_concept_ids, gather=gather)
        else:
            value = plus_side_clip_loss(features.image, text, logit_scale, settings, ids=features.concept_ids,
                                        gather=gather)
        terms[f"{kind}_loss"] = value
        loss = loss + weight * value
    return {"loss": loss, **terms}


__all__ = ["LOSS_TERMS", "FeatureGather", "ObjectiveSettings", "TwinFeatures", "cultureclip_loss",
           "plus_side_clip_loss", "twin_contrastive_loss"]
