"""`python -m dataset_builder import-release`: the authors' released JSON layout becomes our Hub schema; gaps are
null and counted; train.py accepts the rows and load_dataset reads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch

from dataset_builder.release_import import ReleaseImportError, import_release
from dataset_builder.schema import row_features
from modeling_cultureclip import CultureCLIPModel
from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of
from release_fixtures import AUTHORS_ROOT, release_texts, write_release

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    return write_release(tmp_path_factory.mktemp("release"), validation_pairs=1)


@pytest.fixture(scope="module")
def imported(released, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("imported") / "cultwin"
    return out, import_release(released, out, source_id="lukahh/CulTwin", revision="0123abc", rows_per_shard=5)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "dataset_builder", "import-release", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_rows_follow_our_schema_with_gaps_null_and_counted(imported):
    out, summary = imported
    loaded = datasets.load_dataset(str(out))
    assert set(loaded) == {"train", "validation"}
    assert loaded["train"].features == row_features()
    assert (loaded.num_rows["train"], loaded.num_rows["validation"]) == (12, 4)  # 3 + 1 pairs, 2 x 2 captions each
    shards = sorted(p.name for p in (out / "data").glob("*.parquet"))
    assert shards == ["train-00000-of-00003.parquet", "train-00001-of-00003.parquet", "train-00002-of-00003.parquet",
                      "validation-00000-of-00001.parquet"]

    train = loaded["train"]
    row = train[0]
    assert (row["concept"], row["twin_concept"], row["pair_id"]) == ("jiaozi", "pierogi", "release-id_000000")
    assert row["concept_id"] == "release:jiaozi" and row["caption"] == "a jiaozi at a busy market"
    assert row["all_captions"] == ["a jiaozi at a busy market", "a jiaozi on a sunny street"]
    assert row["visual_features"] == "crescent shape; pleated edge" and row["context"].startswith("a dumpling")
    assert row["image"].size == (20, 20) and row["twin_image"].size == (20, 20)
    for name in ("country", "iso_code", "continent", "subregion", "seed", "judge_scores", "twin_country",
                 "twin_iso_code", "twin_continent", "twin_subregion", "twin_seed", "twin_judge_scores",
                 "twin_visual_features", "text_model", "image_model"):
        assert set(train[name]) == {None}, name  # nothing invented
    assert sorted(train["sample_index"][:4]) == [0, 1, 2, 3]
    assert "Animals & Plants" in train["category"] and "Animal & Plants" not in train["category"]

    stats = summary["statistics"]
    assert stats["null_fields"]["country"] == 16 and stats["null_fields"]["twin_visual_features"] == 16
    assert stats["categories_mapped"] == {"Animal & Plants -> Animals & Plants": 4}
    assert stats["pairs"] == {"train": 3, "validation": 1} and stats["pairs_in_several_splits"] == 0
    card = (out / "README.md").read_text()
    assert "| `country` | 16 | 100.0% |" in card and "lukahh/CulTwin" in card and "0123abc" in card
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["files"] == ["train.jsonl", "val.jsonl"] and provenance["revision"] == "0123abc"


def test_the_pair_with_authors_absolute_paths_is_rebased(imported):
    out, _ = imported
    hanbok = datasets.load_dataset(str(out), split="train").filter(lambda r: r["concept"] == "hanbok")
    assert len(hanbok) == 4 and all(im.size == (20, 20) for im in hanbok["twin_image"])


def test_train_py_accepts_the_imported_rows(imported, tmp_path):
    import train as train_program

    out, _ = imported
    tokenizer = build_word_tokenizer(words_of(release_texts()))
    torch.manual_seed(0)
    model_dir = tmp_path / "tiny"
    CultureCLIPModel(tiny_config(len(tokenizer))).save_pretrained(model_dir)
    tiny_processor(tokenizer).save_pretrained(model_dir)
    status = train_program.main(["--recipe", "release-b32", "--model", str(model_dir), "--dataset", str(out),
                                 "--output_dir", str(tmp_path / "run"), "--per_device_batch_size", "4",
                                 "--micro_batches", "2", "--max_steps", "2", "--warmup_steps", "0",
                                 "--save_artifacts", "false", "--progress_bar", "false", "--report_to", "none",
                                 "--checkpoint_every", "0"])
    assert status == 0
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all(row["loss"] > 0 for row in history)


def test_existing_output_is_kept_without_overwrite(released, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = _cli(str(released), "--output-dir", str(out))
    assert result.returncode == 2 and "exists and is not empty; pass --overwrite" in result.stderr
    assert (out / "mine.txt").read_text() == "keep me"
    assert "Traceback" not in result.stderr
    import_release(released, out, overwrite=True)
    assert not (out / "mine.txt").exists() and (out / "README.md").is_file()


def test_missing_image_stops_with_row_and_field_or_is_dropped_and_counted(tmp_path):
    source = write_release(tmp_path / "release")
    (source / "images" / "id_000002" / "neg_1.png").unlink()
    with pytest.raises(ReleaseImportError, match=r"train.jsonl, row 9, field 'neg_image_path'.*neg_1.png.*not found"):
        import_release(source, tmp_path / "a")
    assert not (tmp_path / "a").exists() and not (tmp_path / ".tmp-a").exists()
    summary = import_release(source, tmp_path / "b", skip_missing_images=True)
    assert summary["rows"] == {"train": 14} and summary["statistics"]["rows_dropped"] == {
        "neg_image_missing_or_unreadable": 2}
    assert "neg_image_missing_or_unreadable" in (tmp_path / "b" / "README.md").read_text()


def test_bad_rows_and_escaping_paths_are_named(tmp_path):
    source = write_release(tmp_path / "release")
    lines = (source / "train.jsonl").read_text().splitlines()
    broken = json.loads(lines[3])
    del broken["pos_caption"]
    (source / "train.jsonl").write_text("\n".join(lines[:3] + [json.dumps(broken)] + lines[4:]) + "\n")
    with pytest.raises(ReleaseImportError, match=r"train.jsonl, row 3, field 'pos_caption': expected a non-empty"):
        import_release(source, tmp_path / "a")

    escaping = json.loads(lines[0])
    outside = tmp_path / "secret.png"
    outside.write_bytes((source / "images" / "id_000000" / "pos_0.png").read_bytes())
    escaping["pos_image_path"] = "../secret.png"
    (source / "train.jsonl").write_text(json.dumps(escaping) + "\n")
    with pytest.raises(ReleaseImportError, match=r"'../secret.png' not found under"):
        import_release(source, tmp_path / "b")
    assert AUTHORS_ROOT.startswith("/")


def test_matched_combinations_keep_caption_k_with_twin_caption_k(released, tmp_path):
    summary = import_release(released, tmp_path / "matched", combinations="matched")
    assert summary["rows"] == {"train": 6, "validation": 2}
    assert summary["statistics"]["rows_left_out"] == {"unmatched_caption_combination": 8}
    rows = datasets.load_dataset(str(tmp_path / "matched"), split="train")
    assert [r.split()[-1] for r in rows["caption"][:2]] == ["market", "street"]
    assert [r.split()[-1] for r in rows["twin_caption"][:2]] == ["street", "kitchen"]
    with pytest.raises(ReleaseImportError, match="combinations='pairs'"):
        import_release(released, tmp_path / "x", combinations="pairs")
