"""Chat backend on OpenAI-compatible inference servers (vLLM, SGLang, TGI, `transformers serve`).

This is how the text and judge stages scale past one process: start one server per node (tensor- or data-parallel
as the engine likes) and list their base URLs; the backend keeps `max_in_flight` requests open at once, spread round
robin over the URLs, so the servers' own continuous batching sees a full queue. Images travel as PNG data URLs.
Each request has a timeout; 408/425/429/5xx answers and connection errors (a server restarting, a node going away)
are retried with exponential backoff and jitter (honouring `Retry-After`), moving to the next URL each time; other
4xx answers stop the build with the server's message, since they mean a wrong model name or an unsupported input.
With an `AnswerLog` attached (the pipeline attaches one under the run folder), every answer is stored the moment it
arrives and a rerun takes it from there: a killed build never asks a server the same question twice.
Only the standard library is used (http.client + threads), so nothing heavy is imported.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from cultureclip_guards import RunFailure

from .answer_log import AnswerLog, canonical_json, request_key
from .base import ChatRequest

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class ServerError(RunFailure):
    """A request that could not be answered (non-retryable status, malformed answer, or retries exhausted)."""

    def __init__(self, message: str = "", hint: str | None = None):
        super().__init__(message, hint or "every answer received so far is in the run folder; rerun the same "
                                          "command to resume")


class _Endpoint:
    """One base URL: scheme, host, port and the chat-completions path."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base URL {base_url!r} must look like http://host:port or https://host/v1")
        self.url = base_url.strip().rstrip("/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        prefix = parts.path.rstrip("/")
        self.path = (prefix if prefix.endswith("/v1") else prefix + "/v1") + "/chat/completions"


def image_data_url(image: Image.Image) -> str:
    """A PNG data URL of an RGB image (lossless: the judge sees exactly the stored pixels)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Our chat format (text parts, `{"type": "image", "image": PIL}` parts) in the OpenAI chat format."""
    out = []
    for index, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        parts = []
        for part in content or []:
            if part.get("type") == "text":
                parts.append({"type": "text", "text": part["text"]})
            elif part.get("type") == "image" and isinstance(part.get("image"), Image.Image):
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(part["image"])}})
            else:
                raise ValueError(f"message {index}: unsupported content part {part.get('type')!r} "
                                 "(expected text, or image holding a PIL image)")
        out.append({"role": message["role"], "content": parts})
    return out


class OpenAIChatBackend:
    """Answers `ChatRequest`s through `/v1/chat/completions` of one or more servers, many requests in flight."""

    def __init__(
        self,
        base_urls: list[str] | str,
        model: str,
        *,
        revision: str | None = None,
        max_in_flight: int = 8,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 12,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        deterministic: bool = True,
        temperature: float = 0.7,
        top_p: float | None = None,
        max_new_tokens: int = 256,
        batch_size: int | None = None,
        api_key_env: str | None = None,
        extra_body: dict[str, Any] | None = None,
        answer_log: AnswerLog | None = None,
    ) -> None:
        """`model` is the name the servers serve (vLLM's --served-model-name; a path for `transformers serve`).
        `deterministic` sends temperature 0 (greedy); otherwise `temperature`/`top_p` with the request's seed.
        `api_key_env` names an environment variable holding a bearer token (read at request time, never stored).
        `batch_size` is accepted for interface parity with local backends; concurrency is `max_in_flight`."""
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls or [])
        if not urls:
            raise ValueError("base_urls: give at least one server URL")
        if not model:
            raise ValueError("model: name the model the servers serve")
        for name, value, low in (("max_in_flight", max_in_flight, 1), ("max_new_tokens", max_new_tokens, 1),
                                 ("max_retries", max_retries, 0)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeout_s and connect_timeout_s must be > 0")
        self.endpoints = [_Endpoint(u) for u in urls]
        self.model_id = model
        self.revision = revision
        self.device = "remote"
        self.max_in_flight = max_in_flight
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.deterministic, self.temperature, self.top_p = deterministic, temperature, top_p
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.api_key_env = api_key_env
        self.extra_body = dict(extra_body or {})
        self.answer_log = answer_log
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._next_url = 0

    def with_settings(self, **settings: Any) -> "OpenAIChatBackend":
        """The same servers and answer log with other generation settings (for a role sharing this backend)."""
        keys = ("deterministic", "temperature", "top_p", "max_new_tokens", "batch_size")
        unknown = sorted(set(settings) - set(keys))
        if unknown:
            raise ValueError(f"with_settings: unknown generation setting(s) {unknown}; expected some of {list(keys)}")
        current = {k: getattr(self, k) for k in keys}
        return OpenAIChatBackend(
            [e.url for e in self.endpoints], self.model_id, revision=self.revision, max_in_flight=self.max_in_flight,
            timeout_s=self.timeout_s, connect_timeout_s=self.connect_timeout_s, max_retries=self.max_retries,
            backoff_s=self.backoff_s, max_backoff_s=self.max_backoff_s, api_key_env=self.api_key_env,
            extra_body=self.extra_body, answer_log=self.answer_log, **{**current, **settings})

    # ------------------------------------------------------------------------------------------------------------
    def request_body(self, request: ChatRequest, max_new_tokens: int) -> dict[str, Any]:
        """The JSON body sent for one request (also what its answer-log key is computed from)."""
        body: dict[str, Any] = {"model": self.model_id, "messages": openai_messages(request.messages),
                                "max_tokens": max_new_tokens, "seed": int(request.seed), "stream": False}
        if self.deterministic:
            body["temperature"] = 0.0
        else:
            body["temperature"] = self.temperature
            if self.top_p is not None:
                body["top_p"] = self.top_p
        return {**body, **self.extra_body}

    def generate(self, requests: list[ChatRequest], max_new_tokens: int | None = None) -> list[str]:
        """One answer per request, in order; logged answers are reused, the rest asked `max_in_flight` at a time."""
        budget = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        bodies = [self.request_body(r, budget) for r in requests]
        keys = [request_key(b) for b in bodies]
        answers: list[str | None] = [None] * len(requests)
        todo = []
        for i, key in enumerate(keys):
            logged = self.answer_log.get(key) if self.answer_log is not None else None
            if logged is not None:
                answers[i] = logged["answer"]
            else:
                todo.append(i)
        self._count(requests=len(requests), from_log=len(requests) - len(todo))
        if todo:
            stop = threading.Event()

            def ask(i: int) -> None:
                if stop.is_set():
                    return
                try:
                    text, meta = self._ask(bodies[i], requests[i], stop)
                except BaseException:
                    stop.set()
                    raise
                if self.answer_log is not None:
                    self.answer_log.put(keys[i], {"answer": text, "task": requests[i].task, "seed": requests[i].seed,
                                                  **meta})
                answers[i] = text

            with ThreadPoolExecutor(max_workers=min(self.max_in_flight, len(todo))) as pool:
                futures = [pool.submit(ask, i) for i in todo]
                errors = [f.exception() for f in futures]
            first = next((e for e in errors if e is not None), None)
            if first is not None:
                raise first
        return [a if a is not None else "" for a in answers]

    # ------------------------------------------------------------------------------------------------------------
    def _count(self, **amounts: int) -> None:
        with self._lock:
            self.stats.update(amounts)

    def _pick_url(self) -> int:
        with self._lock:
            index = self._next_url
            self._next_url = (self._next_url + 1) % len(self.endpoints)
        return index

    def _ask(self, body: dict[str, Any], request: ChatRequest, stop: threading.Event) -> tuple[str, dict[str, Any]]:
        payload = canonical_json(body)
        url_index = self._pick_url()
        last = ""
        retry_after: str | None = None  # the previous answer's Retry-After header
        for attempt in range(self.max_retries + 1):
            if attempt:
                if stop.wait(self._delay(attempt, retry_after)):
                    raise ServerError(f"request for task {request.task!r} abandoned: another request failed")
                url_index = (url_index + 1) % len(self.endpoints)
                self._count(retries=1)
            endpoint = self.endpoints[url_index]
            retry_after = None
            try:
                status, headers, data = self._post(endpoint, payload)
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection(endpoint)
                self._count(connection_errors=1)
                last = f"{endpoint.url}: {type(exc).__name__}: {exc}"
                continue
            self._count(sent=1, **{f"http_{status}": 1})
            if status == 200:
                return self._parse(endpoint, data, request)
            detail = data[:300].decode("utf-8", "replace")
            last = f"{endpoint.url} answered HTTP {status}: {detail}"
            if status not in RETRY_STATUSES:
                raise ServerError(f"{last} (task {request.task!r}; not retried: fix the request or the server)")
            retry_after = headers.get("retry-after")
        raise ServerError(f"no answer after {self.max_retries} retries (task {request.task!r}); last error: {last}")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.max_backoff_s))
            except ValueError:
                pass  # an HTTP-date Retry-After: keep our own backoff
        return delay

    def _parse(self, endpoint: _Endpoint, data: bytes, request: ChatRequest) -> tuple[str, dict[str, Any]]:
        try:
            obj = json.loads(data)
            choice = obj["choices"][0]
            text = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ServerError(f"{endpoint.url}: malformed chat completion for task {request.task!r} "
                              f"({type(exc).__name__}): {data[:200]!r}") from None
        if not isinstance(text, str):
            raise ServerError(f"{endpoint.url}: answer content for task {request.task!r} is {type(text).__name__}")
        self._count(answered=1)
        return text, {"finish_reason": choice.get("finish_reason"), "served_model": obj.get("model"),
                      "usage": obj.get("usage"), "server": endpoint.url}

    # ------------------------------------------------------------------------------------------------------------
    def _connection(self, endpoint: _Endpoint) -> http.client.HTTPConnection:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(endpoint.url)
        if conn is None:
            cls = http.client.HTTPSConnection if endpoint.https else http.client.HTTPConnection
            conn = cls(endpoint.host, endpoint.port, timeout=self.connect_timeout_s)
            conn.connect()
            conn.sock.settimeout(self.timeout_s)  # connect fast or fail; then allow long generations
            conns[endpoint.url] = conn
        return conn

    def _drop_connection(self, endpoint: _Endpoint) -> None:
        conn = getattr(self._local, "conns", {}).pop(endpoint.url, None)
        if conn is not None:
            conn.close()

    def _post(self, endpoint: _Endpoint, payload: bytes) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            token = os.environ.get(self.api_key_env)
            if not token:
                raise ServerError(f"api_key_env names {self.api_key_env!r}, but that environment variable is empty")
            headers["Authorization"] = f"Bearer {token}"
        conn = self._connection(endpoint)
        conn.request("POST", endpoint.path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.getheader("connection", "").lower() == "close":
            self._drop_connection(endpoint)
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def wait_until_ready(base_url: str, timeout_s: float = 120.0, poll_s: float = 0.25) -> None:
    """Poll `GET <base>/health` (vLLM, SGLang, TGI and `transformers serve` all answer it) until 200 or timeout."""
    endpoint = _Endpoint(base_url)
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        cls = http.client.HTTPSConnection if endpoint.https else http.client.HTTPConnection
        conn = cls(endpoint.host, endpoint.port, timeout=min(5.0, timeout_s))
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
            last = f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        time.sleep(poll_s)
    raise TimeoutError(f"{base_url} not ready after {timeout_s:.0f} s ({last})")
