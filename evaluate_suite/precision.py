"""Which floating-point precision an evaluation runs at: names, torch dtypes, and what `auto` picks.

`auto` picks bf16 where the hardware has bf16 matrix units (x86 CPUs with AMX or AVX-512 bf16, Arm CPUs with the
bf16 extension, CUDA GPUs that support bf16) and fp32 elsewhere: bf16 emulated in software is slower than fp32.
Embeddings are always returned, compared and scored in fp32; only the towers' matmuls run at the chosen precision.
"""

from __future__ import annotations

import functools
import platform

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# /proc/cpuinfo flags of CPUs with native bf16 dot products (x86: AMX tiles or AVX-512 bf16; Arm: FEAT_BF16)
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
ARM_BF16_FEATURES = ("bf16",)


def precision_name(dtype: torch.dtype) -> str:
    """'fp32' / 'bf16' / 'fp16' for a torch floating dtype (other dtypes by their torch name)."""
    names = {dtype_: name for name, dtype_ in DTYPES.items()}
    return names.get(dtype, str(dtype).removeprefix("torch."))


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports in /proc/cpuinfo (x86 `flags`, Arm `Features`); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU multiplies bf16 natively (AMX / AVX-512 bf16 on x86, FEAT_BF16 on Arm)."""
    flags = cpu_flags() if flags is None else flags
    wanted = ARM_BF16_FEATURES if platform.machine().lower() in ("aarch64", "arm64") else CPU_BF16_FLAGS
    return any(flag in flags for flag in wanted)


def device_has_bf16(device: str | torch.device) -> bool:
    """True when `device` runs bf16 matmuls natively (see the module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def resolve_precision(choice: str, device: str | torch.device) -> str:
    """The concrete precision ('fp32', 'bf16' or 'fp16') that `choice` means on `device`.

    Raises ValueError naming the accepted values for anything else.
    """
    if choice not in PRECISIONS:
        raise ValueError(f"precision {choice!r}: expected one of {', '.join(PRECISIONS)}")
    if choice != "auto":
        return choice
    return "bf16" if device_has_bf16(device) else "fp32"


__all__ = ["CPU_BF16_FLAGS", "DTYPES", "PRECISIONS", "cpu_flags", "cpu_has_bf16", "device_has_bf16",
           "precision_name", "resolve_precision"]
