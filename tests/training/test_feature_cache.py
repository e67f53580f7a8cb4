"""Feature caching: k micro-batches give the gradients of one batch k times the size (logit_scale included)."""

import pytest
import torch

from cultureclip_training.data import prepare
from cultureclip_training.feature_cache import FeatureEncoder, cached_step, objective_loss
from modeling_cultureclip import CultureCLIPModel, ObjectiveSettings
from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of

from training_helpers import cultwin_dataset, cultwin_rows


def _setup(objective: str, loss_mode: str):
    rows = cultwin_rows()
    tokenizer = build_word_tokenizer(words_of(rows["caption"] + rows["twin_caption"] + rows["concept"]
                                              + rows["twin_concept"]))
    torch.manual_seed(0)
    model = CultureCLIPModel(tiny_config(len(tokenizer), loss_mode=loss_mode, caption_loss_weight=0.7,
                                         concept_loss_weight=0.3))
    model.requires_grad_(True)  # logit_scale trainable too
    data = prepare(cultwin_dataset(), tiny_processor(tokenizer), objective, objective == "cultureclip", 32)
    settings = ObjectiveSettings.from_config(model.config)
    encoder = FeatureEncoder(model, objective)

    def loss_fn(features, scale):
        return objective_loss(features, scale, objective, settings)

    return model, data, encoder, loss_fn


def _gradients(model, encoder, loss_fn, batches):
    model.zero_grad(set_to_none=True)
    terms = cached_step(encoder, batches, loss_fn, model.logit_scale, lambda loss: loss.backward())
    return terms, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("objective, loss_mode", [("cultureclip", "faithful"), ("cultureclip", "improved"),
                                                  ("clip", "improved")])
def test_cached_micro_batches_match_one_big_batch(objective, loss_mode):
    model, data, encoder, loss_fn = _setup(objective, loss_mode)
    rows = list(range(12))
    big_terms, big = _gradients(model, encoder, loss_fn, [data.examples[rows]])
    micro = [data.examples[rows[i:i + 3]] for i in range(0, 12, 3)]  # k = 4 micro-batches of 3
    small_terms, small = _gradients(model, encoder, loss_fn, micro)

    assert set(big) == set(small) and "logit_scale" in big
    assert big["logit_scale"].abs() > 0
    for name in big:
        torch.testing.assert_close(small[name], big[name], atol=1e-5, rtol=1e-4, msg=name)
    for name in big_terms:
        assert abs(float(small_terms[name]) - float(big_terms[name])) <= 1e-5


def test_plain_accumulation_differs():
    """Control: losses computed inside each micro-batch (plain accumulation) do not give those gradients."""
    model, data, encoder, loss_fn = _setup("cultureclip", "improved")
    rows = list(range(12))
    _, big = _gradients(model, encoder, loss_fn, [data.examples[rows]])
    model.zero_grad(set_to_none=True)
    for i in range(0, 12, 3):
        cached_step(encoder, [data.examples[rows[i:i + 3]]], loss_fn, model.logit_scale, lambda l: (l / 4).backward())
    gap = max((p.grad - big[name]).abs().max().item() for name, p in model.named_parameters() if p.grad is not None)
    assert gap > 1e-4


def test_dropout_masks_replayed():
    """With dropout on, the re-encoding with gradients draws the same masks as the cached pass."""
    model, data, encoder, loss_fn = _setup("cultureclip", "improved")
    model.config.text_config.attention_dropout = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.3
    model.text_model.encoder.layers[0].mlp.fc1 = torch.nn.Sequential(model.text_model.encoder.layers[0].mlp.fc1,
                                                                     torch.nn.Dropout(0.3))
    encoder.train()
    seen = []

    def recording_loss(features, scale):
        seen.append(features["caption"].detach().clone())
        return loss_fn(features, scale)

    micro = [data.examples[[0, 1]], data.examples[[2, 3]]]
    cached_step(encoder, micro, recording_loss, model.logit_scale, lambda loss: loss.backward())
    torch.testing.assert_close(seen[0], seen[1], atol=0, rtol=0)  # both passes see identical full features
