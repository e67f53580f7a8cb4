"""A small stand-in for the authors' released CulTwin data, in their layout.

The release's training file is JSON lines, one object per (concept caption, twin caption) combination, as its
caption-expansion script writes them (`sample_id`, `pos_caption_id`, `neg_caption_id`, `pos_concept`,
`pos_context`, `pos_caption`, `neg_concept`, `neg_context`, `neg_caption`, `metadata: {category, pos_features,
neg_features}`) plus the image paths its `data.py` reads (`pos_image_path`, `neg_image_path`). As released: no
country anywhere, the twin's features empty, category "Animal & Plants", one image per caption reused across the
combinations, and some paths absolute paths of the authors' machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# (concept, context, features, twin, twin context, category)
RELEASE_PAIRS = [
    ("jiaozi", "a dumpling eaten at the new year in china", "crescent shape; pleated edge", "pierogi",
     "a filled dumpling from poland", "Cuisine"),
    ("hanbok", "a korean dress worn at festivals", "high waist; bright silk", "kimono",
     "a japanese robe tied with a sash", "Clothing"),
    ("baobab", "a giant tree of the african savanna", "thick trunk; sparse crown", "boab",
     "an australian bottle tree", "Animal & Plants"),
    ("kora", "a west african harp lute", "gourd body; long neck", "sitar",
     "an indian plucked instrument", "Art"),
]
SCENES = ["at a busy market", "on a sunny street", "in a family kitchen"]
AUTHORS_ROOT = "/hpc/users/authors/CulTwin"  # the kind of absolute path found in released files


def _image(seed: int, size: int = 20) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8), mode="RGB")


def release_records(captions_per_side: int = 2, pairs=RELEASE_PAIRS, absolute_pair: int | None = 1
                    ) -> tuple[list[dict], dict[str, Image.Image]]:
    """The released JSON objects and the images they point to (relative path -> image)."""
    records, images = [], {}
    for p, (concept, context, features, twin, twin_context, category) in enumerate(pairs):
        sample = f"id_{p:06d}"
        for i in range(captions_per_side):
            images[f"images/{sample}/pos_{i}.png"] = _image(1000 * p + i)
            images[f"images/{sample}/neg_{i}.png"] = _image(1000 * p + 500 + i)
        for i in range(captions_per_side):
            for j in range(captions_per_side):
                pos_path, neg_path = f"images/{sample}/pos_{i}.png", f"images/{sample}/neg_{j}.png"
                if p == absolute_pair:
                    pos_path, neg_path = f"{AUTHORS_ROOT}/{pos_path}", f"{AUTHORS_ROOT}/{neg_path}"
                records.append({
                    "sample_id": sample, "pos_caption_id": i, "neg_caption_id": j,
                    "pos_concept": concept, "pos_context": context,
                    "pos_caption": f"a {concept} {SCENES[i % len(SCENES)]}",
                    "neg_concept": twin, "neg_context": twin_context,
                    "neg_caption": f"a {twin} {SCENES[(j + 1) % len(SCENES)]}",
                    "metadata": {"category": category, "pos_features": features, "neg_features": ""},
                    "pos_image_path": pos_path, "neg_image_path": neg_path,
                })
    return records, images


def write_release(root: Path, captions_per_side: int = 2, validation_pairs: int = 0, **kwargs) -> Path:
    """DIR/train.jsonl (+ DIR/val.jsonl holding the last `validation_pairs` pairs) and DIR/images/..."""
    records, images = release_records(captions_per_side, **kwargs)
    root.mkdir(parents=True, exist_ok=True)
    for rel, image in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / rel)
    held_out = {f"id_{p:06d}" for p in range(len(RELEASE_PAIRS) - validation_pairs, len(RELEASE_PAIRS))}
    splits = {"train": [r for r in records if r["sample_id"] not in held_out],
              "val": [r for r in records if r["sample_id"] in held_out]}
    for name, rows in splits.items():
        if rows:
            (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def release_texts(captions_per_side: int = 2) -> list[str]:
    """Every text of the stand-in (for a tiny tokenizer's vocabulary)."""
    records, _ = release_records(captions_per_side)
    return [r[k] for r in records for k in ("pos_caption", "neg_caption", "pos_concept", "neg_concept")]
