"""The inference-server backend against loopback stubs: retries on 429/500 and connection errors, fail-fast on other
4xx, bounded concurrency, several base URLs, the answer log. (The real-server cases are in test_server_real.py.)"""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
from PIL import Image
from server_helpers import StubServer

from dataset_builder.backends.answer_log import AnswerLog
from dataset_builder.backends.local_server import free_port
from dataset_builder.backends.base import ChatRequest
from dataset_builder.backends.openai_server import OpenAIChatBackend, ServerError, openai_messages


def _requests(n: int, image: bool = False) -> list[ChatRequest]:
    out = []
    for i in range(n):
        content = [{"type": "text", "text": f"question {i}"}]
        if image:
            content.insert(0, {"type": "image", "image": Image.new("RGB", (8, 6), (i, 2 * i, 3))})
        out.append(ChatRequest("judge", [{"role": "user", "content": content}], seed=100 + i))
    return out


def _backend(urls, **kw) -> OpenAIChatBackend:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("max_backoff_s", 0.05)
    return OpenAIChatBackend(urls, "served-model", **kw)


def test_429_and_500_are_retried_until_answered():
    with StubServer(failures=[429, 500, 503]) as stub:
        backend = _backend(stub.url)
        answers = backend.generate(_requests(3))
    assert answers == ['{"ok": true}'] * 3
    assert sorted(stub.attempts.values()) == [4, 4, 4]  # 429, 500, 503, then 200 for every request
    assert backend.stats["retries"] == 9 and backend.stats["answered"] == 3
    assert backend.stats["http_429"] == 3 and backend.stats["http_500"] == 3


def test_other_client_errors_stop_at_once_and_retries_are_bounded():
    with StubServer(failures=[400]) as stub:
        with pytest.raises(ServerError, match=r"HTTP 400.*not retried"):
            _backend(stub.url).generate(_requests(1))
        assert sum(stub.attempts.values()) == 1
    with StubServer(failures=[500] * 10) as stub:
        with pytest.raises(ServerError, match=r"no answer after 3 retries.*HTTP 500"):
            _backend(stub.url, max_retries=3).generate(_requests(1))
        assert sum(stub.attempts.values()) == 4


def test_requests_are_kept_in_flight_up_to_the_limit():
    with StubServer(delay_s=0.25) as stub:
        backend = _backend(stub.url, max_in_flight=8)
        started = time.perf_counter()
        answers = backend.generate(_requests(16))
        elapsed = time.perf_counter() - started
    assert len(answers) == 16 and stub.peak_in_flight == 8
    assert elapsed < 16 * 0.25 / 2  # two waves of 8, not 16 one after the other


def test_several_urls_share_the_load_and_a_dead_one_is_skipped():
    with StubServer() as a, StubServer() as b:
        backend = _backend([a.url, b.url], max_in_flight=4)
        backend.generate(_requests(8))
        assert sum(a.attempts.values()) == 4 and sum(b.attempts.values()) == 4
    dead = f"http://127.0.0.1:{free_port()}"
    with StubServer() as alive:
        backend = _backend([dead, alive.url], max_in_flight=4)
        assert backend.generate(_requests(6)) == ['{"ok": true}'] * 6
        assert backend.stats["connection_errors"] == 3 and sum(alive.attempts.values()) == 6


def test_a_server_that_comes_back_is_waited_for():
    port = free_port()
    backend = _backend(f"http://127.0.0.1:{port}", backoff_s=0.2, max_backoff_s=0.4, max_retries=20)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(answers=backend.generate(_requests(2))))
    thread.start()
    time.sleep(1.0)  # connection refused meanwhile, as while a server restarts
    with StubServer(port=port) as stub:
        thread.join(timeout=30)
    assert result["answers"] == ['{"ok": true}'] * 2
    assert backend.stats["connection_errors"] >= 2 and sum(stub.attempts.values()) == 2


def test_answer_log_means_no_request_is_sent_twice(tmp_path):
    log = AnswerLog(tmp_path / "answers")
    with StubServer() as stub:
        first = _backend(stub.url, answer_log=log).generate(_requests(5, image=True))
        assert len(log) == 5
        again = _backend(stub.url, answer_log=log).generate(_requests(5, image=True))
        more = _backend(stub.url, answer_log=log).generate(_requests(7, image=True))
    assert first == again == more[:5]
    assert sum(stub.attempts.values()) == 7  # 5, then 0, then only the 2 new ones
    record = json.loads(next((tmp_path / "answers").glob("*/*.json")).read_text())
    assert record["answer"] == '{"ok": true}' and record["finish_reason"] == "stop" and record["task"] == "judge"


def test_images_travel_as_png_data_urls_and_sampling_settings_are_sent():
    picture = Image.new("RGB", (5, 4), (10, 20, 30))
    messages = openai_messages([{"role": "user", "content": [{"type": "image", "image": picture},
                                                             {"type": "text", "text": "hi"}]}])
    url = messages[0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (5, 4) and decoded.getpixel((0, 0)) == (10, 20, 30)
    request = _requests(1)[0]
    greedy = _backend("http://127.0.0.1:1").request_body(request, 64)
    sampled = _backend("http://127.0.0.1:1", deterministic=False, temperature=0.7, top_p=0.9).request_body(request, 512)
    assert (greedy["temperature"], greedy["max_tokens"], greedy["seed"]) == (0.0, 64, 100)
    assert (sampled["temperature"], sampled["top_p"], sampled["max_tokens"]) == (0.7, 0.9, 512)
    with pytest.raises(ValueError, match="base URL"):
        OpenAIChatBackend("localhost:8000", "m")
    with pytest.raises(ServerError, match="environment variable is empty"):
        _backend("http://127.0.0.1:1", api_key_env="CULTURECLIP_TEST_NO_SUCH_TOKEN").generate(_requests(1))


def test_cli_reports_a_dead_server_in_one_line(tmp_path):
    import yaml
    from builder_helpers import run_cli

    server = {"kind": "openai-server", "model_id": "m",
              "options": {"base_urls": [f"http://127.0.0.1:{free_port()}"], "max_retries": 1, "backoff_s": 0.01}}
    recipe = {"name": "dead", "seed": 0, "text_backend": server, "judge_backend": server,
              "image_backend": {"kind": "offline-twemoji"},
              "concepts": {"source": "top-down", "countries": ["JP"], "categories": ["Cuisine"]}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    res = run_cli(["build", "--recipe", str(tmp_path / "r.yaml"), "--output-dir", str(tmp_path / "out"), "--no-progress"])
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "no answer after 1 retries" in res.stderr and "rerun the same command to resume" in res.stderr
