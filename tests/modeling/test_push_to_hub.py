"""`CultureCLIPModel.save_pretrained(..., push_to_hub=True)` reaches the Hub calls with valid arguments.

The seam: HfApi's network methods `create_repo` and `create_commit` are replaced by recorders that first bind the
call against the real method's signature (so an unknown keyword raises TypeError exactly as the real call would),
then record it instead of sending it. `ModelCard.load` stands for "this new repository has no card yet".
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import EntryNotFoundError

import transformers.utils.hub as transformers_hub
from modeling_cultureclip import CultureCLIPModel
from modeling_cultureclip.tiny import tiny_config


class RecordingHub:
    """Records create_repo / create_commit calls after checking them against HfApi's real signatures."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls: list[tuple[str, dict]] = []
        for name in ("create_repo", "create_commit", "upload_folder"):
            monkeypatch.setattr(HfApi, name, self._recorder(name, getattr(HfApi, name)))

        def no_card_yet(*args, **kwargs):
            raise EntryNotFoundError("README.md not found (new repository)")

        monkeypatch.setattr(transformers_hub.ModelCard, "load", no_card_yet)

    def _recorder(self, name, real):
        signature = inspect.signature(real)
        hub = self

        def record(api, *args, **kwargs):
            bound = signature.bind(api, *args, **kwargs)  # TypeError on a keyword the real method does not take
            arguments = dict(bound.arguments)
            arguments.pop("self")
            hub.calls.append((name, arguments))
            if name == "create_repo":
                return type("RepoUrl", (), {"repo_id": arguments["repo_id"]})()
            return None

        return record


def test_save_pretrained_push_to_hub_creates_repo_and_commits_the_checkpoint(tmp_path: Path, monkeypatch):
    hub = RecordingHub(monkeypatch)
    model = CultureCLIPModel(tiny_config(vocab_size=20, image_size=16, patch_size=8, width=32))
    model.save_pretrained(tmp_path / "ckpt", push_to_hub=True, repo_id="someone/cultureclip-tiny", private=True)

    names = [name for name, _ in hub.calls]
    assert names == ["create_repo", "create_commit"]
    repo = hub.calls[0][1]
    assert repo["repo_id"] == "someone/cultureclip-tiny" and repo["exist_ok"] is True and repo["private"] is True
    commit = hub.calls[1][1]
    assert commit["repo_id"] == "someone/cultureclip-tiny"
    uploaded = {op.path_in_repo for op in commit["operations"]}
    assert {"config.json", "model.safetensors", "modeling_cultureclip.py", "configuration_cultureclip.py",
            "loss_cultureclip.py", "README.md"} <= uploaded
    assert not any(path.endswith((".bin", ".pt", ".pkl")) for path in uploaded)


def test_the_recording_seam_rejects_what_the_real_hub_api_rejects(monkeypatch):
    """The seam is strict: the removed `safe_serialization` keyword fails there as it fails on the real API."""
    RecordingHub(monkeypatch)
    with pytest.raises(TypeError, match="safe_serialization"):
        HfApi().create_repo("someone/x", exist_ok=True, safe_serialization=True)
