"""Loopback servers for the inference-server backend tests: a real `transformers serve`, a counting proxy in front of
it, and a scripted stub (only for the 429/500/concurrency cases a real server cannot be made to produce on cue).

Everything binds 127.0.0.1 on a free port, and every process or thread started here is stopped in a finally.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable



def body_key(data: bytes) -> str:
    """sha256 of a request body as sent."""
    return hashlib.sha256(data).hexdigest()

SCRIPTED_ANSWERS = {
    # trigger (a substring only that prompt contains) -> the fixed answer of the scripted VLM
    '"twin_concept"': json.dumps({"twin_concept": "Icelandic festival loaf", "twin_country": "Iceland",
                                  "twin_context": "A loaf Icelanders bake for winter feasts.",
                                  "twin_visual_features": "round loaf; golden crust; braided top"}),
    '{"captions"': json.dumps({"captions": ["Round loaf with a golden crust at a busy market",
                                            "Braided top bread on a kitchen table",
                                            "Golden crust loaf at a village festival",
                                            "Round loaf beside a family dinner"]}),
    '"authenticity"': json.dumps({"authenticity": 4, "consistency": 5, "cultural_fidelity": 4}),
    '"concept": "<short name>"': json.dumps({"concept": "festival bread",
                                             "context": "A round bread baked for village festivals.",
                                             "visual_features": "round loaf; golden crust; braided top"}),
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class CountingProxy:
    """Forwards POST /v1/chat/completions and GET /health to `upstream`; counts per request body what happened.

    `answered[key]` counts 200 answers relayed for that body, `sent[key]` every attempt; an upstream that refuses the
    connection gives the client a 502, as a load balancer in front of a restarting server would. `on_answer(n)` is
    called after the n-th relayed 200 (used to kill the server at a fixed point of a stage).
    """

    def __init__(self, upstream: str, on_answer: Callable[[int], None] | None = None):
        self.upstream = upstream
        self.on_answer = on_answer
        self.sent: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.in_flight = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, data = proxy._forward("GET", self.path, None)
                self._reply(status, data)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = body_key(body)
                with proxy.lock:
                    proxy.sent[key] += 1
                    proxy.in_flight += 1
                status, data = proxy._forward("POST", self.path, body)
                n = None
                with proxy.lock:
                    proxy.in_flight -= 1
                    proxy.statuses[status] += 1
                    if status == 200:
                        proxy.answered[key] += 1
                        n = sum(proxy.answered.values())
                self._reply(status, data)
                if n is not None and proxy.on_answer is not None:
                    proxy.on_answer(n)

            def _reply(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _forward(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        host, port = self.upstream.split("//", 1)[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            return 502, json.dumps({"error": f"upstream unavailable: {exc}"}).encode()
        finally:
            conn.close()

    def wait_idle(self, timeout_s: float = 60.0) -> None:
        """Wait until no forwarded request is still open (e.g. those of a client that was just killed)."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.in_flight:
            raise TimeoutError(f"{self.in_flight} proxied requests still open after {timeout_s} s")

    def reset(self) -> None:
        with self.lock:
            self.sent.clear()
            self.answered.clear()
            self.statuses.clear()

    def __enter__(self) -> "CountingProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


class StubServer:
    """A scripted OpenAI-style endpoint: `script(attempt_of_this_body)` -> (status, headers) before answering 200.

    Records per-body attempts and the peak number of requests in flight (each answer waits `delay_s`).
    """

    def __init__(self, failures: list[int] | None = None, delay_s: float = 0.0, port: int = 0,
                 answer: str = '{"ok": true}', retry_after: str | None = "0"):
        self.failures = failures or []
        self.delay_s = delay_s
        self.answer = answer
        self.retry_after = retry_after
        self.attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = body_key(body)
                with stub.lock:
                    attempt = stub.attempts[key]
                    stub.attempts[key] += 1
                    stub.in_flight += 1
                    stub.peak_in_flight = max(stub.peak_in_flight, stub.in_flight)
                try:
                    time.sleep(stub.delay_s)
                    if attempt < len(stub.failures):
                        status = stub.failures[attempt]
                        data = json.dumps({"error": f"scripted {status}"}).encode()
                    else:
                        status = 200
                        data = json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                                        "message": {"role": "assistant", "content": stub.answer}}],
                                           "model": json.loads(body)["model"]}).encode()
                finally:
                    with stub.lock:
                        stub.in_flight -= 1
                self.send_response(status)
                if status == 429 and stub.retry_after is not None:
                    self.send_header("Retry-After", stub.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = _Server(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "StubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
