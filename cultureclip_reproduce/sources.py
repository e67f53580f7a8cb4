"""Getting the inputs: the base CLIP, the released data and the authors' checkpoint, from the Hub or a folder.

A Hub id is downloaded with `snapshot_download` (safetensors, configs and tokenizer files only; never pickled
weights) and named by its commit; a local folder is used in place and named by a content fingerprint. The
authors' checkpoint may be a merged CLIPModel (weights at the repo root) or only a PEFT adapter (at the root or in
`lora_adapter/`); an adapter is merged into the base so that both evaluate the same way.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from .config import ReproduceError

MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "lora_adapter/*", "adapter/*"]  # no *.bin / *.h5 / *.msgpack
_FULL_HASH_LIMIT = 64 << 20


def fingerprint(folder: Path) -> str:
    """`local-sha256:` of every file's relative path and contents (files over 64 MiB: size, first and last MiB)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        with open(path, "rb") as handle:
            if size <= _FULL_HASH_LIMIT:
                digest.update(handle.read())
            else:
                digest.update(handle.read(1 << 20))
                handle.seek(-(1 << 20), 2)
                digest.update(handle.read())
    return "local-sha256:" + digest.hexdigest()[:16]


def is_local(source: str) -> bool:
    return Path(source).exists()


def fetch(source: str, revision: str | None, repo_type: str) -> dict[str, Any]:
    """{"path", "id", "revision"} of a Hub repo (downloaded) or local folder/file (used in place)."""
    if is_local(source):
        path = Path(source).resolve()
        return {"path": str(path), "id": None, "revision": fingerprint(path) if path.is_dir() else
                fingerprint_file(path)}
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id=source, repo_type=repo_type, revision=revision,
                                 allow_patterns=MODEL_FILES if repo_type == "model" else None)
    except Exception as error:  # offline, unknown repo, gated: one line naming the source
        raise ReproduceError(f"cannot get {repo_type} {source!r} from the Hub: {type(error).__name__}: {error}") \
            from None
    return {"path": path, "id": source, "revision": Path(path).name}  # snapshots/<commit>


def fingerprint_file(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return "local-sha256:" + digest[:16]


def is_cultwin_folder(path: Path) -> bool:
    """Already in this package's Hub layout (a CulTwin build or an earlier import)."""
    return path.is_dir() and (path / "README.md").is_file() and any((path / "data").glob("train-*.parquet"))


def _processor_of(folder: Path) -> Any | None:
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(folder)
    except (OSError, ValueError, TypeError):  # no processor files there
        return None


def prepare_released_model(released: Path, base: Path, output: Path) -> dict[str, Any]:
    """A folder the evaluation loads like any CLIP: the authors' merged checkpoint, or their adapter merged into
    `base`. Returns {"path", "kind"}; writes under `output` only when something must be built (the merged adapter,
    or a checkpoint that came without its processor, which then gets the base's: the authors trained on its inputs).
    """
    from transformers import AutoConfig

    from cultureclip_training.artifacts import atomic_dir

    has_model = (released / "config.json").is_file() and any(released.glob("*.safetensors"))
    if not has_model and any(released.glob("*.bin")):
        raise ReproduceError(f"{released}: weights are not safetensors; refusing to load pickled weights")
    if has_model and AutoConfig.from_pretrained(released).model_type in ("clip", "cultureclip"):
        if _processor_of(released) is not None:
            return {"path": str(released), "kind": "merged checkpoint"}
        processor = _processor_of(base)

        def copy(folder: Path) -> None:
            for path in released.iterdir():
                if path.is_file():
                    shutil.copy2(path, folder / path.name)
            processor.save_pretrained(folder)

        atomic_dir(output, copy)
        return {"path": str(output), "kind": "merged checkpoint + the base's processor"}
    from cultureclip_training.lora import find_adapter, load_adapter, merge_lora
    from modeling_cultureclip import CultureCLIPModel

    try:
        location, sub = find_adapter(released)
    except FileNotFoundError as error:
        raise ReproduceError(f"{released}: neither a CLIP checkpoint nor a PEFT adapter ({error})") from None
    merged = merge_lora(load_adapter(CultureCLIPModel.from_clip(str(base)), location, subfolder=sub))
    processor = _processor_of(base)

    def write(folder: Path) -> None:
        merged.save_pretrained(folder)
        processor.save_pretrained(folder)

    atomic_dir(output, write)
    return {"path": str(output), "kind": f"adapter ({sub or 'root'}/) merged into the base"}


__all__ = ["fetch", "fingerprint", "is_cultwin_folder", "is_local", "prepare_released_model"]
