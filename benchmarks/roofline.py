"""The machine's own peak and a model's FLOPs: what every benchmark here reports its speed against.

- `matmul_peak`: achievable matmul throughput, measured now on this device with the benchmark's thread count:
  large square `a @ b` products (several sizes, best of a few repeats each; 2*n^3 FLOPs per product).
- `count_flops`: FLOPs of whatever a callable runs, counted by `torch.utils.flop_counter.FlopCounterMode` from the
  actual operator shapes (matmuls, convolutions, attention; forward and, inside a training step, backward).
- `transformer_flops` / `linear_params`: the analytic estimate the count is checked against: 2 FLOPs per matmul
  weight per token (the "2 * params * tokens" rule) plus the two attention products, 4 * layers * tokens^2 * width.
- `machine_info`: CPU model, the CPU flags that decide bf16 speed (AMX / AVX-512), threads and load average, so a
  printed figure carries the conditions it was measured under.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from evaluate_suite.precision import DTYPES, cpu_flags

# flags that make reduced precision fast on x86 (AMX tiles, AVX-512 bf16 / fp16) or Arm (bf16)
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16", "amx_int8",
               "bf16")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], repeats: int, device: torch.device | str = "cpu") -> float:
    """Fastest of `repeats` timed calls of `fn` (after one untimed warm-up call)."""
    device = torch.device(device)
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(precision: str, device: torch.device | str = "cpu", sizes: Iterable[int] | None = None,
                repeats: int = 3) -> dict[str, float]:
    """Achievable FLOP/s of square matmuls at `precision` on `device`: the best over `sizes` of best-of-`repeats`.

    Returns {"flops_per_s", "size"} (the size that reached it). Default sizes: 1024-4096 on CPU, 4096-8192 on GPU.
    """
    device = torch.device(device)
    sizes = list(sizes or ((4096, 8192) if device.type == "cuda" else (1024, 2048, 4096)))
    dtype = DTYPES[precision]
    best, best_size = 0.0, sizes[0]
    generator = torch.Generator().manual_seed(0)
    for n in sizes:
        pair = (torch.randn(n, n, generator=generator).to(device, dtype),
                torch.randn(n, n, generator=generator).to(device, dtype))
        rate = 2 * n ** 3 / best_seconds(lambda: pair[0] @ pair[1], repeats, device)
        if rate > best:
            best, best_size = rate, n
    return {"flops_per_s": best, "size": best_size}


def rooflines(device: torch.device | str = "cpu", precisions: Iterable[str] = ("fp32", "bf16"),
              sizes: Iterable[int] | None = None, repeats: int = 3) -> dict[str, dict[str, float]]:
    """`matmul_peak` for each precision, keyed by precision name."""
    sizes = list(sizes) if sizes is not None else None
    return {p: matmul_peak(p, device, sizes, repeats) for p in precisions}


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode knows the CUDA attention kernels but not the CPU one that scaled_dot_product_attention runs here
CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
                  torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
                      _cpu_attention_backward}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the operators `fn` runs (FlopCounterMode: matmul, conv, attention, forward and backward)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        fn()
    return int(counter.get_total_flops())


def linear_params(module: torch.nn.Module) -> int:
    """Matmul weights of `module`: nn.Linear weights, plus conv kernels (a patch embedding is a matmul per patch)."""
    total = 0
    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear):
            total += sub.weight.numel()
        elif isinstance(sub, torch.nn.Conv2d):
            total += sub.weight.numel()
    return total


def transformer_flops(matmul_params: int, tokens: int, layers: int, width: int) -> float:
    """Analytic forward FLOPs of one sequence: 2 * params * tokens + the attention products 4 * L * T^2 * d."""
    return 2.0 * matmul_params * tokens + 4.0 * layers * tokens ** 2 * width


def fraction(achieved_flops_per_s: float, peak: dict[str, float]) -> float:
    return achieved_flops_per_s / peak["flops_per_s"] if peak["flops_per_s"] > 0 else float("nan")


@dataclass
class Rate:
    """A measured speed with its FLOP content: items/s, FLOP/s and the fraction of a roofline."""

    label: str
    items_per_s: float
    flops_per_item: float
    precision: str

    @property
    def flops_per_s(self) -> float:
        return self.items_per_s * self.flops_per_item

    def roofline_fraction(self, peaks: dict[str, dict[str, float]]) -> float:
        return fraction(self.flops_per_s, peaks[self.precision])

    def to_dict(self, peaks: dict[str, dict[str, float]]) -> dict[str, float | str]:
        return {"label": self.label, "items_per_s": self.items_per_s, "flops_per_item": self.flops_per_item,
                "flops_per_s": self.flops_per_s, "precision": self.precision,
                "roofline_fraction": self.roofline_fraction(peaks)}


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """CPU model name and which of SPEED_FLAGS /proc/cpuinfo lists (empty off Linux)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.partition(":")[2].strip() for line in handle if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    flags = cpu_flags()
    return model, [f for f in SPEED_FLAGS if f in flags]


def machine_info(device: torch.device | str = "cpu") -> dict[str, object]:
    """Where a figure was measured: device, CPU model and speed flags, cores, torch threads, 1-minute load."""
    device = torch.device(device)
    model, flags = cpu_model_and_flags()
    info: dict[str, object] = {"device": str(device), "cpu": model, "cpu_flags": flags, "cores": os.cpu_count(),
                               "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                               "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def describe_machine(info: dict[str, object]) -> str:
    """One line for a benchmark's output."""
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    return (f"machine: {info['cpu']} ({info['cores']} cores; flags {' '.join(info['cpu_flags']) or 'none'}){gpu}; "
            f"torch {info['torch']}, {info['torch_threads']} threads; load average {info['load_average_1min']:.2f}")


def describe_peaks(peaks: dict[str, dict[str, float]]) -> str:
    """One line: the measured matmul roofline per precision."""
    parts = [f"{p} {v['flops_per_s'] / 1e9:,.0f} GFLOP/s (n={v['size']})" for p, v in peaks.items()]
    return "roofline (best square matmul, measured now): " + ", ".join(parts)




def check_output(path: str | None, overwrite: bool) -> None:
    """Exit with status 2 before any work when `path` exists and `overwrite` was not given."""
    if path and os.path.exists(path) and not overwrite:
        print(f"error: {path} exists; pass --overwrite to replace it", file=sys.stderr)
        raise SystemExit(2)


def write_report(path: str | None, report: dict) -> None:
    """Write `report` as JSON through a temp file and a rename (never half a file)."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".report.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, default=str)
    os.replace(tmp, path)


__all__ = ["CPU_ATTENTION_FLOPS", "Rate", "best_seconds", "check_output", "count_flops", "cpu_model_and_flags",
           "describe_machine", "describe_peaks", "fraction", "linear_params", "machine_info", "matmul_peak",
           "rooflines", "synchronize", "transformer_flops", "write_report"]
