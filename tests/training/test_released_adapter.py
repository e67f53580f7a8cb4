"""The authors' released artifacts as inputs: a PEFT adapter saved for a `CLIPModel` (task FEATURE_EXTRACTION, in a
`lora_adapter/` sub-folder, as their run script saves it) and their merged CLIPModel checkpoint.

Built here exactly the way the release builds them: transformers' CLIPModel, `get_peft_model` with the explicit
module-name list their script assembles, `save_pretrained(OUTPUT/lora_adapter)`, and `merge_and_unload()` +
`save_pretrained` for the merged model. The adapters get non-zero B matrices so that they change the logits.
"""

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from cultureclip_training.lora import find_adapter, load_adapter, merge_lora
from modeling_cultureclip import CultureCLIPModel
from modeling_cultureclip.tiny import tiny_config


def _inputs():
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(5, 30, (3, 7), generator=g)
    ids[:, 0], ids[:, -1] = 1, 3
    return dict(input_ids=ids, pixel_values=torch.randn(2, 3, 16, 16, generator=g))


@pytest.fixture(scope="module")
def release_run(tmp_path_factory) -> Path:
    """OUTPUT/ of a release-style run: base/ (the CLIP it started from), lora_adapter/, merged/ (CLIPModel)."""
    out = tmp_path_factory.mktemp("release-run")
    torch.manual_seed(0)
    settings = tiny_config(vocab_size=30, image_size=16, patch_size=8, width=32).to_dict()
    clip_fields = CLIPConfig().to_dict()
    base = CLIPModel(CLIPConfig(**{k: v for k, v in settings.items() if k in clip_fields and k != "model_type"}))
    base.save_pretrained(out / "base")
    targets = [f"{tower}.encoder.layers.{i}.self_attn.{proj}" for tower in ("vision_model", "text_model")
               for i in range(2) for proj in ("q_proj", "v_proj")]
    peft_model = get_peft_model(CLIPModel.from_pretrained(out / "base"), LoraConfig(
        r=4, lora_alpha=16, lora_dropout=0.1, target_modules=targets, bias="none",
        task_type=TaskType.FEATURE_EXTRACTION))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    peft_model.save_pretrained(out / "lora_adapter")
    peft_model.merge_and_unload().save_pretrained(out / "merged")
    return out


def _clip_reference(release_run):
    """Logits of the adapter on transformers' CLIPModel (the LoRA-injected base model; the FEATURE_EXTRACTION
    wrapper's own forward passes `inputs_embeds=`, which CLIP does not take)."""
    on_clip = PeftModel.from_pretrained(CLIPModel.from_pretrained(release_run / "base"),
                                        str(release_run / "lora_adapter")).eval()
    with torch.no_grad():
        logits = on_clip.get_base_model()(**_inputs()).logits_per_image
        plain = CLIPModel.from_pretrained(release_run / "base").eval()(**_inputs()).logits_per_image
    assert (logits - plain).abs().max() > 1e-2  # the adapter matters
    return logits


def test_clip_adapter_on_cultureclip_gives_clip_logits(release_run):
    expected = _clip_reference(release_run)
    # 1. plain PEFT, the adapter folder given directly
    with_peft = PeftModel.from_pretrained(CultureCLIPModel.from_clip(str(release_run / "base")),
                                          str(release_run / "lora_adapter")).eval()
    # 2. our path: the run folder, the `lora_adapter/` sub-folder found, forward through the PeftModel itself
    ours = load_adapter(CultureCLIPModel.from_clip(str(release_run / "base")), release_run).eval()
    assert type(ours) is PeftModel and isinstance(ours.get_base_model(), CultureCLIPModel)
    with torch.no_grad():
        torch.testing.assert_close(with_peft.get_base_model()(**_inputs()).logits_per_image, expected,
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(ours(**_inputs()).logits_per_image, expected, rtol=0, atol=1e-6)
        merged = merge_lora(ours).eval()
        assert isinstance(merged, CultureCLIPModel)
        torch.testing.assert_close(merged(**_inputs()).logits_per_image, expected, rtol=0, atol=1e-5)


def test_released_merged_checkpoint_loads_as_cultureclip(release_run):
    expected = _clip_reference(release_run)
    model = CultureCLIPModel.from_clip(str(release_run / "merged")).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**_inputs()).logits_per_image, expected, rtol=0, atol=1e-5)


def test_adapter_lookup_and_mismatch_errors(release_run, tmp_path):
    assert find_adapter(release_run) == (str(release_run), "lora_adapter")
    assert find_adapter(release_run / "lora_adapter") == (str(release_run / "lora_adapter"), "")
    with pytest.raises(FileNotFoundError, match="no PEFT adapter.*lora_adapter"):
        find_adapter(tmp_path)
    # an adapter saved for a CLIPVisionModel: its keys lack the `vision_model.` prefix. PEFT loads it with only a
    # warning and leaves fresh random adapters on every q/v of both towers; ours refuses
    settings = tiny_config(vocab_size=30, image_size=16, patch_size=8, width=32)
    vision = CLIPVisionModel(CLIPVisionConfig(**settings.vision_config.to_dict()))
    get_peft_model(vision, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                      task_type=TaskType.FEATURE_EXTRACTION)).save_pretrained(tmp_path / "vision")
    PeftModel.from_pretrained(CultureCLIPModel(settings), str(tmp_path / "vision"))  # no error there
    with pytest.raises(ValueError, match="does not fit the model: weights not in the file"):
        load_adapter(CultureCLIPModel(settings), tmp_path / "vision")
