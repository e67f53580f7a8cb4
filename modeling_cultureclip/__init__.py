"""CultureCLIP model: config, model, objective. Importing registers them with transformers' Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForZeroShotImageClassification

from .configuration_cultureclip import LOSS_MODES, CultureCLIPConfig
from .loss_cultureclip import (LOSS_TERMS, FeatureGather, ObjectiveSettings, TwinFeatures, cultureclip_loss,
                               plus_side_clip_loss, twin_contrastive_loss)
from .modeling_cultureclip import CultureCLIPModel, CultureCLIPOutput

AutoConfig.register(CultureCLIPConfig.model_type, CultureCLIPConfig, exist_ok=True)
AutoModel.register(CultureCLIPConfig, CultureCLIPModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(CultureCLIPConfig, CultureCLIPModel, exist_ok=True)

__all__ = [
    "LOSS_MODES",
    "LOSS_TERMS",
    "CultureCLIPConfig",
    "CultureCLIPModel",
    "CultureCLIPOutput",
    "FeatureGather",
    "ObjectiveSettings",
    "TwinFeatures",
    "cultureclip_loss",
    "plus_side_clip_loss",
    "twin_contrastive_loss",
]
