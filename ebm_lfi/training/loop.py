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
so the caller's global RNG is left as it was. Checkpoints (:mod:`ebm_lfi.training.checkpoints`) hold
the model, optimiser, scheduler, early-stopping state, history and RNG states as plain tensors
and containers (loadable with ``torch.load(..., weights_only=True)``); resuming from the
checkpoint of epoch :math:`N` reproduces an uninterrupted run bit for bit.

The optimisation settings and the checks of the inputs are in :mod:`ebm_lfi.training.config`, the
early-stopping tracker in :mod:`ebm_lfi.training.early_stopping`.
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
from tqdm.auto import tqdm

from .checkpoints import HISTORY_COLUMNS, RunState, load_checkpoint, save_checkpoint
from .config import (
    ParamGroups,
    TrainConfig,
    check_data,
    check_int,
    check_validation,
    make_scheduler,
    optimizer_groups,
)
from .early_stopping import EarlyStopping

__all__ = [
    "TrainingError",
    "train",
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
    epochs: int = 200,
    batch_size: int = 256,
    lr: float = 1e-3,
    param_groups: ParamGroups | None = None,
    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
    weight_decay: float = 0.0,
    scheduler: str | Callable[[torch.optim.Optimizer], Any] | None = "exponential",
    gamma: float | None = None,
    scheduler_patience: int = 5,
    patience: int | None = 20,
    min_delta: float = 0.0,
    validation_fraction: float = 0.2,
    grad_clip: float | None = None,
    validation: Sequence[Tensor] | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | os.PathLike | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    r"""Trains ``model`` by minimising ``loss(model, *batch)`` over mini-batches of ``data``.

    The optimisation keywords are those of :class:`TrainConfig` (see there); the others are:

    Arguments:
        model: The module to train, in place.
        loss: Callable ``loss(model, *batch) -> scalar tensor``, where ``batch`` holds the rows
            of each data tensor in the mini-batch, in the order of ``data``.
        data: Tensors with a common first dimension :math:`n` (e.g. ``y`` of shape
            :math:`(n, d)` and ``theta`` of shape :math:`(n, p)`).
        validation: Explicit validation tensors, as many as ``data`` with the same trailing
            shapes; when given, all of ``data`` is used for training and
            ``validation_fraction`` is ignored.
        seed: Seed of the split, the shuffling and torch's global RNG inside the loop (which
            runs in :func:`torch.random.fork_rng`). ``None`` draws a seed from torch's global
            generator, so that ``torch.manual_seed`` before the call also reproduces a run.
            Ignored when resuming (the RNG states come from the checkpoint).
        device: Device to train on; the model, the loss (if a module) and the data are moved
            there. ``None`` keeps the device of the model's parameters.
        checkpoint_dir: Directory in which to write checkpoints ``epoch_XXXXX.pt``.
        checkpoint_every: Write a checkpoint every this many epochs (and after the last epoch).
            Without it, only the last epoch is checkpointed.
        resume_from: Path of a checkpoint from which to continue; ``epochs`` counts from the
            start of the original run. Pass the same data and settings for an exact continuation.
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
        >>> history = train(model, mse, x, y, epochs=3, batch_size=16, seed=0)
        >>> list(history.columns)
        ['epoch', 'train_loss', 'val_loss', 'lr', 'seconds']
    """
    start_time = time.perf_counter()
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        param_groups=param_groups,
        optimizer=optimizer,
        weight_decay=weight_decay,
        scheduler=scheduler,
        gamma=gamma,
        scheduler_patience=scheduler_patience,
        patience=patience,
        min_delta=min_delta,
        validation_fraction=validation_fraction,
        grad_clip=grad_clip,
    )
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
        train_idx, val_idx = _split(data[0].shape[0], config, validation, generator)
        opt = config.optimizer(
            optimizer_groups(model, config.lr, config.param_groups),
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
        run = RunState(
            model=model,
            optimizer=opt,
            scheduler=make_scheduler(opt, config),
            stopper=EarlyStopping(config.patience, config.min_delta, model),
            generator=generator,
            train_idx=train_idx,
            val_idx=val_idx,
            shapes=_shapes(data, validation),
        )
        if checkpoint is not None:
            run.load_state_dict(checkpoint)
        has_val = validation is not None or run.val_idx is not None
        monitor = "val_loss" if has_val else "train_loss"

        def fail(what: str, epoch: int, value: float, where: str = "") -> TrainingError:
            stopper = run.stopper
            stopper.restore(model)
            model.eval()
            kept = (
                "its initial weights"
                if stopper.best_epoch == 0
                else f"the weights of epoch {stopper.best_epoch} ({monitor} "
                f"{stopper.best_loss:.6g})"
            )
            message = f"non-finite {what} ({value}) at epoch {epoch}{where}; the model holds {kept}"
            return TrainingError(message, epoch, _history_frame(run.history))

        written: list[str] = []
        stopped_early = run.stopper.should_stop()
        start_epoch = len(run.history["epoch"])
        bar = tqdm(
            total=config.epochs,
            initial=min(start_epoch, config.epochs),
            disable=not progress,
            desc="training",
            unit="epoch",
        )
        try:
            for epoch in range(start_epoch + 1, config.epochs + 1):
                if stopped_early:
                    break
                tic = time.perf_counter()
                epoch_lr = float(opt.param_groups[0]["lr"])
                model.train()
                order = run.train_idx[torch.randperm(len(run.train_idx), generator=generator)]
                total = 0.0
                for b, start in enumerate(range(0, len(order), config.batch_size)):
                    idx = order[start : start + config.batch_size].to(device)
                    opt.zero_grad(set_to_none=True)
                    value = _scalar(loss(model, *(t[idx] for t in data)))
                    if not bool(torch.isfinite(value)):
                        raise fail("training loss", epoch, value.item(), f", batch {b + 1}")
                    value.backward()
                    if config.grad_clip is not None:
                        parameters = [p for g in opt.param_groups for p in g["params"]]
                        nn.utils.clip_grad_norm_(parameters, config.grad_clip)
                    opt.step()
                    total += value.item() * len(idx)
                train_loss = total / len(run.train_idx)
                val_loss = math.nan
                if validation is not None:
                    val_loss = _evaluate(model, loss, validation, None, config.batch_size)
                elif run.val_idx is not None:
                    val_loss = _evaluate(model, loss, data, run.val_idx, config.batch_size)
                if has_val and not math.isfinite(val_loss):
                    raise fail("validation loss", epoch, val_loss)
                monitored = val_loss if has_val else train_loss
                if isinstance(run.scheduler, ReduceLROnPlateau):
                    run.scheduler.step(monitored)
                elif run.scheduler is not None:
                    run.scheduler.step()
                run.stopper.update(monitored, epoch, model)
                stopped_early = run.stopper.should_stop()
                row = (epoch, train_loss, val_loss, epoch_lr, time.perf_counter() - tic)
                for key, val in zip(HISTORY_COLUMNS, row):
                    run.history[key].append(val)
                logger.debug("epoch %d: train %.6g, val %.6g", epoch, train_loss, val_loss)
                bar.set_postfix(train=f"{train_loss:.4g}", val=f"{val_loss:.4g}", lr=epoch_lr)
                bar.update()
                due = checkpoint_every is not None and epoch % checkpoint_every == 0
                last = epoch == config.epochs or stopped_early
                if checkpoint_dir is not None and (due or last):
                    state = run.state_dict(device, config.as_kwargs())
                    written.append(save_checkpoint(state, checkpoint_dir))
        finally:
            bar.close()
        stopped_early = stopped_early and len(run.history["epoch"]) < config.epochs
        if stopped_early:
            logger.info("early stopping; best epoch %d", run.stopper.best_epoch)
        run.stopper.restore(model)
        model.eval()

    frame = _history_frame(run.history)
    frame.attrs.update(
        best_epoch=run.stopper.best_epoch,
        best_loss=run.stopper.best_loss,
        monitor=monitor,
        stopped_early=bool(stopped_early),
        seconds=time.perf_counter() - start_time,
        checkpoints=written,
    )
    return frame


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
    r"""Mean loss over ``tensors[idx]`` in eval mode, with autograd on but no update."""
    model.eval()
    size = tensors[0].shape[0] if idx is None else len(idx)
    total = 0.0
    with torch.enable_grad():
        for start in range(0, size, batch_size):
            stop = min(start + batch_size, size)
            if idx is None:
                batch = tuple(t[start:stop] for t in tensors)
            else:
                rows = idx[start:stop].to(tensors[0].device)
                batch = tuple(t[rows] for t in tensors)
            total += _scalar(loss(model, *batch)).detach().item() * (stop - start)
    return total / size


def _history_frame(history: Mapping[str, list]) -> pd.DataFrame:
    frame = pd.DataFrame({c: history[c] for c in HISTORY_COLUMNS})
    frame["epoch"] = frame["epoch"].astype("int64")
    for c in HISTORY_COLUMNS[1:]:
        frame[c] = frame[c].astype("float64")
    return frame


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


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
