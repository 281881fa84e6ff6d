r"""Fitting the energy model: the loop (:func:`train`), its configuration, early stopping,
checkpoints, and the choice of architecture by held-out score-matching loss."""

from .config import TrainConfig
from .early_stopping import EarlyStopping
from .loop import TrainingError, train
from .selection import SelectionConfig, select_model

__all__ = [
    "train",
    "TrainConfig",
    "TrainingError",
    "EarlyStopping",
    "SelectionConfig",
    "select_model",
]
