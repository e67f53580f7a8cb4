"""Configuration of CultureCLIP: a CLIP config plus the settings of the twin-aware objective."""

from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig

from .loss_cultureclip import LOSS_TERMS

LOSS_MODES = ("faithful", "improved")

# What each loss mode means for the switches left at None. "faithful" reproduces the released objective:
# unnormalised features, the twin as a hard negative only image->text, no masking, per-side terms summed.
_MODE_PRESETS: dict[str, dict[str, object]] = {
    "faithful": {
        "normalize_features": False,
        "symmetric_twin_negatives": False,
        "mask_false_negatives": False,
        "logit_scale_max": None,
    },
    "improved": {
        "normalize_features": True,
        "symmetric_twin_negatives": True,
        "mask_false_negatives": True,
        "logit_scale_max": 100.0,
    },
}


@strict
class CultureCLIPConfig(CLIPConfig):
    """`CLIPConfig` with the CultureCLIP objective's settings.

    Switches left at `None` take the preset of `loss_mode` (see `resolved_objective`); set one explicitly to ablate
    it inside a mode.

    Args:
        loss_mode: "faithful" (the released objective) or "improved" (our default).
        caption_loss_weight: weight of the contextual-caption term (lambda_caption).
        concept_loss_weight: weight of the bare-concept-name term (lambda_concept).
        loss_terms: which terms make the loss, by the released code's `loss_type` names. "cultureclip" (default):
            twin negatives on captions and on concepts, weighted. "clip" and "caption_clip": plain CLIP of the `+`
            side's images and captions only (the twin side is not used). "concept_clip": the same on concept
            names. "caption_negclip" / "concept_negclip": the twin term of one text kind alone (both sides,
            unweighted, as released). "caption_concept_clip", "caption_neg_concept_clip" (twin term on captions,
            `+`-side CLIP on concepts), "caption_concept_neg" (the reverse): weighted sums. In faithful mode each
            name gives exactly the released loss of that name.
        use_twin_negatives: the twin's texts are negatives of the anchor (NegCLIP). Off gives plain CLIP on each of
            the two sides, averaged (faithful: summed): our own ablation, not the released "clip" ablation, which
            uses the `+` side only (that one is `loss_terms="clip"`).
        normalize_features: L2-normalise projected features before the dot product.
        symmetric_twin_negatives: the twin is a hard negative text->image as well as image->text.
        mask_false_negatives: other items of the same concept in the batch are not negatives.
        logit_scale_max: upper clamp of exp(logit_scale); None for no clamp.
    """

    model_type = "cultureclip"

    loss_mode: str = "improved"
    loss_terms: str = "cultureclip"
    caption_loss_weight: float = 0.5
    concept_loss_weight: float = 0.5
    use_twin_negatives: bool = True
    normalize_features: bool | None = None
    symmetric_twin_negatives: bool | None = None
    mask_false_negatives: bool | None = None
    logit_scale_max: float | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_objective()

    def validate_objective(self) -> None:
        """Raise ValueError naming the field when an objective setting is out of range."""
        if self.loss_mode not in LOSS_MODES:
            raise ValueError(f"CultureCLIPConfig.loss_mode={self.loss_mode!r}: expected one of {LOSS_MODES}")
        if self.loss_terms not in LOSS_TERMS:
            raise ValueError(f"CultureCLIPConfig.loss_terms={self.loss_terms!r}: expected one of {tuple(LOSS_TERMS)}")
        for name in ("caption_loss_weight", "concept_loss_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"CultureCLIPConfig.{name}={value!r}: expected a finite number >= 0")
        if self.caption_loss_weight == 0 and self.concept_loss_weight == 0:
            raise ValueError("CultureCLIPConfig: caption_loss_weight and concept_loss_weight are both 0; no loss left")
        if self.logit_scale_max is not None and not self.logit_scale_max > 0:
            raise ValueError(f"CultureCLIPConfig.logit_scale_max={self.logit_scale_max!r}: expected > 0 or None")

    def resolved_objective(self) -> dict[str, object]:
        """The objective's switches with mode presets filled in for those left at None."""
        preset = _MODE_PRESETS[self.loss_mode]
        resolved = {name: getattr(self, name) if getattr(self, name) is not None else default
                    for name, default in preset.items()}
        resolved.update(
            loss_mode=self.loss_mode,
            loss_terms=self.loss_terms,
            caption_loss_weight=self.caption_loss_weight,
            concept_loss_weight=self.concept_loss_weight,
            use_twin_negatives=self.use_twin_negatives,
            # the released objective adds the two sides' terms; ours averages them so weights keep their scale
            sum_sides=self.loss_mode == "faithful",
        )
        return resolved


__all__ = ["CultureCLIPConfig", "LOSS_MODES", "LOSS_TERMS"]
