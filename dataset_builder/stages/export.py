"""Stage 6, export: matched twin samples as Hub-layout parquet shards plus a dataset card.

One row is sample k of a twin pair: caption k and image k of the concept and of its twin, kept only when both
images passed the judge. Splits are made per pair (ordered by a hash of pair_id), so no pair crosses splits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from cultureclip_guards.files import publish_entries, restore_entries

from ..runstore import atomic_write_bytes, atomic_write_json
from ..schema import Concept, row_features
from .common import RunContext
from .images import image_key, read_image_bytes
from .twins import Pair

SPLITS = ("train", "validation", "test")
# the dataset's own entries in the output folder, replaced together once a new export is complete
EXPORT_ENTRIES = ("data", "README.md", "provenance.json", "eval.yaml")
KILL_HOOK_ENV = "DATASET_BUILDER_TEST_KILL_AFTER_SHARDS"  # tests: SIGKILL this process after N shards are written


def _side(prefix: str, c: Concept, caps: list[str], k: int, png: bytes, seed: int, scores: dict[str, int]) -> dict[str, Any]:
    return {
        f"{prefix}concept_id": c.concept_id, f"{prefix}concept": c.concept, f"{prefix}country": c.country,
        f"{prefix}iso_code": c.iso_code, f"{prefix}continent": c.continent, f"{prefix}subregion": c.subregion,
        f"{prefix}context": c.context,
        f"{prefix}visual_features": c.visual_features, f"{prefix}caption": caps[k], f"{prefix}all_captions": list(caps),
        f"{prefix}image": {"bytes": png, "path": None}, f"{prefix}seed": seed, f"{prefix}judge_scores": dict(scores),
    }


def select_samples(pairs: list[Pair], captions: dict[str, dict[str, Any]], images: dict[str, dict[str, Any]],
                   judge: dict[str, dict[str, Any]], pairing: str = "matched") -> tuple[list[tuple[Pair, int, int]], Counter[str]]:
    """(pair, i, j) for every sample kept: image i of the concept and image j of its twin, both passed by the judge.

    `pairing="matched"` pairs caption k with caption k (i == j, at most N samples per pair); `"all"` takes every
    combination of a passed image of one side with a passed image of the other (up to N x N), as the released
    training data does. Drop counts say why a candidate sample was not kept.
    """
    if pairing not in ("matched", "all"):
        raise ValueError(f"export.caption_pairing must be 'matched' or 'all', got {pairing!r}")

    def passed(key: str) -> bool:
        return images.get(key, {}).get("status") == "ok" and judge.get(key, {}).get("passed") is True

    kept: list[tuple[Pair, int, int]] = []
    drops: Counter[str] = Counter()
    for p in pairs:
        n_a, n_b = len(captions[p.a.concept_id]["captions"]), len(captions[p.b.concept_id]["captions"])
        if pairing == "matched":
            candidates = [(k, k) for k in range(min(n_a, n_b))]
        else:
            candidates = [(i, j) for i in range(n_a) for j in range(n_b)]
        n_kept = 0
        for i, j in candidates:
            ok_a, ok_b = passed(image_key(p.a.concept_id, i)), passed(image_key(p.b.concept_id, j))
            if ok_a and ok_b:
                kept.append((p, i, j))
                n_kept += 1
            else:
                drops["sample_dropped:" + ("both_sides_failed" if not (ok_a or ok_b) else "one_side_failed")] += 1
        if n_kept == 0:
            drops["pair_without_samples"] += 1
    return kept, drops


def export_features(pairing: str):  # -> datasets.Features
    """The row schema; `pairing="all"` adds `twin_sample_index` (the twin's caption/image index differs from the
    concept's `sample_index` there), placed right after `sample_index`."""
    features = row_features()
    if pairing != "all":
        return features
    from datasets import Features, Value

    items = list(features.items())
    at = [name for name, _ in items].index("sample_index") + 1
    return Features(dict(items[:at] + [("twin_sample_index", Value("int32"))] + items[at:]))


def assign_splits(pair_ids: list[str], fractions: dict[str, float]) -> dict[str, str]:
    """Pair -> split. Pairs are ordered by sha256(pair_id); test and validation take their fractions (at least one
    pair each) from the front, train the rest. Needs at least three pairs."""
    if len(pair_ids) < 3:
        raise ValueError(f"export needs at least 3 kept twin pairs to fill train/validation/test, got {len(pair_ids)}")
    order = sorted(pair_ids, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    n = len(order)
    n_test = max(1, round(n * fractions.get("test", 0.1)))
    n_val = max(1, round(n * fractions.get("validation", 0.1)))
    n_val = min(n_val, n - n_test - 1)
    out = {p: "test" for p in order[:n_test]}
    out.update({p: "validation" for p in order[n_test : n_test + n_val]})
    out.update({p: "train" for p in order[n_test + n_val :]})
    return out


def run(ctx: RunContext, output_dir: Path, pairs: list[Pair], concepts: dict[str, Concept],
        captions: dict[str, dict[str, Any]], images: dict[str, dict[str, Any]], judge: dict[str, dict[str, Any]],
        stats: dict[str, Any], provenance: dict[str, Any]) -> dict[str, Any]:
    """Write `output_dir/data/*.parquet`, `README.md`, `provenance.json` and `eval.yaml`; return the summary.

    Everything is written under `run/export/staging/` first and moved into place entry by entry once complete, so a
    kill during the export leaves the previous export readable (an entry caught between its two renames is put back
    by the next run).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    pairing = ctx.recipe.export.caption_pairing
    kept, drops = select_samples(pairs, captions, images, judge, pairing)
    split_of = assign_splits(sorted({p.pair_id for p, _, _ in kept}), ctx.recipe.export.split_fractions)
    features = export_features(pairing)
    schema = features.arrow_schema
    text_model = ctx.backends.identity("text")[0]

    def rows(samples: list[tuple[Pair, int, int]]) -> Iterator[dict[str, Any]]:
        for p, i, j in samples:
            row: dict[str, Any] = {"pair_id": p.pair_id, "sample_index": i}
            if pairing == "all":
                row["twin_sample_index"] = j
            for prefix, c, k in (("", concepts[p.a.concept_id], i), ("twin_", concepts[p.b.concept_id], j)):
                key = image_key(c.concept_id, k)
                img_rec = images[key]
                row.update(_side(prefix, c, captions[c.concept_id]["captions"], k, read_image_bytes(ctx, img_rec),
                                 img_rec["seed"], judge[key]["scores"]))
                if not prefix:
                    row["category"] = c.category
                    row["image_model"] = img_rec["model_id"]
            row.update({"source": p.source, "text_model": text_model})
            yield row

    export_dir = ctx.run_dir / "export"
    staging, retired = export_dir / "staging", export_dir / "retired"
    restore_entries(output_dir, EXPORT_ENTRIES, retired)
    shutil.rmtree(staging, ignore_errors=True)
    data_dir = staging / "data"
    data_dir.mkdir(parents=True)
    kill_after = int(os.environ.get(KILL_HOOK_ENV, "0") or 0)
    written: list[str] = []
    split_rows: dict[str, int] = {}
    split_bytes: dict[str, int] = {}
    per_shard = max(1, ctx.recipe.export.rows_per_shard)
    for split in SPLITS:
        samples = [s for s in kept if split_of[s[0].pair_id] == split]
        samples.sort(key=lambda s: (s[0].pair_id, s[1], s[2]))
        n_shards = max(1, math.ceil(len(samples) / per_shard))
        split_rows[split], split_bytes[split] = len(samples), 0
        for i in range(n_shards):
            chunk = samples[i * per_shard : (i + 1) * per_shard]
            encoded = [features.encode_example(r) for r in rows(chunk)]
            table = pa.Table.from_pylist(encoded, schema=schema)
            name = f"{split}-{i:05d}-of-{n_shards:05d}.parquet"
            tmp = data_dir / f".tmp-{name}"
            pq.write_table(table, tmp)
            os.replace(tmp, data_dir / name)
            split_bytes[split] += table.nbytes
            written.append(name)
            if kill_after and len(written) >= kill_after:
                import signal

                os.kill(os.getpid(), signal.SIGKILL)

    export_stats = {"rows": split_rows, "pairs": dict(Counter(split_of.values())), "caption_pairing": pairing,
                    "sample_drops": dict(sorted(drops.items()))}
    stats = {**stats, "export": export_stats}
    atomic_write_json(staging / "provenance.json", {**provenance, "statistics": stats})
    from ..card import write_card

    write_card(staging, ctx.recipe, features, split_rows, split_bytes, provenance, stats)
    from ..benchmark_yaml import write_benchmark_yaml

    write_benchmark_yaml(staging, ctx.recipe.export.pretty_name)  # registers the test split as a Hub Benchmark
    publish_entries(staging, output_dir, EXPORT_ENTRIES, retired)
    shutil.rmtree(staging, ignore_errors=True)
    summary = {"rows": split_rows, "total_rows": sum(split_rows.values()), "shards": written, "statistics": stats}
    atomic_write_bytes(ctx.run_dir / "export" / "summary.json",
                       json.dumps(summary, indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return summary
