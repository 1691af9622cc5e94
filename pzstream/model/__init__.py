"""UniZero-style world model for text games: config, model, targets, losses, training, search adapter."""
from .config import WorldModelConfig
from .inference import RecurrentOutput, RootOutput, SearchAdapter, model_value_fn
from .targets import Batch, Episode, Window, build_windows, collate, n_step_values, stitch
from .train import Trainer
from .world_model import Predictions, WorldModel, load_weights_bytes, untrained_world_model, weights_bytes

__all__ = [
    "Batch", "Episode", "Predictions", "RecurrentOutput", "RootOutput", "SearchAdapter", "Trainer", "Window",
    "WorldModel", "WorldModelConfig", "build_windows", "collate", "load_weights_bytes", "model_value_fn", "n_step_values", "stitch",
    "untrained_world_model", "weights_bytes",
]
