"""End-to-end demo builds through the CLI: load_dataset, kill/resume, two processes, push."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from builder_helpers import REPO, rows_fingerprint, run_cli

SCHEMA = {"pair_id", "sample_index", "concept_id", "concept", "country", "iso_code", "continent", "subregion",
          "category", "context", "visual_features", "caption", "all_captions", "image", "seed", "judge_scores",
          "twin_concept_id", "twin_concept", "twin_country", "twin_iso_code", "twin_continent", "twin_subregion",
          "twin_context", "twin_visual_features", "twin_caption", "twin_all_captions", "twin_image", "twin_seed",
          "twin_judge_scores", "source", "text_model", "image_model"}


def test_load_dataset_in_fresh_process(reference_build):
    code = f"""
import json
from datasets import load_dataset
from huggingface_hub import DatasetCard
ds = load_dataset({str(reference_build)!r})
card = DatasetCard.load({str(reference_build / 'README.md')!r})
r = ds["train"][0]
print(json.dumps({{"splits": sorted(ds), "cols": ds["train"].column_names,
  "pairs": {{s: sorted(set(ds[s]["pair_id"])) for s in ds}}, "n": {{s: ds[s].num_rows for s in ds}},
  "img": list(r["image"].size), "scores": r["judge_scores"], "license": card.data.license,
  "configs": card.data.configs, "info": bool(card.data.dataset_info)}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd="/")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["splits"] == ["test", "train", "validation"]
    assert set(out["cols"]) == SCHEMA
    assert all(n > 0 for n in out["n"].values())
    pairs = out["pairs"]
    assert not set(pairs["train"]) & set(pairs["test"]) and not set(pairs["train"]) & set(pairs["validation"])
    assert not set(pairs["validation"]) & set(pairs["test"])
    assert out["img"] == [64, 64] and set(out["scores"]) == {"authenticity", "consistency", "cultural_fidelity"}
    assert out["license"] == "cc-by-4.0" and out["info"]
    assert {d["split"] for d in out["configs"][0]["data_files"]} == {"train", "validation", "test"}


def test_rows_are_consistent_twin_samples(reference_build):
    rows = [r for split in rows_fingerprint(reference_build).values() for r in split]
    prov = json.loads((reference_build / "provenance.json").read_text())
    for r in rows:
        assert r["iso_code"] != r["twin_iso_code"]
        assert r["caption"] == r["all_captions"][r["sample_index"]]
        assert r["twin_caption"] == r["twin_all_captions"][r["sample_index"]]
        assert min(r["judge_scores"].values()) > 1 and sum(r["judge_scores"].values()) / 3 > 3
        assert min(r["twin_judge_scores"].values()) > 1 and sum(r["twin_judge_scores"].values()) / 3 > 3
        assert r["source"] == "curated" and r["image_model"] == "offline/twemoji-augment"
    assert prov["seed"] == 7 and "captions.v1" in prov["prompts"]
    assert prov["statistics"]["judge"]["judged"] >= len(rows)


def _count_files(folder: Path) -> int:
    n = 0
    for root, _, files in os.walk(folder):
        n += sum(1 for f in files if not f.startswith(".tmp-"))
    return n


def test_sigkill_resume_matches_uninterrupted_build(reference_build, tmp_path):
    out = tmp_path / "killed"
    rng = random.Random(1234)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "dataset_builder", "build", "--recipe", "demo", "--output-dir", str(out),
           "--limit-pairs", "4", "--seed", "7", "--no-progress"]
    total = _count_files(reference_build / "run") + 4
    thresholds = sorted(rng.sample(range(3, total - 10), 5))
    kills = 0
    for threshold in thresholds:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and _count_files(out) < threshold:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        if kills >= 3 and threshold == thresholds[-1]:
            break
    assert kills >= 3
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert rows_fingerprint(out) == rows_fingerprint(reference_build)
    # a second resume does no work and changes nothing
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert res.returncode == 0 and rows_fingerprint(out) == rows_fingerprint(reference_build)


def test_two_processes_merge_to_the_one_process_rows(reference_build, tmp_path):
    out = tmp_path / "two"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "WORLD_SIZE": "2"}
    cmd = [sys.executable, "-m", "dataset_builder", "build", "--recipe", "demo", "--output-dir", str(out),
           "--limit-pairs", "4", "--seed", "7", "--no-progress"]
    procs = [subprocess.Popen(cmd, cwd=REPO, env={**env, "RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert rows_fingerprint(out) == rows_fingerprint(reference_build)
    shares = [json.loads((out / "run/images" / f"rank-{r}-of-2.json").read_text()) for r in range(2)]
    assert all(s["processed_this_run"] > 0 for s in shares)  # both ranks really did work


def test_push_dry_run_and_real_call_with_network_methods_patched(reference_build, monkeypatch):
    res = run_cli(["push", str(reference_build), "--repo-id", "org/cultwin-demo", "--dry-run"])
    assert res.returncode == 0, res.stderr
    assert "README.md" in res.stdout and "data/train-00000-of-00001.parquet" in res.stdout
    assert "run/" not in res.stdout and "would upload" in res.stdout

    from huggingface_hub import HfApi

    from dataset_builder.push import push

    calls = {}

    def fake_create_repo(self, repo_id, **kw):
        calls["create"] = (repo_id, kw)
        return f"https://huggingface.co/datasets/{repo_id}"

    def fake_upload_folder(self, **kw):
        calls["upload"] = kw
        return type("Commit", (), {"oid": "abc123"})()

    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    result = push(reference_build, "org/cultwin-demo", private=True)
    assert calls["create"] == ("org/cultwin-demo", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert calls["upload"]["repo_type"] == "dataset" and "data/*.parquet" in calls["upload"]["allow_patterns"]
    assert not any("run" in p for p in calls["upload"]["allow_patterns"])
    assert result["uploaded"] and result["commit"] == "abc123"


def test_cli_bad_recipe_exits_nonzero(tmp_path):
    res = run_cli(["build", "--recipe", "nonexistent", "--output-dir", str(tmp_path / "x")])
    assert res.returncode == 2 and "packaged recipes" in res.stderr
