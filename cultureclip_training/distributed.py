"""Cross-process feature gathering for the CultureCLIP objective.

The objective (modeling_cultureclip.loss_cultureclip) takes a `FeatureGather`; this is the torch.distributed one.
Gradients flow back through the gather: each rank's loss over its local rows and every rank's columns, averaged
by DDP, then equals the loss of one process on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums the gradient over ranks and keeps this rank's slice.

    Written with all_gather/all_reduce only, which every backend (gloo on CPU included) supports.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # every rank's loss uses this rank's rows as columns, so their gradients add up
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


class TorchDistributedGather:
    """Differentiable all-gather over the default process group, concatenated on dim 0 in rank order.

    Every rank must pass tensors with the same shape (the batch plan gives each rank the same number of rows).
    """

    def __init__(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("TorchDistributedGather needs an initialised torch.distributed process group")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return tensor
        if not tensor.requires_grad:  # ids, or features cached under no_grad
            parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
            dist.all_gather(parts, tensor.contiguous())
            return torch.cat(parts)
        return _AllGatherWithGrad.apply(tensor)


def feature_gather_or_none() -> TorchDistributedGather | None:
    """A gather when running under more than one process, else None (a single process needs none)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchDistributedGather()
    return None


def all_finite(value: torch.Tensor) -> bool:
    """True when `value` is finite on every rank (so all ranks stop together on a NaN)."""
    flag = torch.tensor(float(torch.isfinite(value).all()), device=value.device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Average scalar tensors over ranks (each rank's loss covers its rows; the mean is the global loss)."""
    names = sorted(values)
    if not names:
        return {}
    stacked = torch.stack([values[name].detach().float().reshape(()) for name in names])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked /= dist.get_world_size()
    return {name: float(v) for name, v in zip(names, stacked.tolist())}


def end_processes(accelerator) -> None:
    """End a run's processes in the order that cannot hang: DDP wrappers first, then the process group.

    A DDP wrapper's Reducer owns the process group too. Freed last, it destroys a gloo group while holding the GIL
    and joins gloo's worker threads, one of which may still need the GIL to drop the tensors of the final barrier:
    rank 1 then never exits (seen about once in twelve 2-rank runs), or the interpreter aborts at exit. Freed
    while `torch.distributed` still holds the group, it only drops a reference; `destroy_process_group` then ends
    the group with the GIL released. Callers must drop their own references to the wrapped model first.
    """
    import gc

    accelerator.free_memory()  # accelerate's references to the prepared (DDP-wrapped) models and optimizers
    gc.collect()  # DDP hooks form reference cycles, and free_memory collects before it empties its lists
    accelerator.end_training()  # trackers, then destroy_process_group while this process still runs Python


__all__ = ["TorchDistributedGather", "all_finite", "end_processes", "feature_gather_or_none", "mean_over_ranks"]
