"""`train.py` on bad input and faults: one line naming the field, file, row or folder, the right exit status, no
traceback, and every pre-existing file (data, models, finished runs, checkpoints) byte-identical afterwards.

Most rows call `train.main(argv)` in-process; a few run `python train.py` to prove the console path.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import sys
import time
from pathlib import Path

import pytest

import train as train_cli
from cli_harness import REPO, Case, check_refusal, run_case, run_main, run_process, tree_hashes
from training_helpers import cultwin_dataset, free_port, write_cultwin

QUICK = ["--recipe", "demo", "--report_to", "none", "--progress_bar", "false", "--per_device_batch_size", "4",
         "--micro_batches", "1", "--checkpoint_every", "1", "--keep_checkpoints", "2"]


def _base(p: dict, out: str = "out", data: str = "data", model: str = "model") -> list[str]:
    return [*QUICK, "--dataset", str(p[data]), "--model", str(p[model]), "--output_dir", str(p["root"] / out),
            "--max_steps", "2", "--save_artifacts", "false"]


def _payload(marker: Path) -> bytes:
    """A pickle whose loading would create `marker` (it must never run)."""
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps(Payload())


def _rewrite_manifest(checkpoint: Path) -> None:
    manifest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(checkpoint.iterdir())
                if p.name != "manifest.json"}
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def paths(tmp_path_factory, cultwin_dir, tiny_model_dir) -> dict:
    import datasets
    from PIL import Image

    from modeling_cultureclip.tiny import build_word_tokenizer, tiny_processor

    root = tmp_path_factory.mktemp("train_faults")
    p = {"root": root, "data": cultwin_dir, "model": tiny_model_dir}
    p["marker"] = root / "payload-ran.txt"
    # a finished run: two steps, checkpoints, metrics and the model folder
    finished = run_main(train_cli.main, [*_base(p, "finished"), "--save_artifacts", "true"])
    assert finished.status == 0, finished.err[-3000:]
    p["finished"] = root / "finished"
    # data faults
    p["empty_dir"] = root / "empty-data"
    p["empty_dir"].mkdir()
    p["corrupt"] = root / "corrupt-data"
    shutil.copytree(cultwin_dir, p["corrupt"])
    shard = next((p["corrupt"] / "data").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[: len(shard.read_bytes()) // 3])
    rows = cultwin_dataset()

    def with_row(column: str, row: int, value) -> datasets.Dataset:
        values = list(rows.cast_column(column, datasets.Image(decode=False))[column])
        values[row] = value
        return rows.cast_column(column, datasets.Image(decode=False)).remove_columns([column]).add_column(
            column, values).cast_column(column, datasets.Image())

    tiny_png = root / "1x1.png"
    Image.new("RGB", (1, 1), "red").save(tiny_png)
    p["one_pixel"] = write_cultwin(root / "one-pixel", with_row("image", 5, {"bytes": tiny_png.read_bytes(),
                                                                             "path": None}))
    p["text_image"] = write_cultwin(root / "text-image", with_row("twin_image", 7, {"bytes": b"just some text",
                                                                                   "path": None}))
    twin_ids = list(rows["twin_concept_id"])
    twin_ids[3] = rows["concept_id"][3]
    p["self_twin"] = write_cultwin(root / "self-twin", rows.remove_columns(["twin_concept_id"]).add_column(
        "twin_concept_id", twin_ids))
    edited = rows.remove_columns(["caption"]).add_column("caption", [c + " again" for c in rows["caption"]])
    p["edited_data"] = write_cultwin(root / "edited-data", edited)
    # model faults
    p["pickle_model"] = root / "pickle-model"
    p["pickle_model"].mkdir()
    shutil.copy(tiny_model_dir / "config.json", p["pickle_model"] / "config.json")
    (p["pickle_model"] / "pytorch_model.bin").write_bytes(_payload(p["marker"]))
    p["pickle_data"] = root / "pickle-data"  # a "dataset" that is a pickled payload
    (p["pickle_data"] / "data").mkdir(parents=True)
    (p["pickle_data"] / "data" / "train.pkl").write_bytes(_payload(p["marker"]))
    p["truncated_model"] = root / "truncated-model"
    shutil.copytree(tiny_model_dir, p["truncated_model"])
    weights = p["truncated_model"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    p["other_tokenizer"] = root / "other-tokenizer"
    shutil.copytree(tiny_model_dir, p["other_tokenizer"])
    tiny_processor(build_word_tokenizer(["just", "a", "few", "words"])).save_pretrained(p["other_tokenizer"])
    p["recipe_dir"] = root / "recipes"
    p["recipe_dir"].mkdir()
    (p["recipe_dir"] / "broken.yaml").write_text("inherit: demo\nlearning_rate: [1e-4\n")
    (p["recipe_dir"] / "colour.yaml").write_text("inherit: demo\ncolour: blue\n")
    p["file"] = root / "a-file.txt"
    p["file"].write_text("x")
    # checkpoint faults, each in a copy of the finished run
    for name in ("bad_manifest", "truncated_ckpt", "pickled_optimizer"):
        shutil.copytree(p["finished"], root / name)
        p[name] = root / name
    last = lambda run: sorted((run / "checkpoints").iterdir())[-1]  # noqa: E731
    (last(p["bad_manifest"]) / "manifest.json").write_text("{not json")
    trainable = last(p["truncated_ckpt"]) / "trainable.safetensors"
    trainable.write_bytes(trainable.read_bytes()[:100])
    _rewrite_manifest(last(p["truncated_ckpt"]))
    (last(p["pickled_optimizer"]) / "optimizer.pt").write_bytes(_payload(p["marker"]))
    _rewrite_manifest(last(p["pickled_optimizer"]))
    return p


GUARDED = ("data", "model", "pickle_data", "finished", "corrupt", "one_pixel", "text_image", "self_twin", "pickle_model",
           "truncated_model", "other_tokenizer", "recipe_dir", "bad_manifest", "truncated_ckpt", "pickled_optimizer",
           "edited_data", "file")


def _resume(run: str, *extra: str):
    return lambda p: [*_base(p, run), "--max_steps", "3", "--resume", "latest", *extra]


CASES = [
    Case("recipe-yaml-syntax", "syntax", lambda p: ["--recipe", str(p["recipe_dir"] / "broken.yaml"), "--dataset",
                                                    str(p["data"])], 2, ("broken.yaml", "line")),
    Case("recipe-unknown-field", "syntax", lambda p: ["--recipe", str(p["recipe_dir"] / "colour.yaml")], 2,
         ("colour",)),
    Case("recipe-missing", "paths", lambda p: ["--recipe", str(p["root"] / "nope.yaml")], 2, ("nope.yaml",)),
    Case("unknown-option", "syntax", lambda p: [*_base(p), "--colour", "blue"], 2, ("colour",)),
    Case("positional-argument", "syntax", lambda p: [*_base(p), "extra"], 2, ("'extra'",)),
    Case("seed-abc", "values", lambda p: [*_base(p), "--seed", "abc"], 2, ("seed", "'abc'")),
    Case("unknown-scheduler", "values", lambda p: [*_base(p), "--lr_scheduler", "cosin"], 2, ("lr_scheduler",
                                                                                               "'cosin'")),
    Case("unknown-loss-mode", "values", lambda p: [*_base(p), "--loss_mode", "sideways"], 2, ("loss_mode",)),
    Case("lora-rank-0", "values", lambda p: [*_base(p), "--lora_rank", "0"], 2, ("lora_rank",)),
    Case("warmup-negative", "values", lambda p: [*_base(p), "--warmup_steps", "-5"], 2, ("warmup_steps",)),
    Case("batch-size-0", "values", lambda p: [*_base(p), "--per_device_batch_size", "0"], 2,
         ("per_device_batch_size",)),
    Case("dropout-1.5", "values", lambda p: [*_base(p), "--lora_dropout", "1.5"], 2, ("lora_dropout",)),
    Case("max-steps-0", "values", lambda p: [*_base(p), "--max_steps", "0"], 2, ("max_steps",)),
    Case("lora-layers-text", "values", lambda p: [*_base(p), "--lora_layers", "first"], 2, ("lora_layers",)),
    Case("dataset-missing", "paths", lambda p: [*_base(p), "--dataset", str(p["root"] / "no-data")], 2,
         ("no-data",)),
    Case("dataset-empty-folder", "paths", lambda p: [*_base(p, data="empty_dir")], 2, ("empty-data",)),
    Case("dataset-corrupt-parquet", "data", lambda p: [*_base(p, data="corrupt")], 2, ("parquet",)),
    Case("image-1x1", "data", lambda p: _base(p, data="one_pixel"), 2, ("row 5", "1x1", "'image'")),
    Case("image-is-text", "data", lambda p: _base(p, data="text_image"), 2, ("row 7", "'twin_image'",
                                                                             "cannot be decoded")),
    Case("dataset-is-a-pickle", "pickle", lambda p: [*_base(p, data="pickle_data")], 2, ("pickle-data",)),
    Case("twin-is-itself", "data", lambda p: [*_base(p, data="self_twin")], 2, ("row 3", "own concept")),
    Case("model-missing", "paths", lambda p: [*_base(p), "--model", str(p["root"] / "no-model")], 2,
         ("no-model",)),
    Case("model-is-a-dataset", "paths", lambda p: [*_base(p), "--model", str(p["data"])], 2,
         ("a dataset folder", "config.json")),
    Case("model-is-a-file", "paths", lambda p: [*_base(p), "--model", str(p["file"])], 2, ("is a file",)),
    Case("model-pickled-weights", "pickle", lambda p: [*_base(p, model="pickle_model")], 2,
         ("pytorch_model.bin", "pickled", "safetensors")),
    Case("model-truncated-safetensors", "data", lambda p: [*_base(p, model="truncated_model")], 2,
         ("model.safetensors",)),
    Case("tokenizer-of-another-model", "data", lambda p: [*_base(p, model="other_tokenizer")], 2,
         ("tokenizer", "vocabulary")),
    Case("hub-id-offline", "hub", lambda p: [*_base(p), "--model", "someone/not-cached-clip"], 2,
         ("someone/not-cached-clip",)),
    Case("finished-run-without-resume", "overwrite", lambda p: _base(p, "finished"), 2,
         ("{finished}", "training run", "--resume", "--overwrite")),
    Case("output-is-a-model-folder", "overwrite", lambda p: [*_base(p), "--output_dir", str(p["model"])], 2,
         ("model folder",)),
    Case("output-is-a-file", "overwrite", lambda p: [*_base(p), "--output_dir", str(p["file"])], 2,
         ("is a file",)),
    Case("resume-nothing", "resume", lambda p: [*_base(p, "fresh"), "--resume", "latest"], 2,
         ("no checkpoint",)),
    Case("resume-other-batch-size", "resume", _resume("finished", "--per_device_batch_size", "2"), 2,
         ("per_device_batch_size: was 4, now 2",)),
    Case("resume-other-lora-rank", "resume", _resume("finished", "--lora_rank", "8"), 2,
         ("lora_rank: was 4, now 8",)),
    Case("resume-other-data", "resume", lambda p: [*_base(p, "finished", data="edited_data"), "--max_steps", "3",
                                                   "--resume", "latest"], 2, ("data_fingerprint",)),
    Case("checkpoint-bad-manifest", "resume", _resume("bad_manifest"), 2, ("manifest.json", "not valid JSON")),
    Case("checkpoint-truncated-safetensors", "resume", _resume("truncated_ckpt"), 2,
         ("trainable.safetensors", "safetensors")),
    Case("checkpoint-pickled-optimizer", "pickle", _resume("pickled_optimizer"), 2,
         ("optimizer.pt", "pickled", "safetensors or a weights-only")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, paths):
    run_case(train_cli.main, case, paths, [paths[k] for k in GUARDED])
    assert not paths["marker"].exists()  # no pickled payload ever ran
    assert not (paths["root"] / "out").exists()  # refused before anything was written


def test_resume_with_other_settings_and_overwrite_starts_over(paths, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(paths["finished"], run)
    argv = [*QUICK, "--dataset", str(paths["data"]), "--model", str(paths["model"]), "--output_dir", str(run),
            "--max_steps", "2", "--save_artifacts", "false", "--lora_rank", "8", "--resume", "latest", "--overwrite"]
    done = run_main(train_cli.main, argv)
    assert done.status == 0, done.err[-2000:]
    assert "starting over" in done.out + done.err
    state = json.loads((sorted((run / "checkpoints").iterdir())[-1] / "state.json").read_text())
    assert state["run"]["settings"]["lora_rank"] == 8 and state["step"] == 2


def test_overwrite_replaces_a_finished_run(paths, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(paths["finished"], run)
    old_metrics = (run / "metrics.jsonl").read_text()
    done = run_main(train_cli.main, [*QUICK, "--dataset", str(paths["data"]), "--model", str(paths["model"]),
                                     "--output_dir", str(run), "--max_steps", "1", "--save_artifacts", "false",
                                     "--checkpoint_every", "0", "--overwrite"])
    assert done.status == 0, done.err[-2000:]
    assert not (run / "checkpoints").exists()  # the old run's checkpoints are gone, so --resume cannot mix them
    assert (run / "metrics.jsonl").read_text() != old_metrics


def test_sigkill_during_the_final_model_write_leaves_the_previous_model_loadable(paths, tmp_path):
    from modeling_cultureclip import CultureCLIPModel

    run = tmp_path / "run"
    shutil.copytree(paths["finished"], run)
    before = tree_hashes([run / "model"])
    killed = run_process([sys.executable, "train.py", *QUICK, "--dataset", str(paths["data"]), "--model",
                          str(paths["model"]), "--output_dir", str(run), "--max_steps", "1", "--checkpoint_every",
                          "0", "--overwrite"], env={"CULTURECLIP_TEST_KILL_BEFORE_MODEL_RENAME": "1"}, timeout=300)
    assert killed.status == -9, killed.err[-2000:]
    assert (run / ".tmp-model" / "config.json").is_file()  # it died with the new model written, not renamed
    assert tree_hashes([run / "model"]) == before
    CultureCLIPModel.from_pretrained(run / "model")  # the previous model loads


def test_world_size_2_without_a_second_rank_stops_within_the_timeout(paths, tmp_path):
    started = time.monotonic()
    outcome = run_main(train_cli.main, [*_base(paths, "never"), "--rendezvous_timeout_s", "3"],
                       env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                            "MASTER_PORT": str(free_port())})
    assert time.monotonic() - started < 60
    check_refusal(outcome, 1, ["WORLD_SIZE=2", "rank(s) 1 never started", "torchrun", "accelerate launch"], {}, {})
    assert not (paths["root"] / "never").exists()


def test_console_path(paths):
    """`python train.py`: a bad field, a finished output folder, and a rank that waits for a rank 0 that never came."""
    bad = run_process([sys.executable, str(REPO / "train.py"), *_base(paths), "--lora_rank", "0"])
    check_refusal(bad, 2, ["lora_rank"], {}, {})
    before = tree_hashes([paths["finished"]])
    busy = run_process([sys.executable, str(REPO / "train.py"), *_base(paths, "finished")])
    check_refusal(busy, 2, ["--resume"], before, tree_hashes([paths["finished"]]))
    started = time.monotonic()
    lonely = run_process([sys.executable, str(REPO / "train.py"), *_base(paths, "lonely")],
                         env={"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                              "MASTER_PORT": str(free_port()), "CULTURECLIP_RENDEZVOUS_TIMEOUT_S": "3"})
    assert time.monotonic() - started < 90
    check_refusal(lonely, 1, ["rank(s) 0 never started"], {}, {})
