"""CultureCLIP training: recipes, data, feature-cached distributed steps, checkpoints and Hub artifacts.

Entry points: `train(args, dataset=None, model=None, processor=None) -> TrainResult` and the `train.py` program.
"""

from .checkpointing import CheckpointError
from .data import DatasetSchemaError
from .loop import TrainingDiverged, TrainResult, train
from .recipes import RecipeError, TrainArgs, build_args, builtin_recipes, parse_command_line

__all__ = ["CheckpointError", "DatasetSchemaError", "RecipeError", "TrainArgs", "TrainResult", "TrainingDiverged",
           "build_args", "builtin_recipes", "parse_command_line", "train"]
