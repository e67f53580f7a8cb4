"""What a reproduction runs: sources, the two recipes and their shared budget, the benchmarks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cultureclip_guards import BadInput


class ReproduceError(BadInput):
    """A bad setting or input of the reproduction; the message names it."""


# The comparison's four rows, in table order: label -> what the row is
ROWS = {
    "base": "base CLIP",
    "released": "authors' released CultureCLIP",
    "release-exact": "ours, trained with release-b32 (the authors' launch)",
    "ours": "ours, trained with our improved recipe",
}
# CROPE, GlobalRG retrieval and grounding; ImageNet, GeoDE and Dollar Street zero-shot (evaluate_suite names)
DEFAULT_BENCHMARKS = ("crope", "globalrg_retrieval", "globalrg_grounding", "zeroshot_imagenet", "zeroshot_geode",
                      "zeroshot_dollar_street")


@dataclass
class ReproduceConfig:
    """Every setting of `python reproduce.py` (see its --help).

    `base_model`, `release_data` and `released_model` are Hub ids or local folders (a local folder is used as is and
    named by a content fingerprint). `train_overrides` are TrainArgs values applied to BOTH training runs, so they
    keep the same budget (same global batch, epochs or max_steps).
    """

    output_dir: str
    base_model: str = "openai/clip-vit-base-patch32"
    release_data: str = "lukahh/CulTwin"
    released_model: str | None = None  # the authors' checkpoint: a lukahh/cultureclip_lora_* repo or a folder
    base_revision: str | None = None
    data_revision: str | None = None
    released_revision: str | None = None
    release_recipe: str = "release-b32"
    ours_recipe: str = "improved-b32"
    train_overrides: dict[str, Any] = field(default_factory=dict)
    release_data_path: str | None = None  # a file or folder inside the released data to import (default: all of it)
    image_root: str | None = None  # where the released JSON's image paths resolve (default: next to the JSON)
    skip_missing_images: bool = False
    import_combinations: str = "all"  # "all" released (caption, twin caption) rows, as trained; or "matched"
    benchmarks: tuple[str, ...] = DEFAULT_BENCHMARKS
    data_dirs: dict[str, str] = field(default_factory=dict)
    eval_seeds: tuple[int, ...] = (0, 1, 2)
    eval_batch_size: int = 256
    bootstrap_resamples: int = 1000
    device: str | None = None  # evaluation device; None: cuda when available, else cpu

    def validate(self) -> None:
        """Raise ReproduceError naming the setting when a value cannot work."""
        if not self.output_dir:
            raise ReproduceError("--output-dir is required")
        if not self.benchmarks:
            raise ReproduceError("--benchmarks: give at least one benchmark")
        unknown = sorted(set(self.data_dirs) - set(self.benchmarks))
        if unknown:
            raise ReproduceError(f"--data-dir given for benchmark(s) not being run: {unknown}")
        for flag, source in (("--base-model", self.base_model), ("--release-data", self.release_data),
                             ("--released-model", self.released_model)):
            # a Hub id is owner/name; anything else that names a path must exist
            looks_local = source is not None and (source.startswith((".", "/", "~")) or source.count("/") > 1)
            if looks_local and not Path(source).expanduser().exists():
                raise ReproduceError(f"{flag} {source}: no such file or folder (and not a Hub id owner/name)")
        if self.import_combinations not in ("all", "matched"):
            raise ReproduceError(f"--import-combinations {self.import_combinations!r}: expected all or matched")
        if self.release_data_path is not None and Path(self.release_data_path).is_absolute():
            raise ReproduceError(f"--release-data-path {self.release_data_path!r}: expected a path inside the "
                                 "released data (relative)")
        if self.eval_batch_size < 1 or not self.eval_seeds:
            raise ReproduceError("--eval-batch-size must be >= 1 and --eval-seeds non-empty")
        for name in ("model", "dataset", "output_dir", "resume", "recipe", "push_to_hub"):
            if name in self.train_overrides:
                raise ReproduceError(f"--train-override {name}=...: set by the reproduction itself, not overridable")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["benchmarks"], values["eval_seeds"] = list(self.benchmarks), list(self.eval_seeds)
        return values


__all__ = ["DEFAULT_BENCHMARKS", "ROWS", "ReproduceConfig", "ReproduceError"]
