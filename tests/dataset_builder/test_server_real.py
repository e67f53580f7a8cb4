"""The text and judge stages through a REAL `transformers serve` on 127.0.0.1 (extra `transformers[serving]`).

The served model is the scripted tiny LLaVA (`build_scripted_chat_vlm`): a real transformers model whose answers are
fixed per prompt type, so a build through the server produces rows. A counting proxy of our own sits in front of the
server: it counts, per exact request body, how often the server answered it. Shown: a build end to end; the server
SIGKILLed in the middle of the judge stage and restarted, the build riding it out with no answered request asked
again; the build itself SIGKILLed mid-stage and rerun, asking only what its answer log did not hold.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from builder_helpers import REPO, rows_fingerprint
from server_helpers import SCRIPTED_ANSWERS, CountingProxy

from dataset_builder.backends.answer_log import AnswerLog, request_key
from dataset_builder.backends.local_server import TransformersServer
from dataset_builder.backends.tiny import build_scripted_chat_vlm
from dataset_builder.pipeline import build

pytest.importorskip("fastapi", reason="needs transformers[serving] (pip install -e '.[test]')")
pytestmark = pytest.mark.slow

COUNTRIES = ["JP", "PE", "KE", "FR", "BR", "IN", "NG", "MX"]
# 8 concepts + 8 twins + 9 caption requests (8 concepts + the one shared twin) + 36 judged images
EXPECTED_REQUESTS = 8 + 8 + 9 + 36


def write_recipe(path: Path, model_dir: Path, url: str) -> Path:
    server = {"kind": "openai-server", "model_id": str(model_dir),
              "options": {"base_urls": [url], "max_in_flight": 4, "max_retries": 60, "backoff_s": 0.1,
                          "max_backoff_s": 1.0, "timeout_s": 60, "deterministic": True, "max_new_tokens": 16}}
    recipe = {
        "name": "server-test", "seed": 3, "text_backend": server, "judge_backend": server,
        "image_backend": {"kind": "offline-twemoji", "options": {"flag_when_missing": True}},
        "text_batch_size": 8,
        "concepts": {"source": "top-down", "countries": COUNTRIES, "categories": ["Cuisine"]},
        "twins": {"embedder": "offline-hashed-ngram", "min_feature_similarity": 0.3},
        "captions": {"per_side": 4},
        "images": {"width": 64, "height": 64, "batch_size": 16},
        "judge": {"prompt": "judge.v2", "batch_size": 16},
        "export": {"license": "cc-by-4.0", "pretty_name": "server test"},
    }
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    model_dir = build_scripted_chat_vlm(root / "scripted-llava", SCRIPTED_ANSWERS)
    server = TransformersServer(model_dir, root / "serve.log")
    server.start()
    try:
        with CountingProxy(server.url) as proxy:
            yield model_dir, server, proxy, root
    finally:
        server.stop()


def logged_keys(out: Path) -> set[str]:
    return AnswerLog(out / "run" / "answers").keys()


def test_build_end_to_end_then_server_killed_mid_stage(served, tmp_path):
    model_dir, server, proxy, root = served
    recipe = write_recipe(tmp_path / "recipe.yaml", model_dir, proxy.url)

    proxy.reset()
    log_before = server.answered_in_log()
    summary = build(recipe, tmp_path / "reference", progress=False)
    assert summary["total_rows"] == 8 * 4  # every server answer parsed and kept
    assert summary["statistics"]["judge"]["criteria"]["consistency"] == {"mean": 5.0, "std": 0.0, "n": 36,
                                                                         "at_most_1": 0}
    assert sum(proxy.answered.values()) == EXPECTED_REQUESTS and set(proxy.answered.values()) == {1}
    assert server.answered_in_log() - log_before == EXPECTED_REQUESTS  # the server's own access log agrees
    assert summary["servers"]["judge"]["answered"] == 36 and summary["memory"]["loads"] == ["text", "image", "judge"]
    assert len(logged_keys(tmp_path / "reference")) == EXPECTED_REQUESTS
    from datasets import load_dataset

    ds = load_dataset(str(tmp_path / "reference"), cache_dir=str(tmp_path / "hf-cache"))  # no stale cache hit
    row = ds["train"][0]
    assert row["text_model"] == str(model_dir) and row["judge_scores"] == {"authenticity": 4, "consistency": 5,
                                                                           "cultural_fidelity": 4}

    # Same build in a new folder; after the 40th answer (inside the judge stage) the server is SIGKILLed and started
    # again a second later. The build keeps retrying (502 from the proxy, then answers) and finishes.
    proxy.reset()
    restarted = threading.Event()

    def crash_and_restart() -> None:
        server.kill()
        time.sleep(1.0)
        server.start()
        restarted.set()

    def on_answer(n: int) -> None:
        if n == 40:
            threading.Thread(target=crash_and_restart, daemon=True).start()

    proxy.on_answer = on_answer
    try:
        summary = build(recipe, tmp_path / "crashed", progress=False)
    finally:
        proxy.on_answer = None
    assert restarted.wait(120) and server.starts >= 2
    assert proxy.statuses[502] > 0  # requests did hit the dead server
    assert set(proxy.answered.values()) == {1} and sum(proxy.answered.values()) == EXPECTED_REQUESTS
    assert summary["servers"]["judge"]["retries"] > 0
    assert rows_fingerprint(tmp_path / "crashed") == rows_fingerprint(tmp_path / "reference")


def test_killed_build_resumes_without_asking_twice(served, tmp_path):
    model_dir, server, proxy, root = served
    recipe = write_recipe(tmp_path / "recipe.yaml", model_dir, proxy.url)
    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "DATASET_BUILDER_FSYNC": "0"}
    cmd = [sys.executable, "-m", "dataset_builder", "build", "--recipe", str(recipe), "--output-dir", str(out),
           "--no-progress"]
    proxy.reset()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while sum(proxy.answered.values()) < 30 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    proxy.wait_idle()  # requests of the dead process still being answered count for the first round
    have = logged_keys(out)
    assert 0 < len(have) < EXPECTED_REQUESTS
    first_round = dict(proxy.answered)
    proxy.reset()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    # Nothing the killed run had recorded was sent again; together the two runs asked each request once, except
    # those answered just as the kill landed (answered by the server, never recorded by the dead process).
    sent_again = set(proxy.sent)
    assert not sent_again & have
    assert set(first_round) | sent_again >= logged_keys(out) and len(logged_keys(out)) == EXPECTED_REQUESTS
    assert len(set(first_round) & sent_again) <= 4  # at most the max_in_flight requests cut off by the kill
    assert set(proxy.answered.values()) == {1}
    assert json.loads(res.stdout.strip().splitlines()[-1])["total_rows"] == 32


def test_request_keys_match_the_bodies_the_server_sees(served, tmp_path):
    """The answer-log key is the sha256 of the body as sent, so the proxy's per-body counts are the log's keys."""
    model_dir, server, proxy, root = served
    out = tmp_path / "keys"
    proxy.reset()
    build(write_recipe(tmp_path / "r.yaml", model_dir, proxy.url), out, progress=False)
    log = AnswerLog(out / "run" / "answers")
    records = [log.get(key) for key in log.keys()]
    assert {r["key"] for r in records} == logged_keys(out)
    assert all(r["served_model"] == str(model_dir) and r["finish_reason"] == "stop" for r in records)
    assert len(set(proxy.answered)) == len(records)
    assert request_key({"a": 1}) != request_key({"a": 2})
