"""Which device this process uses: one process per device, chosen from the launcher's LOCAL_RANK.

`torchrun` and `accelerate launch` start one process per GPU and set LOCAL_RANK (the process's index on its node).
Every model a rank loads goes to `cuda:<LOCAL_RANK>`; nothing uses `device_map="auto"`, which would spread (or, for a
model that fits, place) every rank's copy on GPU 0. Plain RANK/WORLD_SIZE processes without LOCAL_RANK are taken to
run on one node, so RANK doubles as the local rank.
"""

from __future__ import annotations

import os
from typing import Any


def local_rank() -> int:
    """This process's index on its node: LOCAL_RANK, else RANK (single-node runs), else 0."""
    for name in ("LOCAL_RANK", "RANK"):
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                rank = int(value)
            except ValueError:
                raise ValueError(f"environment variable {name}={value!r} is not an integer") from None
            if rank < 0:
                raise ValueError(f"environment variable {name}={value!r} must be >= 0")
            return rank
    return 0


def rank_device(requested: str | None = None) -> str:
    """The torch device string this rank loads its models on.

    An explicit `requested` device ("cpu", "cuda:3", "mps") wins; None or "auto" picks `cuda:<local rank>` when CUDA
    is available (an error if the node has fewer GPUs than local ranks), else "cpu".
    """
    if requested not in (None, "", "auto"):
        return str(requested)
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        index = local_rank()
        if index >= count:
            raise ValueError(f"local rank {index} has no GPU: only {count} CUDA device(s) are visible on this node; "
                             "start one process per GPU (torchrun --nproc-per-node / accelerate launch --num_processes)")
        return f"cuda:{index}"
    return "cpu"


def describe_device(device: Any) -> dict[str, Any]:
    """A small record of a device for provenance: its string, index and (for CUDA) the GPU's name."""
    text = str(device)
    info: dict[str, Any] = {"device": text, "index": None}
    if text.startswith("cuda"):
        import torch

        index = int(text.split(":", 1)[1]) if ":" in text else torch.cuda.current_device()
        info.update(index=index, name=torch.cuda.get_device_name(index))
    return info


def free_accelerator_memory() -> None:
    """Return cached CUDA blocks to the driver after a model was dropped (no-op without CUDA or torch loaded)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
