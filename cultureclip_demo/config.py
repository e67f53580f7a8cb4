"""The demo's configuration: a YAML file in `cultureclip_demo/recipes/` (default.yaml, quick.yaml) read into typed
dataclasses. Training settings themselves live in the trainer's own recipe YAMLs (pretrain.yaml,
finetune-*.yaml), which the demo reads with `cultureclip_training.build_args`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .emoji_sources import ViewRange

RECIPE_DIR = Path(__file__).parent / "recipes"
METHODS = ("plain", "cultureclip")


class DemoConfigError(ValueError):
    """The demo configuration names an unknown field or holds a value out of range."""


@dataclass
class ModelSettings:
    """Shape of the tiny CLIP (see modeling_cultureclip.tiny.tiny_config)."""

    image_size: int = 48
    patch_size: int = 8
    width: int = 96
    vision_layers: int = 3
    text_layers: int = 2
    heads: int = 4
    projection_dim: int = 64


@dataclass
class PretrainSettings:
    recipe: str = "pretrain.yaml"
    views_per_emoji: int = 6
    view: ViewRange = field(default_factory=lambda: ViewRange(0.0, 15.0, 0.55, 0.95, 0.08))
    max_general_emoji: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class FinetuneSettings:
    recipes: dict[str, str] = field(default_factory=lambda: {"plain": "finetune-clip.yaml",
                                                              "cultureclip": "finetune-cultureclip.yaml"})
    replay_rows: int = 750
    train_new_words: bool = True
    workers: int = 2  # fine-tuning runs in parallel processes
    threads_per_worker: int = 1  # torch threads in each
    view: ViewRange = field(default_factory=lambda: ViewRange(0.0, 15.0, 0.55, 0.95, 0.08))
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSettings:
    view: ViewRange = field(default_factory=lambda: ViewRange(18.0, 28.0, 1.0, 1.1, 0.0))
    twin_views: int = 6
    general_classes: int = 400
    general_views: int = 2
    other_styles: list[str] = field(default_factory=lambda: ["openmoji"])
    bootstrap_resamples: int = 200
    batch_size: int = 256
    seed: int = 12345


@dataclass
class DemoConfig:
    """Everything the demo run needs besides the output folder."""

    data_recipe: str = "demo"
    seeds: int = 5
    threads: int = 2  # torch threads for the single-process stages (pretraining, the base's evaluation)
    model: ModelSettings = field(default_factory=ModelSettings)
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    source: str = ""

    def validate(self) -> None:
        """Raise DemoConfigError naming the field when a value is out of range."""
        if self.seeds < 1:
            raise DemoConfigError(f"{self.source}: seeds={self.seeds}: expected >= 1")
        if self.threads < 1:
            raise DemoConfigError(f"{self.source}: threads={self.threads}: expected >= 1")
        if set(self.finetune.recipes) != set(METHODS):
            raise DemoConfigError(f"{self.source}: finetune.recipes must name exactly {list(METHODS)}")
        for name in ("views_per_emoji",):
            if getattr(self.pretrain, name) < 1:
                raise DemoConfigError(f"{self.source}: pretrain.{name} must be >= 1")
        for name in ("twin_views", "general_classes", "general_views"):
            if getattr(self.evaluation, name) < 1:
                raise DemoConfigError(f"{self.source}: evaluation.{name} must be >= 1")
        for name in ("workers", "threads_per_worker"):
            if getattr(self.finetune, name) < 1:
                raise DemoConfigError(f"{self.source}: finetune.{name}={getattr(self.finetune, name)}: expected >= 1")
        if self.finetune.replay_rows < 0:
            raise DemoConfigError(f"{self.source}: finetune.replay_rows must be >= 0")


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise DemoConfigError(f"{path}: inherits from itself")
    if not path.is_file():
        raise DemoConfigError(f"demo config {path} does not exist")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise DemoConfigError(f"{path}: expected a mapping")
    parent = values.pop("inherit", None)
    return _merge(_read(resolve(parent, path.parent), seen + (path,)), values) if parent else values


def resolve(name: str, relative_to: Path = RECIPE_DIR) -> Path:
    """A config or recipe file: an existing path, else a file of that name beside `relative_to`, else a shipped
    one (so a user's config can `inherit: default.yaml`)."""
    path = Path(name)
    if path.is_file():
        return path
    beside = relative_to / name
    return beside if beside.is_file() or not (RECIPE_DIR / name).is_file() else RECIPE_DIR / name


def _build(cls, values: dict, where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise DemoConfigError(f"{where}: unknown field(s) {unknown}; expected {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        nested = {"model": ModelSettings, "pretrain": PretrainSettings, "finetune": FinetuneSettings,
                  "evaluation": EvalSettings}.get(name) if cls is DemoConfig else None
        if nested is not None:
            value = _build(nested, value or {}, f"{where}.{name}")
        elif name == "view":
            try:
                value = ViewRange(**value)
            except TypeError as error:
                raise DemoConfigError(f"{where}.view: {error}") from None
        kwargs[name] = value
    return cls(**kwargs)


def load_config(name: str = "default.yaml") -> DemoConfig:
    """Read a demo config (a path, or a file name in cultureclip_demo/recipes/), resolving `inherit:`."""
    path = resolve(name)
    config = _build(DemoConfig, _read(path), str(path))
    config.source = str(path)
    config.validate()
    return config


__all__ = ["DemoConfig", "DemoConfigError", "EvalSettings", "FinetuneSettings", "METHODS", "ModelSettings",
           "PretrainSettings", "RECIPE_DIR", "load_config", "resolve"]
