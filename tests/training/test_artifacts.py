"""End artifacts: merged model loads with remote code without this package, adapter loads with PEFT, card parses,
push goes through huggingface_hub's API."""

import json
import subprocess
import sys

import torch
from huggingface_hub import ModelCard
from peft import PeftModel
from PIL import Image

from cultureclip_training import train
from cultureclip_training.artifacts import push_artifacts
from modeling_cultureclip import CultureCLIPModel
from transformers import CLIPProcessor

from isolation import without_project
from training_helpers import run_args, subprocess_env

# runs where this package cannot be imported
FOREIGN_LOAD = without_project("""
import json, sys
try:
    import modeling_cultureclip
    raise SystemExit("the package was importable")
except ImportError:
    pass
import torch
torch.set_num_threads(1)
from PIL import Image
from transformers import AutoModel, AutoProcessor, pipeline
path = sys.argv[1]
model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
inputs = processor(text=["a kimono at a market", "a hanbok on a street"], images=[Image.new("RGB", (24, 24), "red")],
                   return_tensors="pt", padding=True)
with torch.no_grad():
    logits = model(**inputs).logits_per_image
classifier = pipeline("zero-shot-image-classification", model=path, trust_remote_code=True)
scores = classifier(Image.new("RGB", (24, 24), "red"), candidate_labels=["kimono", "hanbok"])
print(json.dumps({"class": type(model).__module__ + "." + type(model).__name__, "logits": logits.tolist(),
                  "labels": sorted(s["label"] for s in scores)}))
""")


class RecordingApi:
    """Stands in for HfApi's two network methods (no network here); records what would be uploaded."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_artifacts_load_everywhere(tmp_path, cultwin_dir, tiny_model_dir):
    args = run_args(tmp_path, cultwin_dir, tiny_model_dir, recipe="faithful-cached-b32", per_device_batch_size=4,
                    micro_batches=2, max_steps=3, learning_rate=1e-2, warmup_steps=0, save_artifacts=True,
                    wise_ft_alpha=0.5, card_base_model="openai/clip-vit-base-patch32", card_dataset="org/CulTwin",
                    hub_model_id="org/cultureclip-test", lora_trainable_tokens=["kimono", "hanbok"])
    result = train(args)
    out = tmp_path / "out"
    model_dir, adapter_dir = out / "model", out / "adapter"
    assert (adapter_dir / "adapter_model.safetensors").is_file() and (out / "model-wise-ft-0.5").is_dir()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pkl"))

    # merged model in a process that cannot import this package
    done = subprocess.run([sys.executable, "-c", FOREIGN_LOAD, str(model_dir)], capture_output=True, text=True,
                          env=subprocess_env(), cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    foreign = json.loads(done.stdout.strip().splitlines()[-1])
    assert foreign["class"].endswith("modeling_cultureclip.CultureCLIPModel")
    assert foreign["labels"] == ["hanbok", "kimono"]

    processor = CLIPProcessor.from_pretrained(model_dir)
    inputs = processor(text=["a kimono at a market", "a hanbok on a street"],
                       images=[Image.new("RGB", (24, 24), "red")], return_tensors="pt", padding=True)
    merged = CultureCLIPModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        expected = merged(**inputs).logits_per_image
    torch.testing.assert_close(torch.tensor(foreign["logits"]), expected, atol=1e-5, rtol=1e-5)

    # adapter on the base model gives the merged model's outputs; it differs from the base model
    base = CultureCLIPModel.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        before = base(**inputs).logits_per_image
        adapted = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        after = adapted(**inputs).logits_per_image
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)
    assert (after - before).abs().max() > 1e-4

    # the trainable token rows moved and are in the merged model; the other rows did not
    tokenizer = processor.tokenizer
    untouched = CultureCLIPModel.from_pretrained(tiny_model_dir)  # `base` now carries the adapter
    changed = (merged.text_model.embeddings.token_embedding.weight
               - untouched.text_model.embeddings.token_embedding.weight).abs().sum(dim=1).nonzero().flatten().tolist()
    assert sorted(changed) == sorted(tokenizer.convert_tokens_to_ids(["kimono", "hanbok"]))

    card = ModelCard.load(model_dir / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "zero-shot-image-classification" and data["library_name"] == "transformers"
    assert data["base_model"] == "openai/clip-vit-base-patch32" and data["datasets"] == ["org/CulTwin"]
    assert data["license"] == "mit" and "cultureclip" in data["tags"]
    assert "org/cultureclip-test" in card.text and "faithful" in card.text
    assert result.artifacts.model_dir == model_dir and isinstance(result.model, CultureCLIPModel)


def test_push_uploads_model_and_adapter(tmp_path, cultwin_dir, tiny_model_dir, monkeypatch):
    secret = "hf_" + "x" * 30
    monkeypatch.setenv("HF_TOKEN", secret)
    args = run_args(tmp_path, cultwin_dir, tiny_model_dir, recipe="faithful-cached-b32", per_device_batch_size=4,
                    micro_batches=2, max_steps=1, save_artifacts=True)
    result = train(args)
    api = RecordingApi()
    assert push_artifacts(result.artifacts, "org/cultureclip-test", private=True, api=api) == "org/cultureclip-test"
    assert api.calls[0] == ("create_repo", dict(repo_id="org/cultureclip-test", repo_type="model", private=True,
                                                exist_ok=True))
    uploads = [kwargs for name, kwargs in api.calls if name == "upload_folder"]
    assert [u.get("path_in_repo") for u in uploads] == [None, "adapter"]
    assert uploads[0]["folder_path"].endswith("model") and uploads[1]["folder_path"].endswith("adapter")
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
