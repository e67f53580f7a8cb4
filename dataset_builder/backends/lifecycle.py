"""Per-stage backend lifetimes: load a backend when a stage first needs it, release it when the stage is over.

A 7B VLM in bf16 (~17 GB) and SD3.5-large-turbo in fp16 (~27 GB) do not fit one 40/48 GB card together, and a rerun
that only has the judge stage left should not load the diffusion model at all. `BackendPool` therefore builds each
role's backend lazily (on first use inside a stage that has work), lets the text and judge roles share one loaded
model when they name the same weights, and drops a backend (`del` + `gc` + `torch.cuda.empty_cache()`) once the
pipeline says its last stage is done. A weak reference to each loaded model tells whether the release really
freed it; `live_by_stage` and `leaks` expose that for tests and benchmarks.
"""

from __future__ import annotations

import gc
import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .devices import describe_device, free_accelerator_memory, local_rank

ROLES = ("text", "image", "judge")
# Options that only steer generation: two roles whose specs differ only in these can share one loaded model.
GENERATION_OPTIONS = frozenset({"batch_size", "deterministic", "temperature", "top_p", "max_new_tokens"})


def offline_identity(kind: str) -> tuple[str, str] | None:
    """(model_id, revision) of an offline backend kind, known without building it."""
    from .offline import OFFLINE_IMAGE_ID, OFFLINE_JUDGE_ID, OFFLINE_TEXT_ID

    return {"offline-template": (OFFLINE_TEXT_ID, "v1"), "offline-rule-judge": (OFFLINE_JUDGE_ID, "v1"),
            "offline-twemoji": (OFFLINE_IMAGE_ID, "v1")}.get(kind)


def share_key(spec: Any) -> str:
    """Identity of the weights a spec loads (kind, model, revision and every non-generation option)."""
    options = {k: v for k, v in (spec.options or {}).items() if k not in GENERATION_OPTIONS}
    return json.dumps([spec.kind, spec.model_id, spec.revision, options], sort_keys=True, default=str)


def heavy_part(backend: Any) -> Any:
    """The object that holds a backend's memory (a transformers model, a diffusers pipeline, else the backend)."""
    for name in ("model", "pipeline"):
        part = getattr(backend, name, None)
        if part is not None:
            return part
    return backend


@dataclass
class RoleSpec:
    """How to build one role's backend: the recipe's spec and a factory taking optional generation overrides."""

    spec: Any
    factory: Callable[[], Any]
    generation: dict[str, Any] = field(default_factory=dict)  # this role's generation settings (for shared views)


class BackendPool:
    """Builds, shares and releases the backends of the text, image and judge roles."""

    def __init__(self, roles: dict[str, RoleSpec | None], injected: dict[str, Any] | None = None,
                 record_dir: Path | None = None, rank: int = 0, world: int = 1) -> None:
        """`roles` maps a role to how to build it (None: the role has no spec); `injected` holds ready backends that
        the caller owns (never released here). Load records go to `record_dir/<role>.rank<r>-of-<W>.json`."""
        self.roles = roles
        self.injected = {k: v for k, v in (injected or {}).items() if v is not None}
        self.record_dir = record_dir
        self.rank, self.world = rank, world
        self._loaded: dict[str, Any] = {}
        self._refs: dict[str, weakref.ref] = {}
        self.loads: list[str] = []  # roles in the order their backends were built (a shared view counts as no load)
        self.live_by_stage: dict[str, int] = {}
        self.leaks: list[str] = []
        self._recorded: set[str] = set()
        self.request_stats: dict[str, dict[str, int]] = {}  # remote backends' counters, kept when they are released

    # ------------------------------------------------------------------------------------------------------------
    def get(self, role: str) -> Any:
        """The role's backend, building it now if needed (and sharing weights with the other chat role if possible)."""
        if role in self.injected:
            if role not in self._recorded:
                self._attach_answer_log(self.injected[role])
                self._write_record(role, self.injected[role])
            return self.injected[role]
        if role in self._loaded:
            return self._loaded[role]
        how = self.roles.get(role)
        if how is None:
            raise ValueError(f"no {role} backend: the recipe names none and none was passed to build()")
        backend = self._shared_view(role, how)
        if backend is None:
            backend = how.factory()
            self.loads.append(role)
        self._attach_answer_log(backend)
        self._loaded[role] = backend
        self._refs[role] = weakref.ref(heavy_part(backend)) if _weakrefable(heavy_part(backend)) else None
        self._write_record(role, backend)
        return backend

    def _shared_view(self, role: str, how: RoleSpec) -> Any:
        key = share_key(how.spec)
        for other, backend in self._loaded.items():
            other_how = self.roles.get(other)
            if other == role or other_how is None or share_key(other_how.spec) != key:
                continue
            if how.generation == other_how.generation:
                return backend
            with_settings = getattr(backend, "with_settings", None)
            if with_settings is not None:
                return with_settings(**how.generation)
        return None

    def is_loaded(self, role: str) -> bool:
        """Whether the role's backend is built (or injected)."""
        return role in self.injected or role in self._loaded

    def live(self) -> int:
        """Number of distinct heavy objects (models, pipelines) of built backends still alive (releases collect
        garbage themselves, so no collection is needed here)."""
        alive = {id(obj) for ref in self._refs.values() if ref is not None and (obj := ref()) is not None}
        return len(alive)

    def end_stage(self, stage: str, release: tuple[str, ...] = ()) -> None:
        """Record how many built backends were alive during `stage`, then release the given roles."""
        self.live_by_stage[stage] = self.live()
        for role in release:
            self.release(role)

    def release(self, role: str) -> None:
        """Drop the role's backend unless injected or still used by another role; check it was really freed."""
        backend = self._loaded.pop(role, None)
        ref = self._refs.pop(role, None)
        if backend is None:
            return
        self._keep_stats(role, backend)
        still_used = any(heavy_part(b) is heavy_part(backend) for b in self._loaded.values())
        del backend
        if still_used:
            return
        gc.collect()
        free_accelerator_memory()
        if ref is not None and ref() is not None:
            self.leaks.append(role)

    def release_all(self) -> None:
        """Release every built backend (end of the build, or after an error); keep injected backends' counters."""
        for role in list(self._loaded):
            self.release(role)
        for role, backend in self.injected.items():
            if role in self._recorded:
                self._keep_stats(role, backend)

    def _keep_stats(self, role: str, backend: Any) -> None:
        stats = getattr(backend, "stats", None)
        if stats is not None:
            merged = self.request_stats.setdefault(role, {})
            for name, value in dict(stats).items():
                merged[name] = merged.get(name, 0) + int(value)

    # ------------------------------------------------------------------------------------------------------------
    def identity(self, role: str) -> tuple[str, str | None]:
        """(model_id, revision) of a role without building it: from the live backend, this run's load records, or
        the recipe spec."""
        backend = self.injected.get(role) or self._loaded.get(role)
        if backend is not None:
            return str(backend.model_id), backend.revision
        for record in self.records(role):
            return record["model_id"], record["revision"]
        how = self.roles.get(role)
        if how is None:
            return "unknown", None
        known = offline_identity(how.spec.kind)
        return known if known else (str(how.spec.model_id), how.spec.revision)

    def records(self, role: str | None = None) -> list[dict[str, Any]]:
        """Load records of this run folder (every rank, every run), sorted by role and rank."""
        if self.record_dir is None or not self.record_dir.exists():
            return []
        pattern = f"{role}.rank*.json" if role else "*.rank*.json"
        out = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.record_dir.glob(pattern))]
        return sorted(out, key=lambda r: (r["role"], r["world"], r["rank"]))

    def _attach_answer_log(self, backend: Any) -> None:
        """Give a remote backend (one with an `answer_log` slot) this run's log, so answers survive a kill."""
        if self.record_dir is not None and hasattr(backend, "answer_log") and backend.answer_log is None:
            from .answer_log import AnswerLog

            backend.answer_log = AnswerLog(self.record_dir.parent / "answers")

    def _write_record(self, role: str, backend: Any) -> None:
        self._recorded.add(role)
        if self.record_dir is None:
            return
        from ..runstore import atomic_write_json

        how = self.roles.get(role)
        record = {"role": role, "rank": self.rank, "world": self.world, "local_rank": local_rank(),
                  "model_id": str(backend.model_id), "revision": backend.revision,
                  "kind": how.spec.kind if how is not None and role not in self.injected else "injected",
                  **describe_device(getattr(backend, "device", "cpu")),
                  "dtype": str(getattr(backend, "dtype", None) or "") or None}
        atomic_write_json(self.record_dir / f"{role}.rank{self.rank}-of-{self.world}.json", record)


def _weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True
