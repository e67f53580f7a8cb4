"""Start-up rendezvous of the ranks of a multi-process run, with a short timeout and a plain message.

WORLD_SIZE/RANK left over in a shell, or a launch that started fewer processes than it said, would otherwise make
rank 0 wait silently: an hour at the builder's file barrier, 30 minutes in torch.distributed's start-up. The
stage barriers after start-up keep their long timeouts on purpose (ranks can finish a stage hours apart); only the
first meeting, when every rank has just been launched, is short: CULTURECLIP_RENDEZVOUS_TIMEOUT_S seconds (default
60) unless the caller passes another value.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from .errors import RunFailure

TIMEOUT_ENV = "CULTURECLIP_RENDEZVOUS_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 60.0


class RendezvousTimeout(RunFailure):
    """Some ranks of a multi-process run never started."""


def rendezvous_timeout_s(value: float | None = None) -> float:
    """`value`, else CULTURECLIP_RENDEZVOUS_TIMEOUT_S, else 60 seconds."""
    if value is not None:
        return float(value)
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        from .errors import BadInput

        raise BadInput(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from None
    return seconds


def missing_ranks_message(world: int, rank: int, missing: list[int], timeout_s: float) -> str:
    """The message for ranks that never came."""
    who = ", ".join(map(str, missing))
    return (f"WORLD_SIZE={world} and RANK={rank} are set, but rank(s) {who} never started within {timeout_s:g} s. "
            f"Launch all {world} processes together (`torchrun --nproc_per_node {world} ...` or `accelerate launch "
            f"--num_processes {world} ...`), or unset WORLD_SIZE and RANK to run one process "
            f"(the wait is set by {TIMEOUT_ENV})")


def file_rendezvous(folder: str | os.PathLike, rank: int, world: int, timeout_s: float | None = None,
                    poll_s: float = 0.05) -> None:
    """Wait until every rank has announced itself in `folder` (a shared file system), at most `timeout_s` seconds.

    Each rank writes `start.rank<r>-of-<world>.json` with the wall-clock time it arrived; a marker counts when it is
    at most `timeout_s` older or newer than this rank's own arrival, so markers left by an earlier launch never
    release the meeting. A rank that gives up removes its own marker, so a rank arriving later does not take it for
    a live peer.
    """
    if world <= 1:
        return
    timeout = rendezvous_timeout_s(timeout_s)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrived = time.time()
    mine = folder / f"start.rank{rank}-of-{world}.json"
    temporary = mine.with_name(f".tmp-{mine.name}.{os.getpid()}")
    temporary.write_text(json.dumps({"rank": rank, "world": world, "arrived": arrived, "pid": os.getpid()}))
    os.replace(temporary, mine)

    def live(r: int) -> bool:
        path = folder / f"start.rank{r}-of-{world}.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return abs(float(info.get("arrived", 0.0)) - arrived) <= timeout

    deadline = time.monotonic() + timeout
    while True:
        missing = [r for r in range(world) if r != rank and not live(r)]
        if not missing:
            return
        if time.monotonic() > deadline:
            mine.unlink(missing_ok=True)
            raise RendezvousTimeout(missing_ranks_message(world, rank, missing, timeout))
        time.sleep(poll_s)


def store_rendezvous(rank: int, world: int, timeout_s: float | None = None) -> Any:
    """Meet every rank through torch.distributed's TCPStore at MASTER_ADDR:MASTER_PORT within `timeout_s`.

    Returns the connected store under a prefix of this launch (its timeout then raised to 30 minutes); raises
    RendezvousTimeout naming the ranks that never came. Under torchrun's agent store every rank is a client.
    """
    import torch.distributed as dist

    timeout = rendezvous_timeout_s(timeout_s)
    host = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ.get("MASTER_PORT", "29500"))
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    is_master = rank == 0 and not agent_store
    started = time.monotonic()
    try:
        store = dist.TCPStore(host, port, world_size=None, is_master=is_master, timeout=timedelta(seconds=timeout),
                              wait_for_workers=False)
    except (RuntimeError, OSError, TimeoutError) as exc:  # DistNetworkError/DistStoreError subclass RuntimeError
        if is_master:
            raise RunFailure(f"rank 0 cannot listen on MASTER_ADDR:MASTER_PORT={host}:{port} "
                             f"({' '.join(str(exc).split())[:200]})",
                             hint="another run may use that port: set MASTER_PORT to a free one") from None
        raise RendezvousTimeout(missing_ranks_message(world, rank, [0], timeout)) from None
    attempt = os.environ.get("TORCHELASTIC_RUN_ID", "") + "/" + os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefix = f"cultureclip-start/{attempt}/"
    store.set(f"{prefix}rank{rank}", "1")
    keys = [f"{prefix}rank{r}" for r in range(world)]
    while True:
        present = [store.check([key]) for key in keys]
        if all(present):
            break
        if time.monotonic() - started > timeout:
            missing = [r for r, here in enumerate(present) if not here]
            raise RendezvousTimeout(missing_ranks_message(world, rank, missing, timeout))
        time.sleep(0.05)
    store.set_timeout(timedelta(minutes=30))
    return dist.PrefixStore(prefix, store)


def init_process_group(backend: str, timeout_s: float | None = None) -> bool:
    """Initialise torch.distributed's default group from RANK/WORLD_SIZE after a short start-up rendezvous.

    Does nothing (returns False) for one process or when a group exists already. The group itself keeps torch's
    30-minute timeout for collectives (a rank may save a large model while the others wait).
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    rank = int(os.environ.get("RANK", "0"))
    store = store_rendezvous(rank, world, timeout_s)
    dist.init_process_group(backend, store=dist.PrefixStore("default_pg", store), rank=rank, world_size=world,
                            timeout=timedelta(minutes=30))
    return True


__all__ = ["DEFAULT_TIMEOUT_S", "RendezvousTimeout", "TIMEOUT_ENV", "file_rendezvous", "init_process_group",
           "missing_ranks_message", "rendezvous_timeout_s", "store_rendezvous"]
