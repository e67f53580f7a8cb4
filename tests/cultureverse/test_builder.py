"""The CultureVerse-style benchmark builder: offline build, strict parsing, resume, real chat backend, bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import datasets
import pytest

from dataset_builder.backends.offline import TwemojiImageSource
from dataset_builder.backends.transformers_chat import TransformersChatBackend
from dataset_builder.cultureverse import (
    BuildSettings, CultureVerseTemplateWriter, build_cultureverse, load_concept_catalog, parse_cultureverse,
    recognition_distractors, request_fields,
)
from dataset_builder.cultureverse_export import BenchmarkRowError, validate_row
from dataset_builder.parsing import Rejected
from dataset_builder.runstore import StageStore
from dataset_builder.twin_catalog import CatalogError

from cultureverse_helpers import REPO, load_vlm, subprocess_env


def _split_hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "data").glob("*.parquet"))}


def test_built_benchmark_loads_and_splits_by_concept(offline_benchmark):
    ds = datasets.load_dataset(str(offline_benchmark))
    assert set(ds) == {"train", "validation", "test"}
    concepts = {split: set(ds[split]["concept_id"]) for split in ds}
    assert not concepts["train"] & concepts["test"]
    assert not concepts["train"] & concepts["validation"] and not concepts["validation"] & concepts["test"]
    assert sum(len(c) for c in concepts.values()) == 24
    row = ds["test"][0]
    assert row["image"].size == (48, 48)
    for split in ds:
        for r in ds[split].remove_columns("image"):
            assert len(r["options"]) == 4 and len(set(r["options"])) == 4
            assert r["answer"] in "ABCD"
            assert r["question_type"] in ("recognition", "cultural_knowledge", "scene_reasoning")
            assert r["continent"] and r["iso_code"] and r["category"] and r["rationale"]
            if r["question_type"] == "recognition":
                assert r["options"]["ABCD".index(r["answer"])] == r["concept"]
            else:
                assert r["concept"].casefold() not in r["question"].casefold()
        types = {}
        for r in ds[split].select_columns(["concept_id", "question_type"]):
            types.setdefault(r["concept_id"], []).append(r["question_type"])
        assert all(sorted(t) == ["cultural_knowledge", "recognition", "scene_reasoning"] for t in types.values())
    card = (offline_benchmark / "README.md").read_text()
    assert "configs:" in card and "dataset_info:" in card and "Twemoji" in card


def test_answer_positions_are_spread(offline_benchmark):
    ds = datasets.load_dataset(str(offline_benchmark))["train"]
    letters = {qt: set() for qt in ("recognition", "cultural_knowledge", "scene_reasoning")}
    for r in ds.select_columns(["answer", "question_type"]):
        letters[r["question_type"]].add(r["answer"])
    assert all(len(v) >= 3 for v in letters.values()), letters


def test_rebuild_resumes_and_gives_identical_files(offline_benchmark, tmp_path):
    before = _split_hashes(offline_benchmark)
    summary = build_cultureverse(offline_benchmark, CultureVerseTemplateWriter(), TwemojiImageSource(width=48, height=48),
                                 settings=BuildSettings(seed=3, limit=24))
    assert summary["statistics"]["this_session"] == {"resumed": 24}
    assert _split_hashes(offline_benchmark) == before
    with pytest.raises(ValueError, match="different settings"):
        build_cultureverse(offline_benchmark, CultureVerseTemplateWriter(), TwemojiImageSource(width=48, height=48),
                           settings=BuildSettings(seed=4, limit=24))


def test_distractors_prefer_twins_and_same_category():
    catalog = load_concept_catalog()
    import numpy as np

    chad = "TD:flag of chad"
    picked = recognition_distractors(chad, catalog, np.random.default_rng(0))
    assert picked[0] == "flag of Romania" and len(picked) == 3
    assert all(catalog.concepts[next(c for c in catalog.concepts if catalog.concepts[c].concept == p)].category
               == "Symbol" for p in picked)


def _good_answer(fields):
    return CultureVerseTemplateWriter().generate([_request(fields)])[0]


def _request(fields):
    from dataset_builder.backends.base import ChatRequest

    return ChatRequest("cultureverse_mcq", [{"role": "user", "content": "x"}], fields=fields, seed=5)


def test_strict_parser_accepts_the_format_and_rejects_deviations():
    fields = request_fields("JP:kimono", load_concept_catalog(), seed=1)
    good = json.loads(_good_answer(fields))
    assert parse_cultureverse(json.dumps(good), fields)["recognition"]["answer"] == fields["recognition_answer"]

    def rejected(mutate) -> str:
        obj = json.loads(json.dumps(good))
        mutate(obj)
        with pytest.raises(Rejected) as info:
            parse_cultureverse(json.dumps(obj) if isinstance(obj, dict) else obj, fields)
        return info.value.reason

    assert rejected(lambda o: o["recognition"]["options"].reverse()) == "recognition:options_changed"
    assert rejected(lambda o: o["cultural_knowledge"]["options"].pop()) == "cultural_knowledge:bad_options"
    assert rejected(lambda o: o["scene_reasoning"].update(answer="E")) == "scene_reasoning:bad_answer_letter"
    assert rejected(lambda o: o["cultural_knowledge"].update(question="Where is the kimono from?")) == \
        "cultural_knowledge:question_names_concept"
    assert rejected(lambda o: o.pop("description")) == "missing_field:description"
    assert rejected(lambda o: o["scene_reasoning"].pop("rationale")) == "scene_reasoning:missing_field:rationale"
    with pytest.raises(Rejected, match="extra_text"):
        parse_cultureverse("Sure! " + json.dumps(good), fields)


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl"])
def test_real_chat_backend_on_tiny_vlm_counts_rejections(family, tiny_vlm_dirs, tmp_path):
    model, processor = load_vlm(tiny_vlm_dirs[family])
    backend = TransformersChatBackend(model, processor, model_id=f"tiny-{family}", batch_size=2)
    out = tmp_path / "cv"
    # Random weights write gibberish: every answer is a counted rejection, and export refuses an empty benchmark.
    with pytest.raises(ValueError, match=r"only 0 concept\(s\) passed question parsing"):
        build_cultureverse(out, backend, TwemojiImageSource(width=32, height=32),
                           settings=BuildSettings(seed=0, limit=2, batch_size=2, max_new_tokens=12))
    records = StageStore(out / "run", "cultureverse_mcq").all_records()
    assert len(records) == 2
    assert all(r["status"] == "rejected" and r["reason"] for r in records)
    assert not (out / "data").exists() or not list((out / "data").glob("*.parquet"))


def test_user_catalog_errors_name_the_row(tmp_path):
    path = tmp_path / "cat.jsonl"
    good = {"concept": "bao", "iso_code": "CN", "category": "Cuisine", "context": "steamed bun", "visual_features": "white"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "concept": "taco", "category": ""}) + "\n")
    with pytest.raises(CatalogError, match=r"line 2.*category"):
        load_concept_catalog(path)
    path.write_text(json.dumps({**good, "twins": ["nope"]}) + "\n")
    with pytest.raises(CatalogError, match="unknown twin 'nope'"):
        load_concept_catalog(path)


def _row(**over):
    row = {"question": "What is shown?", "options": ["a", "b", "c", "d"], "answer": "B", "concept": "bao",
           "question_type": "recognition", "image": {"bytes": b"png", "path": None}}
    row.update(over)
    return row


@pytest.mark.parametrize("over,message", [
    ({"answer": None}, "no answer key"),
    ({"answer": "E"}, "not among the options"),
    ({"image": None}, "'image' is missing"),
    ({"image": {"bytes": None, "path": None}}, "'image' is missing"),
])
def test_bad_rows_raise_naming_the_row(over, message):
    with pytest.raises(BenchmarkRowError, match=message) as info:
        validate_row(_row(**over), 7)
    assert "row 7" in str(info.value) and "'bao'" in str(info.value)


def test_cli_builds_offline(tmp_path):
    out = tmp_path / "cli"
    res = subprocess.run([sys.executable, "-m", "dataset_builder", "build-cultureverse", "--output-dir", str(out),
                          "--text-backend", "offline-template", "--limit", "6", "--image-size", "32"],
                         cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert sum(summary["rows"].values()) == 18
    bad = subprocess.run([sys.executable, "-m", "dataset_builder", "build-cultureverse", "--output-dir",
                          str(tmp_path / "x"), "--text-backend", "offline-template", "--catalog", str(tmp_path / "no.yaml")],
                         cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no.yaml" in bad.stderr
