"""LoRA placement, adapter round trip, merging and WiSE-FT on a tiny CultureCLIP model."""

import pytest
import torch
from peft import PeftModel

from cultureclip_training.lora import (LoraSettings, apply_lora, load_adapter, merge_lora, save_adapter,
                                       select_layers, wise_ft)
from modeling_cultureclip import CultureCLIPModel
from modeling_cultureclip.tiny import tiny_config


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return CultureCLIPModel(tiny_config(vocab_size=30, image_size=16, patch_size=8, width=32, vision_layers=4,
                                        text_layers=4)).eval()


def inputs():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 30, (3, 6), generator=g)
    ids[:, -1] = 3
    return dict(input_ids=ids, pixel_values=torch.randn(3, 3, 16, 16, generator=g))


def perturb_adapters(peft_model):
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # B starts at zero; give the adapters an effect
                p.normal_(0, 0.2)


@pytest.mark.parametrize("preset,expected", [
    ("all", [0, 1, 2, 3, 4, 5, 6, 7]), ("lower", [0, 1, 2, 3]), ("upper", [4, 5, 6, 7]),
    ("top:2", [6, 7]), ("bottom:3", [0, 1, 2]), ("middle:2", [3, 4]), ([1, 5], [1, 5]),
])
def test_layer_presets(preset, expected):
    assert select_layers(preset, 8) == expected


@pytest.mark.parametrize("bad", ["half", "top:0", "top:9", [8], []])
def test_bad_layer_presets_are_rejected(bad):
    with pytest.raises(ValueError, match="layers"):
        select_layers(bad, 8)


def test_only_chosen_adapters_are_trainable():
    model = apply_lora(tiny_model(), LoraSettings(towers=("vision",), layers="upper", targets=("q_proj", "v_proj"),
                                                  projections=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    adapted = {n.split(".lora_")[0].removeprefix("base_model.model.") for n in trainable}
    assert adapted == {f"vision_model.encoder.layers.{i}.self_attn.{t}" for i in (2, 3) for t in ("q_proj", "v_proj")} \
        | {"visual_projection"}
    assert not any(n.startswith("base_model.model.text_model") for n in trainable)


def test_paper_placement_is_q_v_of_every_layer_of_both_towers():
    model = apply_lora(tiny_model(), LoraSettings())
    adapted = {n.split(".lora_")[0].removeprefix("base_model.model.")
               for n, p in model.named_parameters() if p.requires_grad}
    assert len(adapted) == 2 * 4 * 2  # towers x layers x (q, v)
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 16.0, 0.1)


def test_adapter_round_trip_and_merge(tmp_path):
    lora = apply_lora(tiny_model(), LoraSettings(dropout=0.0))
    perturb_adapters(lora)
    lora.eval()
    with torch.no_grad():
        expected = lora(**inputs()).logits_per_image
    save_adapter(lora, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert (tmp_path / "adapter" / "adapter_config.json").exists()

    reloaded = PeftModel.from_pretrained(tiny_model(), str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs()).logits_per_image, expected)
    also = load_adapter(tiny_model(), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(also(**inputs()).logits_per_image, expected)

    merged = merge_lora(reloaded)
    assert isinstance(merged, CultureCLIPModel)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**inputs()).logits_per_image, expected, atol=1e-5, rtol=1e-5)
    # the base really changed: the adapters are not a no-op
    with torch.no_grad():
        assert not torch.allclose(tiny_model()(**inputs()).logits_per_image, expected, atol=1e-4)


def test_wise_ft_endpoints_and_midpoint():
    base, tuned = tiny_model(0), tiny_model(1)
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(wise_ft(base, tuned, 0.0)(**x).logits_per_image, base(**x).logits_per_image)
        torch.testing.assert_close(wise_ft(base, tuned, 1.0)(**x).logits_per_image, tuned(**x).logits_per_image)
    half = wise_ft(base, tuned, 0.5).state_dict()
    name = "text_projection.weight"
    torch.testing.assert_close(half[name], (base.state_dict()[name] + tuned.state_dict()[name]) / 2)
    with pytest.raises(ValueError, match="alpha"):
        wise_ft(base, tuned, 1.5)


def test_lora_settings_validation():
    with pytest.raises(ValueError, match="towers"):
        LoraSettings(towers=("audio",))
    with pytest.raises(ValueError, match="targets"):
        LoraSettings(targets=("query",))
    with pytest.raises(TypeError, match="CultureCLIPModel"):
        apply_lora(torch.nn.Linear(2, 2), LoraSettings())


def test_trainable_token_rows_train_round_trip_and_merge(tmp_path):
    new_words = [7, 11]  # token ids standing for words the base never saw
    lora = apply_lora(tiny_model(), LoraSettings(dropout=0.0, trainable_token_ids=new_words))
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    token_params = {n for n in trainable if "token_embedding" in n}
    assert token_params and trainable - token_params and all("lora_" in n for n in trainable - token_params)

    ids = torch.tensor([[5, 7, 3], [5, 6, 3]])  # row 0 holds a trainable token, row 1 does not
    before = tiny_model().text_model.embeddings.token_embedding.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=1.0)
    lora.get_text_features(input_ids=ids).pooler_output.pow(2).sum().backward()
    optimizer.step()
    lora.eval()
    with torch.no_grad():
        expected = lora(input_ids=ids, pixel_values=inputs()["pixel_values"][:2]).logits_per_image

    save_adapter(lora, tmp_path / "adapter")
    reloaded = load_adapter(tiny_model(), tmp_path / "adapter").eval()
    merged = merge_lora(reloaded)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids, pixel_values=inputs()["pixel_values"][:2]).logits_per_image,
                                   expected, atol=1e-5, rtol=1e-5)
    after = merged.text_model.embeddings.token_embedding.weight.detach()
    changed = sorted(int(i) for i in (after - before).abs().sum(dim=1).nonzero())
    assert changed == [7]  # token 11 had no gradient; every other row stays frozen


def test_trainable_token_ids_from_words():
    from modeling_cultureclip.tiny import build_word_tokenizer

    from cultureclip_training.lora import trainable_token_ids

    tokenizer = build_word_tokenizer(["flag", "of", "chad", "romania"])
    ids = trainable_token_ids(["chad", "Romania"], tokenizer)
    assert ids == sorted(tokenizer.convert_tokens_to_ids(["chad", "romania"]))
    with pytest.raises(ValueError, match="'monaco'"):
        trainable_token_ids(["monaco"], tokenizer)
    with pytest.raises(ValueError, match="trainable_token_ids"):
        apply_lora(tiny_model(), LoraSettings(trainable_token_ids=[30]))
