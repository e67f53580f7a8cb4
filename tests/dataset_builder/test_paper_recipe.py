"""The release-faithful paper recipe, all caption combinations per pair, licences and departures in the card, and the
judge on concept + context with a shrunk image and per-criterion statistics."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard
from PIL import Image

from dataset_builder.backends.offline import RuleBasedJudge
from dataset_builder.backends.tiny import build_scripted_chat_vlm
from dataset_builder.backends.transformers_chat import TransformersChatBackend
from dataset_builder.pipeline import build
from dataset_builder.recipe import header_departures, load_recipe
from dataset_builder.stages.judge import judge_summary, shrink


def test_paper_recipe_uses_the_release_settings():
    paper = load_recipe("paper")
    for spec in (paper.text_backend, paper.judge_backend):
        assert spec.model_id == "Qwen/Qwen2.5-VL-7B-Instruct"
        assert spec.options["deterministic"] is False and spec.options["temperature"] == 0.7
        assert spec.options["max_new_tokens"] == 512
    assert (paper.images.width, paper.images.height, paper.images.steps, paper.images.guidance) == (1024, 1024, 4, 0.0)
    assert paper.image_backend.options["dtype"] == "float16"
    assert paper.judge.prompt == "judge.v2" and paper.judge.image_max_side == 512
    assert paper.export.license == "other" and paper.export.license_name == "stabilityai-ai-community"
    assert paper.export.license_link.endswith("stable-diffusion-3.5-large-turbo/blob/main/LICENSE.md")
    assert paper.export.model_licenses["Qwen/Qwen2.5-VL-7B-Instruct"].startswith("Apache-2.0")
    assert paper.export.model_licenses["stabilityai/stable-diffusion-3.5-large-turbo"].startswith(
        "Stability AI Community License")
    assert len(paper.departures) >= 5 and any("caption_pairing" in d for d in paper.departures)
    assert "departures" not in paper.output_dict()  # documentation, not part of the resume check
    assert header_departures("# departure: a\n#   b\n# other\nname: x\n# departure: ignored") == ["a b"]


def _rows(folder):
    return [r for f in sorted((folder / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_all_caption_combinations_and_the_card(tmp_path):
    paper = load_recipe("paper")
    demo = load_recipe("demo")
    matched = dataclasses.replace(demo, limit_pairs=3, departures=paper.departures,
                                  export=dataclasses.replace(paper.export, pretty_name="CulTwin test"))
    every = dataclasses.replace(matched, export=dataclasses.replace(matched.export, caption_pairing="all"))
    build(matched, tmp_path / "matched", progress=False)
    summary = build(every, tmp_path / "all", progress=False)

    rows = _rows(tmp_path / "all")
    for r in rows:
        assert r["caption"] == r["all_captions"][r["sample_index"]]
        assert r["twin_caption"] == r["twin_all_captions"][r["twin_sample_index"]]
    judge = {}
    for p in (tmp_path / "all" / "run" / "judge" / "items").glob("*.json"):
        rec = json.loads(p.read_text())
        judge[rec["key"]] = rec.get("passed") is True
    per_pair = Counter(r["pair_id"] for r in rows)
    for pair_id, n in per_pair.items():
        sample = next(r for r in rows if r["pair_id"] == pair_id)
        passed_a = sum(judge.get(f"{sample['concept_id']}#{k}", False) for k in range(len(sample["all_captions"])))
        passed_b = sum(judge.get(f"{sample['twin_concept_id']}#{k}", False) for k in range(len(sample["twin_all_captions"])))
        assert n == passed_a * passed_b  # every passed concept image with every passed twin image
    assert max(per_pair.values()) > 8  # more than the matched N per pair
    matched_rows = {(r["pair_id"], r["sample_index"]) for r in _rows(tmp_path / "matched")}
    assert matched_rows == {(r["pair_id"], r["sample_index"]) for r in rows if r["sample_index"] == r["twin_sample_index"]}
    assert summary["statistics"]["export"]["caption_pairing"] == "all"

    from datasets import load_dataset

    ds = load_dataset(str(tmp_path / "all"), cache_dir=str(tmp_path / "hf-cache"))
    assert "twin_sample_index" in ds["train"].column_names and "twin_sample_index" not in _rows(tmp_path / "matched")[0]
    card = DatasetCard.load(tmp_path / "all" / "README.md")
    assert card.data.license == "other" and card.data.license_name == "stabilityai-ai-community"
    assert card.data.license_link == paper.export.license_link
    assert "## Departures from the authors' release" in card.text
    assert all(d[:40] in card.text for d in paper.departures)
    assert "Licence of `Qwen/Qwen2.5-VL-7B-Instruct`: Apache-2.0" in card.text
    assert "| consistency |" in card.text and "Failure reasons" in card.text

    from dataset_builder.hf_builder import CulTwinBuilder

    files = [str(f) for f in sorted((tmp_path / "all" / "data").glob("train-*.parquet"))]
    keys = [k for k, _ in CulTwinBuilder._generate_examples(object.__new__(CulTwinBuilder), files)]
    assert len(keys) == len(set(keys)) == ds["train"].num_rows


class RecordingJudge(RuleBasedJudge):
    def __init__(self):
        super().__init__()
        self.seen = []

    def generate(self, requests, max_new_tokens=None):
        for r in requests:
            parts = r.messages[0]["content"]
            self.seen.append((parts[0]["image"].size, parts[1]["text"], r.fields["context"]))
        return super().generate(requests, max_new_tokens)


def test_judge_sees_concept_and_context_and_a_shrunk_image(tmp_path):
    demo = load_recipe("demo")
    recipe = dataclasses.replace(demo, limit_pairs=3, judge=dataclasses.replace(demo.judge, image_max_side=40))
    judge = RecordingJudge()
    summary = build(recipe, tmp_path / "out", judge_backend=judge, progress=False)
    assert judge.seen and all(max(size) == 40 for size, _, _ in judge.seen)  # 64 px renders shrunk to 40
    assert all(f"Context: {context}" in text for _, text, context in judge.seen)
    criteria = summary["statistics"]["judge"]["criteria"]
    assert set(criteria) == {"authenticity", "consistency", "cultural_fidelity"}
    assert all(c["n"] == summary["statistics"]["judge"]["judged"] for c in criteria.values())

    assert shrink(Image.new("RGB", (1024, 512)), 512).size == (512, 256)
    assert shrink(Image.new("RGB", (100, 80)), 512).size == (100, 80)  # never enlarged
    records = {
        "a": {"status": "ok", "scores": {"authenticity": 5, "consistency": 1, "cultural_fidelity": 4}, "passed": False,
              "drop_reasons": ["score_at_most_1"]},
        "b": {"status": "ok", "scores": {"authenticity": 3, "consistency": 5, "cultural_fidelity": 4}, "passed": True,
              "drop_reasons": []},
        "c": {"status": "rejected", "reason": "judge_unparseable:invalid_json", "passed": False},
    }
    s = judge_summary(records)
    assert s["criteria"]["authenticity"] == {"mean": 4.0, "std": 1.0, "n": 2, "at_most_1": 0}
    assert s["criteria"]["consistency"] == {"mean": 3.0, "std": 2.0, "n": 2, "at_most_1": 1}
    assert s["drop_reasons"] == {"judge_unparseable:invalid_json": 1, "score_at_most_1": 1} and s["pass_rate"] == 0.3333


def test_chat_backends_take_their_token_budget_and_sampling_from_the_recipe(tmp_path):
    folder = build_scripted_chat_vlm(tmp_path / "vlm", {"hello": "a fixed answer"})
    backend = TransformersChatBackend.from_pretrained(folder, max_new_tokens=1)
    from dataset_builder.backends.base import ChatRequest

    request = ChatRequest("x", [{"role": "user", "content": "hello"}], seed=1)
    assert backend.generate([request]) == ["a fixed answer"]  # one token: the answer token, EOS never reached
    sampled = backend.with_settings(deterministic=False, temperature=0.7, max_new_tokens=4)
    assert sampled.model is backend.model and sampled.max_new_tokens == 4 and sampled.temperature == 0.7
    assert sampled.generate([request]) == ["a fixed answer"]
    with pytest.raises(ValueError, match="unknown generation setting"):
        backend.with_settings(dtype="float16")


def test_a_recipe_written_back_from_provenance_loads_with_its_departures(tmp_path):
    paper = load_recipe("paper")
    saved = tmp_path / "from-provenance.yaml"
    saved.write_text(json.dumps(paper.to_dict()), encoding="utf-8")
    again = load_recipe(saved)
    assert again.departures == paper.departures and again.output_dict() == paper.output_dict()
    bad = paper.to_dict()
    bad["departures"] = "one string"
    saved.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ValueError, match="departures"):
        load_recipe(saved)
