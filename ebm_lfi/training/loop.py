r"""One training loop for every loss.

A loss is any callable ``loss(model, *batch) -> scalar tensor``: exact, sliced or denoising
score matching, NCE, or a user's own. :func:`train` minimises its average over mini-batches of
the data tensors with Adam (or another :class:`torch.optim.Optimizer`), optionally with an
exponential or plateau learning-rate schedule, and monitors a held-out validation loss.

The loop keeps a *deep copy* of the weights with the lowest monitored loss (validation loss if
there is a validation set, training loss otherwise), stops early after ``patience`` epochs
without an improvement larger than ``min_delta``, and always returns with those best weights
loaded. A non-finite loss stops training with a :class:`TrainingError` after restoring the best
weights, so a diverged model is never handed back.

Validation losses are computed in ``eval`` mode without parameter updates, but *with* autograd
enabled: score-matching losses differentiate the energy with respect to its inputs.

Randomness (validation split, shuffling, and any stochastic loss drawing from torch's global
generator) is reproducible from ``seed``: the loop runs inside :func:`torch.random.fork_rng`,
so the caller's global RNG is left as it was. Checkpoints (:mod:`ebm_lfi.training.checkpoints`)
hold the model, optimiser, scheduler, early-stopping state, history and RNG states as plain
tensors and containers (loadable with ``torch.load(..., weights_only=True)``); resuming from
the checkpoint of epoch :math:`N` reproduces an uninterrupted run bit for bit.

How to optimise is one :class:`~ebm_lfi.training.config.TrainConfig` (epochs, batch size,
learning rates, schedule, patience, ...), resolved for the size of the training set once it is
split (by default the run is stretched to a minimum number of optimiser steps on small sets:
:meth:`~ebm_lfi.training.config.TrainConfig.resolved`; the history's ``attrs["epochs"]`` says
how many epochs the run had); the early-stopping tracker is in
:mod:`ebm_lfi.training.early_stopping`. The checks of the data (:func:`check_data`,
:func:`check_validation`) are here, at the loop's public boundary.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from ..energy.nets import frozen
from ..progress import progress_bar
from .checkpoints import HISTORY_COLUMNS, RunState, load_checkpoint, save_checkpoint
from .config import TrainConfig, check_int, make_scheduler, optimizer_groups
from .early_stopping import EarlyStopping

__all__ = [
    "TrainingError",
    "train",
    "check_data",
    "check_validation",
]

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    r"""Training produced a non-finite loss.

    The model passed to :func:`train` holds the best weights seen before the failure (or its
    initial weights if no epoch completed).

    Attributes:
        epoch: The (1-based) epoch in which the loss became non-finite.
        history: The history of the completed epochs, as returned by :func:`train`.
    """

    def __init__(self, message: str, epoch: int, history: pd.DataFrame):
        super().__init__(message)
        self.epoch = epoch
        self.history = history


def train(
    model: nn.Module,
    loss: Callable[..., Tensor],
    *data: Tensor,
    config: TrainConfig | Mapping[str, Any] | None = None,
    validation: Sequence[Tensor] | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | os.PathLike | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    r"""Trains ``model`` by minimising ``loss(model, *batch)`` over mini-batches of ``data``.

    Arguments:
        model: The module to train, in place.
        loss: Callable ``loss(model, *batch) -> scalar tensor``, where ``batch`` holds the rows
            of each data tensor in the mini-batch, in the order of ``data``.
        data: Tensors with a common first dimension :math:`n` (e.g. ``y`` of shape
            :math:`(n, d)` and ``theta`` of shape :math:`(n, p)`).
        config: How to optimise: a :class:`~ebm_lfi.training.config.TrainConfig`, a dict of
            its fields, or ``None`` for its defaults.
        validation: Explicit validation tensors, as many as ``data`` with the same trailing
            shapes; when given, all of ``data`` is used for training and
            ``config.validation_fraction`` is ignored.
        seed: Seed of the split, the shuffling and torch's global RNG inside the loop (which
            runs in :func:`torch.random.fork_rng`). ``None`` draws a seed from torch's global
            generator, so that ``torch.manual_seed`` before the call also reproduces a run.
            Ignored when resuming (the RNG states come from the checkpoint).
        device: Device to train on; the model, the loss (if a module) and the data are moved
            there. ``None`` keeps the device of the model's parameters.
        checkpoint_dir: Directory in which to write checkpoints ``epoch_XXXXX.pt``.
        checkpoint_every: Write a checkpoint every this many epochs (and after the last epoch).
            Without it, only the last epoch is checkpointed.
        resume_from: Path of a checkpoint from which to continue; ``config.epochs`` counts from
            the start of the original run. Pass the same data and settings for an exact
            continuation.
        progress: Show a tqdm progress bar with the training and validation losses.

    Returns:
        The history, one row per epoch with columns ``epoch``, ``train_loss``, ``val_loss``
        (NaN without validation), ``lr`` (of the first parameter group, the one at ``lr``) and
        ``seconds``. Its ``attrs`` hold ``best_epoch``, ``best_loss``, ``monitor``
        (``"val_loss"`` or ``"train_loss"``), ``stopped_early``, ``seconds`` (total wall time
        of this call) and ``checkpoints`` (paths written). On return the model holds the
        weights of ``best_epoch`` and is in ``eval`` mode.

    Raises:
        TrainingError: If a training or validation loss is not finite; the model then holds
            the best weights so far.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> x, y = torch.randn(64, 2), torch.randn(64, 1)
        >>> mse = lambda m, x, y: ((m(x) - y) ** 2).mean()
        >>> history = train(model, mse, x, y, config={"epochs": 3, "batch_size": 16}, seed=0)
        >>> list(history.columns)
        ['epoch', 'train_loss', 'val_loss', 'lr', 'seconds']
    """
    start_time = time.perf_counter()
    config = _as_config(config)
    _check_arguments(model, loss, seed, checkpoint_dir, checkpoint_every)
    device = _resolve_device(model, device)
    model.to(device)
    if isinstance(loss, nn.Module):
        loss.to(device)
    data = tuple(t.to(device) for t in check_data(data, "data"))
    if validation is not None:
        validation = tuple(t.to(device) for t in check_validation(validation, data))
    checkpoint = load_checkpoint(resume_from, device) if resume_from is not None else None
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    split_seed, torch_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []):
        torch.random.default_generator.manual_seed(torch_seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(torch_seed)
        generator = torch.Generator().manual_seed(split_seed)
        run, config = _start_run(model, data, validation, config, generator, checkpoint)
        saver = _Checkpointing(checkpoint_dir, checkpoint_every, config, device)
        stopped_early = _run_epochs(run, loss, data, validation, config, saver, progress)
        if stopped_early:
            logger.info("early stopping; best epoch %d", run.stopper.best_epoch)
        run.stopper.restore(model)
        model.eval()

    frame = _history_frame(run.history)
    frame.attrs.update(
        epochs=config.epochs,
        best_epoch=run.stopper.best_epoch,
        best_loss=run.stopper.best_loss,
        monitor=_monitor(run, validation),
        stopped_early=stopped_early,
        seconds=time.perf_counter() - start_time,
        checkpoints=saver.written,
    )
    return frame


# ------------------------------------------------------------------------------ the boundary


def check_data(data: Sequence[Any], name: str) -> tuple[Tensor, ...]:
    r"""The ``data`` as tensors, checked to be non-empty with a common first dimension.

    Arguments:
        data: Tensors or arrays, shapes :math:`(n, *)` with a common :math:`n \ge 1`.
        name: What to call them in messages (``"data"``, ``"validation"``).

    Returns:
        The tensors, in order.
    """
    if len(data) == 0:
        raise ValueError(f"no {name} tensors given; pass e.g. train(model, loss, y, theta)")
    tensors = tuple(torch.as_tensor(t) for t in data)
    for i, t in enumerate(tensors):
        if t.ndim == 0:
            raise ValueError(f"{name}[{i}] must have a first (sample) dimension, got a scalar")
    sizes = [t.shape[0] for t in tensors]
    if len(set(sizes)) != 1:
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        raise ValueError(f"{name} tensors must share their first dimension, got shapes {shapes}")
    if sizes[0] == 0:
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        raise ValueError(f"{name} is empty (shapes {shapes})")
    return tensors


def check_validation(validation: Sequence[Tensor], data: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    r"""The ``validation`` tensors, checked against ``data`` (one each, same trailing shapes).

    Arguments:
        validation: Tensors or arrays, shapes :math:`(m, *)`, one per data tensor.
        data: The checked training tensors, shapes :math:`(n, *)`.

    Returns:
        The validation tensors, in order.
    """
    if isinstance(validation, Tensor) or not isinstance(validation, Sequence):
        raise TypeError("validation must be a tuple or list of tensors, one per data tensor")
    validation = check_data(validation, "validation")
    if len(validation) != len(data):
        raise ValueError(f"validation has {len(validation)} tensors, data has {len(data)}")
    for i, (v, t) in enumerate(zip(validation, data)):
        if v.shape[1:] != t.shape[1:]:
            raise ValueError(
                f"validation[{i}] has shape {tuple(v.shape)}, incompatible with data[{i}] of "
                f"shape {tuple(t.shape)}"
            )
    return validation


def _as_config(config: TrainConfig | Mapping[str, Any] | None) -> TrainConfig:
    r"""``config`` as a :class:`TrainConfig`: ``None`` gives the defaults, a mapping its fields."""
    if config is None:
        return TrainConfig()
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, Mapping):
        try:
            return TrainConfig(**config)
        except TypeError as error:
            if "unexpected keyword" not in str(error):
                raise
            raise TypeError(f"bad training options: {error}") from error
    raise TypeError(f"config must be a TrainConfig, a dict or None, got {type(config).__name__}")


def _check_arguments(
    model: Any,
    loss: Any,
    seed: Any,
    checkpoint_dir: str | os.PathLike | None,
    checkpoint_every: Any,
) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss):
        raise TypeError(f"loss must be callable, got {type(loss).__name__}")
    if checkpoint_every is not None:
        check_int("checkpoint_every", checkpoint_every, minimum=1)
        if checkpoint_dir is None:
            raise ValueError("checkpoint_every is given but checkpoint_dir is None")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise TypeError(f"seed must be a non-negative int or None, got {seed!r}")


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


# ------------------------------------------------------------------------------ the run


def _start_run(
    model: nn.Module,
    data: tuple[Tensor, ...],
    validation: tuple[Tensor, ...] | None,
    config: TrainConfig,
    generator: torch.Generator,
    checkpoint: Mapping[str, Any] | None,
) -> tuple[RunState, TrainConfig]:
    r"""The state of a fresh run (split, optimiser, schedule, early stopping), or of a resumed
    one when a ``checkpoint`` is given, and the settings resolved for the size of its training
    set (:meth:`~ebm_lfi.training.config.TrainConfig.resolved`)."""
    train_idx, val_idx = _split(data[0].shape[0], config, validation, generator)
    config = config.resolved(len(train_idx))
    optimizer = config.optimizer(
        optimizer_groups(model, config.lr, config.param_groups),
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    run = RunState(
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, config),
        stopper=EarlyStopping(config.patience, config.min_delta, model),
        generator=generator,
        train_idx=train_idx,
        val_idx=val_idx,
        shapes=_shapes(data, validation),
    )
    if checkpoint is not None:
        run.load_state_dict(checkpoint)
    return run, config


def _split(
    n: int, config: TrainConfig, validation: Any, generator: torch.Generator
) -> tuple[Tensor, Tensor | None]:
    fraction = config.validation_fraction
    if validation is not None or fraction == 0.0:
        return torch.arange(n), None
    n_val = round(fraction * n)
    if n_val == 0 or n_val == n:
        raise ValueError(
            f"validation_fraction={fraction} of n={n} samples gives {n_val} validation and "
            f"{n - n_val} training samples; both must be at least 1"
        )
    perm = torch.randperm(n, generator=generator)
    return perm[n_val:], perm[:n_val]


def _shapes(data: tuple[Tensor, ...], validation: tuple[Tensor, ...] | None) -> dict[str, Any]:
    return {
        "data": [list(t.shape) for t in data],
        "validation": None if validation is None else [list(t.shape) for t in validation],
    }


def _monitor(run: RunState, validation: tuple[Tensor, ...] | None) -> str:
    r"""The loss that early stopping and the plateau schedule watch."""
    return "val_loss" if validation is not None or run.val_idx is not None else "train_loss"


def _run_epochs(
    run: RunState,
    loss: Callable[..., Tensor],
    data: tuple[Tensor, ...],
    validation: tuple[Tensor, ...] | None,
    config: TrainConfig,
    saver: _Checkpointing,
    progress: bool,
) -> bool:
    r"""The epochs from the run's last one to ``config.epochs``, or until early stopping.

    Each epoch trains on the shuffled mini-batches, computes the monitored loss, steps the
    schedule and the early-stopping tracker, appends a row to the history and checkpoints when
    due.

    Returns:
        Whether training stopped early (before ``config.epochs``).
    """
    monitor = _monitor(run, validation)
    stopped_early = run.stopper.should_stop()
    start_epoch = len(run.history["epoch"])
    with progress_bar(
        total=config.epochs,
        initial=min(start_epoch, config.epochs),
        enabled=progress,
        desc="training",
        unit="epoch",
    ) as bar:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            if stopped_early:
                break
            tic = time.perf_counter()
            epoch_lr = float(run.optimizer.param_groups[0]["lr"])
            train_loss = _train_epoch(run, loss, data, config, epoch, monitor)
            val_batch = config.validation_batch_size or config.batch_size
            val_loss = _validation_loss(run, loss, data, validation, val_batch)
            if monitor == "val_loss" and not math.isfinite(val_loss):
                raise _nonfinite(run, monitor, "validation loss", epoch, val_loss)
            monitored = val_loss if monitor == "val_loss" else train_loss
            if isinstance(run.scheduler, ReduceLROnPlateau):
                run.scheduler.step(monitored)
            elif run.scheduler is not None:
                run.scheduler.step()
            run.stopper.update(monitored, epoch, run.model)
            stopped_early = run.stopper.should_stop()
            row = (epoch, train_loss, val_loss, epoch_lr, time.perf_counter() - tic)
            for key, value in zip(HISTORY_COLUMNS, row):
                run.history[key].append(value)
            logger.debug("epoch %d: train %.6g, val %.6g", epoch, train_loss, val_loss)
            bar.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}", lr=epoch_lr)
            bar.update()
            saver.after_epoch(run, epoch, last=epoch == config.epochs or stopped_early)
    return stopped_early and len(run.history["epoch"]) < config.epochs


# ------------------------------------------------------------------------------ one epoch


def _train_epoch(
    run: RunState,
    loss: Callable[..., Tensor],
    data: tuple[Tensor, ...],
    config: TrainConfig,
    epoch: int,
    monitor: str,
) -> float:
    r"""One pass over the training rows, shuffled, in mini-batches; the mean training loss.

    Raises:
        TrainingError: At the first batch whose loss is not finite (before its step).
    """
    model, optimizer = run.model, run.optimizer
    model.train()
    order = run.train_idx[torch.randperm(len(run.train_idx), generator=run.generator)]
    device = data[0].device
    total = 0.0
    for b, start in enumerate(range(0, len(order), config.batch_size)):
        idx = order[start : start + config.batch_size].to(device)
        optimizer.zero_grad(set_to_none=True)
        value = _scalar(loss(model, *(t[idx] for t in data)))
        if not bool(torch.isfinite(value)):
            raise _nonfinite(run, monitor, "training loss", epoch, value.item(), f", batch {b + 1}")
        value.backward()
        if config.grad_clip is not None:
            parameters = [p for g in optimizer.param_groups for p in g["params"]]
            nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        total += value.item() * len(idx)
    return total / len(run.train_idx)


def _validation_loss(
    run: RunState,
    loss: Callable[..., Tensor],
    data: tuple[Tensor, ...],
    validation: tuple[Tensor, ...] | None,
    batch_size: int,
) -> float:
    r"""The mean loss on the explicit validation set or the held-out rows; NaN without either."""
    if validation is not None:
        return _evaluate(run.model, loss, validation, None, batch_size)
    if run.val_idx is not None:
        return _evaluate(run.model, loss, data, run.val_idx, batch_size)
    return math.nan


def _scalar(value: Any) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"loss must return a tensor, got {type(value).__name__}")
    if value.ndim != 0:
        raise ValueError(f"loss must return a scalar, got shape {tuple(value.shape)}")
    return value


def _evaluate(
    model: nn.Module,
    loss: Callable[..., Tensor],
    tensors: tuple[Tensor, ...],
    idx: Tensor | None,
    batch_size: int,
) -> float:
    r"""Mean loss over ``tensors[idx]`` in eval mode, with autograd on for the losses that
    differentiate in the data but with the trainable weights out of it (their flags restored
    after): no update follows, and the backward passes of the input derivatives skip the
    weights' gradients (3 % of a sliced score-matching fit; the loss is the same to the bit)."""
    model.eval()
    size = tensors[0].shape[0] if idx is None else len(idx)
    total = 0.0
    with frozen(model), torch.enable_grad():
        for start in range(0, size, batch_size):
            stop = min(start + batch_size, size)
            if idx is None:
                batch = tuple(t[start:stop] for t in tensors)
            else:
                rows = idx[start:stop].to(tensors[0].device)
                batch = tuple(t[rows] for t in tensors)
            total += _scalar(loss(model, *batch)).detach().item() * (stop - start)
    return total / size


# ------------------------------------------------------------------------------ the NaN guard


def _nonfinite(
    run: RunState, monitor: str, what: str, epoch: int, value: float, where: str = ""
) -> TrainingError:
    r"""Restores the best weights (eval mode) and returns the error for a non-finite loss."""
    stopper = run.stopper
    stopper.restore(run.model)
    run.model.eval()
    kept = (
        "its initial weights"
        if stopper.best_epoch == 0
        else f"the weights of epoch {stopper.best_epoch} ({monitor} {stopper.best_loss:.6g})"
    )
    message = f"non-finite {what} ({value}) at epoch {epoch}{where}; the model holds {kept}"
    return TrainingError(message, epoch, _history_frame(run.history))


# ------------------------------------------------------------------------------ checkpoints


class _Checkpointing:
    r"""Writes a checkpoint every ``every`` epochs and after the last one, into ``directory``
    (nothing without a directory), and keeps the paths written."""

    def __init__(
        self,
        directory: str | os.PathLike | None,
        every: int | None,
        config: TrainConfig,
        device: torch.device,
    ):
        self.directory, self.every = directory, every
        self.config, self.device = config, device
        self.written: list[str] = []

    def after_epoch(self, run: RunState, epoch: int, last: bool) -> None:
        due = self.every is not None and epoch % self.every == 0
        if self.directory is not None and (due or last):
            state = run.state_dict(self.device, self.config)
            self.written.append(save_checkpoint(state, self.directory))


# ------------------------------------------------------------------------------ the history


def _history_frame(history: Mapping[str, list]) -> pd.DataFrame:
    frame = pd.DataFrame({c: history[c] for c in HISTORY_COLUMNS})
    frame["epoch"] = frame["epoch"].astype("int64")
    for c in HISTORY_COLUMNS[1:]:
        frame[c] = frame[c].astype("float64")
    return frame
