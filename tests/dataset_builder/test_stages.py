"""Stages in-process with injected backends: top-down and bottom-up sources, rejections counted, safe paths."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dataset_builder.backends.base import ImageRenderError
from dataset_builder.backends.offline import RuleBasedJudge, TemplateTextWriter, TwemojiImageSource
from dataset_builder.pipeline import RunMismatchError, build
from dataset_builder.recipe import load_recipe


class FlakyImages(TwemojiImageSource):
    """Returns a broken image for some items: truncated PNG, wrong size, blank frame, not an image."""

    def render(self, prompts, seeds, fields):
        out = super().render(prompts, seeds, fields)
        for i, s in enumerate(seeds):
            kind = s % 17
            if kind == 0:
                buf = io.BytesIO()
                out[i].save(buf, format="PNG")
                out[i] = Image.open(io.BytesIO(buf.getvalue()[: len(buf.getvalue()) // 2]))  # fails on load()
            elif kind == 1:
                out[i] = out[i].resize((32, 32))
            elif kind == 2:
                out[i] = Image.new("RGB", out[i].size, (255, 255, 255))
            elif kind == 3:
                out[i] = "not an image"
        return out


class FailingRenderer(TwemojiImageSource):
    """Raises ImageRenderError for any batch holding a seed divisible by 5, as a diffusion backend does on a NaN decode."""

    def render(self, prompts, seeds, fields):
        bad = [s for s in seeds if s % 5 == 0]
        if bad:
            raise ImageRenderError(f"constant image for seed {bad[0]}")
        return super().render(prompts, seeds, fields)


class ChattyJudge(RuleBasedJudge):
    """Wraps every third verdict in prose, as a chat model sometimes does."""

    def generate(self, requests, max_new_tokens=256):
        answers = super().generate(requests, max_new_tokens)
        return [f"Here are my scores: {a}" if r.seed % 3 == 0 else a for r, a in zip(requests, answers)]


def _demo(limit: int = 3):
    return dataclasses.replace(load_recipe("demo"), limit_pairs=limit)


def test_invalid_images_and_malformed_verdicts_are_rejected_and_counted(tmp_path):
    recipe = _demo(8)
    summary = build(recipe, tmp_path / "out", image_backend=FlakyImages(64, 64), judge_backend=ChattyJudge(),
                    progress=False)
    images = summary["statistics"]["images"]
    for reason in ("rejected:unreadable_image:OSError", "rejected:wrong_size", "rejected:blank_image",
                   "rejected:not_an_image"):
        assert images.get(reason, 0) > 0, images
    judge = summary["statistics"]["judge"]
    assert judge["drop_reasons"].get("judge_unparseable:extra_text", 0) > 0
    assert judge["judged"] == images["kept"]
    assert summary["total_rows"] > 0
    run = tmp_path / "out" / "run"
    for rec_path in (run / "images" / "items").glob("*.json"):
        rec = json.loads(rec_path.read_text())
        if rec["status"] == "ok":
            assert (run / rec["file"]).exists() and len(rec["sha256"]) == 64 and rec["model_id"]


def test_render_errors_cost_only_the_failing_items(tmp_path):
    summary = build(_demo(4), tmp_path / "out", image_backend=FailingRenderer(64, 64), progress=False)
    images = summary["statistics"]["images"]
    failed = images.get("rejected:render_error", 0)
    assert failed > 0 and images["kept"] > 0, images
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "run" / "images" / "items").glob("*.json")]
    assert failed == sum(r["status"] != "ok" for r in records)
    assert all(r["seed"] % 5 == 0 for r in records if r["status"] != "ok")
    assert all(r["seed"] % 5 != 0 for r in records if r["status"] == "ok")


def test_top_down_generated_twins(tmp_path):
    recipe = load_recipe("demo")
    recipe = dataclasses.replace(
        recipe, concepts=dataclasses.replace(recipe.concepts, source="top-down", countries=["JP", "PE", "KE", "FR"],
                                             categories=["Cuisine", "Festival"]),
        image_backend=dataclasses.replace(recipe.image_backend, options={**recipe.image_backend.options,
                                                                         "flag_when_missing": True}),
        judge_backend=dataclasses.replace(recipe.judge_backend, options={"flag_when_missing": True}),
    )
    summary = build(recipe, tmp_path / "td", progress=False)
    stats = summary["statistics"]
    assert stats["concepts"] == {"kept": 8} and stats["twins"]["pairs"] == 8
    from datasets import load_dataset

    ds = load_dataset(str(tmp_path / "td"))
    row = ds["train"][0]
    assert row["source"] == "top-down" and row["country"] != row["twin_country"]
    assert row["twin_visual_features"]  # the twin's features are parsed and kept


def test_top_down_rejects_same_country_and_bad_answers(tmp_path):
    class SloppyWriter(TemplateTextWriter):
        def _answer(self, req):
            answer = super()._answer(req)
            if req.task == "twin" and req.fields["iso_code"] == "JP":
                data = json.loads(answer)
                return json.dumps({**data, "twin_country": "Japan"})
            if req.task == "twin" and req.fields["iso_code"] == "PE":
                return "I think a good twin would be something from Bolivia."
            if req.task == "concept" and req.fields["iso_code"] == "KE":
                return json.dumps({"concept": "ugali"})
            return answer

    recipe = load_recipe("demo")
    recipe = dataclasses.replace(
        recipe, concepts=dataclasses.replace(recipe.concepts, source="top-down", countries=["JP", "PE", "KE", "FR", "IN"],
                                             categories=["Cuisine"]))
    from dataset_builder.stages import concepts as cs
    from dataset_builder.stages import twins as ts
    from dataset_builder.stages.common import RunContext, status_counts

    ctx = RunContext(run_dir=tmp_path, recipe=recipe, text_backend=SloppyWriter(), progress=False)
    concepts = cs.run(ctx)
    assert status_counts(ctx.store("concepts").all_records()) == {"kept": 4, "rejected:missing_field:context": 1}
    pairs, _ = ts.run(ctx, concepts)
    counts = status_counts(ctx.store("twins").all_records())
    assert counts == {"kept": 2, "rejected:same_country": 1, "rejected:extra_text": 1}
    assert len(pairs) == 2 and all(p.a.iso_code != p.b.iso_code for p in pairs)


def test_hostile_concept_names_stay_inside_the_run(tmp_path):
    cat = {"version": 1, "concepts": [
        {"concept": "../../etc/x", "iso_code": "TD", "category": "Symbol", "emoji": "🇹🇩", "context": "c.",
         "visual_features": "vertical tricolour; blue band"},
        {"concept": "..\\..\\windows\\y", "iso_code": "RO", "category": "Symbol", "emoji": "🇷🇴", "context": "c.",
         "visual_features": "vertical tricolour; blue band"},
        {"concept": "/abs/z", "iso_code": "ID", "category": "Symbol", "emoji": "🇮🇩", "context": "c.",
         "visual_features": "two horizontal bands; red band"},
        {"concept": "name\x00with nul", "iso_code": "MC", "category": "Symbol", "emoji": "🇲🇨", "context": "c.",
         "visual_features": "two horizontal bands; red band"},
        {"concept": "Japanese castle", "iso_code": "JP", "category": "Architecture", "emoji": "🏯", "context": "c.",
         "visual_features": "tiered white walls; curved roofs"},
        {"concept": "European castle", "iso_code": "DE", "category": "Architecture", "emoji": "🏰", "context": "c.",
         "visual_features": "stone walls; towers"},
    ], "pairs": [["../../etc/x", "..\\..\\windows\\y"], ["/abs/z", "name\x00with nul"],
                 ["Japanese castle", "European castle"]]}
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(cat, allow_unicode=True))
    recipe = load_recipe("demo")
    recipe = dataclasses.replace(recipe, concepts=dataclasses.replace(recipe.concepts, catalog=str(path)))
    root = tmp_path / "box" / "out"
    build(recipe, root, progress=False)
    everything = [p for p in (tmp_path / "box").rglob("*")]
    assert everything and all(root.resolve() in p.resolve().parents or p.resolve() == root.resolve() for p in everything)
    assert not (tmp_path / "etc").exists() and not Path("/abs").exists()


def test_resume_with_other_settings_is_refused(tmp_path):
    build(_demo(3), tmp_path / "o", progress=False)
    with pytest.raises(RunMismatchError, match="seed"):
        build(_demo(3), tmp_path / "o", seed=99, progress=False)


def test_clip_text_embedder_with_tiny_model():
    import torch
    from transformers import CLIPConfig, CLIPModel

    from dataset_builder.embedders import CLIPTextEmbedder

    class CharTokenizer:
        """Maps characters to ids; enough to drive the real CLIP text tower."""

        def __call__(self, texts, padding=True, truncation=True, max_length=77, return_tensors="pt"):
            ids = [[1] + [3 + (ord(c) % 90) for c in t[: max_length - 2]] + [2] for t in texts]
            n = max(map(len, ids))
            return {"input_ids": torch.tensor([i + [0] * (n - len(i)) for i in ids]),
                    "attention_mask": torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in ids])}

    torch.manual_seed(0)
    cfg = CLIPConfig(text_config={"vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                  "num_attention_heads": 2, "max_position_embeddings": 64, "eos_token_id": 2,
                                  "bos_token_id": 1, "pad_token_id": 0},
                     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
                     projection_dim=16)
    emb = CLIPTextEmbedder(CLIPModel(cfg), CharTokenizer(), batch_size=2)
    v = emb.embed(["red band", "red band", "a completely different sentence"])
    assert v.shape == (3, 16)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.allclose(v[0], v[1], atol=1e-5) and not np.allclose(v[0], v[2], atol=1e-3)


def test_store_ignores_temp_files_left_by_a_killed_write(tmp_path):
    from dataset_builder.runstore import StageStore

    store = StageStore(tmp_path, "captions")
    store.put("a", {"status": "ok"})
    (store.items_dir / ".tmp-abc123.json").write_text('{"key": "half', encoding="utf-8")  # a kill mid-write
    assert [r["key"] for r in store.all_records()] == ["a"]
