"""Two gloo processes with gathered features give the loss and gradients of one process on the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cultureclip_training.distributed import TorchDistributedGather
from dataset_builder.backends.local_server import free_port
from modeling_cultureclip import CultureCLIPModel
from modeling_cultureclip.tiny import tiny_config

WORLD, PER_RANK = 2, 3


def make_model_and_batch():
    torch.manual_seed(0)
    model = CultureCLIPModel(tiny_config(vocab_size=40, image_size=16, patch_size=8, width=32))
    g = torch.Generator().manual_seed(1)
    n = WORLD * PER_RANK
    batch = dict(
        pixel_values=torch.randn(n, 3, 16, 16, generator=g), twin_pixel_values=torch.randn(n, 3, 16, 16, generator=g),
        input_ids=torch.randint(5, 40, (n, 8), generator=g), twin_input_ids=torch.randint(5, 40, (n, 8), generator=g),
        concept_input_ids=torch.randint(5, 40, (n, 3), generator=g),
        twin_concept_input_ids=torch.randint(5, 40, (n, 3), generator=g),
        # pairs 0 and 3 share a concept, and they sit on different ranks: masking must work across the gather
        concept_ids=torch.tensor([0, 1, 2, 0, 4, 5]), twin_concept_ids=torch.tensor([10, 11, 12, 10, 14, 15]),
    )
    for key in ("input_ids", "twin_input_ids", "concept_input_ids", "twin_concept_input_ids"):
        batch[key][:, -1] = 3
    return model, batch


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model, batch = make_model_and_batch()
        local = {k: v[rank * PER_RANK:(rank + 1) * PER_RANK] for k, v in batch.items()}
        out = model(**local, feature_gather=TorchDistributedGather(), return_loss=True)
        out.loss.backward()
        # DDP averages gradients over ranks; do the same by hand
        grads = {}
        for name, p in model.named_parameters():
            g = p.grad.clone()
            dist.all_reduce(g)
            grads[name] = g / WORLD
        loss = out.loss.detach().clone()
        dist.all_reduce(loss)
        if rank == 0:
            torch.save({"loss": loss / WORLD, "grads": grads}, os.path.join(out_dir, "result.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_two_processes_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    result = torch.load(tmp_path / "result.pt", weights_only=True)

    model, batch = make_model_and_batch()
    out = model(**batch, return_loss=True)
    out.loss.backward()
    assert abs(result["loss"].item() - out.loss.item()) <= 1e-6
    for name, p in model.named_parameters():
        torch.testing.assert_close(result["grads"][name], p.grad, atol=1e-6, rtol=1e-5, msg=name)
