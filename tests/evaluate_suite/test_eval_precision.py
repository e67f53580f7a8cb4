"""Evaluation precision: what `auto` picks, bf16 towers with autocast numerics and fp32 scores, the record naming
the precision, agreement with fp32 on benchmark items, and the threaded input pipeline."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from PIL import Image

import evaluate_suite.precision as precision
from evaluate_suite import DualEncoder, EvalDataError, evaluate_model, load_encoder
from evaluate_suite.__main__ import main
from evaluate_suite.data import ImageRef, ImageTable
from evaluate_suite.encoders import cast_for_precision

from evalsuite_fixtures import (COLOURS, cultwin_dataset, geode_dataset, globalrg_retrieval_dataset, image_value,
                                png_bytes, write_folder)

TEXTS = ["There is sushi in the image.", "There is kimchi in the image.", "a photo of the car",
         "a dog runs on grass ."]


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (20 + i, 30), COLOURS[i % len(COLOURS)]) for i in range(n)]


def test_auto_picks_bf16_only_where_the_cpu_has_bf16_units(monkeypatch):
    assert precision.cpu_has_bf16(frozenset({"avx2", "avx512f", "amx_bf16"}))
    assert precision.cpu_has_bf16(frozenset({"avx512f", "avx512_bf16"}))
    assert not precision.cpu_has_bf16(frozenset({"avx2", "avx512f", "avx512_fp16"}))
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"sse2", "avx2"}))
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "amx_tile", "amx_bf16"}))
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    assert precision.resolve_precision("fp16", "cpu") == "fp16"  # an explicit choice is kept
    assert precision.resolve_precision("auto", "meta") == "fp32"  # unknown devices: fp32
    with pytest.raises(ValueError, match="expected one of auto, fp32, bf16, fp16"):
        precision.resolve_precision("int8", "cpu")


def test_bf16_encoder_runs_autocast_numerics_on_a_copy(tiny):
    model, processor = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fp32 = DualEncoder(model, processor, batch_size=4)
    bf16 = DualEncoder(model, processor, batch_size=4, dtype="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    # the caller's model is untouched; the copy stores matmul weights in bf16 and everything else in fp32
    assert bf16.model is not model and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    linear = bf16.model.vision_model.encoder.layers[0].mlp.fc1
    assert linear.weight.dtype == torch.bfloat16 and bf16.model.visual_projection.weight.dtype == torch.bfloat16
    # the text tower stays fp32: its features are cached per string, so bf16 would save nothing there
    assert bf16.model.text_model.encoder.layers[0].mlp.fc1.weight.dtype == torch.float32
    assert bf16.describe()["text_precision"] == "fp32"
    assert bf16.model.vision_model.post_layernorm.weight.dtype == torch.float32
    assert bf16.model.logit_scale.dtype == torch.float32
    assert bf16.logit_scale() == fp32.logit_scale()

    pictures = images(6)
    feats16, feats32 = bf16.encode_images(pictures), fp32.encode_images(pictures)
    text16, text32 = bf16.encode_texts(TEXTS), fp32.encode_texts(TEXTS)
    assert feats16.dtype == text16.dtype == torch.float32  # scores are computed in fp32
    assert torch.nn.functional.cosine_similarity(feats16, feats32).min() > 0.999
    torch.testing.assert_close(text16, text32, rtol=0, atol=0)
    assert not torch.equal(feats16, feats32)  # bf16 did run
    # exactly what torch.autocast computes on the fp32 model (weights cast once instead of per batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = DualEncoder(model, processor, batch_size=4).encode_images(pictures)
    torch.testing.assert_close(feats16, autocast, rtol=0, atol=0)


def test_model_already_laid_out_is_used_as_is(tiny):
    model, processor = tiny
    half = cast_for_precision(copy.deepcopy(model), torch.bfloat16)
    encoder = DualEncoder(half, processor, dtype="bf16")
    assert encoder.model is half and encoder.precision == "bf16"
    assert DualEncoder(half, processor).precision == "bf16"  # dtype=None: as the model is
    back = DualEncoder(half, processor, dtype="fp32")
    assert back.model is not half and {p.dtype for p in back.model.parameters()} == {torch.float32}


def test_cast_in_place_casts_the_given_model(tiny):
    model, processor = tiny
    owned = copy.deepcopy(model)
    encoder = DualEncoder(owned, processor, dtype="bf16", cast_in_place=True)
    assert encoder.model is owned and owned.vision_model.encoder.layers[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert encoder.logit_scale() == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-7)


@pytest.mark.parametrize("name, dataset", [("globalrg_retrieval", globalrg_retrieval_dataset),
                                           ("zeroshot_geode", geode_dataset),
                                           ("cultwin", lambda: cultwin_dataset()["test"])])
def test_bf16_record_names_precision_and_agrees_with_fp32(tiny, name, dataset):
    data = dataset()
    fp32 = evaluate_model(*tiny, name, data, bootstrap_resamples=50)
    bf16 = evaluate_model(*tiny, name, data, bootstrap_resamples=50, dtype="bf16")
    assert {r["model"]["precision"] for r in fp32.values()} == {"fp32"}
    assert {r["model"]["precision"] for r in bf16.values()} == {"bf16"}
    assert {r["model"]["compiled"] for r in bf16.values()} == {False}
    for task, record in fp32.items():
        # the tiny model's items: bf16 gives the same result as fp32 (a flip would move a metric by >= 1/items)
        assert bf16[task]["metrics"][record["primary_metric"]] == pytest.approx(
            record["metrics"][record["primary_metric"]], abs=1e-9), task


def test_cli_dtype_flag_reaches_the_record(tiny_dir, tmp_path):
    folder = write_folder(tmp_path / "geode", {"test": geode_dataset()})
    for dtype in ("fp32", "bf16"):
        out = tmp_path / dtype
        assert main(["run", "--model", str(tiny_dir), "--benchmarks", "zeroshot_geode", "--output-dir", str(out),
                     "--data-dir", f"zeroshot_geode={folder}", "--dtype", dtype,
                     "--bootstrap-resamples", "20"]) == 0
        (record_file,) = out.glob("*.json")
        assert json.loads(record_file.read_text())["model"]["precision"] == dtype
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--model", str(tiny_dir), "--benchmarks", "zeroshot_geode", "--output-dir", str(tmp_path),
              "--dtype", "int8"])
    assert exit_info.value.code == 2


def test_load_encoder_auto_follows_the_machine(tiny_dir):
    encoder = load_encoder(str(tiny_dir))
    assert encoder.precision == precision.resolve_precision("auto", "cpu")
    assert load_encoder(str(tiny_dir), dtype="fp32").precision == "fp32"


def _table(values: list[dict]) -> ImageTable:
    import datasets

    data = datasets.Dataset.from_dict({"image": values}, features=datasets.Features(
        {"image": datasets.Image(decode=False)}))
    table = ImageTable(data, "pipeline-test")
    for row in range(len(values)):
        table.add(ImageRef(row, "image"))
    return table


def test_worker_threads_give_the_same_features_in_order(tiny):
    table = _table([image_value(i) for i in range(11)])
    serial = DualEncoder(*tiny, batch_size=3, num_workers=0).encode_images(table)
    threaded = DualEncoder(*tiny, batch_size=3, num_workers=2).encode_images(table)
    assert threaded.shape == (11, serial.shape[1])
    torch.testing.assert_close(threaded, serial, rtol=0, atol=0)
    assert not torch.allclose(serial[0], serial[1])  # distinct images, so order matters


def test_unreadable_image_in_a_later_batch_names_its_row(tiny):
    values = [png_bytes(c) for c in COLOURS[:7]]
    values[5] = {"bytes": b"not an image", "path": None}
    encoder = DualEncoder(*tiny, batch_size=2, num_workers=2)
    with pytest.raises(EvalDataError, match=r"row 5.*unreadable image"):
        encoder.encode_images(_table(values))


def test_bad_worker_count_is_refused(tiny):
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        DualEncoder(*tiny, num_workers=-1)


@pytest.mark.slow
def test_compiled_towers_match_eager(tiny):
    model, processor = tiny
    compiled = DualEncoder(model, processor, batch_size=4, dtype="bf16", compile=True)
    assert compiled.compiled and compiled.describe()["compiled"]
    reference = DualEncoder(model, processor, batch_size=4, dtype="bf16")
    pictures = images(5)
    torch.testing.assert_close(compiled.encode_images(pictures), reference.encode_images(pictures), atol=2e-2,
                               rtol=0)
    torch.testing.assert_close(compiled.encode_texts(TEXTS), reference.encode_texts(TEXTS), atol=2e-2, rtol=0)
    assert list(compiled.model.state_dict()) == list(model.state_dict())
