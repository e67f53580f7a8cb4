"""Data: lazy encoding with dynamic padding, stable concept ids, clip-baseline examples, rank-independent batches."""

import torch

from cultureclip_training import build_args, train
from cultureclip_training.data import BatchPlan, concept_vocabulary, prepare, split_sides
from cultureclip_training.feature_cache import clip_contrastive_loss
from modeling_cultureclip import CultureCLIPModel
from transformers import CLIPProcessor

from training_helpers import cultwin_dataset


def test_twin_batch_from_rows_padded_to_longest(tiny_model_dir):
    processor = CLIPProcessor.from_pretrained(tiny_model_dir)
    data = prepare(cultwin_dataset(), processor, "cultureclip", True, 32)
    batch = data.examples[[0, 5]]
    assert batch["pixel_values"].shape == batch["twin_pixel_values"].shape == (2, 3, 32, 32)
    longest = max(len(processor.tokenizer(t)["input_ids"]) for t in data.examples.with_format(None)[[0, 5]]["caption"])
    assert batch["input_ids"].shape[1] == longest < 32  # padded to the batch's longest, not the maximum
    assert batch["concept_input_ids"].shape[1] < batch["input_ids"].shape[1]
    vocabulary = data.concept_ids
    assert list(vocabulary) == sorted(vocabulary) and batch["concept_ids"].tolist() == [vocabulary["c0"], vocabulary["c1"]]
    assert batch["twin_concept_ids"].tolist() == [vocabulary["t0"], vocabulary["t1"]]
    assert concept_vocabulary(cultwin_dataset().shuffle(seed=3)) == vocabulary  # row order does not matter


def test_clip_examples_split_sides():
    rows = cultwin_dataset()
    sides = split_sides(rows)
    assert len(sides) == 2 * len(rows) and sides.column_names == ["image", "caption"]
    assert sides[len(rows) + 3]["caption"] == rows[3]["twin_caption"] and sides[3]["caption"] == rows[3]["caption"]


def test_batches_do_not_depend_on_process_count():
    one = BatchPlan(32, per_device=4, micro_batches=2, world_size=1, rank=0, seed=5)
    ranks = [BatchPlan(32, per_device=2, micro_batches=2, world_size=2, rank=r, seed=5) for r in range(2)]
    for epoch in range(2):
        for step in range(one.steps_per_epoch):
            single = sorted(i for micro in one.step_indices(epoch, step) for i in micro)
            split = sorted(i for plan in ranks for micro in plan.step_indices(epoch, step) for i in micro)
            assert single == split and len(single) == 8
    assert one.step_indices(0, 0) != one.step_indices(1, 0)  # reshuffled each epoch


def test_clip_loss_matches_transformers(tiny_model_dir):
    model = CultureCLIPModel.from_pretrained(tiny_model_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_model_dir)
    data = prepare(cultwin_dataset(), processor, "clip", False, 32)
    batch = data.examples[list(range(0, 32, 3))]
    with torch.no_grad():
        reference = model(**batch, return_loss=True).loss
        image = model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
        text = model.get_text_features(input_ids=batch["input_ids"],
                                       attention_mask=batch["attention_mask"]).pooler_output
        ours = clip_contrastive_loss(image, text, model.logit_scale)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_clip_baseline_with_lora_bf16_and_checkpointing(tmp_path, cultwin_dir):
    args = build_args("demo", dict(dataset=str(cultwin_dir), output_dir=str(tmp_path / "out"), objective="clip",
                                   finetune="lora", mixed_precision="bf16", gradient_checkpointing=True,
                                   max_steps=2, per_device_batch_size=4, progress_bar=False, report_to="none",
                                   save_artifacts=False, checkpoint_every=0))
    result = train(args)
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    assert set(result.final_losses) == {"loss"}
