"""The optional image-side twin check with a tiny real CLIP (saved and reloaded like a checkpoint)."""

from __future__ import annotations

import copy
import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

from dataset_builder.backends.offline import TemplateTextWriter, TwemojiImageSource
from dataset_builder.embedders import CLIPImageEmbedder
from dataset_builder.recipe import ImageCheckSettings, load_recipe
from dataset_builder.stages import captions, concepts, image_check, images, twins
from dataset_builder.stages.common import RunContext, status_counts
from dataset_builder.stages.images import image_key, read_image_bytes


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config={"vocab_size": 50, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                  "num_attention_heads": 2, "max_position_embeddings": 16, "eos_token_id": 3},
                     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                    "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                     projection_dim=16)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(cfg).save_pretrained(folder)
    CLIPImageProcessorPil(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32},
                          do_center_crop=False).save_pretrained(folder)
    return str(folder)


class CountingEmbedder(CLIPImageEmbedder):
    calls = 0

    def embed_images(self, pics):
        CountingEmbedder.calls += len(pics)
        return super().embed_images(pics)


def _rendered(tmp_path, threshold, tiny_clip):
    recipe = load_recipe("demo")
    recipe = dataclasses.replace(recipe, limit_pairs=3, captions=dataclasses.replace(recipe.captions, per_side=2),
                                 twins=dataclasses.replace(recipe.twins, image_check=ImageCheckSettings(
                                     model=tiny_clip, min_similarity=threshold)))
    ctx = RunContext(run_dir=tmp_path, recipe=recipe, text_backend=TemplateTextWriter(),
                     image_backend=TwemojiImageSource(width=64, height=64), progress=False, limit_pairs=3)
    pairs, _ = twins.run(ctx, concepts.run(ctx))
    side = twins.pair_concepts(pairs)
    caps = captions.run(ctx, side)
    return ctx, pairs, images.run(ctx, side, caps)


def test_image_check_keeps_pairs_whose_renders_look_alike(tmp_path, tiny_clip):
    ctx, pairs, recs = _rendered(tmp_path / "a", 0.0, tiny_clip)
    embedder = CLIPImageEmbedder.from_pretrained(tiny_clip)
    # expected: mean over samples of the cosine between the two sides' image embeddings
    expected = {}
    for p in pairs:
        sims = []
        for k in range(2):
            pics = [Image.open(io.BytesIO(read_image_bytes(ctx, recs[image_key(c.concept_id, k)]))).convert("RGB")
                    for c in (p.a, p.b)]
            va, vb = embedder.embed_images(pics)
            sims.append(float(va @ vb))
        expected[p.pair_id] = float(np.mean(sims))
    cut = sorted(expected.values())[1]  # keeps the two most alike pairs, drops one
    ctx = _with_recipe(ctx, dataclasses.replace(ctx.recipe, twins=dataclasses.replace(
        ctx.recipe.twins, image_check=ImageCheckSettings(model=tiny_clip, min_similarity=cut))))
    CountingEmbedder.calls = 0
    counting = CountingEmbedder(embedder.model, embedder.image_processor, embedder.name)
    kept, drops = image_check.run(ctx, pairs, recs, counting)
    assert [p.pair_id for p in kept] == [p.pair_id for p in pairs if expected[p.pair_id] >= cut - 1e-6]
    assert len(kept) == 2 and drops == {"image_check:low_image_similarity": 1}
    records = {k: ctx.store("image_check").get(k) for k in expected}
    for pid, rec in records.items():
        assert rec["similarity"] == pytest.approx(expected[pid], abs=1e-5) and rec["samples"] == [0, 1]
    assert status_counts(records.values()) == {"kept": 2, "rejected:low_image_similarity": 1}
    assert CountingEmbedder.calls == 12  # 3 pairs x 2 samples x 2 sides
    again, _ = image_check.run(ctx, pairs, recs, counting)  # resumed: nothing embedded twice
    assert CountingEmbedder.calls == 12 and [p.pair_id for p in again] == [p.pair_id for p in kept]


def test_image_check_is_off_by_default_and_counts_missing_images(tmp_path, tiny_clip):
    ctx, pairs, recs = _rendered(tmp_path / "b", -1.0, tiny_clip)
    off = _with_recipe(ctx, dataclasses.replace(ctx.recipe, twins=dataclasses.replace(
        ctx.recipe.twins, image_check=None)))
    assert image_check.run(off, pairs, recs) == (pairs, {})
    assert load_recipe("paper").twins.image_check is None and load_recipe("demo").twins.image_check is None
    broken = {k: ({**r, "status": "rejected"} if k.startswith(pairs[0].b.concept_id + "#") else r)
              for k, r in recs.items()}
    kept, drops = image_check.run(ctx, pairs, broken)
    assert [p.pair_id for p in kept] == [p.pair_id for p in pairs[1:]]
    assert drops == {"image_check:no_image_pair": 1}


def test_build_applies_the_image_check_before_the_judge(tmp_path, tiny_clip):
    """Through `build()`: a pair the image check drops has no rows, is never judged, and is counted."""
    import datasets

    from dataset_builder.pipeline import build

    recipe = load_recipe("demo")
    recipe = dataclasses.replace(recipe, captions=dataclasses.replace(recipe.captions, per_side=2),
                                 twins=dataclasses.replace(recipe.twins, image_check=ImageCheckSettings(
                                     model=tiny_clip, min_similarity=-1.0)))
    everything = build(recipe, tmp_path / "all", limit_pairs=4, progress=False)
    kept_all = everything["statistics"]["twins"]["pairs"]
    records = [rec for rec in _records(tmp_path / "all" / "run" / "image_check")]
    cut = sorted(r["similarity"] for r in records)[1]  # drops the least alike of the 4 pairs
    strict = dataclasses.replace(recipe, twins=dataclasses.replace(recipe.twins, image_check=ImageCheckSettings(
        model=tiny_clip, min_similarity=cut)))
    summary = build(strict, tmp_path / "strict", limit_pairs=4, progress=False)
    dropped = min(records, key=lambda r: r["similarity"])["key"]
    assert kept_all == 4 and summary["statistics"]["twins"]["pairs"] == 3
    assert summary["statistics"]["twins"]["image_check:low_image_similarity"] == 1
    rows = datasets.load_dataset(str(tmp_path / "strict"), cache_dir=str(tmp_path / "cache"))
    pair_ids = {p for split in rows.values() for p in split["pair_id"]}
    assert dropped not in pair_ids and len(pair_ids) == 3
    judged_all = _records(tmp_path / "all" / "run" / "judge")
    judged = _records(tmp_path / "strict" / "run" / "judge")
    assert len(judged_all) == 16 and len(judged) == 12  # 2 sides x 2 samples per pair; the dropped pair not judged


def _with_recipe(ctx, recipe):
    """The same run context with another recipe (RunContext is a plain class: copy, then set)."""
    other = copy.copy(ctx)
    other.recipe = recipe
    return other


def _records(stage_dir):
    import json

    return [json.loads(p.read_text()) for p in sorted((stage_dir / "items").glob("*.json"))]
