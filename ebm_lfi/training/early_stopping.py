r"""Early stopping: the best monitored loss so far, and a deep copy of its weights.

An epoch improves on the best loss :math:`L^\star` when its monitored loss
:math:`L_t < L^\star - \delta` (``min_delta``); training should stop after ``patience`` epochs
in a row without improvement. The tracker keeps a deep copy of the weights of the best epoch
(:func:`ebm_lfi.training.checkpoints.copy_state`), loads them back into the model on
:meth:`restore`, and saves its state to, and loads it from, the checkpoints of
:func:`ebm_lfi.training.loop.train`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn

from .checkpoints import copy_state

__all__ = ["EarlyStopping"]


class EarlyStopping:
    r"""Tracks the best monitored loss and a deep copy of the corresponding weights.

    Arguments:
        patience: Epochs in a row without improvement before :meth:`should_stop`; ``None``
            never stops.
        min_delta: Smallest decrease of the loss that counts as an improvement.
        model: The model being trained; its initial weights are the first best state.
    """

    def __init__(self, patience: int | None, min_delta: float, model: nn.Module):
        self.patience, self.min_delta = patience, min_delta
        self.best_loss, self.best_epoch, self.bad_epochs = math.inf, 0, 0
        self.best_state = copy_state(model.state_dict())

    def update(self, loss: float, epoch: int, model: nn.Module) -> None:
        r"""Record the monitored loss of an epoch.

        If :math:`L_t < L^\star - \delta`, the epoch becomes the best one (its loss, index
        and a deep copy of ``model``'s weights are kept) and the count of bad epochs is reset to
        zero; otherwise that count grows by one.

        Arguments:
            loss: The monitored loss :math:`L_t` of the epoch.
            epoch: The epoch's index, stored as :attr:`best_epoch` if it improves.
            model: The model, whose ``state_dict`` is copied if the epoch improves.
        """
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, epoch, 0
            self.best_state = copy_state(model.state_dict())
        else:
            self.bad_epochs += 1

    def should_stop(self) -> bool:
        r"""Whether ``patience`` epochs in a row have gone by without improvement.

        Returns:
            ``True`` if ``patience`` is not ``None`` and :attr:`bad_epochs` has reached it.
        """
        return self.patience is not None and self.bad_epochs >= self.patience

    def restore(self, model: nn.Module) -> None:
        r"""Load a copy of the best weights into ``model`` (in place, strict).

        The tracker keeps its own copy, so later training of ``model`` does not alter it.

        Arguments:
            model: The model being trained.
        """
        model.load_state_dict(copy_state(self.best_state))

    def state_dict(self) -> dict[str, Any]:
        r"""The tracker's state, for a checkpoint.

        Returns:
            A dict with keys ``"best_loss"``, ``"best_epoch"``, ``"bad_epochs"`` and
            ``"best_state"`` (the stored weights themselves, not a copy).
        """
        return {
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        r"""Restore the tracker from :meth:`state_dict`'s output.

        The best weights are deep-copied; the model itself is not touched (see :meth:`restore`).

        Arguments:
            state: A mapping with the keys written by :meth:`state_dict`.
        """
        self.best_loss = float(state["best_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.best_state = copy_state(state["best_state"])
