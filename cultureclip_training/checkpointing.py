"""Training checkpoints: trainable weights, optimizer, scheduler, RNG states and data position.

Layout of `OUTPUT/checkpoints/step-00000120/`:
- `trainable.safetensors`: every trainable parameter by name (the LoRA adapter, or the whole model);
- `optimizer.pt`, `scheduler.pt`: state dicts of tensors and numbers, read back with `torch.load(weights_only=True)`;
- `rng-rank{r}.safetensors` + `rng-rank{r}.json`: torch/CUDA/NumPy/Python RNG states of each process;
- `state.json`: step, epoch, batches done in the epoch, world size, run settings;
- `manifest.json`: sha256 of every file, checked before loading.
A checkpoint is written in a temporary folder and renamed into place, so a kill leaves either the previous
checkpoints or the new complete one; older ones beyond `keep` are removed only after the rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cultureclip_guards import BadInput, load_weights_only, read_json

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})$")


class CheckpointError(BadInput, RuntimeError):
    """A checkpoint is missing, incomplete, corrupted or does not fit the run."""


@dataclass
class Position:
    """Where training stands: optimizer steps done, current epoch and the steps already taken in it."""

    step: int
    epoch: int
    step_in_epoch: int


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders are ignored)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / "manifest.json").is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def resolve_resume(output_dir: str | os.PathLike, resume: str) -> Path:
    """`latest` -> newest checkpoint of output_dir; otherwise the given folder."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise CheckpointError(f"--resume latest: no checkpoint under {checkpoint_root(output_dir)}")
        return found[-1]
    path = Path(resume)
    if not (path / "manifest.json").is_file():
        raise CheckpointError(f"--resume {resume}: not a complete checkpoint folder (no manifest.json)")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True), encoding="utf-8")


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's RNG states split into tensors (safetensors) and plain values (JSON)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{index}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss = random.getstate()
    plain = {"numpy": [kind, int(pos), int(has_gauss), float(cached)],
             "python": [version, list(internal), gauss]}
    return tensors, plain


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the trainable parameters, by name."""
    return {name: p.detach().to("cpu").contiguous().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy saved trainable parameters into `model`; the names must match the run's trainable set exactly."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        extra, missing = sorted(set(state) - set(params))[:3], sorted(set(params) - set(state))[:3]
        raise CheckpointError(f"{source}: trainable parameters differ from this run's (unexpected {extra}, "
                              f"missing {missing}); resume with the settings the checkpoint was made with")
    shapes = [f"{name} {tuple(state[name].shape)} vs {tuple(p.shape)}" for name, p in params.items()
              if tuple(state[name].shape) != tuple(p.shape)]
    if shapes:
        raise CheckpointError(f"{source}: trainable parameter shapes differ from this run's ({'; '.join(shapes[:3])}); "
                              "resume with the LoRA rank and layers the checkpoint was made with")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def save_checkpoint(output_dir: str | os.PathLike, position: Position, model: torch.nn.Module,
                    optimizer: Any, scheduler: Any, run_info: dict[str, Any], rank: int, world_size: int,
                    barrier: Any, keep: int) -> Path | None:
    """Write a checkpoint atomically from every rank (rank 0 writes the shared files); returns its path on rank 0.

    `barrier()` synchronises the processes between the phases.
    """
    root = checkpoint_root(output_dir)
    final = root / f"step-{position.step:08d}"
    temporary = root / f".tmp-step-{position.step:08d}"
    if rank == 0:
        shutil.rmtree(temporary, ignore_errors=True)  # leftover of a run killed while saving
        temporary.mkdir(parents=True)
    barrier()
    tensors, plain = rng_state()
    save_file(tensors, str(temporary / f"rng-rank{rank}.safetensors"))
    _write_json(temporary / f"rng-rank{rank}.json", plain)
    barrier()
    if rank != 0:
        barrier()
        return None
    save_file(trainable_state(model), str(temporary / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), temporary / "optimizer.pt")
    torch.save(scheduler.state_dict(), temporary / "scheduler.pt")
    _write_json(temporary / "state.json", {"step": position.step, "epoch": position.epoch,
                                           "step_in_epoch": position.step_in_epoch, "world_size": world_size,
                                           "run": run_info})
    manifest = {p.name: _sha256(p) for p in sorted(temporary.iterdir())}
    _write_json(temporary / "manifest.json", manifest)
    if final.exists():  # a checkpoint of the same step from an earlier attempt: replace it whole
        shutil.rmtree(final)
    os.replace(temporary, final)
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old)
    barrier()
    return final


def _read(path: Path, what: str) -> Any:
    try:
        return read_json(path, what)
    except BadInput as error:
        raise CheckpointError(str(error)) from None


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own SafetensorError (and OSError) for a bad file
        raise CheckpointError(f"{path}: not a readable safetensors file ({' '.join(str(error).split())[:200]})"
                              ) from None


def _tensors(path: Path) -> Any:
    try:
        return load_weights_only(path)
    except BadInput as error:
        raise CheckpointError(str(error), hint=error.hint) from None


def verify(path: Path) -> dict[str, Any]:
    """Check every file against the manifest; returns state.json."""
    manifest = _read(path / "manifest.json", "checkpoint manifest")
    if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
        raise CheckpointError(f"{path / 'manifest.json'}: expected a mapping of file name to sha256")
    for name, digest in manifest.items():
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise CheckpointError(f"{path / 'manifest.json'}: file name {name!r} leaves the checkpoint folder")
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path}: file {name} is missing")
        if _sha256(file) != digest:
            raise CheckpointError(f"checkpoint {path}: file {name} does not match its checksum")
    state = _read(path / "state.json", "checkpoint state")
    missing = [k for k in ("step", "epoch", "step_in_epoch", "world_size") if not isinstance(state.get(k), int)]
    if missing:
        raise CheckpointError(f"{path / 'state.json'}: field(s) {missing} missing or not whole numbers")
    return state


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, rank: int,
                    world_size: int) -> Position:
    """Restore weights, optimizer, scheduler and this rank's RNG states; returns the data position."""
    state = verify(path)
    if state["world_size"] != world_size:
        raise CheckpointError(f"checkpoint {path} was written by {state['world_size']} processes; this run has "
                              f"{world_size}; resume with the same number so data order and RNG streams match")
    load_trainable_state(model, _safetensors(path / "trainable.safetensors"), str(path))
    try:
        optimizer.load_state_dict(_tensors(path / "optimizer.pt"))
        scheduler.load_state_dict(_tensors(path / "scheduler.pt"))
    except (KeyError, ValueError, TypeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path}: optimizer/scheduler state does not fit this run ({error}); resume with "
                              "the settings the checkpoint was made with") from None
    plain = _read(path / f"rng-rank{rank}.json", "RNG state")
    set_rng_state(_safetensors(path / f"rng-rank{rank}.safetensors"), plain)
    return Position(step=state["step"], epoch=state["epoch"], step_in_epoch=state["step_in_epoch"])


__all__ = ["CheckpointError", "Position", "checkpoint_root", "list_checkpoints", "load_checkpoint",
           "resolve_resume", "save_checkpoint", "set_rng_state", "rng_state", "trainable_state", "verify"]
