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
  only if both twin images pass. Samples per pair: {pairing}.
- Built on {world} process(es); devices: {devices}.
{licences}{attribution}
## Judge scores

{judge_table}
{departures}
## Filter statistics

```json
{stats}
```
"""


def write_card(output_dir: Path, recipe: Recipe, features: Any, split_rows: dict[str, int], split_bytes: dict[str, int],
               provenance: dict[str, Any], stats: dict[str, Any]) -> Path:
    """Write README.md with `configs:`, `dataset_info:`, licence, provenance, judge score statistics and the
    recipe's departures from the authors' release; return its path."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from huggingface_hub import DatasetCard, DatasetCardData

    licence_extra = {k: v for k, v in (("license_name", recipe.export.license_name),
                                         ("license_link", recipe.export.license_link)) if v}
    card_data = DatasetCardData(
        **licence_extra,
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
        pairing=("every combination of a passed concept image with a passed twin image (caption_pairing: all)"
                 if recipe.export.caption_pairing == "all" else "caption/image k of one side with k of the other"),
        world=provenance.get("world_size", 1), devices=_devices_line(provenance.get("devices", [])),
        licences="".join(f"- Licence of `{m}`: {lic}.\n" for m, lic in sorted(recipe.export.model_licenses.items())),
        judge_table=_judge_table(stats.get("judge", {}), recipe.judge.drop_if_any_at_most),
        departures=_departures(recipe.departures),
        attribution=(f"- Images: {TWEMOJI_ATTRIBUTION}; augmented copies are shared under the same licence.\n"
                     if any(m.startswith("offline/twemoji") for m in provenance["image_models"]) else ""),
        stats=json.dumps(stats, indent=1, sort_keys=True, ensure_ascii=False),
    )
    card = DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
    path = output_dir / "README.md"
    atomic_write_bytes(path, str(card).encode("utf-8"))
    return path


def _judge_table(judge: dict[str, Any], drop_at: int) -> str:
    """Markdown table: per criterion mean +- std over parsed verdicts and how many scored <= drop_at; then reasons."""
    criteria = judge.get("criteria") or {}
    if not criteria:
        return "No parsed judge verdicts.\n"
    lines = ["| criterion | mean ± std | images | scored <= %d |" % drop_at, "|---|---|---|---|"]
    for name, c in criteria.items():
        lines.append(f"| {name} | {c['mean']:.2f} ± {c['std']:.2f} | {c['n']} | {c.get(f'at_most_{drop_at}', 0)} |")
    reasons = judge.get("drop_reasons") or {}
    lines.append("")
    lines.append(f"Passed {judge.get('passed', 0)} of {judge.get('judged', 0)} judged images. Failure reasons: "
                 + (", ".join(f"`{k}` {v}" for k, v in reasons.items()) if reasons else "none") + ".")
    return "\n".join(lines) + "\n"


def _devices_line(devices: list[dict[str, Any]]) -> str:
    parts = []
    for d in devices:
        roles = ", ".join(f"{role} {info['device']}" + (f" ({info['name']})" if info.get("name") else "")
                          for role, info in d.items() if isinstance(info, dict))
        parts.append(f"rank {d['rank']}/{d['world']}: {roles}")
    return "; ".join(parts) if parts else "not recorded"


def _departures(items: list[str] | None) -> str:
    if not items:
        return ""
    return "\n## Departures from the authors' release\n\n" + "\n".join(f"- {d}" for d in items) + "\n"


def _size_category(n: int) -> list[str]:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return [label]
    return ["n>1M"]
