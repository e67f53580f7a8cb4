"""Recipes mirror TrainArgs; every field can be overridden; bad names and values get clear errors."""

import pytest

from cultureclip_training import RecipeError, TrainArgs, build_args, builtin_recipes, parse_command_line
from cultureclip_training.recipes import FIELD_NAMES


def test_builtin_recipes_load_and_paper_values():
    assert {"release-b32", "release-l14", "faithful-cached-b32", "faithful-cached-l14", "improved-b32",
            "demo"} <= set(builtin_recipes())
    cached = build_args("faithful-cached-b32")
    assert (cached.model, cached.loss_mode, cached.finetune) == ("openai/clip-vit-base-patch32", "faithful", "lora")
    assert (cached.lora_rank, cached.lora_alpha, cached.lora_dropout) == (4, 16.0, 0.1)
    assert cached.lora_targets == ["q_proj", "v_proj"] and cached.lora_towers == ["text", "vision"]
    assert (cached.caption_loss_weight, cached.concept_loss_weight) == (0.7, 0.3)
    assert cached.per_device_batch_size * cached.micro_batches == 2048 and cached.accumulation == "feature_cache"
    assert (cached.epochs, cached.warmup_steps, cached.weight_decay, cached.learning_rate) == (10, 100, 0.1, 1e-5)
    large = build_args("faithful-cached-l14")
    assert large.model == "openai/clip-vit-large-patch14" and large.loss_mode == "faithful"
    assert build_args("improved-b32").loss_mode == "improved"


def test_release_recipe_is_the_authors_launch():
    """The values of the authors' launch script and the HF Trainer defaults it relies on."""
    release = build_args("release-b32")
    assert (release.model, release.loss_mode, release.loss_terms) == ("openai/clip-vit-base-patch32", "faithful",
                                                                       "cultureclip")
    assert (release.learning_rate, release.lr_scheduler, release.warmup_steps, release.weight_decay) == (
        3e-6, "linear", 100, 0.1)
    assert (release.per_device_batch_size, release.micro_batches, release.accumulation) == (128, 16, "plain")
    assert (release.epochs, release.seed, release.max_grad_norm, release.mixed_precision) == (10, 42, 1.0, "no")
    assert (release.adam_beta1, release.adam_beta2, release.adam_epsilon) == (0.9, 0.999, 1e-8)
    assert (release.lora_rank, release.lora_alpha, release.lora_dropout, release.lora_layers) == (4, 16.0, 0.1, "all")
    assert release.lora_targets == ["q_proj", "v_proj"] and release.lora_towers == ["text", "vision"]
    assert not release.lora_projections and not release.train_logit_scale and release.finetune == "lora"
    assert (release.caption_loss_weight, release.concept_loss_weight) == (0.7, 0.3)
    assert build_args("release-l14").model == "openai/clip-vit-large-patch14"
    assert build_args("release-l14").accumulation == "plain"


def test_renamed_recipe_names_point_to_the_new_ones():
    with pytest.raises(RecipeError, match="paper-b32.*renamed.*release-b32.*faithful-cached-b32"):
        build_args("paper-b32")


def test_command_line_overrides_every_form(tmp_path):
    args = parse_command_line(["--recipe", "faithful-cached-b32", "--dataset", "org/CulTwin", "--output-dir", str(tmp_path),
                               "--max_steps=7", "--seed", "3", "--lora_towers", "text", "--gradient_checkpointing",
                               "--logit_scale_max", "null", "--push-to-hub", "--hub-model-id", "me/model"])
    assert (args.dataset, args.output_dir, args.max_steps, args.seed) == ("org/CulTwin", str(tmp_path), 7, 3)
    assert args.lora_towers == ["text"] and args.gradient_checkpointing and args.push_to_hub
    assert args.recipe == "faithful-cached-b32" and args.logit_scale_max is None


def test_yaml_recipe_with_inherit(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("inherit: faithful-cached-b32\nmax_steps: 5\nobjective: clip\n")
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
    (["--accumulation", "sometimes"], "accumulation='sometimes'"),
    (["--loss_terms", "negclip"], "loss_terms='negclip'"),
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
