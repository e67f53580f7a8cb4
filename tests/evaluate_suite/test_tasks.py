"""Each benchmark on a local fixture with the real schema, checked against a naive reference computed here: the model
called on one image with all its option texts (release style), argmax of logits_per_image."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from evaluate_suite import DualEncoder, evaluate_model
from evaluate_suite.metrics import retrieval_recall
from evaluate_suite.tasks import get_benchmark

from evalsuite_fixtures import (
    country211_dataset, crope_dataset, cultwin_dataset, flickr_dataset, geode_dataset, globalrg_grounding_dataset,
    globalrg_retrieval_dataset, mcq_dataset, write_folder,
)


def pil(value) -> Image.Image:
    return Image.open(io.BytesIO(value["bytes"])).convert("RGB")


def raw(ds: datasets.Dataset, column: str) -> list:
    feature = ds.features[column]
    if isinstance(feature, datasets.Image):
        return ds.cast_column(column, datasets.Image(decode=False))[column]
    return ds.cast_column(column, datasets.List(datasets.Image(decode=False)))[column]


@torch.no_grad()
def naive_choice(model, processor, image_value, options: list[str]) -> str:
    """Release-style: processor + model once per image, every option text re-encoded; returns the chosen text."""
    inputs = processor(text=options, images=pil(image_value), return_tensors="pt", padding=True)
    return options[int(model(**inputs).logits_per_image.argmax())]


def test_crope_matches_naive_per_image_scoring(tiny):
    model, processor = tiny
    ds = crope_dataset()
    result = evaluate_model(model, processor, "crope", ds, seeds=(0, 1), min_group_size=1)["twin_choice"]
    images, definitions = raw(ds, "image"), raw(ds, "definition_images")
    correct, kinds = [], []
    for row, meta in enumerate(ds["metadata"][:3]):
        options = [f"There is {meta['image_en_concept']} in the image.", f"There is {meta['definition_concept']} in the image."]
        correct.append(naive_choice(model, processor, images[row], options) == options[0])
        kinds.append("main_image")
        for value in definitions[row]:
            correct.append(naive_choice(model, processor, value, options) == options[1])
            kinds.append("definition_image")
    assert result["counts"]["items"] == 7 == len(correct)
    assert result["counts"]["skipped"] == {"answer_yes_no_twin": 1}
    assert result["metrics"]["accuracy"] == pytest.approx(np.mean(correct))
    main = [c for c, k in zip(correct, kinds) if k == "main_image"]
    assert result["metrics"]["accuracy_main_image"] == pytest.approx(np.mean(main))
    assert result["config"]["seeds"] == [0]  # CROPE has no distractors to sample
    assert set(result["breakdowns"]["country"]["accuracy"]) == {"Japan", "China"}
    assert result["breakdowns"]["continent"]["accuracy"] == {"Asia": pytest.approx(np.mean(correct))}


def test_globalrg_retrieval_region_choice_and_recall(tiny):
    model, processor = tiny
    ds = globalrg_retrieval_dataset()
    results = evaluate_model(model, processor, "globalrg_retrieval", ds, seeds=(0, 1, 2), min_group_size=1)
    choice = results["region_choice"]
    images = raw(ds, "image")
    regions_of = {}
    for u, r in zip(ds["universal"], ds["region"]):
        regions_of.setdefault(u, set()).add(r)
    expected, countries = [], []
    for row, (u, r) in enumerate(zip(ds["universal"], ds["region"])):
        if len(regions_of[u]) < 4:
            continue
        # Each kept universal has exactly 4 regions, so the 4 options are the same whatever the seed.
        options = [f"The picture depicts a kind of {u} in {x}" for x in sorted(regions_of[u])]
        expected.append(naive_choice(model, processor, images[row], options).endswith(f" in {r}"))
        countries.append(r)
    assert choice["counts"]["skipped"] == {"universal_in_fewer_than_4_regions": 2}
    assert choice["counts"]["items"] == len(expected) == 8
    assert choice["metrics"]["accuracy"] == pytest.approx(np.mean(expected))
    assert choice["metrics"]["accuracy_std"] == pytest.approx(0.0)
    assert list(choice["seeds"]["accuracy"]["per_seed"]) == ["0", "1", "2"]
    japan = [e for e, c in zip(expected, countries) if c == "Japan"]
    assert choice["breakdowns"]["country"]["accuracy"]["Japan"] == pytest.approx(np.mean(japan))
    assert choice["breakdowns"]["continent"]["counts"] == {"Africa": 3, "Asia": 2, "Europe": 2, "South America": 1}
    ci = choice["confidence_intervals"]["accuracy"]
    assert ci["low"] <= choice["metrics"]["accuracy"] <= ci["high"]

    # recall@k: recompute with CLIPModel's own features (get_*_features, normalised) and the metric function.
    texts = sorted({f"{u} in {r}" for u, r in zip(ds["universal"], ds["region"])})
    with torch.no_grad():
        img = model.get_image_features(**processor.image_processor(images=[pil(v) for v in images],
                                                                   return_tensors="pt")).pooler_output
        txt = model.get_text_features(**processor.tokenizer(texts, padding=True, return_tensors="pt")).pooler_output
    sim = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    relevant = np.array([[t == f"{u} in {r}" for t in texts] for u, r in zip(ds["universal"], ds["region"])])
    expected_recall = retrieval_recall(sim, relevant, ks=(1, 5, 10))
    for key, value in expected_recall.items():
        assert results["retrieval"]["metrics"][key] == pytest.approx(value), key


def test_distractor_seeds_change_options_and_report_mean_std(tiny):
    model, processor = tiny
    # 'breakfast' seen in 6 regions -> 3 of 5 distractors are sampled per seed.
    regions = ["Japan", "Chad", "Romania", "Peru", "Nigeria", "Italy"] * 2
    from evalsuite_fixtures import image_value

    ds = datasets.Dataset.from_dict({"image": [image_value(i) for i in range(12)], "region": regions,
                                     "universal": ["breakfast"] * 12},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "region": datasets.Value("string"),
                                                                "universal": datasets.Value("string")}))
    bench = get_benchmark("globalrg_retrieval")
    prepared = bench.prepare(ds)
    from evaluate_suite.data import ImageTable
    from collections import Counter

    bench._skipped = Counter()
    a = bench.build_items(prepared, ImageTable(prepared, "x"), np.random.default_rng(0))
    b = bench.build_items(prepared, ImageTable(prepared, "x"), np.random.default_rng(1))
    c = bench.build_items(prepared, ImageTable(prepared, "x"), np.random.default_rng(0))
    assert a.options == c.options and a.options != b.options
    result = evaluate_model(model, processor, bench, ds, seeds=(0, 1, 2, 3))["region_choice"]
    per_seed = list(result["seeds"]["accuracy"]["per_seed"].values())
    assert result["metrics"]["accuracy"] == pytest.approx(np.mean(per_seed))
    assert result["metrics"]["accuracy_std"] == pytest.approx(np.std(per_seed, ddof=1))


def test_globalrg_grounding_matches_naive(tiny):
    model, processor = tiny
    ds = globalrg_grounding_dataset()
    result = evaluate_model(model, processor, "globalrg_grounding", ds, seeds=(0, 1), min_group_size=1)[
        "concept_choice"]
    images = raw(ds, "image")
    concepts_of = {}
    for c, r in zip(ds["concept"], ds["region"]):
        concepts_of.setdefault(r, set()).add(c)
    expected = []
    for row, (c, r) in enumerate(zip(ds["concept"], ds["region"])):
        if len(concepts_of[r]) < 4:
            continue
        options = [f"The item in the picture is {x} in {r}" for x in sorted(concepts_of[r])]
        expected.append(naive_choice(model, processor, images[row], options) == f"The item in the picture is {c} in {r}")
    assert result["counts"]["skipped"] == {"region_with_fewer_than_4_concepts": 1}
    assert result["metrics"]["accuracy"] == pytest.approx(np.mean(expected))
    assert set(result["breakdowns"]["country"]["accuracy"]) == {"Morocco", "Nigeria"}


def test_cultureverse_mcq_matches_naive(tiny):
    model, processor = tiny
    ds = mcq_dataset()
    result = evaluate_model(model, processor, "cultureverse_mcq", ds, min_group_size=1)["recognition"]
    images = raw(ds, "image")
    expected = []
    for row in range(3):
        options = [f"a photo of {o}." for o in ds["options"][row]]
        answer = ds["answer"][row] if ds["answer"][row] in ds["options"][row] else ds["options"][row][1]
        expected.append(naive_choice(model, processor, images[row], options) == f"a photo of {answer}.")
    assert result["counts"]["skipped"] == {"question_type_cultural_knowledge": 1}
    assert result["metrics"]["accuracy"] == pytest.approx(np.mean(expected))
    assert result["breakdowns"]["continent"]["counts"] == {"Africa": 1, "Asia": 2}


def test_cultwin_pair_accuracy_and_confusion(tiny, tmp_path):
    model, processor = tiny
    folder = write_folder(tmp_path / "cultwin", dict(cultwin_dataset()))
    test = datasets.load_dataset(str(folder), split="test")
    result = evaluate_model(model, processor, "cultwin", test, min_group_size=1)["twin_choice"]
    images, twins = raw(test, "image"), raw(test, "twin_image")
    side, pair = [], []
    confusion = np.zeros((2, 2), dtype=int)
    for row in range(len(test)):
        options = [test["concept"][row], test["twin_concept"][row]]
        a = naive_choice(model, processor, images[row], options)
        b = naive_choice(model, processor, twins[row], options)
        side += [a == options[0], b == options[1]]
        pair.append(a == options[0] and b == options[1])
        confusion[0, options.index(a)] += 1
        confusion[1, options.index(b)] += 1
    assert result["metrics"]["accuracy"] == pytest.approx(np.mean(side))
    assert result["metrics"]["pair_accuracy"] == pytest.approx(np.mean(pair))
    assert result["extras"]["confusion_matrix"]["matrix"] == confusion.tolist()
    assert result["counts"]["pairs"] == len(test) and result["counts"]["pair_ids"] == 4
    assert "United States" in result["breakdowns"]["country"]["accuracy"]  # the twin side's country counts too


def test_zero_shot_geode_matches_template_ensemble(tiny):
    model, processor = tiny
    ds = geode_dataset()
    bench = get_benchmark("zeroshot_geode", templates=("a photo of a {}.", "a picture of a {}."))
    results = evaluate_model(model, processor, bench, ds, min_group_size=2)
    result = results["zero_shot"]
    classes = sorted(set(ds["object"]))
    with torch.no_grad():
        prompts = [t.format(c) for c in classes for t in bench.templates]
        txt = model.get_text_features(**processor.tokenizer(prompts, padding=True, return_tensors="pt")).pooler_output
        txt = torch.nn.functional.normalize(txt, dim=-1).view(len(classes), 2, -1).mean(1)
        img = model.get_image_features(**processor.image_processor(images=[pil(v) for v in raw(ds, "image")],
                                                                   return_tensors="pt")).pooler_output
    scores = (torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T).numpy()
    labels = np.array([classes.index(o) for o in ds["object"]])
    from sklearn.metrics import balanced_accuracy_score

    assert result["metrics"]["top1_accuracy"] == pytest.approx(np.mean(scores.argmax(1) == labels))
    assert result["metrics"]["mean_per_class_recall"] == pytest.approx(
        balanced_accuracy_score(labels, scores.argmax(1)))
    assert "top5_accuracy" not in result["metrics"]  # 3 classes: CLIP_benchmark reports no acc5 below 5 classes
    assert set(result["breakdowns"]) == {"country", "continent", "region"}
    regions = result["breakdowns"]["region"]
    assert regions["counts"]["Europe"] == 2 and regions["small_groups"] == {"SouthEastAsia": 1, "WestAsia": 1}
    assert results["worst_region"]["metrics"]["worst_region_accuracy"] == pytest.approx(
        min(regions["accuracy"][g] for g in regions["ranked_groups"]))


def test_zero_shot_country211_uses_country_names(tiny):
    model, processor = tiny
    result = evaluate_model(model, processor, "zeroshot_country211", country211_dataset(), min_group_size=1)[
        "zero_shot"]
    assert result["counts"]["class_names_source"].endswith("(ISO 3166 alpha-2 codes as country names)")
    assert result["config"]["task_params"]["templates_source"].endswith("country211_templates.txt")
    assert result["counts"]["classes"] == 4
    assert set(result["breakdowns"]["country"]["accuracy"]) == {"Brazil", "France", "Japan", "Chad"}
    assert set(result["breakdowns"]["continent"]["accuracy"]) == {"South America", "Europe", "Asia", "Africa"}


def test_flickr_retrieval_filters_split_and_matches_metric(tiny):
    model, processor = tiny
    ds = flickr_dataset()
    result = evaluate_model(model, processor, "retrieval_flickr30k", ds)["retrieval"]
    assert (result["counts"]["images"], result["counts"]["texts"], result["counts"]["rows"]) == (4, 8, 5)
    test_rows = [i for i, s in enumerate(ds["split"]) if s == "test"]
    texts = [c for i in test_rows for c in ds["caption"][i]]
    owner = [i for i in range(len(test_rows)) for _ in ds["caption"][test_rows[i]]]
    with torch.no_grad():
        img = model.get_image_features(**processor.image_processor(
            images=[pil(raw(ds, "image")[i]) for i in test_rows], return_tensors="pt")).pooler_output
        txt = model.get_text_features(**processor.tokenizer(texts, padding=True, return_tensors="pt")).pooler_output
    sim = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    relevant = np.zeros((4, 8), dtype=bool)
    relevant[owner, np.arange(8)] = True
    for key, value in retrieval_recall(sim, relevant, ks=(1, 5, 10)).items():
        assert result["metrics"][key] == pytest.approx(value, abs=1e-6), key


def test_text_embeddings_computed_once_per_distinct_string(tiny):
    model, processor = tiny
    encoder = DualEncoder(model, processor, batch_size=4)
    evaluate_model(model, processor, "globalrg_retrieval", globalrg_retrieval_dataset(), seeds=(0, 1, 2),
                   encoder=encoder)
    calls, cached = encoder.text_calls, len(encoder._text_cache)
    # 8 distinct choice prompts (same for all three seeds) + 10 retrieval texts, 4 per batch: 2 + 3 text calls.
    assert cached == 18 and calls == 5
    evaluate_model(model, processor, "globalrg_retrieval", globalrg_retrieval_dataset(), seeds=(5,), encoder=encoder)
    assert encoder.text_calls == calls  # everything came from the cache


def test_siglip_scoring_matches_naive():
    from transformers import SiglipConfig, SiglipModel

    from modeling_cultureclip.tiny import build_word_tokenizer, tiny_processor, words_of

    tok = build_word_tokenizer(words_of(["There is sushi kimchi dumpling fortune cookie kimono sari in the image."]),
                               max_length=16)
    torch.manual_seed(1)
    model = SiglipModel(SiglipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=0, bos_token_id=1,
                         eos_token_id=3),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )).eval()
    processor = tiny_processor(tok, 32)
    encoder = DualEncoder(model, processor)
    assert encoder.family == "sigmoid"
    ds = crope_dataset()
    result = evaluate_model(model, processor, "crope", ds, encoder=encoder)["twin_choice"]
    images, definitions = raw(ds, "image"), raw(ds, "definition_images")
    correct = []
    for row, meta in enumerate(ds["metadata"][:3]):
        options = [f"There is {meta['image_en_concept']} in the image.", f"There is {meta['definition_concept']} in the image."]
        for value, answer in [(images[row], 0)] + [(v, 1) for v in definitions[row]]:
            tokens = tok(options, padding="max_length", max_length=16, return_tensors="pt")
            pixels = processor.image_processor(images=[pil(value)], return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                logits = model(input_ids=tokens["input_ids"], pixel_values=pixels).logits_per_image
            correct.append(int(logits.argmax()) == answer)
    assert result["metrics"]["accuracy"] == pytest.approx(np.mean(correct))
    probs = encoder.probabilities(torch.tensor([[0.1, 0.2]]))
    assert probs.shape == (1, 2) and float(probs.sum()) != pytest.approx(1.0)  # independent sigmoids
