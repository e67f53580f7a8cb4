"""Rows/s of the inference-server backend with 1 vs 8 requests in flight against a real `transformers serve` on
127.0.0.1 (CPU, offline).

One command: `python benchmarks/server_backend_throughput.py` (needs `pip install -e ".[serving]"`; ~1-2 minutes).
`transformers serve` generates one request at a time (here even with `--continuous-batching`, which it does not use
for this VLM), so against ONE such server 8 in flight can only overlap HTTP, PNG encoding and parsing with
generation; engines that batch their queue (vLLM, SGLang, TGI) gain far more. `--servers 2` starts two servers and
gives the backend both URLs (one server per node, scaled down to one machine): there 8 in flight keeps both busy.

Each "row" is one judge request: a 64x64 PNG as a data URL plus the judge.v2 prompt, answered by a tiny random
LLaVA that generates `--new-tokens` tokens (the answers are gibberish; the work per request is real). Both settings
send the same number of distinct requests (different seeds and images), with no answer log.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset_builder.backends.local_server import TransformersServer  # noqa: E402
from dataset_builder.backends.openai_server import OpenAIChatBackend  # noqa: E402
from dataset_builder.backends.tiny import build_tiny_chat_vlm  # noqa: E402
from dataset_builder.prompts import load_prompt, make_request  # noqa: E402


def requests(n: int, offset: int) -> list:
    prompt = load_prompt("judge.v2")
    out = []
    for i in range(n):
        pixels = np.random.default_rng(offset + i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        fields = {"concept": f"festival bread {i}", "country": "Japan", "category": "Cuisine",
                  "context": "A round bread baked for village festivals.",
                  "visual_features": "round loaf; golden crust; braided top"}
        out.append(make_request("judge", prompt, fields, seed=offset + i, image=Image.fromarray(pixels)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--continuous-batching", action="store_true")
    parser.add_argument("--servers", type=int, default=1, help="number of loopback servers behind the URL list")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="server-bench-") as tmp:
        model = build_tiny_chat_vlm(Path(tmp) / "llava", family="llava")
        extra = ["--continuous-batching"] if args.continuous_batching else []
        servers = [TransformersServer(model, Path(tmp) / f"serve{i}.log", extra=extra) for i in range(args.servers)]
        try:
            for server in servers:
                server.start()
            urls = [server.url for server in servers]
            rates: dict[int, list[float]] = {}
            warm = OpenAIChatBackend(urls, str(model), max_new_tokens=args.new_tokens, max_in_flight=len(urls))
            warm.generate(requests(4 * len(urls), 10_000))  # first-request setup outside the timing
            for round_, in_flight in enumerate((1, 8, 1, 8)):
                backend = OpenAIChatBackend(urls, str(model), max_in_flight=in_flight,
                                            max_new_tokens=args.new_tokens)
                batch = requests(args.rows, 1000 * (round_ + 1))
                started = time.perf_counter()
                answers = backend.generate(batch)
                elapsed = time.perf_counter() - started
                assert len(answers) == args.rows and backend.stats["answered"] == args.rows
                rates.setdefault(in_flight, []).append(args.rows / elapsed)
        finally:
            for server in servers:
                server.stop()
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average)  {args.servers} x transformers serve"
          f"{' --continuous-batching' if args.continuous_batching else ''}, {args.rows} rows x {args.new_tokens} tokens")
    for in_flight, values in rates.items():
        print(f"  {in_flight} in flight: {max(values):6.2f} rows/s (best of {len(values)}: "
              f"{', '.join(f'{v:.2f}' for v in values)})")
    print(f"ratio 8 / 1 in flight: {max(rates[8]) / max(rates[1]):.2f}x")


if __name__ == "__main__":
    main()
