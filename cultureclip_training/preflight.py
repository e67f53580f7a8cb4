"""Checks a training run makes before any work: the output folder, a resume's settings, the model folder and its
tokenizer, and the start-up of several processes.

- An output_dir that holds anything (a finished run, a model, files) is refused without `resume`, unless
  `overwrite` (which then clears the old run's checkpoints and metrics before training starts).
- A resume whose settings differ from the checkpoint's (data, model, objective, batch, LoRA shape, seed, ...) is
  refused with the differences listed; with `overwrite` the run starts over instead.
- A model folder must hold a config and safetensors weights (a pickle-only `pytorch_model.bin` is refused without
  being opened), and its tokenizer's vocabulary must match the model's.
- WORLD_SIZE > 1: the ranks meet within `rendezvous_timeout_s` before torch.distributed starts.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from cultureclip_guards import BadInput, refuse_foreign
from cultureclip_guards.errors import naming
from cultureclip_guards.rendezvous import init_process_group

from .checkpointing import CHECKPOINT_DIR, CheckpointError
from .recipes import TINY_MODEL, TrainArgs

# fields that may change between a run and its resume: where and how long it runs, not what it learns
RESUME_FREE_FIELDS = frozenset({
    "output_dir", "recipe", "dataset", "max_steps", "epochs", "num_workers", "checkpoint_every", "keep_checkpoints",
    "resume", "overwrite", "rendezvous_timeout_s", "log_every", "report_to", "progress_bar", "save_artifacts",
    "wise_ft_alpha", "license", "card_base_model", "card_dataset", "push_to_hub", "hub_model_id", "hub_private",
    "gradient_checkpointing",
})
PICKLE_WEIGHTS = ("pytorch_model.bin", "model.pt", "model.pth", "tf_model.h5", "flax_model.msgpack")


def check_output_dir(args: TrainArgs) -> None:
    """Refuse an output_dir that holds anything when not resuming, unless `overwrite`. Read-only: safe to run on
    every rank before the processes meet (nothing has been written by this run yet)."""
    output = Path(args.output_dir)
    if args.resume:
        if output.exists() and not output.is_dir():
            raise BadInput(f"output_dir {output}: exists and is a file, expected the run's folder")
        return
    refuse_foreign(output, (), option="output_dir", made_by="this training run", overwrite=args.overwrite,
                   hint="pass --resume latest to continue that run, --overwrite to start over there, or choose a "
                        "new --output_dir")


def clear_previous_run(output_dir: str | Path) -> None:
    """Starting over (`overwrite`): remove the old run's checkpoints, so a later `--resume latest` never picks
    them; its model folders are replaced only when this run writes its own (atomically)."""
    shutil.rmtree(Path(output_dir) / CHECKPOINT_DIR, ignore_errors=True)


def resume_settings(args: TrainArgs, data_rows: int, data_fingerprint: str | None) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint."""
    settings = {k: v for k, v in args.to_dict().items() if k not in RESUME_FREE_FIELDS}
    settings["data_rows"] = data_rows
    if data_fingerprint is not None:
        settings["data_fingerprint"] = data_fingerprint
    return settings


def resume_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Differences between a checkpoint's settings and this run's, as `field: was X, now Y`."""
    return [f"{name}: was {saved.get(name)!r}, now {current.get(name)!r}"
            for name in sorted(set(saved) | set(current)) if saved.get(name) != current.get(name)
            and not (name == "data_fingerprint" and (name not in saved or name not in current))]


def check_resume(checkpoint: Path, state: dict[str, Any], current: dict[str, Any], overwrite: bool) -> bool:
    """True to resume from `checkpoint`; False to start over (settings differ and `overwrite`); raises
    CheckpointError listing the differences otherwise. Checkpoints without recorded settings are resumed as is."""
    saved = state.get("run", {}).get("settings")
    if saved is None:
        return True
    diff = resume_differences(saved, current)
    if not diff:
        return True
    if overwrite:
        return False
    shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
    raise CheckpointError(f"--resume: checkpoint {checkpoint} was made with other settings ({shown})",
                          hint="resume with the settings it was made with, or pass --overwrite to start over")


def check_model_source(model: str) -> None:
    """A local model folder must be a model with safetensors weights; a path that does not exist must read as a
    Hub id. Pickled weights are refused by name, never opened."""
    if model == TINY_MODEL:
        return
    path = Path(model)
    if path.is_file():
        raise BadInput(f"model {model}: is a file; expected a model folder (config.json + *.safetensors) or a Hub id")
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if "config.json" not in names:
            what = "a dataset" if ({"data", "dataset_info.json", "state.json"} & names
                                    or any(n.endswith((".parquet", ".arrow")) for n in names)) else "not a model"
            raise BadInput(f"model {model}: {what} folder (no config.json); expected a CLIP or CultureCLIP model "
                           "folder or a Hub id")
        if not any(n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in names):
            pickled = sorted(names & set(PICKLE_WEIGHTS)) or sorted(n for n in names if n.endswith((".bin", ".pt")))
            if pickled:
                raise BadInput(f"model {model}: weights are pickled ({', '.join(pickled)}); refused without opening "
                               "them", hint="convert them to safetensors (model.safetensors)")
            raise BadInput(f"model {model}: no *.safetensors weights in the folder")
        from safetensors import safe_open

        for weights in sorted(path.glob("*.safetensors")):
            try:  # reads the header only: a truncated or foreign file fails here, named, before any loading
                with safe_open(str(weights), framework="pt"):
                    pass
            except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError
                raise BadInput(f"model {model}: {weights.name} is not a readable safetensors file "
                               f"({' '.join(str(error).split())[:160]})",
                               hint="the file is truncated or not safetensors; save the model again") from None
        return
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise BadInput(f"model {model}: no such folder, and not a Hub id of the form owner/name") from None


def naming_model(model: str):
    """A block whose known load faults (offline Hub, truncated weights) raise one BadInput naming the model."""
    return naming(f"model {model}")


def check_tokenizer(tokenizer: Any, model_config: Any, model: str) -> None:
    """The tokenizer must produce ids the model's embedding table has: a tokenizer of another model is refused."""
    vocab = getattr(getattr(model_config, "text_config", model_config), "vocab_size", None)
    size = len(tokenizer)
    if vocab is not None and size != vocab:
        raise BadInput(f"model {model}: its tokenizer has {size} tokens but the model's text vocabulary has {vocab}; "
                       "the tokenizer belongs to another model",
                       hint="use the tokenizer saved with this model (processor.save_pretrained)")


def start_processes(args: TrainArgs, backend: str) -> bool:
    """Start torch.distributed for WORLD_SIZE > 1 after a start-up rendezvous with a short timeout."""
    return init_process_group(backend, args.rendezvous_timeout_s)


__all__ = ["RESUME_FREE_FIELDS", "naming_model", "check_model_source", "check_output_dir", "check_resume", "check_tokenizer",
           "clear_previous_run", "resume_differences", "resume_settings", "start_processes"]
