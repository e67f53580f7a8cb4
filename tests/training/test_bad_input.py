"""Bad input stops with an error naming the column, split, step or batch; the last good checkpoint survives."""

import subprocess
import sys

import pytest
import torch

from cultureclip_training import DatasetSchemaError, TrainingDiverged, train
from cultureclip_training.checkpointing import list_checkpoints, verify
from modeling_cultureclip import CultureCLIPModel

from training_helpers import REPO, cultwin_dataset, run_args, subprocess_env, write_cultwin


def test_missing_column(tmp_path, cultwin_dir, tiny_model_dir):
    data = cultwin_dataset().remove_columns(["twin_caption"])
    with pytest.raises(DatasetSchemaError, match=r"missing column\(s\) \['twin_caption'\]"):
        train(run_args(tmp_path, cultwin_dir, tiny_model_dir, max_steps=1), dataset=data)


def test_wrong_column_type(tmp_path, cultwin_dir, tiny_model_dir):
    data = cultwin_dataset().remove_columns(["caption"])
    data = data.add_column("caption", list(range(len(data))))
    with pytest.raises(DatasetSchemaError, match="column 'caption'.*expected a string"):
        train(run_args(tmp_path, cultwin_dir, tiny_model_dir, max_steps=1), dataset=data)
    images_as_text = cultwin_dataset().remove_columns(["twin_image"]).add_column("twin_image", ["x"] * 16)
    with pytest.raises(DatasetSchemaError, match="column 'twin_image'.*expected datasets.Image"):
        train(run_args(tmp_path, cultwin_dir, tiny_model_dir, max_steps=1), dataset=images_as_text)


def test_empty_text_names_row(tmp_path, cultwin_dir, tiny_model_dir):
    data = cultwin_dataset()
    captions = list(data["caption"])
    captions[5] = "  "
    data = data.remove_columns(["caption"]).add_column("caption", captions)
    with pytest.raises(DatasetSchemaError, match="column 'caption'.*row 5"):
        train(run_args(tmp_path, cultwin_dir, tiny_model_dir, max_steps=1), dataset=data)


def test_empty_split(tmp_path, cultwin_dir, tiny_model_dir):
    folder = write_cultwin(tmp_path / "cw", cultwin_dataset())
    write_cultwin(folder, cultwin_dataset().select([]), split="validation")
    args = run_args(tmp_path, folder, tiny_model_dir, max_steps=1, train_split="validation")
    with pytest.raises(DatasetSchemaError, match="split 'validation'.* is empty"):
        train(args)
    with pytest.raises(DatasetSchemaError, match="split 'train' is empty"):
        train(run_args(tmp_path, cultwin_dir, tiny_model_dir, max_steps=1), dataset=cultwin_dataset().select([]))
    with pytest.raises(DatasetSchemaError, match="no split 'test'"):
        train(run_args(tmp_path, folder, tiny_model_dir, max_steps=1, train_split="test"))


def test_too_few_rows_for_a_batch(tmp_path, cultwin_dir, tiny_model_dir):
    with pytest.raises(DatasetSchemaError, match="fewer than one global batch of 32"):
        train(run_args(tmp_path, cultwin_dir, tiny_model_dir, per_device_batch_size=16, micro_batches=2))


def test_injected_nan_stops_and_keeps_checkpoint(tmp_path, cultwin_dir, tiny_model_dir):
    args = run_args(tmp_path, cultwin_dir, tiny_model_dir, max_steps=6, checkpoint_every=2, per_device_batch_size=4,
                    micro_batches=2, save_artifacts=True)
    snapshot = {}

    def poison(step, model):
        if step == 3:
            snapshot.update({p.name: p.read_bytes() for p in list_checkpoints(args.output_dir)[-1].iterdir()})
            with torch.no_grad():
                model.visual_projection.weight[0, 0] = float("nan")

    with pytest.raises(TrainingDiverged, match=r"non-finite loss nan at step 3 \(epoch 1, batch 0 of the epoch"):
        train(args, callbacks=[poison])
    kept = list_checkpoints(args.output_dir)
    assert [p.name for p in kept] == ["step-00000002"]
    verify(kept[0])
    assert {p.name: p.read_bytes() for p in kept[0].iterdir()} == snapshot
    assert not (tmp_path / "out" / "model").exists()  # no artifacts from a diverged run


def test_cli_nan_exit_status(tmp_path, cultwin_dir, tiny_model_dir):
    model = CultureCLIPModel.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.text_projection.weight[0, 0] = float("inf")
    poisoned = tmp_path / "poisoned"
    model.save_pretrained(poisoned)
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        (poisoned / name).write_bytes((tiny_model_dir / name).read_bytes())
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--recipe", "demo", "--dataset", str(cultwin_dir), "--model",
         str(poisoned), "--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--report_to", "none",
         "--progress_bar", "false"],
        capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 3, done.stderr[-2000:]
    assert "non-finite loss" in done.stderr and "step 1" in done.stderr
    bad = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--recipe", "demo", "--dataset", str(cultwin_dir), "--colour", "red"],
        capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=300,
    )
    assert bad.returncode == 2 and "unknown field 'colour'" in bad.stderr
