"""What every stage shares: the run context, sharding, resumable batched item loops and statistics."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..backends.base import ChatBackend, ImageBackend
from ..backends.lifecycle import BackendPool
from ..recipe import Recipe
from ..runstore import StageStore, atomic_write_json, barrier, digest_keys


def rank_world(use_accelerate: bool = False) -> tuple[int, int]:
    """(rank, world size) from RANK/WORLD_SIZE (set by torchrun and `accelerate launch`), or accelerate's state."""
    if "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
    elif use_accelerate:
        from accelerate import PartialState

        state = PartialState()
        rank, world = state.process_index, state.num_processes
    else:
        rank, world = 0, 1
    if not 0 <= rank < world:
        raise ValueError(f"invalid rank {rank} for world size {world}")
    return rank, world


class RunContext:
    """Everything a stage needs: run folder, recipe, backends, shard position and a progress switch.

    Backends come from a `BackendPool` and are built on first access (`ctx.text_backend` inside a stage's batch
    function), so a stage with nothing left to do never loads its model. Backends passed directly are used as given.
    """

    def __init__(self, run_dir: Path, recipe: Recipe, text_backend: ChatBackend | None = None,
                 image_backend: ImageBackend | None = None, judge_backend: ChatBackend | None = None, *,
                 rank: int = 0, world: int = 1, progress: bool = True, limit_pairs: int | None = None,
                 log: Callable[[str], None] | None = None, backends: BackendPool | None = None,
                 barrier_timeout_s: float = 86400.0) -> None:
        self.run_dir = Path(run_dir)
        self.recipe = recipe
        injected = {"text": text_backend, "image": image_backend, "judge": judge_backend}
        if backends is None:
            backends = BackendPool({}, injected)
        else:
            backends.injected.update({k: v for k, v in injected.items() if v is not None})
        self.backends = backends
        self.rank, self.world = rank, world
        self.progress = progress
        self.limit_pairs = limit_pairs
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.barrier_timeout_s = barrier_timeout_s

    @property
    def text_backend(self) -> ChatBackend:
        """The text writer (built on first use)."""
        return self.backends.get("text")

    @property
    def image_backend(self) -> ImageBackend:
        """The image renderer (built on first use)."""
        return self.backends.get("image")

    @property
    def judge_backend(self) -> ChatBackend:
        """The judge (built on first use)."""
        return self.backends.get("judge")

    def store(self, stage: str) -> StageStore:
        """The record store of `stage`."""
        return StageStore(self.run_dir, stage)


def my_share(keys: Sequence[str], rank: int, world: int) -> list[str]:
    """This rank's share of the sorted keys (round-robin over the sorted order, so shares stay balanced)."""
    ordered = sorted(keys)
    return [k for i, k in enumerate(ordered) if i % world == rank]


def run_items(
    ctx: RunContext,
    stage: str,
    keys: Sequence[str],
    batch_size: int,
    process_batch: Callable[[list[str]], dict[str, dict[str, Any]]],
) -> None:
    """Process this rank's not-yet-done items in batches and store one record per item.

    `process_batch` returns a record per key. Records are written as soon as their batch finishes, so a kill loses
    at most the batch in flight. After the loop all ranks meet at a barrier keyed by the item list.
    """
    store = ctx.store(stage)
    mine = my_share(keys, ctx.rank, ctx.world)
    todo = [k for k in mine if not store.has(k)]
    bar = None
    if ctx.progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"{stage:>8} [rank {ctx.rank}/{ctx.world}]",
                   file=sys.stderr, leave=True)
    done_now = 0
    for start in range(0, len(todo), max(1, batch_size)):
        batch = todo[start : start + batch_size]
        records = process_batch(batch)
        missing = [k for k in batch if k not in records]
        if missing:
            raise RuntimeError(f"stage {stage}: no record produced for {missing[:3]}")
        for key in batch:
            store.put(key, records[key])
        done_now += len(batch)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    atomic_write_json(store.root / f"rank-{ctx.rank}-of-{ctx.world}.json",
                      {"stage": stage, "assigned": len(mine), "processed_this_run": done_now})
    barrier(ctx.run_dir, f"{stage}-{digest_keys(keys)}", ctx.rank, ctx.world, timeout_s=ctx.barrier_timeout_s)


def load_records(ctx: RunContext, stage: str, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Records of `keys` (all ranks' work, read after the barrier)."""
    store = ctx.store(stage)
    return {k: store.get(k) for k in keys}


def status_counts(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Counts of kept items and of rejections by reason."""
    c: Counter[str] = Counter()
    for rec in records:
        c["kept" if rec["status"] == "ok" else f"rejected:{rec['reason']}"] += 1
    return dict(sorted(c.items()))


def ok(**fields: Any) -> dict[str, Any]:
    """A kept-item record."""
    return {"status": "ok", "reason": None, **fields}


def rejected(reason: str, **fields: Any) -> dict[str, Any]:
    """A rejected-item record with its reason (always counted in the summary)."""
    return {"status": "rejected", "reason": reason, **fields}
