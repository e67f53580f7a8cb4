"""Export of a CultureVerse-style benchmark: row checks, Hub parquet shards with embedded images, dataset card.

One row per (concept, question type). Splits are drawn per concept (ordered by a hash of the concept id), so a
concept's three questions always land in the same split and no concept is in both train and test.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from cultureclip_guards import BadInput

from .runstore import StageStore, atomic_write_bytes, atomic_write_json
from .schema import Concept
from .stages.export import assign_splits
from .twemoji import TWEMOJI_ATTRIBUTION

QUESTION_TYPES = ("recognition", "cultural_knowledge", "scene_reasoning")
SPLITS = ("train", "validation", "test")


class BenchmarkRowError(BadInput):
    """A benchmark row is unusable; the message names the row, its concept and the field."""


def benchmark_features():  # -> datasets.Features
    """`datasets.Features` of one benchmark row."""
    from datasets import Features, Image, List, Value

    text = Value("string")
    return Features({
        "image": Image(), "question": text, "options": List(text), "answer": text, "question_type": text,
        "concept": text, "concept_id": text, "country": text, "iso_code": text, "continent": text,
        "category": text, "rationale": text, "description": text, "image_seed": Value("int64"),
        "text_model": text, "image_model": text,
    })


def validate_row(row: dict[str, Any], index: int) -> None:
    """Raise BenchmarkRowError when a row has no answer key, an answer outside its options, or no image."""
    where = f"row {index} (concept {row.get('concept')!r}, {row.get('question_type')})"
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BenchmarkRowError(f"{where}: field 'question' is empty")
    options = row.get("options")
    if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o.strip() for o in options):
        raise BenchmarkRowError(f"{where}: field 'options' must be a list of >= 2 non-empty strings, got {options!r}")
    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise BenchmarkRowError(f"{where}: field 'answer' is missing: the question has no answer key")
    letters = [chr(ord("A") + i) for i in range(len(options))]
    if answer.strip().upper() not in letters:
        raise BenchmarkRowError(f"{where}: field 'answer' = {answer!r} is not among the options' letters {letters}")
    image = row.get("image")
    if not (isinstance(image, dict) and (image.get("bytes") or image.get("path"))):
        raise BenchmarkRowError(f"{where}: field 'image' is missing")
    if row.get("question_type") not in QUESTION_TYPES:
        raise BenchmarkRowError(f"{where}: field 'question_type' must be one of {QUESTION_TYPES}")


def concept_rows(concept: Concept, record: dict[str, Any], png: bytes, image_record: dict[str, Any],
                 text_model: str) -> list[dict[str, Any]]:
    """The three question rows of one concept."""
    rows = []
    for qtype in QUESTION_TYPES:
        q = record[qtype]
        rows.append({
            "image": {"bytes": png, "path": None}, "question": q["question"], "options": list(q["options"]),
            "answer": q["answer"], "question_type": qtype, "concept": concept.concept,
            "concept_id": concept.concept_id, "country": concept.country, "iso_code": concept.iso_code,
            "continent": concept.continent, "category": concept.category, "rationale": q["rationale"],
            "description": record["description"], "image_seed": int(image_record["seed"]), "text_model": text_model,
            "image_model": image_record["model_id"],
        })
    return rows


def export_benchmark(output_dir: Path, concepts: dict[str, Concept], accepted: list[str],
                     records: dict[str, dict[str, Any]], image_records: dict[str, dict[str, Any]],
                     image_store: StageStore, settings: Any, provenance: dict[str, Any],
                     stats: dict[str, Any]) -> dict[str, Any]:
    """Write `data/{split}-00000-of-00001.parquet`, README.md and provenance.json; return rows per split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(accepted) < 3:
        raise ValueError(f"only {len(accepted)} concept(s) passed question parsing (rejections: "
                         f"{stats.get('rejected')}); export needs at least 3 to fill train/validation/test")
    split_of = assign_splits(accepted, settings.split_fractions)
    features = benchmark_features()
    data_dir = output_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    split_rows, split_bytes, split_concepts, written = {}, {}, Counter(split_of.values()), []
    for split in SPLITS:
        rows: list[dict[str, Any]] = []
        for cid in sorted(c for c in accepted if split_of[c] == split):
            img = image_records[cid]
            png = image_store.file_path(cid, ".png").read_bytes()
            if image_store.file_path(cid, ".png").name != img["file"]:
                raise ValueError(f"image record of {cid!r} points at {img['file']!r}, not its own file")
            rows.extend(concept_rows(concepts[cid], records[cid], png, img, provenance["text_model"]))
        for i, row in enumerate(rows):
            validate_row(row, i)
        table = pa.Table.from_pylist([features.encode_example(r) for r in rows], schema=features.arrow_schema)
        name = f"{split}-00000-of-00001.parquet"
        tmp = data_dir / f".tmp-{name}"
        pq.write_table(table, tmp)
        os.replace(tmp, data_dir / name)
        split_rows[split], split_bytes[split] = len(rows), table.nbytes
        written.append(name)
    for stale in data_dir.glob("*.parquet"):
        if stale.name not in written:
            stale.unlink()
    stats = {**stats, "rows": split_rows, "concepts_per_split": dict(split_concepts)}
    atomic_write_json(output_dir / "provenance.json", {**provenance, "statistics": stats})
    write_benchmark_card(output_dir, features, split_rows, split_bytes, provenance, stats, settings)
    return {"rows": split_rows, "total_rows": sum(split_rows.values()), "splits": split_of}


_BODY = """
# {pretty_name}

A CultureVerse-style multiple-choice benchmark of cultural visual understanding, built by `dataset_builder`
(CultureCLIP project) from the concept catalog `{catalog}`. Each concept has one image and three questions:
**recognition** (what is shown; near-miss options from its twins, its category and neighbouring cultures),
**cultural_knowledge** (a fact about the shown concept, which the question does not name) and **scene_reasoning**
(a situation that needs recognition plus reasoning). Four options each; `answer` is the correct letter.

## Loading

```python
from datasets import load_dataset
ds = load_dataset("path/or/repo-id")  # splits: train / validation / test, split by concept
row = ds["test"][0]; row["image"], row["question"], row["options"], row["answer"]
```

## Schema

`image`, `question`, `options` (4 strings), `answer` (A-D), `question_type`, `concept`, `concept_id`, `country`,
`iso_code`, `continent`, `category`, `rationale`, `description`, `image_seed`, `text_model`, `image_model`.

## Splits

| split | rows | concepts |
|---|---|---|
{split_table}

## Provenance

- Text model: `{text_model}`; image source: `{image_model}`; prompt `{prompt}` (sha256 {prompt_sha}).
- Seed {seed}; each concept's options, answer positions and image seed derive from (seed, concept id).
- Answers that did not follow the requested JSON format were rejected, not repaired (counts below).
{attribution}
## Statistics

```json
{stats}
```
"""


def write_benchmark_card(output_dir: Path, features: Any, split_rows: dict[str, int], split_bytes: dict[str, int],
                         provenance: dict[str, Any], stats: dict[str, Any], settings: Any) -> Path:
    """README.md with `configs:` and `dataset_info:` YAML so `load_dataset(folder)` and the Hub read it."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from huggingface_hub import DatasetCard, DatasetCardData

    card_data = DatasetCardData(
        license=settings.license, pretty_name=settings.pretty_name,
        task_categories=["visual-question-answering", "image-text-to-text"],
        tags=["culture", "synthetic", "multiple-choice", "cultureverse", "cultureclip"],
        configs=[{"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in split_rows]}],
    )
    splits = SplitDict()
    for s, n in split_rows.items():
        splits.add(SplitInfo(name=s, num_examples=n, num_bytes=split_bytes.get(s, 0)))
    DatasetInfosDict({"default": DatasetInfo(features=features, splits=splits)}).to_dataset_card_data(card_data)
    (prompt, sha), = provenance["prompt"].items()
    concepts = stats.get("concepts_per_split", {})
    body = _BODY.format(
        pretty_name=settings.pretty_name, catalog=Path(provenance["catalog"]).name,
        split_table="\n".join(f"| {s} | {n} | {concepts.get(s, 0)} |" for s, n in split_rows.items()),
        text_model=provenance["text_model"], image_model=provenance["image_model"], prompt=prompt,
        prompt_sha=sha[:12], seed=provenance["seed"],
        attribution=(f"- Images: {TWEMOJI_ATTRIBUTION}; augmented copies are shared under the same licence.\n"
                     if provenance["image_model"].startswith("offline/twemoji") else ""),
        stats=json.dumps(stats, indent=1, sort_keys=True, ensure_ascii=False),
    )
    card = DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
    path = output_dir / "README.md"
    atomic_write_bytes(path, str(card).encode("utf-8"))
    return path


__all__ = ["BenchmarkRowError", "benchmark_features", "concept_rows", "export_benchmark", "validate_row",
           "write_benchmark_card"]
