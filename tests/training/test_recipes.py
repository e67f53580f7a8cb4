"""Recipes mirror TrainArgs; every field can be overridden; bad names and values get clear errors."""

import pytest

from cultureclip_training import RecipeError, TrainArgs, build_args, builtin_recipes, parse_command_line
from cultureclip_training.recipes import FIELD_NAMES


def test_builtin_recipes_load_and_paper_values():
    assert {"paper-b32", "paper-l14", "improved-b32", "demo"} <= set(builtin_recipes())
    paper = build_args("paper-b32")
    assert (paper.model, paper.loss_mode, paper.finetune) == ("openai/clip-vit-base-patch32", "faithful", "lora")
    assert (paper.lora_rank, paper.lora_alpha, paper.lora_dropout) == (4, 16.0, 0.1)
    assert paper.lora_targets == ["q_proj", "v_proj"] and paper.lora_towers == ["text", "vision"]
    assert (paper.caption_loss_weight, paper.concept_loss_weight) == (0.7, 0.3)
    assert paper.per_device_batch_size * paper.micro_batches == 2048
    assert (paper.epochs, paper.warmup_steps, paper.weight_decay, paper.learning_rate) == (10, 100, 0.1, 1e-5)
    large = build_args("paper-l14")
    assert large.model == "openai/clip-vit-large-patch14" and large.loss_mode == "faithful"
    assert build_args("improved-b32").loss_mode == "improved"


def test_command_line_overrides_every_form(tmp_path):
    args = parse_command_line(["--recipe", "paper-b32", "--dataset", "org/CulTwin", "--output-dir", str(tmp_path),
                               "--max_steps=7", "--seed", "3", "--lora_towers", "text", "--gradient_checkpointing",
                               "--logit_scale_max", "null", "--push-to-hub", "--hub-model-id", "me/model"])
    assert (args.dataset, args.output_dir, args.max_steps, args.seed) == ("org/CulTwin", str(tmp_path), 7, 3)
    assert args.lora_towers == ["text"] and args.gradient_checkpointing and args.push_to_hub
    assert args.recipe == "paper-b32" and args.logit_scale_max is None


def test_yaml_recipe_with_inherit(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("inherit: paper-b32\nmax_steps: 5\nobjective: clip\n")
    args = parse_command_line(["--recipe", str(recipe), "--seed", "9"])
    assert (args.max_steps, args.objective, args.seed, args.loss_mode) == (5, "clip", 9, "faithful")


def test_unknown_field_lists_valid_names(tmp_path):
    with pytest.raises(RecipeError, match="unknown field 'bogus'.*output_dir"):
        parse_command_line(["--recipe", "demo", "--bogus", "1"])
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("learning_rat: 0.1\n")
    with pytest.raises(RecipeError, match="learning_rat.*valid fields"):
        parse_command_line(["--recipe", str(recipe)])


@pytest.mark.parametrize("argv, message", [
    (["--max_steps", "many"], "max_steps='many'"),
    (["--objective", "siglip"], "objective='siglip'"),
    (["--push_to_hub"], "hub_model_id"),
    (["--finetune", "full", "--lora_trainable_tokens", "chad"], "lora_trainable_tokens"),
    (["--recipe", "no-such-recipe"], "unknown recipe"),
])
def test_bad_values_are_named(argv, message):
    with pytest.raises(RecipeError, match=message):
        parse_command_line(argv)


def test_every_field_is_overridable():
    defaults = TrainArgs()
    for name in ("dataset", "output_dir", "max_steps", "seed"):
        assert name in FIELD_NAMES
    assert parse_command_line(["--model", "/some/dir"]).model == "/some/dir"
    assert defaults.objective == "cultureclip"
