"""`loss_terms`: each of the released code's loss names gives the released loss on the same features.

The references below are SPEC §2.1's formulas written out per released `loss_type` (unnormalised features, the
checkpoint's scale, lambda applied only to two-term combinations), independently of the library's masking code.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from modeling_cultureclip import LOSS_TERMS, CultureCLIPConfig, CultureCLIPModel, ObjectiveSettings, TwinFeatures
from modeling_cultureclip.loss_cultureclip import cultureclip_loss
from modeling_cultureclip.tiny import tiny_config

B, D = 7, 12
LAMBDA_CAPTION, LAMBDA_CONCEPT = 0.7, 0.3


def features(seed=0):
    g = torch.Generator().manual_seed(seed)
    names = ("image", "twin_image", "caption", "twin_caption", "concept", "twin_concept")
    ids = torch.arange(B)
    return TwinFeatures(**{n: torch.randn(B, D, generator=g) * 2 for n in names}, concept_ids=ids,
                        twin_concept_ids=ids + 100)


def clip(i, t, s):
    """½ [CE(s·I·Tᵀ) + CE(s·T·Iᵀ)]."""
    y = torch.arange(len(i))
    return (F.cross_entropy(s * i @ t.T, y) + F.cross_entropy(s * t @ i.T, y)) / 2


def negclip(i, t, t_neg, s):
    """½ [CE(s·[I·Tᵀ | I·T'ᵀ]) + CE(s·T·Iᵀ)]."""
    y = torch.arange(len(i))
    return (F.cross_entropy(s * torch.cat([i @ t.T, i @ t_neg.T], 1), y) + F.cross_entropy(s * t @ i.T, y)) / 2


def released_loss(name, f, s):
    """The released objective of `name` (its loss.py semantics) from the SPEC formulas."""
    caption_neg = negclip(f.image, f.caption, f.twin_caption, s) + negclip(f.twin_image, f.twin_caption, f.caption, s)
    concept_neg = negclip(f.image, f.concept, f.twin_concept, s) + negclip(f.twin_image, f.twin_concept, f.concept, s)
    caption_clip, concept_clip = clip(f.image, f.caption, s), clip(f.image, f.concept, s)
    return {
        "clip": caption_clip,
        "caption_clip": caption_clip,
        "concept_clip": concept_clip,
        "caption_negclip": caption_neg,
        "concept_negclip": concept_neg,
        "caption_concept_clip": LAMBDA_CAPTION * caption_clip + LAMBDA_CONCEPT * concept_clip,
        "caption_neg_concept_clip": LAMBDA_CAPTION * caption_neg + LAMBDA_CONCEPT * concept_clip,
        "caption_concept_neg": LAMBDA_CAPTION * caption_clip + LAMBDA_CONCEPT * concept_neg,
        "cultureclip": LAMBDA_CAPTION * caption_neg + LAMBDA_CONCEPT * concept_neg,
    }[name]


def test_every_released_name_is_a_switch_value():
    assert set(LOSS_TERMS) == {"clip", "caption_clip", "concept_clip", "caption_negclip", "concept_negclip",
                               "caption_concept_clip", "caption_neg_concept_clip", "caption_concept_neg",
                               "cultureclip"}


@pytest.mark.parametrize("name", sorted(LOSS_TERMS))
def test_release_name_gives_the_released_loss(name):
    f = features()
    config = CultureCLIPConfig(loss_mode="faithful", loss_terms=name, caption_loss_weight=LAMBDA_CAPTION,
                               concept_loss_weight=LAMBDA_CONCEPT)
    logit_scale = torch.tensor(math.log(1 / 0.07))
    ours = cultureclip_loss(f, logit_scale, ObjectiveSettings.from_config(config))
    expected = released_loss(name, f, logit_scale.exp())
    # unnormalised features give large losses; float32 agreement is relative
    torch.testing.assert_close(ours["loss"], expected, rtol=1e-6, atol=1e-5)
    assert expected > 1.0


def test_plus_side_names_ignore_the_twin_side():
    """`clip`/`caption_clip` must not depend on the twin's image or texts at all (the release's + side only)."""
    f, other = features(0), features(1)
    moved = TwinFeatures(image=f.image, twin_image=other.twin_image, caption=f.caption, twin_caption=other.caption,
                         concept=f.concept, twin_concept=other.twin_concept, concept_ids=f.concept_ids,
                         twin_concept_ids=f.twin_concept_ids)
    for name in ("clip", "caption_clip", "concept_clip", "caption_concept_clip"):
        settings = ObjectiveSettings.from_config(CultureCLIPConfig(loss_mode="faithful", loss_terms=name))
        a = cultureclip_loss(f, torch.tensor(2.0), settings)["loss"]
        b = cultureclip_loss(moved, torch.tensor(2.0), settings)["loss"]
        assert torch.equal(a, b), name
    # whereas our "twin negatives off" switch uses both sides, so it does change
    ours = ObjectiveSettings.from_config(CultureCLIPConfig(loss_mode="faithful", use_twin_negatives=False))
    assert not torch.equal(cultureclip_loss(f, torch.tensor(2.0), ours)["loss"],
                           cultureclip_loss(moved, torch.tensor(2.0), ours)["loss"])


def test_improved_mode_plus_side_clip_is_transformers_clip_loss():
    """In improved mode (normalised features) `caption_clip` is CLIPModel's own loss on the + side."""
    f = features()
    settings = ObjectiveSettings.from_config(CultureCLIPConfig(loss_terms="caption_clip"))
    ours = cultureclip_loss(f, torch.tensor(2.0), settings)["loss"]
    logits = torch.tensor(2.0).exp() * F.normalize(f.caption, dim=-1) @ F.normalize(f.image, dim=-1).T
    assert abs(ours.item() - image_text_contrastive_loss(logits).item()) <= 1e-6


def test_single_term_names_need_no_concept_inputs_and_bad_names_are_rejected():
    torch.manual_seed(0)
    model = CultureCLIPModel(tiny_config(vocab_size=30, image_size=16, patch_size=8, width=32,
                                         loss_mode="faithful", loss_terms="caption_negclip",
                                         concept_loss_weight=0.3)).eval()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(5, 30, (3, 6), generator=g)
    ids[:, 0], ids[:, -1] = 1, 3
    out = model(pixel_values=torch.randn(3, 3, 16, 16, generator=g), input_ids=ids,
                twin_pixel_values=torch.randn(3, 3, 16, 16, generator=g), twin_input_ids=ids.flip(0),
                return_loss=True)
    assert out.concept_loss is None and torch.equal(out.loss, out.caption_loss)
    with pytest.raises(ValueError, match="loss_terms='negclip'"):
        CultureCLIPConfig(loss_terms="negclip")
    with pytest.raises(ValueError, match="concept-name inputs"):
        cultureclip_loss(TwinFeatures(image=ids.float(), twin_image=ids.float(), caption=ids.float(),
                                      twin_caption=ids.float()), torch.tensor(1.0),
                         ObjectiveSettings(loss_terms="concept_clip", mask_false_negatives=False))
