"""A `transformers serve` process on 127.0.0.1: a local OpenAI-compatible server for development and tests.

`transformers serve` (extra `transformers[serving]`) serves any local transformers model, VLMs included, at
`/v1/chat/completions`, the same API vLLM, SGLang and TGI offer, so the `openai-server` backend can be tried end to
end on a laptop. The server runs in its own process group and is always stopped by `stop()` (or the context manager).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from .openai_server import wait_until_ready


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server or a rendezvous, drawn below the kernel's ephemeral range.

    A port from bind(("", 0)) comes from the ephemeral range, where, between our closing it and a server or
    launcher binding it, any outgoing connection or gloo listener of a concurrent process (another test, another
    checkout's suite) may take it, and a store client retrying against a port nobody listens on yet can even
    connect to itself; random ports in 20000-32000 avoid all three.
    """
    low, high = 20000, 32000
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, ephemeral_low)
    except (OSError, ValueError, IndexError):
        pass
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(low, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found in 20000-32000")


class TransformersServer:
    """`transformers serve MODEL` on 127.0.0.1 in its own process group; `start()` waits for `/health`."""

    def __init__(self, model_dir: Path, log_path: Path, port: int | None = None, extra: list[str] | None = None):
        self.model_dir, self.log_path = Path(model_dir), Path(log_path)
        self.port = port or free_port()
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> None:
        exe = Path(sys.executable).with_name("transformers")  # the console script of the running environment
        cmd = [str(exe), "serve", str(self.model_dir), "--host", "127.0.0.1", "--port", str(self.port),
               "--device", "cpu", "--log-level", "info", *self.extra]
        log = open(self.log_path, "ab")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        self.starts += 1
        try:
            wait_until_ready(self.url, timeout_s=timeout_s)
        except TimeoutError:
            self.stop()
            raise TimeoutError(f"transformers serve did not come up; log:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server (as a crashed node), no clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.proc = None

    def answered_in_log(self) -> int:
        """POSTs to /v1/chat/completions the server itself logged as 200 (uvicorn access log)."""
        return self.log_path.read_text(errors="replace").count('"POST /v1/chat/completions HTTP/1.1" 200')

    def __enter__(self) -> "TransformersServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
