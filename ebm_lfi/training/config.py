r"""The optimisation settings of :func:`ebm_lfi.training.loop.train`, validated on construction.

:class:`TrainConfig` says *how* to optimise (epochs, batch size, learning rates, optimiser,
learning-rate schedule, early stopping, validation split, gradient clipping); its fields are
checked when it is built (:func:`check_int`, :func:`check_float`, with messages that name the
value). :func:`optimizer_groups` and :func:`make_scheduler` turn it into the optimiser's
parameter groups and the schedule. The checks of the data live with the loop, in
:mod:`ebm_lfi.training.loop`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import ExponentialLR, ReduceLROnPlateau

__all__ = [
    "DEFAULT_EPOCHS",
    "MAX_STRETCH",
    "ParamGroups",
    "TrainConfig",
    "adam",
    "optimizer_groups",
    "make_scheduler",
    "check_int",
    "check_float",
]

ParamGroups = (
    Mapping[str, float] | Sequence[tuple[nn.Module | nn.Parameter | Iterable[nn.Parameter], float]]
)


DEFAULT_EPOCHS = 200
"""The number of epochs of a run that does not set ``TrainConfig.epochs`` (before stretching)."""
_EXPONENTIAL_GAMMA = 0.99  # the exponential schedule's factor per epoch when gamma is None
MAX_STRETCH = 10.0
"""The most a run without ``TrainConfig.epochs`` is stretched toward ``min_steps``: at most
2,000 epochs (on a training set of one batch, each epoch also evaluates the validation loss)."""


def adam(params: Any, **options: Any) -> torch.optim.Adam:
    r""":class:`torch.optim.Adam` with torch's fused update kernel (``fused=True``) unless
    ``options`` choose an implementation (``fused`` or ``foreach``), the default optimiser.

    The fused kernel updates every parameter of a group in one call with the formula of
    torch's per-parameter loop, to rounding; the batched ``foreach`` update, this library's
    default before, gave the loop's weights to the last bit (pass ``foreach=True`` for it).
    The fused step is about twice as fast, and an ``auto`` run at 10⁴ simulations that keeps
    its route takes 10–14 % less CPU time (``docs/benchmarks.md``, "The fused optimiser
    step"). Where a parameter is not a float tensor on the CPU or a CUDA device, the
    ``foreach`` update is used.
    """
    if "fused" in options or "foreach" in options:
        return torch.optim.Adam(params, **options)
    params = [dict(p, params=list(p["params"])) if isinstance(p, dict) else p for p in params]
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    fused = all(t.is_floating_point() and t.device.type in _FUSED_DEVICES for t in tensors)
    return torch.optim.Adam(params, **{"fused" if fused else "foreach": True}, **options)


_FUSED_DEVICES = ("cpu", "cuda")  # devices with torch's fused Adam kernel, for every float dtype


@dataclass(frozen=True)
class TrainConfig:
    r"""Optimisation settings of :func:`~ebm_lfi.training.loop.train`, validated on construction.

    Hand it to the loop as ``train(model, loss, *data, config=config, seed=0)`` (a dict of
    its fields works too).

    Arguments:
        epochs: Total number of epochs (passes over the training set), or ``None`` (default)
            for :data:`DEFAULT_EPOCHS` epochs, stretched to at least ``min_steps`` optimiser
            steps on a small training set (see :meth:`resolved`).
        min_steps: With ``epochs=None``, the fewest optimiser steps (mini-batches) of a run.
        batch_size: Mini-batch size; the last batch of an epoch may be smaller.
        lr: Learning rate of every parameter not named in ``param_groups``.
        param_groups: Separate learning rates, either a mapping from submodule names of the
            model to learning rates (``{"natural_net": 1e-4}``) or a sequence of
            ``(module_or_parameters, lr)`` pairs. A parameter may belong to one group only.
        optimizer: Optimiser class (or factory) called as
            ``optimizer(groups, lr=lr, weight_decay=weight_decay)``; :func:`adam` by default.
        weight_decay: Weight decay passed to the optimiser.
        scheduler: ``"exponential"`` (multiply the learning rate by ``gamma`` every epoch),
            ``"plateau"`` (multiply by ``gamma`` after ``scheduler_patience`` epochs without
            improvement of the monitored loss), ``None``, or a callable
            ``optimizer -> scheduler``.
        gamma: Decay factor; ``None`` means 0.99 for ``"exponential"`` and 0.5 for ``"plateau"``.
        scheduler_patience: Patience of the ``"plateau"`` schedule, in epochs.
        patience: Early-stopping patience in epochs; ``None`` disables early stopping.
        min_delta: Smallest decrease of the monitored loss that counts as an improvement.
        validation_fraction: Fraction of the data held out for validation when no explicit
            ``validation`` set is given, in :math:`[0, 1)`; 0 monitors the training loss.
        grad_clip: Maximum norm of the gradient (all trainable parameters together), or ``None``.
        validation_batch_size: Rows per evaluation of the validation loss (``None``: the
            ``batch_size``). The losses here are means of per-row terms, so the size changes
            only the random projections or pairings each row draws and the cost: a small
            network on small batches costs mostly per call (the model-choice pilot, on 64-row
            batches, spent a fifth of its time on 32 validation calls per epoch).
    """

    epochs: int | None = None
    min_steps: int = 6000
    batch_size: int = 256
    lr: float = 1e-3
    param_groups: ParamGroups | None = None
    optimizer: Callable[..., torch.optim.Optimizer] = adam
    weight_decay: float = 0.0
    scheduler: str | Callable[[torch.optim.Optimizer], Any] | None = "exponential"
    gamma: float | None = None
    scheduler_patience: int = 5
    patience: int | None = 20
    min_delta: float = 0.0
    validation_fraction: float = 0.2
    grad_clip: float | None = None
    validation_batch_size: int | None = None

    def __post_init__(self):
        if self.epochs is not None:
            check_int("epochs", self.epochs, minimum=1)
        check_int("min_steps", self.min_steps, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        if self.validation_batch_size is not None:
            check_int("validation_batch_size", self.validation_batch_size, minimum=1)
        check_int("scheduler_patience", self.scheduler_patience, minimum=0)
        if self.patience is not None:
            check_int("patience", self.patience, minimum=1)
        check_float("lr", self.lr, low=0.0, low_open=True)
        check_float("weight_decay", self.weight_decay, low=0.0)
        check_float("min_delta", self.min_delta, low=0.0)
        check_float("validation_fraction", self.validation_fraction, low=0.0, high=1.0)
        if self.grad_clip is not None:
            check_float("grad_clip", self.grad_clip, low=0.0, low_open=True)
        if not callable(self.optimizer):
            raise TypeError(f"optimizer must be callable, got {type(self.optimizer).__name__}")
        if isinstance(self.scheduler, str):
            if self.scheduler not in ("exponential", "plateau"):
                raise ValueError(
                    f"scheduler must be 'exponential', 'plateau', None or a callable, "
                    f"got {self.scheduler!r}"
                )
        elif self.scheduler is not None and not callable(self.scheduler):
            raise TypeError(f"scheduler must be a str, None or callable, got {self.scheduler!r}")
        if self.gamma is not None:
            check_float("gamma", self.gamma, low=0.0, low_open=True, high=1.0, high_open=False)
            if self.scheduler == "plateau" and self.gamma >= 1.0:
                raise ValueError(f"gamma must be < 1 for the plateau schedule, got {self.gamma}")

    def resolved(self, num_train: int) -> TrainConfig:
        r"""The settings of a run on ``num_train`` training rows, with the epochs fixed.

        Given ``epochs``, the settings themselves. Otherwise :data:`DEFAULT_EPOCHS` epochs
        of :math:`b = \lceil n_{train} / \text{batch\_size} \rceil` mini-batches each, and
        where those give fewer than ``min_steps`` optimiser steps, the run is stretched by
        :math:`f = \min(\text{min\_steps} / (200\, b), 10)` (10 is :data:`MAX_STRETCH`):
        :math:`\lceil 200 f \rceil` epochs,
        patience and ``scheduler_patience`` times :math:`f`, and the exponential schedule's
        per-epoch factor :math:`\gamma^{1/f}` (the learning rate at the end is the same
        fraction of ``lr``). Counted in epochs, a schedule gives a small training set few
        steps: on 800 training rows, 200 epochs are 800 steps, and early stopping after 20
        epochs without improvement of a noisy validation loss is 80 steps. At 10³
        simulations of sbibm's two_moons, sliced score matching stopped at epoch 63 (loss
        −24) with one seed and ran into the 200-epoch cap still falling (−76) with another;
        their exchange posteriors had C2ST 0.94 and 0.62. Stretched to 6,000 steps, four
        seeds reached −64 to −127 and 0.55–0.73. NCE gained at 10³ on every problem
        measured (two seeds: AR(2) 0.84 → 0.66, MA(2) 0.87 → 0.83, integer counts
        0.89 → 0.77); ABC on the score-matching statistics did not move (0.71, 0.84, 0.77
        → 0.71, 0.84, 0.77), its exchange posterior gained on the counts (0.86 → 0.78) and
        lost on AR(2) (0.54 → 0.57) and MA(2) (0.78 → 0.82).
        Numbers and command: ``docs/benchmarks.md``, "Training long enough on small budgets".
        From about 9,300 simulations on (with the default batch and split) 200 epochs already
        make 6,000 steps, and nothing changes.

        Arguments:
            num_train: Rows in the training set (after the validation split).

        Returns:
            A :class:`TrainConfig` whose ``epochs`` is an integer.
        """
        if self.epochs is not None:
            return self
        check_int("num_train", num_train, minimum=1)
        batches = math.ceil(num_train / self.batch_size)
        stretch = min(self.min_steps / (DEFAULT_EPOCHS * batches), MAX_STRETCH)
        if stretch <= 1.0:
            return replace(self, epochs=DEFAULT_EPOCHS)
        gamma = self.gamma
        if self.scheduler == "exponential":
            gamma = (_EXPONENTIAL_GAMMA if gamma is None else gamma) ** (1.0 / stretch)
        return replace(
            self,
            epochs=math.ceil(DEFAULT_EPOCHS * stretch),
            patience=None if self.patience is None else math.ceil(self.patience * stretch),
            scheduler_patience=math.ceil(self.scheduler_patience * stretch),
            gamma=gamma,
        )


def optimizer_groups(
    model: nn.Module, lr: float, groups: ParamGroups | None
) -> list[dict[str, Any]]:
    r"""The optimiser's parameter groups: ``groups`` as in :class:`TrainConfig`, the rest at lr."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("model has no trainable parameters")
    if groups is None:
        return [{"params": trainable, "lr": lr}]
    if isinstance(groups, Mapping):
        pairs = []
        for name, group_lr in groups.items():
            try:
                pairs.append((model.get_submodule(name), group_lr))
            except AttributeError:
                children = [c for c, _ in model.named_children()]
                raise ValueError(
                    f"param_groups names {name!r}, which is not a submodule of the model "
                    f"(children: {children})"
                ) from None
    else:
        pairs = list(groups)
    named: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i, (params, group_lr) in enumerate(pairs):
        check_float(f"param_groups[{i}] learning rate", group_lr, low=0.0, low_open=True)
        if isinstance(params, nn.Module):
            params = params.parameters()
        elif isinstance(params, Tensor):
            params = [params]
        params = [p for p in params if p.requires_grad]
        if any(id(p) in seen for p in params):
            raise ValueError(f"param_groups[{i}] shares parameters with an earlier group")
        seen.update(id(p) for p in params)
        named.append({"params": params, "lr": float(group_lr)})
    rest = [p for p in trainable if id(p) not in seen]
    if len(seen) != len(trainable) - len(rest):
        raise ValueError("param_groups contains parameters that are not the model's")
    return ([{"params": rest, "lr": lr}] if rest else []) + named


def make_scheduler(opt: torch.optim.Optimizer, config: TrainConfig) -> Any:
    r"""The learning-rate schedule of ``config`` on ``opt`` (``None`` without one)."""
    if config.scheduler == "exponential":
        gamma = _EXPONENTIAL_GAMMA if config.gamma is None else config.gamma
        return ExponentialLR(opt, gamma=gamma)
    if config.scheduler == "plateau":
        return ReduceLROnPlateau(
            opt,
            mode="min",
            factor=0.5 if config.gamma is None else config.gamma,
            patience=config.scheduler_patience,
        )
    if config.scheduler is None:
        return None
    return config.scheduler(opt)


def check_int(name: str, value: Any, minimum: int) -> None:
    r"""Raises unless ``value`` is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = True,
) -> None:
    r"""Raises unless ``value`` is a finite real number (not a bool) in the given interval."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    bad = not math.isfinite(value)
    if low is not None:
        bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value >= high if high_open else value > high
    if bad:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        interval = (
            f"{lo}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{hi}"
        )
        raise ValueError(f"{name} must be finite and in {interval}, got {value}")
