"""From CLIP to CultureCLIP with exact weights, and clear errors on bad input."""

import pytest
import torch
from transformers import (AutoConfig, AutoModel, AutoModelForZeroShotImageClassification, BertConfig, BertModel,
                          CLIPConfig, CLIPModel)

from modeling_cultureclip import CultureCLIPConfig, CultureCLIPModel
from modeling_cultureclip.tiny import tiny_config


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    torch.manual_seed(0)
    tiny = tiny_config(vocab_size=30, image_size=16, patch_size=8, width=32)
    clip = CLIPModel(CLIPConfig(text_config=tiny.text_config.to_dict(), vision_config=tiny.vision_config.to_dict(),
                                projection_dim=tiny.projection_dim))
    path = tmp_path_factory.mktemp("clip")
    clip.save_pretrained(path)
    return path, clip


def test_from_clip_copies_every_weight(clip_dir):
    path, clip = clip_dir
    for source in (clip, str(path)):
        model = CultureCLIPModel.from_clip(source, loss_mode="faithful")
        assert model.config.model_type == "cultureclip" and model.config.loss_mode == "faithful"
        ours, theirs = model.state_dict(), clip.state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_from_clip_rejects_other_models(tmp_path):
    bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                                vocab_size=20))
    bert.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="CLIP"):
        CultureCLIPModel.from_clip(str(tmp_path))
    with pytest.raises(TypeError, match="CLIPModel"):
        CultureCLIPModel.from_clip(bert)


def test_auto_classes_resolve_when_installed(tmp_path):
    model = CultureCLIPModel(tiny_config(vocab_size=30, image_size=16, patch_size=8, width=32))
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), CultureCLIPConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), CultureCLIPModel)
    assert isinstance(AutoModelForZeroShotImageClassification.from_pretrained(tmp_path), CultureCLIPModel)


@pytest.fixture(scope="module")
def model_and_batch():
    model = CultureCLIPModel(tiny_config(vocab_size=30, image_size=16, patch_size=8, width=32))
    ids = torch.randint(5, 30, (4, 6))
    ids[:, -1] = 3
    batch = dict(pixel_values=torch.randn(4, 3, 16, 16), input_ids=ids, twin_pixel_values=torch.randn(4, 3, 16, 16),
                 twin_input_ids=ids.flip(0), concept_input_ids=ids[:, -3:], twin_concept_input_ids=ids[:, -3:],
                 concept_ids=torch.arange(4), twin_concept_ids=torch.arange(4) + 4)
    return model, batch


def test_mismatched_twin_batch_size(model_and_batch):
    model, batch = model_and_batch
    with pytest.raises(ValueError, match="twin_pixel_values.*3 rows.*4"):
        model(**{**batch, "twin_pixel_values": batch["twin_pixel_values"][:3]}, return_loss=True)


@pytest.mark.parametrize("missing", ["twin_input_ids", "twin_pixel_values", "twin_concept_input_ids"])
def test_missing_twin_field(model_and_batch, missing):
    model, batch = model_and_batch
    with pytest.raises(ValueError, match=missing):
        model(**{k: v for k, v in batch.items() if k != missing}, return_loss=True)


def test_concept_weight_without_concept_inputs(model_and_batch):
    model, batch = model_and_batch
    partial = {k: v for k, v in batch.items() if "concept_input" not in k}
    with pytest.raises(ValueError, match="concept"):
        model(**partial, return_loss=True)


def test_masking_without_concept_ids(model_and_batch):
    model, batch = model_and_batch
    with pytest.raises(ValueError, match="concept_ids"):
        model(**{k: v for k, v in batch.items() if not k.endswith("concept_ids")}, return_loss=True)


@pytest.mark.parametrize("field,value,match", [
    ("loss_mode", "negclip", "loss_mode"),
    ("caption_loss_weight", -1.0, "caption_loss_weight"),
    ("logit_scale_max", 0.0, "logit_scale_max"),
])
def test_bad_objective_settings(field, value, match):
    with pytest.raises(ValueError, match=match):
        CultureCLIPConfig(**{field: value})


def test_both_weights_zero():
    with pytest.raises(ValueError, match="both 0"):
        CultureCLIPConfig(caption_loss_weight=0.0, concept_loss_weight=0.0)
