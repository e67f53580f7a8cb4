"""The CultureCLIP objective against independent references: CLIP's own loss, the SPEC formulas, and a per-row
reference that builds every candidate set by hand."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from modeling_cultureclip import CultureCLIPConfig, CultureCLIPModel, ObjectiveSettings, TwinFeatures
from modeling_cultureclip.loss_cultureclip import cultureclip_loss, twin_contrastive_loss
from modeling_cultureclip.tiny import tiny_config

B, D = 6, 16


def random_features(batch=B, dim=D, repeated_concepts=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = {name: torch.randn(batch, dim, generator=g) * 3
             for name in ("image", "twin_image", "caption", "twin_caption", "concept", "twin_concept")}
    if repeated_concepts:  # pairs 0,1,2 are concept 0 vs 100; pairs 3.. are their own concepts
        ids = torch.tensor([0, 0, 0] + list(range(1, batch - 2)))
    else:
        ids = torch.arange(batch)
    return TwinFeatures(**feats, concept_ids=ids, twin_concept_ids=ids + 100)


# --- SPEC §2.1 formulas, written out directly --------------------------------------------------------------------

def spec_clip(i, t, s):
    targets = torch.arange(len(i))
    return (F.cross_entropy(s * i @ t.T, targets) + F.cross_entropy(s * t @ i.T, targets)) / 2


def spec_negclip(i, t, t_neg, s):
    targets = torch.arange(len(i))
    image_to_text = F.cross_entropy(s * i @ torch.cat([t, t_neg]).T, targets)
    return (image_to_text + F.cross_entropy(s * t @ i.T, targets)) / 2


# --- A per-row reference: every row's candidate set built explicitly ---------------------------------------------

def reference_term(image, twin_image, text, twin_text, scale, ids, twin_ids, *, twin_negatives, symmetric, mask):
    images, texts = torch.cat([image, twin_image]), torch.cat([text, twin_text])
    all_ids = torch.cat([ids, twin_ids])
    n = len(images)
    side = [0] * (n // 2) + [1] * (n // 2)
    losses = {"i2t": [], "t2i": []}
    for direction, (rows, cols) in {"i2t": (images, texts), "t2i": (texts, images)}.items():
        for r in range(n):
            keep = []
            for c in range(n):
                if c == r:
                    keep.append(c)
                    continue
                if mask and all_ids[c] == all_ids[r]:
                    continue
                crosses = side[c] != side[r]
                if crosses and not twin_negatives:
                    continue
                if crosses and direction == "t2i" and not symmetric:
                    continue
                keep.append(c)
            logits = torch.stack([scale * rows[r] @ cols[c] for c in keep])
            losses[direction].append(-F.log_softmax(logits, 0)[keep.index(r)])
    return (torch.stack(losses["i2t"]).mean() + torch.stack(losses["t2i"]).mean()) / 2


SWITCHES = list(itertools.product([False, True], repeat=4))


@pytest.mark.parametrize("normalize,twin_negatives,symmetric,mask", SWITCHES)
def test_every_switch_combination_matches_per_row_reference(normalize, twin_negatives, symmetric, mask):
    feats = random_features(repeated_concepts=True)
    settings = ObjectiveSettings(caption_loss_weight=0.7, concept_loss_weight=0.3, use_twin_negatives=twin_negatives,
                                 normalize_features=normalize, symmetric_twin_negatives=symmetric,
                                 mask_false_negatives=mask, logit_scale_max=None)
    logit_scale = torch.tensor(math.log(5.0))
    ours = cultureclip_loss(feats, logit_scale, settings)

    prep = (lambda x: F.normalize(x, dim=-1)) if normalize else (lambda x: x)
    kw = dict(scale=5.0, ids=feats.concept_ids, twin_ids=feats.twin_concept_ids,
              twin_negatives=twin_negatives, symmetric=symmetric, mask=mask)
    caption = reference_term(prep(feats.image), prep(feats.twin_image), prep(feats.caption),
                             prep(feats.twin_caption), **kw)
    concept = reference_term(prep(feats.image), prep(feats.twin_image), prep(feats.concept),
                             prep(feats.twin_concept), **kw)
    torch.testing.assert_close(ours["caption_loss"], caption, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours["concept_loss"], concept, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours["loss"], 0.7 * caption + 0.3 * concept, atol=1e-6, rtol=1e-6)


def test_faithful_mode_equals_spec_formulas():
    feats = random_features()
    config = CultureCLIPConfig(loss_mode="faithful", caption_loss_weight=0.7, concept_loss_weight=0.3)
    settings = ObjectiveSettings.from_config(config)
    logit_scale = torch.tensor(2.6592)
    ours = cultureclip_loss(feats, logit_scale, settings)
    s = logit_scale.exp()
    f = feats
    caption = spec_negclip(f.image, f.caption, f.twin_caption, s) + spec_negclip(f.twin_image, f.twin_caption, f.caption, s)
    concept = spec_negclip(f.image, f.concept, f.twin_concept, s) + spec_negclip(f.twin_image, f.twin_concept, f.concept, s)
    torch.testing.assert_close(ours["caption_loss"], caption, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours["concept_loss"], concept, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours["loss"], 0.7 * caption + 0.3 * concept, atol=1e-6, rtol=1e-6)


def test_twin_negatives_off_equals_clip_on_both_sides_summed():
    """Our own "twin negatives off" ablation: plain CLIP on each side, both sides summed in faithful mode. It is not
    the release's `clip` ablation (the `+` side only, `loss_terms="clip"`; see test_release_ablations.py)."""
    feats = random_features()
    settings = ObjectiveSettings.from_config(
        CultureCLIPConfig(loss_mode="faithful", use_twin_negatives=False, caption_loss_weight=1.0,
                          concept_loss_weight=0.0))
    s = torch.tensor(10.0)
    ours = cultureclip_loss(feats, s.log(), settings)
    expected = spec_clip(feats.image, feats.caption, s) + spec_clip(feats.twin_image, feats.twin_caption, s)
    torch.testing.assert_close(ours["loss"], expected, atol=1e-6, rtol=1e-6)
    assert "concept_loss" not in ours


@pytest.fixture(scope="module")
def tiny_pair():
    torch.manual_seed(0)
    config = tiny_config(vocab_size=40, image_size=16, patch_size=8, width=32)
    model = CultureCLIPModel(config).eval()
    clip = CLIPModel(config).eval()
    clip.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(1)
    batch = dict(
        pixel_values=torch.randn(4, 3, 16, 16, generator=g), twin_pixel_values=torch.randn(4, 3, 16, 16, generator=g),
        input_ids=torch.randint(5, 40, (4, 9), generator=g), twin_input_ids=torch.randint(5, 40, (4, 7), generator=g),
        concept_input_ids=torch.randint(5, 40, (4, 3), generator=g),
        twin_concept_input_ids=torch.randint(5, 40, (4, 3), generator=g),
    )
    for key in ("input_ids", "twin_input_ids", "concept_input_ids", "twin_concept_input_ids"):
        batch[key][:, 0], batch[key][:, -1] = 1, 3  # <bos> ... <eos>
    return model, clip, batch


def test_without_twin_inputs_model_is_clip(tiny_pair):
    model, clip, batch = tiny_pair
    inputs = dict(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"])
    ours, theirs = model(**inputs, return_loss=True), clip(**inputs, return_loss=True)
    assert type(ours).__name__ == "CLIPOutput"
    for key in ("loss", "logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        assert torch.equal(getattr(ours, key), getattr(theirs, key)), key
    assert model(**inputs).loss is None  # same return_loss=None default as CLIPModel


def test_twin_terms_off_equals_transformers_clip_loss(tiny_pair):
    model, clip, batch = tiny_pair
    model.config.update(dict(use_twin_negatives=False, mask_false_negatives=False, caption_loss_weight=1.0,
                             concept_loss_weight=0.0))
    try:
        with torch.no_grad():
            ours = model(**batch, return_loss=True)
            plus = clip(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], return_loss=True).loss
            twin = clip(input_ids=batch["twin_input_ids"], pixel_values=batch["twin_pixel_values"],
                        return_loss=True).loss
    finally:
        model.config.update(dict(use_twin_negatives=True, mask_false_negatives=None, caption_loss_weight=0.5,
                                 concept_loss_weight=0.5))
    # each side is exactly CLIP's contrastive loss; the improved mode averages the two sides
    assert abs(ours.loss.item() - (plus.item() + twin.item()) / 2) <= 1e-6


def test_single_side_reduces_to_transformers_loss_function():
    feats = random_features()
    settings = ObjectiveSettings(caption_loss_weight=1.0, concept_loss_weight=0.0, use_twin_negatives=False,
                                 mask_false_negatives=False, logit_scale_max=None)
    # with the twin side identical to the + side, both halves equal transformers' image_text_contrastive_loss
    same = TwinFeatures(image=feats.image, twin_image=feats.image, caption=feats.caption, twin_caption=feats.caption)
    ours = cultureclip_loss(same, torch.tensor(2.0), settings)["loss"]
    logits = torch.tensor(2.0).exp() * F.normalize(feats.caption, dim=-1) @ F.normalize(feats.image, dim=-1).T
    assert abs(ours.item() - image_text_contrastive_loss(logits).item()) <= 1e-6


def test_false_negative_masking_on_repeated_concepts():
    feats = random_features(repeated_concepts=True)
    base = dict(caption_loss_weight=1.0, concept_loss_weight=0.0, logit_scale_max=None)
    masked = cultureclip_loss(feats, torch.tensor(3.0), ObjectiveSettings(mask_false_negatives=True, **base))["loss"]
    unmasked = cultureclip_loss(feats, torch.tensor(3.0), ObjectiveSettings(mask_false_negatives=False, **base))["loss"]
    assert masked < unmasked  # fewer negatives in the denominators

    # a batch whose concepts are all distinct: masking has nothing to remove
    unique = random_features(repeated_concepts=False)
    a = cultureclip_loss(unique, torch.tensor(3.0), ObjectiveSettings(mask_false_negatives=True, **base))["loss"]
    b = cultureclip_loss(unique, torch.tensor(3.0), ObjectiveSettings(mask_false_negatives=False, **base))["loss"]
    assert torch.equal(a, b)

    # duplicated concept names are identical texts: unmasked, they cap the concept term; masked, it can approach 0
    dup = random_features(repeated_concepts=True)
    dup.concept[:3] = dup.concept[0]
    dup.image[:3] = dup.concept[0] * 50
    dup.twin_concept[:3] = dup.twin_concept[0]
    only_concepts = dict(caption_loss_weight=0.0, concept_loss_weight=1.0, logit_scale_max=None,
                         normalize_features=True)
    masked = twin_contrastive_loss(dup.image[:3], dup.twin_image[:3], dup.concept[:3], dup.twin_concept[:3],
                                   torch.tensor(math.log(100.0)), ObjectiveSettings(**only_concepts),
                                   dup.concept_ids[:3], dup.twin_concept_ids[:3])
    unmasked = twin_contrastive_loss(dup.image[:3], dup.twin_image[:3], dup.concept[:3], dup.twin_concept[:3],
                                     torch.tensor(math.log(100.0)),
                                     ObjectiveSettings(mask_false_negatives=False, **only_concepts),
                                     dup.concept_ids[:3], dup.twin_concept_ids[:3])
    assert unmasked > masked


def test_logit_scale_clamp_only_above_the_maximum():
    feats = random_features()
    low = ObjectiveSettings(logit_scale_max=100.0)
    free = ObjectiveSettings(logit_scale_max=None)
    below = torch.tensor(math.log(50.0))
    assert torch.equal(cultureclip_loss(feats, below, low)["loss"], cultureclip_loss(feats, below, free)["loss"])
    above = torch.tensor(math.log(400.0))
    clamped = cultureclip_loss(feats, above, low)["loss"]
    at_max = cultureclip_loss(feats, torch.tensor(math.log(100.0)), free)["loss"]
    torch.testing.assert_close(clamped, at_max)


def test_symmetric_switch_changes_only_text_to_image():
    feats = random_features()
    s = torch.tensor(math.log(8.0))
    sym = twin_contrastive_loss(feats.image, feats.twin_image, feats.caption, feats.twin_caption, s,
                                ObjectiveSettings(mask_false_negatives=False, logit_scale_max=None))
    asym = twin_contrastive_loss(feats.image, feats.twin_image, feats.caption, feats.twin_caption, s,
                                 ObjectiveSettings(mask_false_negatives=False, symmetric_twin_negatives=False,
                                                   logit_scale_max=None))
    x = F.normalize(torch.cat([feats.image, feats.twin_image]), dim=-1)
    y = F.normalize(torch.cat([feats.caption, feats.twin_caption]), dim=-1)
    targets = torch.arange(2 * B)
    full_t2i = F.cross_entropy(8.0 * y @ x.T, targets)
    block_t2i = (F.cross_entropy(8.0 * y[:B] @ x[:B].T, targets[:B]) + F.cross_entropy(8.0 * y[B:] @ x[B:].T,
                                                                                    targets[:B])) / 2
    torch.testing.assert_close(sym - asym, (full_t2i - block_t2i) / 2, atol=1e-6, rtol=1e-5)


def test_modes_resolve_presets_and_explicit_switches_win():
    faithful = CultureCLIPConfig(loss_mode="faithful").resolved_objective()
    assert (faithful["normalize_features"], faithful["symmetric_twin_negatives"],
            faithful["mask_false_negatives"], faithful["sum_sides"]) == (False, False, False, True)
    improved = CultureCLIPConfig().resolved_objective()
    assert (improved["normalize_features"], improved["symmetric_twin_negatives"],
            improved["mask_false_negatives"], improved["logit_scale_max"]) == (True, True, True, 100.0)
    ablated = CultureCLIPConfig(mask_false_negatives=False).resolved_objective()
    assert ablated["mask_false_negatives"] is False and ablated["normalize_features"] is True


def test_twin_forward_returns_named_terms_and_gradients(tiny_pair):
    model, _, batch = tiny_pair
    ids = torch.arange(4)
    out = model(**batch, concept_ids=ids, twin_concept_ids=ids + 10, return_loss=True)
    assert out.caption_loss is not None and out.concept_loss is not None
    torch.testing.assert_close(out.loss, 0.5 * out.caption_loss + 0.5 * out.concept_loss)
    out.loss.backward()
    assert model.logit_scale.grad is not None and model.visual_projection.weight.grad.abs().sum() > 0
    model.zero_grad()
