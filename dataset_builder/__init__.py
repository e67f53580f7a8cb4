"""CulTwin generation pipeline: resumable stages, injected backends, Hub-native export.

`build(recipe, output_dir, text_backend=..., image_backend=..., judge_backend=...)` is the Python entry point;
`python -m dataset_builder build|push` the command line.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build", "load_recipe"]


def build(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See `dataset_builder.pipeline.build` (imported lazily to keep `import dataset_builder` light)."""
    from .pipeline import build as _build

    return _build(*args, **kwargs)


def load_recipe(name_or_path: Any) -> Any:
    """See `dataset_builder.recipe.load_recipe`."""
    from .recipe import load_recipe as _load

    return _load(name_or_path)
