"""Training arguments: one typed dataclass, YAML recipes that mirror it, and command-line overrides.

A recipe is a YAML mapping of `TrainArgs` fields, optionally naming another recipe under `inherit:` whose values
it overrides. Built-in recipes live in `cultureclip_training/recipes/`; any other YAML path works too. Every field
can then be overridden on the command line as `--field value`, `--field=value` or, for booleans, a bare `--field`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modeling_cultureclip import LOSS_MODES, LOSS_TERMS

from cultureclip_guards import BadInput, read_yaml

RECIPE_DIR = Path(__file__).parent / "recipes"
OBJECTIVES = ("cultureclip", "clip")
ACCUMULATION_MODES = ("feature_cache", "plain")
# recipes renamed because their old names claimed to be the paper's run; the error for an old name points here
RENAMED_RECIPES = {"paper-b32": "release-b32 (the authors' exact launch) or faithful-cached-b32 (the old paper-b32)",
                   "paper-l14": "release-l14 (the authors' launch on ViT-L/14) or faithful-cached-l14 (the old one)"}
FINETUNE_MODES = ("lora", "full")

TINY_MODEL = "tiny"


class RecipeError(BadInput):
    """A recipe or command line names an unknown field or gives a value of the wrong type."""


@dataclass
class TrainArgs:
    """Every setting of a training run (see the recipes for the published values).

    Batch terms: a step sees `per_device_batch_size * micro_batches * world_size` twin pairs (one pair per row;
    for `objective: clip` one (image, caption) example per side). With `accumulation: feature_cache` (default)
    micro-batches are combined by feature caching, so the loss of a step is the loss of the whole effective batch,
    with every negative in it; with `accumulation: plain` (the authors' release) each micro-batch's loss sees only
    its own `per_device_batch_size` rows on its own process, and the step's gradient is the mean of theirs.
    """

    # what to train
    model: str = "openai/clip-vit-base-patch32"  # Hub id, local dir (CLIP or CultureCLIP), or "tiny" (fresh random)
    dataset: str = ""  # Hub id or local folder readable by datasets.load_dataset
    dataset_config: str | None = None
    train_split: str = "train"
    max_train_samples: int | None = None  # first N rows only (quick runs)
    output_dir: str = "outputs/cultureclip"
    recipe: str | None = None  # filled in with the recipe's name

    # objective
    objective: str = "cultureclip"  # "cultureclip" (twin pairs kept together) or "clip" (rows split, shuffled)
    loss_mode: str = "improved"
    loss_terms: str = "cultureclip"  # the released loss_type names; see CultureCLIPConfig.loss_terms
    caption_loss_weight: float = 0.5
    concept_loss_weight: float = 0.5
    use_twin_negatives: bool = True
    normalize_features: bool | None = None  # None: the loss mode's preset
    symmetric_twin_negatives: bool | None = None
    mask_false_negatives: bool | None = None
    logit_scale_max: float | None = None
    train_logit_scale: bool = False

    # what is trained
    finetune: str = "lora"  # "lora" (PEFT adapters) or "full"
    lora_rank: int = 4
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_towers: list[str] = field(default_factory=lambda: ["text", "vision"])
    lora_layers: str = "all"
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lora_projections: bool = False
    # words whose token-embedding rows train with the adapters (PEFT's trainable tokens): for words the base model
    # never saw in pretraining, whose embeddings LoRA on the attention layers cannot move
    lora_trainable_tokens: list[str] = field(default_factory=list)

    # optimisation
    per_device_batch_size: int = 128
    micro_batches: int = 1  # micro-batches per step, combined as `accumulation` says
    accumulation: str = "feature_cache"  # "feature_cache" (all negatives) or "plain" (each micro-batch alone)
    epochs: float = 10.0
    max_steps: int | None = None  # overrides epochs when set
    learning_rate: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 100
    lr_scheduler: str = "cosine"  # any transformers.get_scheduler name
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0
    mixed_precision: str | None = None  # "no", "fp16", "bf16"; None: accelerate's launch config decides
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the towers (benchmarks/train_throughput.py measures whether it pays)
    seed: int = 42
    num_workers: int = 0

    # checkpoints and logging
    checkpoint_every: int = 500  # steps; 0 disables
    keep_checkpoints: int = 3
    resume: str | None = None  # "latest" or a checkpoint folder
    # start over in an output_dir that holds another run, a model or files (refused without it), or instead of
    # resuming a checkpoint whose settings differ from this run's
    overwrite: bool = False
    rendezvous_timeout_s: float | None = None  # multi-process start-up wait; None: CULTURECLIP_RENDEZVOUS_TIMEOUT_S or 60
    log_every: int = 10
    report_to: str = "auto"  # "auto" (TensorBoard when installed), "tensorboard", "none"
    progress_bar: bool = True

    # end artifacts
    save_artifacts: bool = True
    wise_ft_alpha: float | None = None
    license: str = "mit"
    card_base_model: str | None = None  # Hub id for the card when `model` is a local folder
    card_dataset: str | None = None  # Hub id for the card when `dataset` is a local folder
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise RecipeError naming the field when a value is out of range."""
        def fail(name: str, expected: str) -> None:
            raise RecipeError(f"{name}={getattr(self, name)!r}: expected {expected}")

        if self.objective not in OBJECTIVES:
            fail("objective", f"one of {OBJECTIVES}")
        if self.finetune not in FINETUNE_MODES:
            fail("finetune", f"one of {FINETUNE_MODES}")
        if self.accumulation not in ACCUMULATION_MODES:
            fail("accumulation", f"one of {ACCUMULATION_MODES}")
        if self.loss_terms not in LOSS_TERMS:
            fail("loss_terms", f"one of {tuple(LOSS_TERMS)}")
        if self.loss_mode not in LOSS_MODES:
            fail("loss_mode", f"one of {LOSS_MODES}")
        for name in ("per_device_batch_size", "micro_batches", "log_every"):
            if getattr(self, name) < 1:
                fail(name, "an integer >= 1")
        for name in ("warmup_steps", "num_workers"):
            if getattr(self, name) < 0:
                fail(name, "an integer >= 0")
        for name in ("weight_decay", "caption_loss_weight", "concept_loss_weight"):
            if getattr(self, name) < 0:
                fail(name, "a number >= 0")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            fail("max_train_samples", "an integer >= 1 or null")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(name, "a number in [0, 1)")
        if self.adam_epsilon <= 0:
            fail("adam_epsilon", "a number > 0")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            fail("max_grad_norm", "a number > 0 or null")
        from transformers import SchedulerType  # get_scheduler's names: a typo fails before any loading

        schedulers = tuple(kind.value for kind in SchedulerType)
        if self.lr_scheduler not in schedulers:
            fail("lr_scheduler", f"one of {schedulers}")
        if True:  # checked for full fine-tuning too: a LoRA rank of 0 is never meant
            if self.lora_rank < 1:
                fail("lora_rank", "an integer >= 1")
            if self.lora_alpha <= 0:
                fail("lora_alpha", "a number > 0")
            if not 0.0 <= self.lora_dropout < 1.0:
                fail("lora_dropout", "a number in [0, 1)")
            if not self.lora_towers or set(self.lora_towers) - {"text", "vision"}:
                fail("lora_towers", "a non-empty list of text and/or vision")
            if not self.lora_targets:
                fail("lora_targets", "a non-empty list of module names (e.g. q_proj, v_proj)")
            layers = self.lora_layers.strip()
            if not (layers == "all" or all(part.strip().isdigit() for part in layers.split(","))):
                fail("lora_layers", "'all' or comma-separated layer indices such as 0,1,5")
        if not self.output_dir.strip():
            fail("output_dir", "a folder path")
        if self.rendezvous_timeout_s is not None and not self.rendezvous_timeout_s > 0:
            fail("rendezvous_timeout_s", "a number of seconds > 0 or null")
        if self.max_steps is not None and self.max_steps < 1:
            fail("max_steps", "an integer >= 1 or null")
        if self.max_steps is None and not self.epochs > 0:
            fail("epochs", "a number > 0 (or set max_steps)")
        if self.learning_rate <= 0:
            fail("learning_rate", "a number > 0")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            fail("checkpoint_every" if self.checkpoint_every < 0 else "keep_checkpoints", "a non-negative count")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            fail("mixed_precision", "no, fp16, bf16 or null")
        if self.report_to not in ("auto", "tensorboard", "none"):
            fail("report_to", "auto, tensorboard or none")
        if self.lora_trainable_tokens and self.finetune != "lora":
            fail("lora_trainable_tokens", "an empty list unless finetune is lora (full fine-tuning trains every row)")
        if self.wise_ft_alpha is not None and not 0.0 <= self.wise_ft_alpha <= 1.0:
            fail("wise_ft_alpha", "a number in [0, 1] or null")
        if self.push_to_hub and not self.hub_model_id:
            raise RecipeError("push_to_hub needs hub_model_id (e.g. --hub-model-id user/cultureclip-b32)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RecipeSchema:
    """Recipes and command-line overrides for one typed argument dataclass.

    `read` resolves a recipe (a packaged name in `recipe_dir` or a YAML path, with `inherit:` chains), `coerce`
    checks a field name and converts a YAML value or CLI string to the field's type, `parse_command_line` turns
    `--recipe NAME --field value ...` into the dataclass.
    """

    def __init__(self, args_type: type, recipe_dir: Path, renamed: dict[str, str] | None = None):
        self.args_type = args_type
        self.recipe_dir = recipe_dir
        self.renamed = dict(renamed or {})  # old name -> what to use instead, for the unknown-recipe error
        self.field_names = tuple(f.name for f in dataclasses.fields(args_type))
        self.hints = typing.get_type_hints(args_type)

    def builtin(self) -> list[str]:
        """Names of the recipes shipped in `recipe_dir`."""
        return sorted(p.stem for p in self.recipe_dir.glob("*.yaml"))

    def _path(self, name_or_path: str) -> Path:
        path = Path(name_or_path)
        if path.suffix in (".yaml", ".yml"):
            if not path.is_file():
                raise RecipeError(f"recipe file {path} does not exist")
            return path
        builtin = self.recipe_dir / f"{name_or_path}.yaml"
        if not builtin.is_file():
            hint = f"; it was renamed: use {self.renamed[name_or_path]}" if name_or_path in self.renamed else ""
            raise RecipeError(f"unknown recipe {name_or_path!r}{hint}: expected one of {self.builtin()} or a .yaml "
                              "path")
        return builtin

    def read(self, name_or_path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
        """The field values of a recipe, with `inherit:` chains resolved (later files override earlier ones)."""
        path = self._path(name_or_path)
        if str(path.resolve()) in _seen:
            raise RecipeError(f"recipe {path} inherits from itself")
        try:
            values = read_yaml(path, "recipe") or {}
        except BadInput as error:
            raise RecipeError(str(error)) from None
        if not isinstance(values, dict):
            raise RecipeError(f"recipe {path}: expected a mapping of field: value, got {type(values).__name__}")
        parent = values.pop("inherit", None)
        merged = self.read(parent, _seen + (str(path.resolve()),)) if parent else {}
        for key, value in values.items():
            merged[key] = self.coerce(key, value, source=str(path))
        return merged

    def coerce(self, name: str, value: Any, source: str = "command line") -> Any:
        """Check that `name` is a field and convert `value` (a YAML value or CLI string) to its type."""
        if name not in self.hints:
            raise RecipeError(f"unknown field {name!r} in {source}; valid fields: {', '.join(self.field_names)}")
        hint = self.hints[name]
        if isinstance(value, str) and source == "command line":
            # CLI strings take YAML's reading (numbers, booleans, null, [lists]); str fields keep the raw text
            # (which need not be valid YAML), except that null/~ still means None
            if _base_type(hint) is str:
                value = None if value.strip() in _YAML_NULLS else value
            elif value.strip():
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:
                    raise RecipeError(f"{name}={value!r} on the command line: expected {_type_name(hint)}") from None
        if value is None:
            if _allows_none(hint):
                return None
            raise RecipeError(f"{name}: null given in {source}, but the field needs a value")
        base = _base_type(hint)
        origin = typing.get_origin(base)
        try:
            if origin is list:
                items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value
                if not isinstance(items, list):
                    raise TypeError
                return [str(item) for item in items]
            if base is bool:
                if not isinstance(value, bool):
                    raise TypeError
                return value
            if base is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise TypeError
                return int(value)
            if base is float:
                if isinstance(value, bool):
                    raise TypeError
                return float(value)
            if base is str:
                if isinstance(value, bool | list | dict):
                    raise TypeError
                return str(value)
        except (TypeError, ValueError):
            pass
        raise RecipeError(f"{name}={value!r} in {source}: expected {_type_name(hint)}")

    def parse_overrides(self, argv: list[str]) -> dict[str, Any]:
        """Turn `--field value` / `--field=value` / bare boolean `--field` items into typed field values."""
        values: dict[str, Any] = {}
        i = 0
        while i < len(argv):
            token = argv[i]
            if not token.startswith("--"):
                raise RecipeError(f"unexpected argument {token!r}: expected --field value")
            key, eq, raw = token[2:].partition("=")
            name = key.replace("-", "_")
            if name not in self.hints:
                raise RecipeError(
                    f"unknown field {key!r} on the command line; valid fields: {', '.join(self.field_names)}")
            if not eq:
                has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
                if not has_value and _base_type(self.hints[name]) is bool:
                    values[name] = True
                    i += 1
                    continue
                if not has_value:
                    raise RecipeError(f"--{key} needs a value")
                raw = argv[i + 1]
                i += 1
            values[name] = self.coerce(name, raw)
            i += 1
        return values

    def build(self, recipe: str | None = None, overrides: dict[str, Any] | None = None) -> Any:
        """The dataclass from a recipe with `overrides` (already-typed values or CLI strings) on top."""
        values = self.read(recipe) if recipe else {}
        for name, value in (overrides or {}).items():
            values[name] = self.coerce(name, value, source="overrides" if not isinstance(value, str) else
                                       "command line")
        if recipe and "recipe" not in (overrides or {}):
            values["recipe"] = recipe
        return self.args_type(**values)

    def parse_command_line(self, argv: list[str]) -> Any:
        """`--recipe NAME_OR_YAML` plus field overrides -> the dataclass."""
        recipe = None
        rest: list[str] = []
        i = 0
        while i < len(argv):
            token = argv[i]
            if token == "--recipe":
                if i + 1 >= len(argv):
                    raise RecipeError("--recipe needs a name or a YAML path")
                recipe = argv[i + 1]
                i += 2
                continue
            if token.startswith("--recipe="):
                recipe = token.split("=", 1)[1]
            else:
                rest.append(token)
            i += 1
        overrides = self.parse_overrides(rest)
        values = self.read(recipe) if recipe else {}
        values.update(overrides)
        values.setdefault("recipe", recipe)
        return self.args_type(**values)


_YAML_NULLS = ("null", "Null", "NULL", "~")


def _allows_none(hint: Any) -> bool:
    return isinstance(hint, types.UnionType | typing._UnionGenericAlias) and type(None) in typing.get_args(hint)


def _base_type(hint: Any) -> Any:
    if isinstance(hint, types.UnionType | typing._UnionGenericAlias):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


TRAIN_RECIPES = RecipeSchema(TrainArgs, RECIPE_DIR, RENAMED_RECIPES)
FIELD_NAMES = TRAIN_RECIPES.field_names
builtin_recipes = TRAIN_RECIPES.builtin
read_recipe = TRAIN_RECIPES.read
coerce = TRAIN_RECIPES.coerce
parse_overrides = TRAIN_RECIPES.parse_overrides
build_args = TRAIN_RECIPES.build
parse_command_line = TRAIN_RECIPES.parse_command_line


__all__ = ["ACCUMULATION_MODES", "FIELD_NAMES", "OBJECTIVES", "RecipeError", "TINY_MODEL", "TrainArgs", "build_args", "builtin_recipes",
           "coerce", "parse_command_line", "parse_overrides", "read_recipe", "RecipeSchema", "TRAIN_RECIPES"]
