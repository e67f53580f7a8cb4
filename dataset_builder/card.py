"""The dataset card (README.md) of an exported CulTwin folder, written through huggingface_hub's DatasetCard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .recipe import Recipe
from .runstore import atomic_write_bytes
from .twemoji import TWEMOJI_ATTRIBUTION

_BODY = """
# {pretty_name}

Culturally distinct but visually similar **twin concepts**, each row one matched sample of a twin pair: a concept
and its look-alike from another culture, each with a contextual caption, an image, its seed and judge scores.
Built by `dataset_builder` (CultureCLIP project) with recipe `{recipe}`.

## Loading

```python
from datasets import load_dataset
ds = load_dataset("path/or/repo-id")  # splits: train / validation / test, split by twin pair
row = ds["train"][0]; row["image"], row["caption"], row["twin_image"], row["twin_caption"]
```

## Schema

`pair_id`, `sample_index`; concept side `concept_id`, `concept`, `country`, `iso_code`, `continent`, `category`,
`context`, `visual_features`, `caption`, `all_captions`, `image`, `seed`, `judge_scores`; the same fields for the
twin prefixed `twin_` (the twin shares `category`); `source`, `text_model`, `image_model`.

## Splits

| split | rows | pairs |
|---|---|---|
{split_table}

## Provenance

- Text model: `{text_model}`; image model: `{image_model}`; judge: `{judge_model}`.
- Prompts: {prompts}.
- Seed: recipe seed {seed}; every item's seed is derived from (recipe seed, stage, item id) and stored per row.
- Keep rule: an image is dropped if any judge score is <= {drop_at} or the mean is <= {min_mean}; a sample is kept
  only if both twin images pass.
{attribution}
## Filter statistics

```json
{stats}
```
"""


def write_card(output_dir: Path, recipe: Recipe, features: Any, split_rows: dict[str, int], split_bytes: dict[str, int],
               provenance: dict[str, Any], stats: dict[str, Any]) -> Path:
    """Write README.md with `configs:`, `dataset_info:`, licence and provenance; return its path."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from huggingface_hub import DatasetCard, DatasetCardData

    card_data = DatasetCardData(
        license=recipe.export.license,
        pretty_name=recipe.export.pretty_name,
        task_categories=["zero-shot-image-classification", "image-to-text"],
        tags=["culture", "synthetic", "twins", "cultureclip"],
        size_categories=_size_category(sum(split_rows.values())),
        configs=[{"config_name": "default",
                  "data_files": [{"split": s, "path": f"data/{s}-*"} for s in split_rows]}],
    )
    splits = SplitDict()
    for s, n in split_rows.items():
        splits.add(SplitInfo(name=s, num_examples=n, num_bytes=split_bytes.get(s, 0)))
    DatasetInfosDict({"default": DatasetInfo(features=features, splits=splits)}).to_dataset_card_data(card_data)
    pairs = stats.get("export", {}).get("pairs", {})
    body = _BODY.format(
        pretty_name=recipe.export.pretty_name, recipe=recipe.name,
        split_table="\n".join(f"| {s} | {n} | {pairs.get(s, 0)} |" for s, n in split_rows.items()),
        text_model=provenance["text_model"], image_model=", ".join(provenance["image_models"]),
        judge_model=provenance["judge_model"],
        prompts=", ".join(f"`{v}` (sha256 {h[:12]})" for v, h in provenance["prompts"].items()),
        seed=recipe.seed, drop_at=recipe.judge.drop_if_any_at_most, min_mean=recipe.judge.min_mean,
        attribution=(f"- Images: {TWEMOJI_ATTRIBUTION}; augmented copies are shared under the same licence.\n"
                     if any(m.startswith("offline/twemoji") for m in provenance["image_models"]) else ""),
        stats=json.dumps(stats, indent=1, sort_keys=True, ensure_ascii=False),
    )
    card = DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
    path = output_dir / "README.md"
    atomic_write_bytes(path, str(card).encode("utf-8"))
    return path


def _size_category(n: int) -> list[str]:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return [label]
    return ["n>1M"]
