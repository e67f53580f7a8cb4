"""Fixture builders for the evaluation-suite tests: local benchmark data whose columns follow the real datasets'
schemas (written as parquet + card and read back with `datasets.load_dataset(folder)`)."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
from PIL import Image


COLOURS = ["red", "green", "blue", "yellow", "white", "black", "purple", "orange", "cyan", "magenta", "gray",
           "brown", "pink", "navy", "olive", "teal"]
VOCAB_TEXTS = [
    "There is sushi kimchi dumpling fortune cookie kimono sari in the image.",
    "The picture depicts a kind of house breakfast wedding in Japan Chad Romania Peru Nigeria Italy",
    "The item in the picture is tagine couscous harira msemen jollof suya fufu egusi in Morocco Nigeria",
    "a photo of the a close-up picture cropped bright dark bag car stove tooth brush in home someone's",
    "a dog runs on grass . a cat sleeps . two men talk . a red car parked . children play outside .",
    "a photo taken in from country of landscape street scene japan france brazil chad",
    "chad flag romania flag castle pagoda",
]


def png_bytes(colour: str, size: tuple[int, int] = (40, 30), pattern: int = 0) -> dict:
    """An undecoded datasets.Image value: a solid-colour PNG with an optional stripe so images differ."""
    image = Image.new("RGB", size, colour)
    if pattern:
        for x in range(0, size[0], pattern + 1):
            for y in range(size[1]):
                image.putpixel((x, y), (pattern * 37 % 255, pattern * 91 % 255, pattern * 53 % 255))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def image_value(i: int) -> dict:
    return png_bytes(COLOURS[i % len(COLOURS)], pattern=i // len(COLOURS))


def write_folder(root: Path, splits: dict[str, datasets.Dataset]) -> Path:
    """Hub layout: data/{split}-00000-of-00001.parquet plus a README card."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, ds in splits.items():
        ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    (root / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n" + "".join(
        f"  - split: {s}\n    path: data/{s}-*\n" for s in splits) + "---\n# fixture\n")
    return root


def crope_dataset() -> datasets.Dataset:
    """CROPE test rows: image, definition_images (list of images), answer yes/no, metadata struct."""
    meta = [
        {"image_en_concept": "sushi", "definition_concept": "kimchi", "country": "Japan"},
        {"image_en_concept": "dumpling", "definition_concept": "fortune cookie", "country": "China"},
        {"image_en_concept": "kimono", "definition_concept": "sari", "country": "Japan"},
        {"image_en_concept": "kimchi", "definition_concept": "kimchi", "country": "South Korea"},
    ]
    rows = {
        "image": [image_value(i) for i in range(4)],
        "definition_images": [[image_value(10), image_value(11)], [image_value(12)], [image_value(13)], []],
        "answer": ["no", "no", "no", "yes"],
        "metadata": meta,
    }
    features = datasets.Features({
        "image": datasets.Image(), "definition_images": datasets.List(datasets.Image()), "answer": datasets.Value(
            "string"),
        "metadata": {"image_en_concept": datasets.Value("string"), "definition_concept": datasets.Value("string"),
                     "country": datasets.Value("string")},
    })
    return datasets.Dataset.from_dict(rows, features=features)


def globalrg_retrieval_dataset() -> datasets.Dataset:
    """image, region, universal: 'house' in exactly 4 regions (options fixed), 'wedding' in 2 (skipped)."""
    regions = ["Japan", "Chad", "Romania", "Peru", "Japan", "Nigeria", "Italy", "Chad"]
    universals = ["house", "house", "house", "house", "breakfast", "breakfast", "wedding", "wedding"]
    regions += ["Chad", "Romania"]
    universals += ["breakfast", "breakfast"]
    features = datasets.Features({"image": datasets.Image(), "region": datasets.Value("string"),
                                  "universal": datasets.Value("string")})
    return datasets.Dataset.from_dict({"image": [image_value(i) for i in range(len(regions))], "region": regions,
                                       "universal": universals}, features=features)


def globalrg_grounding_dataset() -> datasets.Dataset:
    """image, region, concept: Morocco with exactly 4 concepts, Nigeria with 4, Peru with 1 (skipped)."""
    concepts = ["tagine", "couscous", "harira", "msemen", "jollof", "suya", "fufu", "egusi", "breakfast"]
    regions = ["Morocco"] * 4 + ["Nigeria"] * 4 + ["Peru"]
    features = datasets.Features({"image": datasets.Image(), "region": datasets.Value("string"),
                                  "concept": datasets.Value("string")})
    return datasets.Dataset.from_dict({"image": [image_value(i) for i in range(9)], "region": regions,
                                       "concept": concepts}, features=features)


def mcq_dataset() -> datasets.Dataset:
    options = [["sushi", "kimchi", "dumpling", "kimono"], ["sari", "kimono", "castle", "pagoda"],
               ["tagine", "couscous", "suya", "fufu"]]
    features = datasets.Features({"image": datasets.Image(), "options": datasets.List(datasets.Value("string")),
                                  "answer": datasets.Value("string"), "country": datasets.Value("string"),
                                  "question_type": datasets.Value("string")})
    return datasets.Dataset.from_dict({
        "image": [image_value(i) for i in range(4)], "options": options + [["a", "b"]],
        "answer": ["sushi", "B", "tagine", "a"], "country": ["Japan", "India", "Morocco", "Chad"],
        "question_type": ["recognition", "recognition", "recognition", "cultural_knowledge"],
    }, features=features)


def cultwin_dataset(n_pairs: int = 4) -> datasets.DatasetDict:
    """CulTwin rows with the schema in briefs/schema.md (train/validation/test by pair)."""
    pairs = [("chad flag", "romania flag", "Chad", "Romania"), ("castle", "pagoda", "Italy", "Japan"),
             ("kimono", "sari", "Japan", "India"), ("dumpling", "fortune cookie", "China", "United States")]
    judge = {"authenticity": 5, "consistency": 4, "cultural_fidelity": 5}

    def rows(offset: int) -> dict:
        out: dict[str, list] = {k: [] for k in (
            "pair_id", "sample_index", "concept_id", "concept", "country", "iso_code", "continent", "category",
            "context", "visual_features", "caption", "all_captions", "image", "seed", "judge_scores",
            "twin_concept_id", "twin_concept", "twin_country", "twin_iso_code", "twin_continent", "twin_context",
            "twin_visual_features", "twin_caption", "twin_all_captions", "twin_image", "twin_seed",
            "twin_judge_scores", "source", "text_model", "image_model")}
        for k, (a, b, ca, cb) in enumerate(pairs[:n_pairs]):
            for s in range(2):
                i = offset + 2 * k + s
                out["pair_id"].append(f"p{k}")
                out["sample_index"].append(s)
                out["concept_id"].append(f"c{k}a")
                out["concept"].append(a)
                out["country"].append(ca)
                out["iso_code"].append("")
                out["continent"].append("")
                out["category"].append("symbol")
                out["context"].append(f"{a} context")
                out["visual_features"].append("colours")
                out["caption"].append(f"a photo of {a}")
                out["all_captions"].append([f"a photo of {a}"])
                out["image"].append(image_value(i))
                out["seed"].append(s)
                out["judge_scores"].append(judge)
                out["twin_concept_id"].append(f"c{k}b")
                out["twin_concept"].append(b)
                out["twin_country"].append(cb)
                out["twin_iso_code"].append("")
                out["twin_continent"].append("")
                out["twin_context"].append(f"{b} context")
                out["twin_visual_features"].append("colours")
                out["twin_caption"].append(f"a photo of {b}")
                out["twin_all_captions"].append([f"a photo of {b}"])
                out["twin_image"].append(image_value(i + 100))
                out["twin_seed"].append(s)
                out["twin_judge_scores"].append(judge)
                out["source"].append("fixture")
                out["text_model"].append("none")
                out["image_model"].append("none")
        return out

    features = datasets.Features({
        **{k: datasets.Value("string") for k in (
            "pair_id", "concept_id", "concept", "country", "iso_code", "continent", "category", "context",
            "visual_features", "caption", "twin_concept_id", "twin_concept", "twin_country", "twin_iso_code",
            "twin_continent", "twin_context", "twin_visual_features", "twin_caption", "source", "text_model",
            "image_model")},
        "sample_index": datasets.Value("int64"), "seed": datasets.Value("int64"),
        "twin_seed": datasets.Value("int64"),
        "all_captions": datasets.List(datasets.Value("string")),
        "twin_all_captions": datasets.List(datasets.Value("string")),
        "image": datasets.Image(), "twin_image": datasets.Image(),
        "judge_scores": {k: datasets.Value("int64") for k in ("authenticity", "consistency", "cultural_fidelity")},
        "twin_judge_scores": {k: datasets.Value("int64") for k in ("authenticity", "consistency",
                                                                   "cultural_fidelity")},
    })
    return datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(rows(0), features=features),
        "test": datasets.Dataset.from_dict(rows(20), features=features),
    })


def geode_dataset() -> datasets.Dataset:
    """MLap/GeoDE viewer layout: image, object, region, ip_country."""
    objects = ["bag", "car", "stove", "bag", "car", "stove", "bag", "car"]
    regions = ["Europe", "Africa", "WestAsia", "SouthEastAsia", "Americas", "Europe", "Africa", "Americas"]
    countries = ["Italy", "Nigeria", "Turkey", "Indonesia", "Colombia", "Spain", "Egypt", "Argentina"]
    features = datasets.Features({"image": datasets.Image(), "object": datasets.Value("string"),
                                  "region": datasets.Value("string"), "ip_country": datasets.Value("string")})
    return datasets.Dataset.from_dict({"image": [image_value(i) for i in range(8)], "object": objects,
                                       "region": regions, "ip_country": countries}, features=features)


def country211_dataset() -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["BR", "FR", "JP",
                                                                                                 "TD"])})
    return datasets.Dataset.from_dict({"image": [image_value(i) for i in range(8)], "label": [0, 1, 2, 3, 0, 1, 2, 3]},
                                      features=features)


def flickr_dataset() -> datasets.Dataset:
    """nlphuji/flickr30k layout: image, caption (list of 5 str), split."""
    captions = [["a dog runs on grass .", "a dog on grass ."], ["a cat sleeps .", "a cat ."],
                ["two men talk .", "men talk ."], ["a red car parked .", "a car ."],
                ["children play outside .", "children play ."]]
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.List(datasets.Value("string")),
                                  "split": datasets.Value("string")})
    return datasets.Dataset.from_dict({"image": [image_value(i) for i in range(5)], "caption": captions,
                                       "split": ["test", "test", "test", "test", "train"]}, features=features)
