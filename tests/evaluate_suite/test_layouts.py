"""Benchmarks loaded from fixtures in the structure of their real Hub copies (webdataset repos with root class-name and
template files, CROPE's nested metadata, GlobalRG's lowercase regions, a loading-script repo), checked against
references computed here from the raw files, plus the Hub seam: only the needed split is fetched, the commit recorded.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score

from evaluate_suite import DualEncoder, EvalDataError, evaluate_model
from evaluate_suite import hub as hub_module
from evaluate_suite.metrics import retrieval_recall
from evaluate_suite.runner import run_benchmarks
from evaluate_suite.sources import load_benchmark_data

from layouts import (
    CAPTIONS, CLASSNAMES, TEMPLATES, FakeHub, classification_wds, crope_repo, globalrg_repo, loading_script_repo,
    read_wds_samples, retrieval_wds, write_wds_repo,
)


def run_one(tiny, tmp_path, bench: str, folder, **kwargs) -> dict[str, dict]:
    model, processor = tiny
    paths = run_benchmarks("tiny", [bench], tmp_path / "results", data_dirs={bench: str(folder)},
                           encoder=DualEncoder(model, processor, batch_size=5), seeds=(0,), bootstrap_resamples=50,
                           **kwargs)
    return {json.loads(p.read_text())["task"]: json.loads(p.read_text()) for p in paths}


@torch.no_grad()
def image_features(model, processor, blobs: list[bytes]) -> torch.Tensor:
    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    return torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)


@torch.no_grad()
def text_features(model, processor, texts: list[str]) -> torch.Tensor:
    tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
    return torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)


def test_wds_zero_shot_equals_hand_reference_with_root_classnames_and_all_templates(tiny, tmp_path):
    model, processor = tiny
    root = classification_wds(tmp_path / "wds_imagenet1k")
    record = run_one(tiny, tmp_path, "zeroshot_imagenet", root)["zero_shot"]

    # Reference straight from the files: class names and templates from the root files, images from the tars.
    names = (root / "classnames.txt").read_text().split("\n")[:-1]
    templates = (root / "zeroshot_classification_templates.txt").read_text().split("\n")[:-1]
    assert names == CLASSNAMES and templates == TEMPLATES
    classifier = torch.stack([text_features(model, processor, [t.replace("{c}", n) for t in templates]).mean(0)
                              for n in names])
    classifier = torch.nn.functional.normalize(classifier, dim=-1)
    samples = read_wds_samples(root, "test")
    labels = np.array([int(s["cls"]) for s in samples])
    scores = (image_features(model, processor, [s["webp"] for s in samples]) @ classifier.T).numpy()
    predicted = scores.argmax(1)

    assert record["extras"]["predictions"] == predicted.tolist()
    assert record["metrics"]["top1_accuracy"] == pytest.approx(np.mean(predicted == labels))
    top5 = np.argsort(-scores, axis=1)[:, :5]
    assert record["metrics"]["top5_accuracy"] == pytest.approx(np.mean((top5 == labels[:, None]).any(1)))
    assert record["metrics"]["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert record["config"]["task_params"]["templates"] == TEMPLATES
    assert record["config"]["task_params"]["templates_source"].endswith(":zeroshot_classification_templates.txt")
    assert record["counts"]["class_names_source"].endswith(":classnames.txt")
    assert record["extras"]["class_names"] == CLASSNAMES
    # Provenance: local folder, layout, content fingerprint of exactly the files read (the train split is not).
    data = record["dataset"]
    assert (data["kind"], data["layout"], data["split"], data["rows"], data["rows_used"]) == (
        "local", "webdataset", "test", 12, 12)
    read = {f["path"] for f in data["files"]}
    assert read == {"classnames.txt", "zeroshot_classification_templates.txt", "test/nshards.txt", "test/0.tar",
                    "test/1.tar", "test/2.tar"}
    assert len(data["fingerprint"]) == 64
    assert record["protocol"]["follows"].startswith("CLIP_benchmark zero-shot classification")


def test_wds_labels_out_of_range_and_missing_images_name_shard_and_key(tiny, tmp_path):
    root = write_wds_repo(tmp_path / "bad", {"test": [{"image": 0, "cls": 0}, {"image": 1, "cls": 9}]},
                          classnames=CLASSNAMES, templates=TEMPLATES)
    with pytest.raises(EvalDataError, match=r"zeroshot_geode.*shard test/0\.tar, sample 's00000001'.*label '9' is "
                                            r"not a class index 0\.\.5.*row 1|row 1.*shard test/0\.tar"):
        load_benchmark_data(str(root), "test", "zeroshot_geode")
    (root / "test" / "nshards.txt").write_text("3\n")
    with pytest.raises(EvalDataError, match=r"announces 3 shards but .* lacks \['1\.tar', '2\.tar'\]"):
        load_benchmark_data(str(root), "test", "zeroshot_geode")


def test_wds_retrieval_recall_matches_reference_and_counts_blank_caption_lines(tiny, tmp_path):
    model, processor = tiny
    root = retrieval_wds(tmp_path / "wds_flickr30k")
    record = run_one(tiny, tmp_path, "retrieval_flickr30k", root)["retrieval"]
    samples = read_wds_samples(root, "test")
    texts = [line for s in samples for line in s["txt"].decode().splitlines() if line.strip()]
    assert texts == [c for pair in CAPTIONS for c in pair]
    owner = [i for i, s in enumerate(samples) for line in s["txt"].decode().splitlines() if line.strip()]
    sim = image_features(model, processor, [s["webp"] for s in samples]) @ text_features(model, processor, texts).T
    relevant = np.zeros(sim.shape, dtype=bool)
    relevant[owner, np.arange(len(texts))] = True
    expected = retrieval_recall(sim, relevant, ks=(1, 5, 10))
    for key, value in expected.items():
        assert record["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert record["metrics"]["mean_recall@1"] == pytest.approx(
        (expected["image_to_text_recall@1"] + expected["text_to_image_recall@1"]) / 2)
    assert record["primary_metric"] == "mean_recall@1"
    assert record["dataset"]["rows_skipped"] == {"blank_caption_lines": 1}
    # 5 images are not the Karpathy 1k test split: scored, but flagged as not comparable to published numbers.
    assert record["counts"]["comparable_to_published"] is False


def test_dollar_street_and_geode_worst_group_tasks_from_npy_metadata(tiny, tmp_path):
    street = run_one(tiny, tmp_path, "zeroshot_dollar_street",
                     classification_wds(tmp_path / "wds_dollar_street", with_income=True), min_group_size=6)
    assert set(street) == {"zero_shot", "worst_income_group_top5"}
    worst = street["worst_income_group_top5"]
    groups = worst["breakdowns"]["income_group"]
    assert groups["counts"] == {"income=0": 6, "income=1": 6} and groups["small_groups"] == {}
    assert worst["primary_metric"] == "worst_income_group_top5_accuracy"
    assert worst["metrics"]["worst_income_group_top5_accuracy"] == pytest.approx(min(groups["accuracy"].values()))
    assert worst["metrics"]["top5_accuracy"] == pytest.approx(street["zero_shot"]["metrics"]["top5_accuracy"])

    geode = run_one(tiny, tmp_path, "zeroshot_geode", classification_wds(tmp_path / "wds_geode", with_region=True),
                    min_group_size=4)
    regions = geode["worst_region"]["breakdowns"]["region"]
    assert regions["counts"] == {"region=0": 4, "region=1": 4, "region=2": 4}
    assert geode["worst_region"]["metrics"]["worst_region_accuracy"] == pytest.approx(
        min(regions["accuracy"].values()))
    # With the default minimum group size (20) none of these groups is ranked: the task is not produced, and says so.
    default = run_one(tiny, tmp_path / "default", "zeroshot_geode", tmp_path / "wds_geode")
    assert set(default) == {"zero_shot"}
    assert "worst_region" in default["zero_shot"]["counts"]["tasks_not_produced"]
    assert default["zero_shot"]["breakdowns"]["region"]["small_groups"] == {"region=0": 4, "region=1": 4,
                                                                            "region=2": 4}


def test_crope_groups_by_real_metadata_and_skips_empty_concepts(tiny, tmp_path):
    record = run_one(tiny, tmp_path, "crope", crope_repo(tmp_path / "crope"), min_group_size=1)["twin_choice"]
    assert record["counts"]["skipped"] == {"answer_yes_no_twin": 1, "empty_concept": 1}
    assert record["dataset"]["rows_skipped"] == {"answer_yes_no_twin": 1, "empty_concept": 1}
    assert (record["counts"]["rows"], record["counts"]["rows_used"], record["counts"]["items"]) == (5, 3, 7)
    assert set(record["breakdowns"]) == {"source_language", "chapter"}  # no country: the metadata has none
    assert record["breakdowns"]["source_language"]["counts"] == {"ja": 5, "zh": 2}
    assert record["breakdowns"]["chapter"]["counts"] == {"clothing": 2, "food": 5}


def test_globalrg_lowercase_regions_resolve_to_countries_and_continents(tiny, tmp_path):
    results = run_one(tiny, tmp_path, "globalrg_retrieval", globalrg_repo(tmp_path / "grg"), min_group_size=1)
    choice = results["region_choice"]
    assert choice["counts"]["skipped"] == {"universal_in_fewer_than_4_regions": 2}
    assert choice["counts"]["ungrouped"] == {"country": 0, "continent": 0, "universal": 0}
    assert set(choice["breakdowns"]["country"]["counts"]) == {"United States", "Japan", "South Korea", "Nigeria",
                                                              "Peru", "Italy"}
    assert choice["breakdowns"]["continent"]["counts"] == {"Africa": 2, "Asia": 4, "Europe": 1, "North America": 2,
                                                           "South America": 1}
    assert results["retrieval"]["protocol"]["follows"].startswith("this suite's own task")


def test_loading_script_repo_gives_one_error_naming_the_alternative(tmp_path, monkeypatch):
    folder = loading_script_repo(tmp_path / "flickr_script")
    with pytest.raises(EvalDataError, match=r"retrieval_flickr30k.*flickr_script.*loading script \(flickr30k\.py\)"
                                            r".*parquet.*webdataset"):
        load_benchmark_data(str(folder), "test", "retrieval_flickr30k")
    fake = FakeHub(tmp_path / "cache", {"nlphuji/flickr30k": folder})
    monkeypatch.setattr(hub_module, "fetch_hub_snapshot", fake)
    with pytest.raises(EvalDataError, match=r"'nlphuji/flickr30k' is a dataset loading script.*use "
                                            r"clip-benchmark/wds_flickr30k"):
        load_benchmark_data("nlphuji/flickr30k", "test", "retrieval_flickr30k")
    assert len(fake.calls) == 1  # the root files told it all: no data was fetched


def test_hub_fetches_only_the_needed_split_and_records_the_commit(tmp_path, monkeypatch):
    from evalsuite_fixtures import globalrg_retrieval_dataset, write_folder

    wds = classification_wds(tmp_path / "wds")
    parquet = write_folder(tmp_path / "pq", {"train": globalrg_retrieval_dataset(),
                                             "test": globalrg_retrieval_dataset().select(range(4))})
    fake = FakeHub(tmp_path / "cache", {"clip-benchmark/wds_geode": wds, "UBC-VL/GlobalRG-Retrieval": parquet})
    monkeypatch.setattr(hub_module, "fetch_hub_snapshot", fake)
    data = load_benchmark_data("clip-benchmark/wds_geode", "test", "zeroshot_geode")
    assert not [f for f in fake.fetched("clip-benchmark/wds_geode") if f.startswith("train/")]
    assert data.provenance["kind"] == "hub"
    assert data.provenance["revision"] == fake.commit_of("clip-benchmark/wds_geode")
    assert data.provenance["id"] == "clip-benchmark/wds_geode" and len(data.dataset) == 12
    grg = load_benchmark_data("UBC-VL/GlobalRG-Retrieval", "test", "globalrg_retrieval", revision="main")
    assert fake.fetched("UBC-VL/GlobalRG-Retrieval") == ["README.md", "data/test-00000-of-00001.parquet"]
    assert len(grg.dataset) == 4 and grg.provenance["requested_revision"] == "main"
    # Both fetches of a repo are pinned to the commit the first one resolved.
    assert [c[1] for c in fake.calls if c[0] == "UBC-VL/GlobalRG-Retrieval"] == [
        "main", fake.commit_of("UBC-VL/GlobalRG-Retrieval")]
    with pytest.raises(EvalDataError, match=r"zeroshot_geode.*cannot fetch dataset 'nobody/missing'"):
        load_benchmark_data("nobody/missing", "test", "zeroshot_geode")


def test_parquet_split_column_is_filtered_and_a_missing_value_is_an_error(tiny, tmp_path):
    from evalsuite_fixtures import flickr_dataset

    model, processor = tiny
    result = evaluate_model(model, processor, "retrieval_flickr30k", flickr_dataset())["retrieval"]
    assert result["counts"]["skipped"] == {"split_column_not_test": 1} and result["counts"]["images"] == 4
    with pytest.raises(EvalDataError, match=r"retrieval_flickr30k.*'split' column has no value 'test'"):
        evaluate_model(model, processor, "retrieval_flickr30k", flickr_dataset().filter(lambda s: s == "train",
                                                                                         input_columns="split"))


def test_local_imagenet_folder_gets_openai_classnames_and_its_80_templates():
    import datasets

    from evalsuite_fixtures import image_value
    from evaluate_suite.tasks import get_benchmark

    synsets = [f"synset {i}, other name {i}" for i in range(1000)]
    ds = datasets.Dataset.from_dict({"image": [image_value(0)], "label": [2]}, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=synsets)}))
    bench = get_benchmark("zeroshot_imagenet")
    names, labels, source = bench.class_names(bench.prepare(ds))
    assert names[:3] == ["tench", "goldfish", "great white shark"] and labels.tolist() == [2]
    assert source == "package:evaluate_suite/protocols/imagenet1k_classnames.txt"
    templates, origin = bench.resolved_templates()
    assert len(templates) == 80 and templates[0] == "a bad photo of a {c}." and origin.endswith("templates.txt")
    # A smaller class set keeps its own names (first synonym), as the demo's emoji sets do.
    small = datasets.Dataset.from_dict({"image": [image_value(0)], "label": [1]}, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["great_white_shark, carcharodon", "tench"])}))
    assert bench.class_names(bench.prepare(small))[0] == ["great white shark", "tench"]


def test_other_local_layouts_datasets_reads_load_only_the_split(tmp_path):
    # An ImageFolder copy (one sub-folder per class, split folders): `datasets` reads it; only test files are read.
    for split in ("test", "train"):
        for c, colour in (("n01440764", "red"), ("n01443537", "blue")):
            (tmp_path / "inet" / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), colour).save(tmp_path / "inet" / split / c / "0.png")
    data = load_benchmark_data(str(tmp_path / "inet"), "test", "zeroshot_imagenet")
    assert len(data.dataset) == 2 and data.provenance["layout"] == "imagefolder"
    assert all(f["path"].startswith("test/") for f in data.provenance["files"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalDataError, match=r"zeroshot_imagenet', source '.*empty': no data for split 'test'"):
        load_benchmark_data(str(tmp_path / "empty"), "test", "zeroshot_imagenet")
