"""Cross-process feature gathering for the CultureCLIP objective.

The objective (modeling_cultureclip.loss_cultureclip) takes a `FeatureGather`; this is the torch.distributed one.
Gradients flow back through the gather, so each rank's loss over its local rows and all ranks' columns, averaged
by DDP, equals the loss of one process on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


class TorchDistributedGather:
    """Differentiable all-gather over the default process group, concatenated on dim 0 in rank order."""

    def __init__(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("TorchDistributedGather needs an initialised torch.distributed process group")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return tensor
        if not tensor.requires_grad:  # ids, or features computed under no_grad for the feature cache
            parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
            dist.all_gather(parts, tensor.contiguous())
            return torch.cat(parts)
        return torch.cat(dist_fn.all_gather(tensor.contiguous()))


def feature_gather_or_none() -> TorchDistributedGather | None:
    """A gather when running under more than one process, else None (single process needs none)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchDistributedGather()
    return None


__all__ = ["TorchDistributedGather", "feature_gather_or_none"]
