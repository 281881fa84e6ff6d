r"""Checkpoints of :func:`ebm_lfi.training.loop.train`: the state of a run, written and read back.

A checkpoint is a ``dict`` saved with :func:`torch.save` that holds only tensors, numbers,
strings and containers of those, so it loads with ``torch.load(..., weights_only=True)`` and
no pickled code is ever run. Its entries are

* ``format`` (``"ebm_lfi.training.checkpoint"``) and ``version``;
* ``epoch``, the number :math:`N` of completed epochs;
* ``model``, ``optimizer`` and ``scheduler`` (``None`` without one), their state dicts;
* ``early_stopping``: best loss, best epoch, epochs without improvement and the best weights;
* ``history``: one list per column of the history (:data:`HISTORY_COLUMNS`);
* ``rng``: the states of the shuffling generator, of torch's CPU generator and, on a GPU,
  of its CUDA generator;
* ``split``: the training and validation row indices;
* ``shapes``: the shapes of the data and validation tensors, checked on resumption;
* ``config``: the settings as numbers and strings, for the record.

Restoring all of these before epoch :math:`N + 1` makes a resumed run reproduce an
uninterrupted one bit for bit. Files are named ``epoch_XXXXX.pt`` and written atomically
(to a temporary file, then renamed).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .config import TrainConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "HISTORY_COLUMNS",
    "RunState",
    "copy_state",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "ebm_lfi.training.checkpoint"
CHECKPOINT_VERSION = 1
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "seconds")

_REQUIRED = (
    *("epoch", "model", "optimizer", "scheduler", "early_stopping"),
    *("history", "rng", "split", "shapes"),
)


class _Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass
class RunState:
    r"""Everything a checkpoint holds: the state of one run of the training loop.

    Arguments:
        model: The module being trained.
        optimizer: Its optimiser.
        scheduler: The learning-rate scheduler, or ``None``.
        stopper: The early-stopping tracker (anything with ``state_dict`` and
            ``load_state_dict``).
        generator: The CPU generator that shuffles the training rows.
        train_idx: Row indices of the training set.
        val_idx: Row indices of the validation set, or ``None``.
        shapes: Shapes of the data and validation tensors, as lists.
        history: One list per column of :data:`HISTORY_COLUMNS`, one entry per epoch.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    stopper: _Stateful
    generator: torch.Generator
    train_idx: Tensor
    val_idx: Tensor | None
    shapes: dict[str, Any]
    history: dict[str, list] = dataclasses.field(
        default_factory=lambda: {c: [] for c in HISTORY_COLUMNS}
    )

    def state_dict(self, device: torch.device, settings: TrainConfig) -> dict[str, Any]:
        r"""The checkpoint of the run as it stands.

        Arguments:
            device: The training device (its CUDA RNG state is saved on a GPU).
            settings: The training settings, kept for the record as numbers and strings.

        Returns:
            The checkpoint, a ``dict`` of tensors, numbers, strings and containers.
        """
        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "epoch": len(self.history["epoch"]),
            "model": copy_state(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else _plain(self.scheduler.state_dict()),
            "early_stopping": self.stopper.state_dict(),
            "history": {k: list(v) for k, v in self.history.items()},
            "rng": rng,
            "split": {"train": self.train_idx, "val": self.val_idx},
            "shapes": self.shapes,
            "config": _plain_settings(settings),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        r"""Restores the run from a checkpoint, RNG states included.

        Arguments:
            state: A checkpoint from :func:`load_checkpoint`.

        Raises:
            ValueError: If the checkpoint was written for other data shapes, another scheduler
                setting, or a model or optimiser whose state does not fit.
        """
        if state["shapes"] != self.shapes:
            raise ValueError(
                f"the checkpoint was written for data of shapes {state['shapes']}, "
                f"got {self.shapes}"
            )
        if (self.scheduler is None) != (state["scheduler"] is None):
            raise ValueError("the scheduler setting differs from the checkpoint's")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(
                f"the checkpoint does not match the model or settings: {error}"
            ) from error
        self.stopper.load_state_dict(state["early_stopping"])
        for key in HISTORY_COLUMNS:
            self.history[key] = list(state["history"][key])
        rng = state["rng"]
        self.generator.set_state(rng["generator"].cpu())
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng:
            device = next(iter(self.model.parameters())).device
            torch.cuda.set_rng_state(rng["cuda"].cpu(), device)
        split = state["split"]
        self.train_idx = split["train"].cpu()
        self.val_idx = None if split["val"] is None else split["val"].cpu()


def save_checkpoint(state: dict[str, Any], directory: str | os.PathLike) -> str:
    r"""Writes ``state`` atomically to ``directory/epoch_XXXXX.pt``, creating the directory.

    Arguments:
        state: A checkpoint, with an integer ``epoch`` entry.
        directory: Where to write it.

    Returns:
        The path written, as a string.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = save_checkpoint({"epoch": 3}, d)
        ...     print(Path(path).name)
        ...     try:
        ...         load_checkpoint(path, torch.device("cpu"))
        ...     except ValueError as error:
        ...         print("rejected:", "not a checkpoint" in str(error))
        epoch_00003.pt
        rejected: True
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"epoch_{state['epoch']:05d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return str(path)


def load_checkpoint(path: str | os.PathLike, device: torch.device) -> dict[str, Any]:
    r"""Reads and validates a checkpoint written by :func:`save_checkpoint`.

    Arguments:
        path: The file.
        device: Where to map its tensors.

    Returns:
        The checkpoint.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If the file is corrupt, holds more than plain data, is not a checkpoint
            of :func:`ebm_lfi.training.loop.train`, or has another version or missing entries.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise ValueError(
            f"cannot read checkpoint {str(path)!r}: the file is corrupt or not a checkpoint "
            f"written by ebm_lfi.train ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a checkpoint written by ebm_lfi.train")
    if state.get("version") != CHECKPOINT_VERSION or any(k not in state for k in _REQUIRED):
        raise ValueError(
            f"checkpoint {str(path)!r} has version {state.get('version')!r} or misses entries; "
            f"expected version {CHECKPOINT_VERSION} with {list(_REQUIRED)}"
        )
    return state


def copy_state(state: Mapping[str, Any]) -> dict[str, Any]:
    r"""A deep copy of a state dict: tensors detached and cloned, other values deep-copied.

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> state = copy_state(layer.state_dict())
        >>> state["bias"] is layer.bias, torch.equal(state["bias"], layer.bias)
        (False, True)
    """
    return {
        k: v.detach().clone() if isinstance(v, Tensor) else copy.deepcopy(v)
        for k, v in state.items()
    }


def _plain_settings(settings: TrainConfig) -> dict[str, Any]:
    r"""The fields of ``settings`` as numbers and strings, for the record."""
    out = {}
    for field in dataclasses.fields(settings):
        key, value = field.name, getattr(settings, field.name)
        if value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        elif key == "param_groups" and isinstance(value, Mapping):
            out[key] = {str(k): float(v) for k, v in value.items()}
        else:
            out[key] = getattr(value, "__name__", type(value).__name__)
    return out


def _plain(obj: Any) -> Any:
    r"""Keeps only what ``weights_only`` loading accepts (drops callables of custom schedules)."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items() if not callable(v)}
    if isinstance(obj, list | tuple):
        return type(obj)(_plain(v) for v in obj)
    return obj
