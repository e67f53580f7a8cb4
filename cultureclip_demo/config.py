"""The demo's configuration: a YAML file in `cultureclip_demo/recipes/` (default.yaml, quick.yaml) read into typed
dataclasses. Training settings themselves live in the trainer's own recipe YAMLs (pretrain.yaml,
finetune-*.yaml), which the demo reads with `cultureclip_training.build_args`.

Every value is checked against its field's type and range when the file is read, so a bad config fails with one
line naming the file and the field before anything runs.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from cultureclip_guards import BadInput

from .emoji_sources import STYLES, ViewRange

RECIPE_DIR = Path(__file__).parent / "recipes"
METHODS = ("plain", "cultureclip")  # the compared pair; `plain` is the reference of every paired difference
REFERENCE_METHOD = "plain"
SELECTION_RULES = ("largest_alpha_within_general_drop",)
RESAMPLE_UNITS = ("item", "group")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class DemoConfigError(BadInput):
    """The demo configuration names an unknown field or holds a value of the wrong type or out of range."""


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
    replay_rows: int = 750  # general replay rows per seed (the same rows for every method of that seed)
    train_new_words: bool = True
    workers: int = 2  # fine-tuning runs in parallel processes
    threads_per_worker: int = 1  # torch threads in each
    view: ViewRange = field(default_factory=lambda: ViewRange(0.0, 15.0, 0.55, 0.95, 0.08))
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class ViewSet:
    """One family of evaluation views: where they are drawn from and how many."""

    view: ViewRange
    twin_views: int = 6  # views per side of each catalog pair
    general_classes: int = 400  # general emoji (outside the twin catalog) in the zero-shot task
    general_views: int = 2
    seed: int = 0


@dataclass
class EvalSettings:
    # validation views: the only views any choice is made on (Twemoji only)
    validation: ViewSet = field(default_factory=lambda: ViewSet(ViewRange(18.0, 28.0, 1.0, 1.1, 0.0), seed=12345))
    # test views: scored once, after every choice is fixed (Twemoji and the other styles)
    test: ViewSet = field(default_factory=lambda: ViewSet(ViewRange(30.0, 40.0, 1.0, 1.1, 0.0), seed=20261))
    other_styles: list[str] = field(default_factory=lambda: ["openmoji"])
    bootstrap_resamples: int = 200  # of the per-model records written by evaluate_suite
    batch_size: int = 256


@dataclass
class SelectionSettings:
    """How the WiSE-FT alpha of each (method, seed) is chosen, on validation views only."""

    rule: str = "largest_alpha_within_general_drop"
    alphas: list[float] = field(default_factory=lambda: [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    max_general_drop: float = 0.02  # accuracy (fraction) the blend may lose against the base on validation views


@dataclass
class ClaimSettings:
    """The claim check on test views, from paired bootstrap confidence intervals."""

    max_general_drop: float = 0.03  # the upper CI bound of CultureCLIP's general drop vs the base must stay below
    confidence_level: float = 0.95
    bootstrap_resamples: int = 2000
    resample_unit: str = "group"  # "group": a twin pair or a general class with all its views; "item": one image
    seed: int = 0


@dataclass
class VariantSettings:
    """One fine-tuning variant of the ablation: a trainer recipe and field overrides on top of it."""

    recipe: str = "finetune-cultureclip.yaml"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class AblationSettings:
    """Extra CultureCLIP variants run beside plain and cultureclip by `--ablation` (same data, budget, seeds)."""

    variants: dict[str, VariantSettings] = field(default_factory=dict)


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
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    claim: ClaimSettings = field(default_factory=ClaimSettings)
    ablation: AblationSettings = field(default_factory=AblationSettings)
    source: str = ""

    def validate(self) -> None:
        """Raise DemoConfigError naming the field when a value is out of range."""
        where = self.source or "demo config"

        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise DemoConfigError(f"{where}: {name}: expected {expected}")

        need(self.seeds >= 1, f"seeds={self.seeds}", ">= 1")
        need(self.threads >= 1, f"threads={self.threads}", ">= 1")
        need(set(self.finetune.recipes) == set(METHODS), "finetune.recipes", f"exactly the methods {list(METHODS)}")
        need(self.pretrain.views_per_emoji >= 1, "pretrain.views_per_emoji", ">= 1")
        for name in ("workers", "threads_per_worker"):
            value = getattr(self.finetune, name)
            need(value >= 1, f"finetune.{name}={value}", ">= 1")
        need(self.finetune.replay_rows >= 0, "finetune.replay_rows", ">= 0")
        for family in ("validation", "test"):
            views = getattr(self.evaluation, family)
            for name in ("twin_views", "general_classes", "general_views"):
                value = getattr(views, name)
                need(value >= 1, f"evaluation.{family}.{name}={value}", ">= 1")
            _check_view(views.view, f"evaluation.{family}.view", need)
        _check_view(self.pretrain.view, "pretrain.view", need)
        _check_view(self.finetune.view, "finetune.view", need)
        unknown = sorted(set(self.evaluation.other_styles) - set(STYLES))
        need(not unknown, f"evaluation.other_styles {unknown}", f"style names among {sorted(STYLES)}")
        need("twemoji" not in self.evaluation.other_styles, "evaluation.other_styles",
             "styles other than twemoji (the training style is always evaluated)")
        need(self.evaluation.batch_size >= 1, "evaluation.batch_size", ">= 1")
        selection = self.selection
        need(selection.rule in SELECTION_RULES, f"selection.rule={selection.rule!r}", f"one of {list(SELECTION_RULES)}")
        need(bool(selection.alphas) and all(0.0 <= a <= 1.0 for a in selection.alphas), "selection.alphas",
             "a non-empty list of numbers in [0, 1]")
        need(len(set(selection.alphas)) == len(selection.alphas), "selection.alphas", "distinct values")
        need(0.0 <= selection.max_general_drop < 1.0, "selection.max_general_drop", "a fraction in [0, 1)")
        claim = self.claim
        need(0.0 <= claim.max_general_drop < 1.0, "claim.max_general_drop", "a fraction in [0, 1)")
        need(0.5 <= claim.confidence_level < 1.0, "claim.confidence_level", "a level in [0.5, 1)")
        need(claim.bootstrap_resamples >= 100, "claim.bootstrap_resamples", ">= 100")
        need(claim.resample_unit in RESAMPLE_UNITS, f"claim.resample_unit={claim.resample_unit!r}",
             f"one of {list(RESAMPLE_UNITS)}")
        for name in self.ablation.variants:
            need(bool(_NAME.match(name)) and name not in METHODS and name != "base", f"ablation variant {name!r}",
                 f"a lower-case name of letters, digits and _ other than {['base', *METHODS]}")

    def methods(self, ablation: bool = False) -> dict[str, VariantSettings]:
        """Every fine-tuning method of a run by name: plain, cultureclip, and the ablation variants when asked."""
        out = {name: VariantSettings(self.finetune.recipes[name]) for name in METHODS}
        if ablation:
            out.update(self.ablation.variants)
        return out


def _check_view(view: ViewRange, name: str, need) -> None:
    need(0.0 <= view.min_rotation <= view.max_rotation, f"{name} rotation", "0 <= min_rotation <= max_rotation")
    need(0.0 < view.min_scale <= view.max_scale, f"{name} scale", "0 < min_scale <= max_scale")
    need(0.0 <= view.max_shift < 0.5, f"{name}.max_shift", "a fraction of the frame in [0, 0.5)")


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
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise DemoConfigError(f"{path}: cannot read the YAML ({' '.join(str(error).split())})") from None
    if not isinstance(values, dict):
        raise DemoConfigError(f"{path}: expected a mapping")
    parent = values.pop("inherit", None)
    if parent is not None and not isinstance(parent, str):
        raise DemoConfigError(f"{path}: inherit: expected a file name")
    return _merge(_read(resolve(parent, path.parent), seen + (path,)), values) if parent else values


def resolve(name: str, relative_to: Path = RECIPE_DIR) -> Path:
    """A config or recipe file: an existing path, else a file of that name beside `relative_to`, else a shipped
    one (so a user's config can `inherit: default.yaml`)."""
    path = Path(name)
    if path.is_file():
        return path
    beside = relative_to / name
    return beside if beside.is_file() or not (RECIPE_DIR / name).is_file() else RECIPE_DIR / name


def _type_text(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _convert(value: Any, hint: Any, where: str) -> Any:
    """`value` as the field type `hint` wants (dataclasses built recursively), or DemoConfigError naming `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if is_dataclass(hint):
        if not isinstance(value, dict):
            raise DemoConfigError(f"{where}: expected a mapping of {sorted(f.name for f in fields(hint))}, "
                                  f"got {value!r}")
        return _build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise DemoConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise DemoConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise DemoConfigError(f"{where}: expected {_type_text(hint)}, got {value!r}")
    return value


def _build(cls, values: dict, where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise DemoConfigError(f"{where}: unknown field(s) {unknown}; expected {sorted(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as error:  # a required field left out (ViewSet.view, ViewRange's bounds)
        raise DemoConfigError(f"{where}: {error}") from None


def load_config(name: str = "default.yaml") -> DemoConfig:
    """Read a demo config (a path, or a file name in cultureclip_demo/recipes/), resolving `inherit:`."""
    path = resolve(name)
    config = _build(DemoConfig, _read(path), str(path))
    config.source = str(path)
    config.validate()
    return config


__all__ = ["AblationSettings", "ClaimSettings", "DemoConfig", "DemoConfigError", "EvalSettings", "FinetuneSettings",
           "METHODS", "ModelSettings", "PretrainSettings", "RECIPE_DIR", "REFERENCE_METHOD", "SelectionSettings",
           "VariantSettings", "ViewSet", "load_config", "resolve"]
