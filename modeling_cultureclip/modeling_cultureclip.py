"""CultureCLIP: `CLIPModel` plus the twin-aware objective.

Without twin inputs the model is `CLIPModel`: same forward, same outputs, same `return_loss=None` default. With twin
inputs (the twin's pixels and caption, optionally both sides' concept names) it encodes every image in one vision
call and every text in one text call, and returns the CultureCLIP loss with each named term.

This folder is uploaded as Hub remote code: it imports only torch, transformers and its own files.
"""

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, CLIPConfig, CLIPModel
from transformers.models.clip.modeling_clip import CLIPOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs

from .configuration_cultureclip import CultureCLIPConfig
from .loss_cultureclip import FeatureGather, ObjectiveSettings, TwinFeatures, cultureclip_loss

# Twin inputs by role; a batch with any of them is a twin batch and must carry the required ones.
_REQUIRED_TWIN_INPUTS = ("twin_pixel_values", "twin_input_ids")
_CONCEPT_INPUTS = ("concept_input_ids", "twin_concept_input_ids")
_AUTO_MAP = {
    "AutoConfig": "configuration_cultureclip.CultureCLIPConfig",
    "AutoModel": "modeling_cultureclip.CultureCLIPModel",
    "AutoModelForZeroShotImageClassification": "modeling_cultureclip.CultureCLIPModel",
}


@dataclass
class CultureCLIPOutput(CLIPOutput):
    """`CLIPOutput` plus the objective's named terms.

    In a twin batch, `image_embeds`/`text_embeds` stack the `+` side over the twin side (2B rows, captions as
    texts, L2-normalised as in CLIP) and the logits compare them all; `caption_loss` and `concept_loss` are the
    unweighted terms whose weighted sum is `loss`.
    """

    caption_loss: torch.Tensor | None = None
    concept_loss: torch.Tensor | None = None


class CultureCLIPModel(CLIPModel):
    """CLIP with the CultureCLIP twin-aware contrastive objective."""

    config_class = CultureCLIPConfig
    config: CultureCLIPConfig

    def __init__(self, config: CLIPConfig):
        if not isinstance(config, CultureCLIPConfig):
            config = CultureCLIPConfig(**config.to_dict())
        super().__init__(config)

    @classmethod
    def from_clip(cls, clip: CLIPModel | str, **objective: Any) -> "CultureCLIPModel":
        """Build a CultureCLIPModel from a `CLIPModel` (or a checkpoint id/path), copying every weight exactly.

        `objective` sets CultureCLIPConfig fields such as `loss_mode="faithful"`.
        """
        if isinstance(clip, str):
            model_type = AutoConfig.from_pretrained(clip).model_type
            if model_type not in ("clip", CultureCLIPConfig.model_type):
                raise ValueError(f"from_clip: {clip!r} is a {model_type!r} checkpoint; expected a CLIP checkpoint "
                                 "(model_type 'clip'), e.g. openai/clip-vit-base-patch32")
            clip = CLIPModel.from_pretrained(clip)
        if not isinstance(clip, CLIPModel):
            raise TypeError(f"from_clip expects a CLIPModel or a CLIP checkpoint, got {type(clip).__name__}")
        settings = clip.config.to_dict()
        for key in ("model_type", "architectures", "auto_map", "transformers_version"):
            settings.pop(key, None)
        config = CultureCLIPConfig(**settings, **objective)
        model = cls(config).to(dtype=clip.dtype)
        model.load_state_dict(clip.state_dict(), strict=True)  # same module tree, so every weight must match
        return model.to(clip.device)

    def objective_settings(self) -> ObjectiveSettings:
        """The objective's switches, resolved from the config."""
        return ObjectiveSettings.from_config(self.config)

    def get_twin_features(
        self,
        pixel_values: torch.Tensor,
        twin_pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        twin_input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        twin_attention_mask: torch.Tensor | None = None,
        concept_input_ids: torch.Tensor | None = None,
        twin_concept_input_ids: torch.Tensor | None = None,
        concept_attention_mask: torch.Tensor | None = None,
        twin_concept_attention_mask: torch.Tensor | None = None,
        concept_ids: torch.Tensor | None = None,
        twin_concept_ids: torch.Tensor | None = None,
    ) -> TwinFeatures:
        """Projected features of a twin batch: both sides' images in one vision call, all texts in one text call."""
        size = pixel_values.shape[0]
        named = dict(twin_pixel_values=twin_pixel_values, input_ids=input_ids, twin_input_ids=twin_input_ids,
                     concept_input_ids=concept_input_ids, twin_concept_input_ids=twin_concept_input_ids,
                     concept_ids=concept_ids, twin_concept_ids=twin_concept_ids)
        for name, value in named.items():
            if value is not None and value.shape[0] != size:
                raise ValueError(
                    f"twin batch mismatch: `{name}` has {value.shape[0]} rows but `pixel_values` has {size}"
                )
        images = self.get_image_features(pixel_values=torch.cat([pixel_values, twin_pixel_values])).pooler_output

        texts = [(input_ids, attention_mask), (twin_input_ids, twin_attention_mask)]
        with_concepts = concept_input_ids is not None
        if with_concepts:
            texts += [(concept_input_ids, concept_attention_mask), (twin_concept_input_ids, twin_concept_attention_mask)]
        ids, mask = _stack_padded(texts)
        text = self.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        chunks = text.split(size)
        return TwinFeatures(
            image=images[:size], twin_image=images[size:], caption=chunks[0], twin_caption=chunks[1],
            concept=chunks[2] if with_concepts else None, twin_concept=chunks[3] if with_concepts else None,
            concept_ids=concept_ids, twin_concept_ids=twin_concept_ids,
        )

    def compute_twin_loss(self, features: TwinFeatures, gather: FeatureGather | None = None) -> dict[str, torch.Tensor]:
        """CultureCLIP loss and named terms over (possibly cached or gathered) twin features."""
        return cultureclip_loss(features, self.logit_scale, self.objective_settings(), gather=gather)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        twin_pixel_values: torch.Tensor | None = None,
        twin_input_ids: torch.LongTensor | None = None,
        twin_attention_mask: torch.Tensor | None = None,
        concept_input_ids: torch.LongTensor | None = None,
        concept_attention_mask: torch.Tensor | None = None,
        twin_concept_input_ids: torch.LongTensor | None = None,
        twin_concept_attention_mask: torch.Tensor | None = None,
        concept_ids: torch.LongTensor | None = None,
        twin_concept_ids: torch.LongTensor | None = None,
        feature_gather: FeatureGather | None = None,
        # a real (not stringified) annotation: transformers reads it to see which kwargs, e.g. output_attentions,
        # the model accepts; hence no `from __future__ import annotations` in this file
        **kwargs: Unpack[TransformersKwargs],
    ) -> CultureCLIPOutput | CLIPOutput:
        r"""
        Without any `twin_*`/`concept_*` input this is `CLIPModel.forward` unchanged.

        twin_pixel_values, twin_input_ids, twin_attention_mask: the twin side's image and caption, one row per pair.
        concept_input_ids, twin_concept_input_ids (+ masks): both sides' bare concept names (needed when
            `config.concept_loss_weight > 0`).
        concept_ids, twin_concept_ids: integer concept identities, for false-negative masking.
        feature_gather: differentiable cross-process gather passed by the trainer (see `FeatureGather`).
        """
        twin = dict(twin_pixel_values=twin_pixel_values, twin_input_ids=twin_input_ids,
                    twin_attention_mask=twin_attention_mask, concept_input_ids=concept_input_ids,
                    concept_attention_mask=concept_attention_mask, twin_concept_input_ids=twin_concept_input_ids,
                    twin_concept_attention_mask=twin_concept_attention_mask, concept_ids=concept_ids,
                    twin_concept_ids=twin_concept_ids)
        if all(v is None for v in twin.values()):
            return super().forward(
                input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                position_ids=position_ids, return_loss=return_loss,
                interpolate_pos_encoding=interpolate_pos_encoding, **kwargs,
            )
        missing = [name for name, value in (("pixel_values", pixel_values), ("input_ids", input_ids)) if value is None]
        missing += [name for name in _REQUIRED_TWIN_INPUTS if twin[name] is None]
        if (concept_input_ids is None) != (twin_concept_input_ids is None):
            missing += [name for name in _CONCEPT_INPUTS if twin[name] is None]
        if missing:
            raise ValueError(f"CultureCLIPModel twin batch is missing {missing}; a twin batch needs pixel_values, "
                             f"input_ids, {', '.join(_REQUIRED_TWIN_INPUTS)} (and both concept inputs or neither)")
        features = self.get_twin_features(
            pixel_values=pixel_values, twin_pixel_values=twin_pixel_values, input_ids=input_ids,
            twin_input_ids=twin_input_ids, attention_mask=attention_mask, twin_attention_mask=twin_attention_mask,
            concept_input_ids=concept_input_ids, twin_concept_input_ids=twin_concept_input_ids,
            concept_attention_mask=concept_attention_mask, twin_concept_attention_mask=twin_concept_attention_mask,
            concept_ids=concept_ids, twin_concept_ids=twin_concept_ids,
        )
        terms = self.compute_twin_loss(features, gather=feature_gather) if return_loss is not False else {}
        image_embeds = torch.nn.functional.normalize(torch.cat([features.image, features.twin_image]), dim=-1)
        text_embeds = torch.nn.functional.normalize(torch.cat([features.caption, features.twin_caption]), dim=-1)
        logits_per_text = text_embeds @ image_embeds.T * self.logit_scale.exp()
        return CultureCLIPOutput(
            loss=terms.get("loss"), caption_loss=terms.get("caption_loss"), concept_loss=terms.get("concept_loss"),
            logits_per_image=logits_per_text.T, logits_per_text=logits_per_text,
            text_embeds=text_embeds, image_embeds=image_embeds,
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights, config with `auto_map` and the remote-code files next to them.

        Transformers 5 writes safetensors only (it dropped `safe_serialization`); every other keyword, e.g.
        `push_to_hub=True, repo_id=...`, goes to `PreTrainedModel.save_pretrained` as is.
        """
        type(self).register_for_auto_class("AutoModel")
        self.config.auto_map = dict(_AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)


def _stack_padded(texts: list[tuple[torch.Tensor, torch.Tensor | None]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack token batches of different lengths into one batch padded to the longest, with its attention mask.

    Padding goes on the right with the mask zeroed, which CLIP's causal text tower ignores when pooling.
    """
    width = max(ids.shape[1] for ids, _ in texts)
    stacked_ids, stacked_mask = [], []
    for ids, mask in texts:
        mask = torch.ones_like(ids) if mask is None else mask
        pad = width - ids.shape[1]
        stacked_ids.append(torch.nn.functional.pad(ids, (0, pad), value=0))
        stacked_mask.append(torch.nn.functional.pad(mask, (0, pad), value=0))
    return torch.cat(stacked_ids), torch.cat(stacked_mask)


__all__ = ["CultureCLIPModel", "CultureCLIPOutput"]
