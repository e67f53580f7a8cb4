"""`python -m dataset_builder` on bad input and faults: one line naming what is wrong, the right exit status, no
traceback, and nothing the user had (inputs, earlier builds, exports, models, datasets) changed.

Most rows call `dataset_builder.__main__.main(argv)` in-process; a few run the real console path.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from cli_harness import Case, check_refusal, run_case, run_main, run_process, tree_hashes
from dataset_builder.__main__ import main
from dataset_builder.recipe import RECIPE_DIR
from dataset_builder.twin_catalog import DEFAULT_CATALOG


def _recipe(folder: Path, name: str, change) -> Path:
    data = yaml.safe_load((RECIPE_DIR / "demo.yaml").read_text(encoding="utf-8"))
    change(data)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _set(dotted: str, value):
    def change(data):
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return change


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tiny_model_dir) -> dict:
    """Inputs, finished builds and other people's folders, made once for the module."""
    import datasets

    from dataset_builder.pipeline import build

    root = tmp_path_factory.mktemp("builder_faults")
    recipes = root / "recipes"
    recipes.mkdir()
    catalog = root / "catalog.yaml"
    shutil.copy(DEFAULT_CATALOG, catalog)
    p = {"root": root, "recipes": recipes, "catalog": catalog, "model": tiny_model_dir}
    p["catalog_recipe"] = _recipe(recipes, "own-catalog", _set("concepts.catalog", str(catalog)))
    p["build"] = root / "build"  # a finished demo build (resumable)
    build("demo", p["build"], limit_pairs=3, progress=False)
    p["catalog_build"] = root / "catalog_build"
    build(str(p["catalog_recipe"]), p["catalog_build"], limit_pairs=3, progress=False)
    p["export"] = root / "export"  # a dataset export someone downloaded (no run/ folder)
    shutil.copytree(p["build"], p["export"], ignore=shutil.ignore_patterns("run"))
    p["saved"] = root / "saved"  # another dataset (datasets.save_to_disk)
    datasets.Dataset.from_dict({"text": ["a", "b"]}).save_to_disk(str(p["saved"]))
    p["file"] = root / "a-file.txt"
    p["file"].write_text("not a folder")
    p["bad_yaml"] = recipes / "broken.yaml"
    p["bad_yaml"].write_text("name: demo\nseed: a: b\n")
    p["list_yaml"] = recipes / "list.yaml"
    p["list_yaml"].write_text("- name\n- demo\n")
    for name, change in {
        "seed_abc": _set("seed", "abc"), "fractions": _set("export.split_fractions",
                                                           {"train": 1.5, "validation": 0.4, "test": 0.4}),
        "fraction_negative": _set("export.split_fractions", {"train": 1.2, "validation": -0.1, "test": -0.1}),
        "shard_negative": _set("export.rows_per_shard", -5), "per_side_zero": _set("captions.per_side", 0),
        "unknown_field": _set("colour", "blue"), "country_zz": _set("concepts.countries", ["ZZ"]),
        "category_bad": _set("concepts.categories", ["Spaceships"]), "batch_float": _set("text_batch_size", 2.5),
        "source_bad": _set("concepts.source", "sideways"), "width_tiny": _set("images.width", 1),
        "limit_zero": _set("limit_pairs", 0), "judge_text": _set("judge.min_mean", "high"),
        "missing_catalog": _set("concepts.catalog", str(root / "no-such-catalog.yaml")),
    }.items():
        p[name] = _recipe(recipes, name, change)
    bad_catalog = root / "self_twin_catalog.yaml"
    data = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    data["pairs"] = [[data["pairs"][0][0], data["pairs"][0][0]]] + data["pairs"][1:]
    bad_catalog.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    p["self_twin"] = _recipe(recipes, "self_twin", _set("concepts.catalog", str(bad_catalog)))
    release = root / "release"
    release.mkdir()
    (release / "train.json").write_text('[{"pos_concept": "a", ')
    p["release_bad_json"] = release / "train.json"
    p["cv_out"] = root / "cv_out"
    return p


GUARDED = ("recipes", "catalog", "build", "catalog_build", "export", "saved", "model", "file")

CASES = [
    # syntax and type errors in recipes
    Case("recipe-yaml-syntax", "syntax", lambda p: ["build", "--recipe", str(p["bad_yaml"]), "--output-dir",
                                                    str(p["root"] / "o1")], 2, ("{bad_yaml}", "line 2", "YAML")),
    Case("recipe-not-a-mapping", "syntax", lambda p: ["build", "--recipe", str(p["list_yaml"]), "--output-dir",
                                                      str(p["root"] / "o1")], 2, ("{list_yaml}", "mapping")),
    Case("recipe-unknown-field", "syntax", lambda p: ["build", "--recipe", str(p["unknown_field"]), "--output-dir",
                                                      str(p["root"] / "o1")], 2, ("colour",)),
    Case("recipe-missing", "paths", lambda p: ["build", "--recipe", str(p["root"] / "nope.yaml"), "--output-dir",
                                               str(p["root"] / "o1")], 2, ("nope.yaml", "not found")),
    Case("recipe-is-a-folder", "paths", lambda p: ["build", "--recipe", str(p["recipes"]), "--output-dir",
                                                   str(p["root"] / "o1")], 2, ("recipes",)),
    Case("recipe-unknown-name", "paths", lambda p: ["build", "--recipe", "papr", "--output-dir",
                                                    str(p["root"] / "o1")], 2, ("papr", "packaged recipes")),
    # values: typed and range-checked before any work
    Case("seed-abc", "values", lambda p: ["build", "--recipe", str(p["seed_abc"]), "--output-dir",
                                          str(p["root"] / "o1")], 2, ("seed", "'abc'")),
    Case("fractions-sum-2.3", "values", lambda p: ["build", "--recipe", str(p["fractions"]), "--output-dir",
                                                   str(p["root"] / "o1")], 2, ("split_fractions",)),
    Case("fraction-negative", "values", lambda p: ["build", "--recipe", str(p["fraction_negative"]), "--output-dir",
                                                   str(p["root"] / "o1")], 2, ("split_fractions", "[0, 1]")),
    Case("rows-per-shard-negative", "values", lambda p: ["build", "--recipe", str(p["shard_negative"]),
                                                         "--output-dir", str(p["root"] / "o1")], 2,
         ("export.rows_per_shard", "-5")),
    Case("per-side-zero", "values", lambda p: ["build", "--recipe", str(p["per_side_zero"]), "--output-dir",
                                               str(p["root"] / "o1")], 2, ("captions.per_side",)),
    Case("batch-size-float", "values", lambda p: ["build", "--recipe", str(p["batch_float"]), "--output-dir",
                                                  str(p["root"] / "o1")], 2, ("text_batch_size", "2.5")),
    Case("judge-mean-text", "values", lambda p: ["build", "--recipe", str(p["judge_text"]), "--output-dir",
                                                 str(p["root"] / "o1")], 2, ("judge.min_mean", "'high'")),
    Case("image-width-1", "values", lambda p: ["build", "--recipe", str(p["width_tiny"]), "--output-dir",
                                               str(p["root"] / "o1")], 2, ("images.width",)),
    Case("recipe-limit-zero", "values", lambda p: ["build", "--recipe", str(p["limit_zero"]), "--output-dir",
                                                   str(p["root"] / "o1")], 2, ("limit_pairs",)),
    Case("unknown-source", "values", lambda p: ["build", "--recipe", str(p["source_bad"]), "--output-dir",
                                                str(p["root"] / "o1")], 2, ("concepts.source", "sideways")),
    Case("unknown-country-curated", "values", lambda p: ["build", "--recipe", str(p["country_zz"]), "--output-dir",
                                                         str(p["root"] / "o1")], 2, ("concepts.countries[0]", "ZZ")),
    Case("unknown-category", "values", lambda p: ["build", "--recipe", str(p["category_bad"]), "--output-dir",
                                                  str(p["root"] / "o1")], 2, ("concepts.categories", "Spaceships")),
    Case("limit-pairs-0", "values", lambda p: ["build", "--output-dir", str(p["root"] / "o1"), "--limit-pairs",
                                               "0"], 2, ("--limit-pairs", ">= 1")),
    Case("limit-pairs-negative", "values", lambda p: ["build", "--output-dir", str(p["root"] / "o1"),
                                                      "--limit-pairs", "-1"], 2, ("--limit-pairs",)),
    Case("limit-pairs-text", "values", lambda p: ["build", "--output-dir", str(p["root"] / "o1"), "--limit-pairs",
                                                  "many"], 2, ("--limit-pairs", "'many'")),
    Case("no-output-dir", "values", lambda p: ["build"], 2, ("--output-dir",)),
    # data: catalogs
    Case("catalog-missing", "data", lambda p: ["build", "--recipe", str(p["missing_catalog"]), "--output-dir",
                                               str(p["root"] / "o2")], 2, ("no-such-catalog.yaml",)),
    Case("catalog-self-twin", "data", lambda p: ["build", "--recipe", str(p["self_twin"]), "--output-dir",
                                                 str(p["root"] / "o3")], 2, ("pairs[0]",)),
    # never overwrite what the user has
    Case("output-is-a-file", "overwrite", lambda p: ["build", "--output-dir", str(p["file"]), "--limit-pairs", "3"],
         2, ("{file}", "file")),
    Case("output-is-an-export", "overwrite", lambda p: ["build", "--output-dir", str(p["export"]), "--limit-pairs",
                                                        "3"], 2, ("{export}", "dataset export", "--overwrite")),
    Case("output-is-a-model", "overwrite", lambda p: ["build", "--output-dir", str(p["model"]), "--limit-pairs",
                                                      "3"], 2, ("{model}", "model folder")),
    Case("output-is-another-dataset", "overwrite", lambda p: ["build", "--output-dir", str(p["saved"]),
                                                              "--limit-pairs", "3"], 2, ("{saved}", "saved dataset")),
    Case("resume-other-seed", "resume", lambda p: ["build", "--output-dir", str(p["build"]), "--limit-pairs", "3",
                                                   "--seed", "99"], 2, ("'seed'", "was 0, now 99")),
    Case("resume-other-limit", "resume", lambda p: ["build", "--output-dir", str(p["build"]), "--limit-pairs", "4"],
         2, ("'limit_pairs'",)),
    Case("resume-other-recipe", "resume", lambda p: ["build", "--recipe", "paper", "--output-dir", str(p["build"])],
         2, ("different inputs",)),
    # push
    Case("push-invalid-repo-id", "hub", lambda p: ["push", str(p["export"]), "--repo-id", "not a valid id!!"], 2,
         ("--repo-id", "not a valid id!!")),
    Case("push-repo-id-without-owner", "hub", lambda p: ["push", str(p["export"]), "--repo-id", "cultwin"], 2,
         ("owner/name",)),
    Case("push-offline", "hub", lambda p: ["push", str(p["export"]), "--repo-id", "me/cultwin"], 2,
         ("offline", "me/cultwin")),
    Case("push-missing-folder", "paths", lambda p: ["push", str(p["root"] / "gone"), "--repo-id", "me/cultwin",
                                                    "--dry-run"], 2, ("gone",)),
    Case("push-not-an-export", "paths", lambda p: ["push", str(p["saved"]), "--repo-id", "me/cultwin", "--dry-run"],
         2, ("{saved}", "not an exported")),
    # import-release
    Case("import-missing-source", "paths", lambda p: ["import-release", str(p["root"] / "nothing.json"),
                                                      "--output-dir", str(p["root"] / "imp")], 2, ("nothing.json",)),
    Case("import-bad-json", "syntax", lambda p: ["import-release", str(p["release_bad_json"]), "--output-dir",
                                                 str(p["root"] / "imp")], 2, ("train.json", "JSON")),
    Case("import-rows-per-shard-0", "values", lambda p: ["import-release", str(p["release_bad_json"]),
                                                         "--output-dir", str(p["root"] / "imp"), "--rows-per-shard",
                                                         "0"], 2, ("--rows-per-shard",)),
    Case("import-into-a-build", "overwrite", lambda p: ["import-release", str(p["release_bad_json"]), "--output-dir",
                                                        str(p["build"])], 2, ("--overwrite",)),
    # the other sub-commands
    Case("calibrate-keep-twins-1.5", "values", lambda p: ["calibrate-similarity", "--keep-twins", "1.5"], 2,
         ("--keep-twins", "1.5")),
    Case("calibrate-missing-catalog", "paths", lambda p: ["calibrate-similarity", "--catalog",
                                                          str(p["root"] / "none.yaml"), "--embedder",
                                                          "offline-hashed-ngram"], 2, ("none.yaml",)),
    Case("cultureverse-missing-catalog", "paths", lambda p: ["build-cultureverse", "--output-dir", str(p["cv_out"]),
                                                             "--catalog", str(p["root"] / "none.jsonl"),
                                                             "--text-backend", "offline-template"], 2,
         ("none.jsonl",)),
    Case("unknown-subcommand", "values", lambda p: ["biuld"], 2, ("biuld",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, paths):
    run_case(main, case, paths, [paths[k] for k in GUARDED])


def test_catalog_edited_between_run_and_resume_is_refused_then_started_over(paths, tmp_path):
    from datasets import load_dataset

    build = tmp_path / "build"
    catalog = tmp_path / "catalog.yaml"
    original = paths["catalog"].read_text(encoding="utf-8")
    recipe = _recipe(tmp_path, "r", _set("concepts.catalog", str(catalog)))
    catalog.write_text(original, encoding="utf-8")
    for _ in range(2):  # a build, then its resume with the same inputs
        done = run_main(main, ["build", "--recipe", str(recipe), "--output-dir", str(build), "--limit-pairs", "3",
                               "--no-progress"])
        assert done.status == 0, done.err[-2000:]
    catalog.write_text(original.replace("Chad's national flag", "The national flag of Chad"), encoding="utf-8")
    before = tree_hashes([build, catalog])
    outcome = run_main(main, ["build", "--recipe", str(recipe), "--output-dir", str(build), "--limit-pairs", "3"])
    check_refusal(outcome, 2, ["catalog content changed", "--overwrite"], before, tree_hashes([build, catalog]))
    again = run_main(main, ["build", "--recipe", str(recipe), "--output-dir", str(build), "--limit-pairs", "3",
                            "--overwrite", "--no-progress"])
    assert again.status == 0, again.err[-2000:]
    rows = [r for split in ("train", "validation", "test") for r in load_dataset(str(build), split=split)]
    contexts = {r["context"] for r in rows if r["concept"] == "flag of Chad"}
    assert contexts == {"The national flag of Chad, flown on public buildings and at sports events."}


def test_overwrite_builds_into_a_foreign_folder_keeping_other_files(paths, tmp_path):
    target = tmp_path / "mine"
    shutil.copytree(paths["export"], target)
    (target / "notes.txt").write_text("my notes")
    outcome = run_main(main, ["build", "--output-dir", str(target), "--limit-pairs", "3", "--seed", "5",
                              "--overwrite", "--no-progress"])
    assert outcome.status == 0, outcome.err[-2000:]
    assert (target / "notes.txt").read_text() == "my notes"
    provenance = json.loads((target / "provenance.json").read_text())
    assert provenance["seed"] == 5 and (target / "run" / "manifest.json").is_file()


def test_sigkill_during_export_leaves_the_previous_export_readable(paths, tmp_path):
    """A rebuild killed after its first parquet shard: the previous export still loads, row for row."""
    from datasets import load_dataset

    target = tmp_path / "build"
    shutil.copytree(paths["build"], target)
    before = tree_hashes([target / "data", target / "README.md", target / "provenance.json"])
    previous = load_dataset(str(target), split="train")["pair_id"]
    killed = run_process([sys.executable, "-m", "dataset_builder", "build", "--output-dir", str(target),
                          "--limit-pairs", "3", "--seed", "11", "--overwrite", "--no-progress"],
                         env={"DATASET_BUILDER_TEST_KILL_AFTER_SHARDS": "1", "DATASET_BUILDER_FSYNC": "0"})
    assert killed.status == -9, killed.err[-2000:]
    assert (target / "run" / "export" / "staging" / "data").is_dir()  # it died mid-export
    assert tree_hashes([target / "data", target / "README.md", target / "provenance.json"]) == before
    assert load_dataset(str(target), split="train")["pair_id"] == previous
    finished = run_main(main, ["build", "--output-dir", str(target), "--limit-pairs", "3", "--seed", "11",
                               "--no-progress"])
    assert finished.status == 0, finished.err[-2000:]
    assert json.loads((target / "provenance.json").read_text())["seed"] == 11
    assert not (target / "run" / "export" / "staging").exists()


def test_world_size_2_without_a_second_rank_stops_within_the_timeout(tmp_path):
    started = time.monotonic()
    outcome = run_main(main, ["build", "--output-dir", str(tmp_path / "o"), "--limit-pairs", "3",
                              "--rendezvous-timeout", "2"], env={"WORLD_SIZE": "2", "RANK": "0"})
    assert time.monotonic() - started < 30
    check_refusal(outcome, 1, ["WORLD_SIZE=2", "rank(s) 1 never started", "torchrun", "unset WORLD_SIZE"], {}, {})
    assert not (tmp_path / "o" / "run").exists()  # nothing was built


def test_debug_shows_the_traceback(paths):
    # --debug (or CULTURECLIP_DEBUG=1) lets the exception through, so Python prints its traceback
    with pytest.raises(ValueError, match="seed"):
        main(["build", "--recipe", str(paths["seed_abc"]), "--output-dir", str(paths["root"] / "o1"), "--debug"])
    with pytest.raises(ValueError, match="seed"):
        run_main(main, ["build", "--recipe", str(paths["seed_abc"]), "--output-dir", str(paths["root"] / "o1")],
                 env={"CULTURECLIP_DEBUG": "1"})


def test_console_path(paths):
    """The real `python -m dataset_builder` process: a bad recipe, an invalid repo id, and the hang case."""
    bad = run_process([sys.executable, "-m", "dataset_builder", "build", "--recipe", str(paths["bad_yaml"]),
                       "--output-dir", str(paths["root"] / "o9")])
    check_refusal(bad, 2, [str(paths["bad_yaml"]), "line 2"], {}, {})
    push = run_process([sys.executable, "-m", "dataset_builder", "push", str(paths["export"]), "--repo-id", "a b"])
    check_refusal(push, 2, ["--repo-id"], {}, {})
    started = time.monotonic()
    hang = run_process([sys.executable, "-m", "dataset_builder", "build", "--output-dir", str(paths["root"] / "o8"),
                        "--limit-pairs", "3"], env={"WORLD_SIZE": "2", "RANK": "1",
                                                    "CULTURECLIP_RENDEZVOUS_TIMEOUT_S": "2"})
    assert time.monotonic() - started < 60
    check_refusal(hang, 1, ["rank(s) 0 never started"], {}, {})
