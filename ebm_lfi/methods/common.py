r"""Pieces shared by every method: input checks at the public boundary, batched evaluation,
seeds of several observations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "NotFittedError",
    "as_config",
    "as_tensor",
    "check_training_data",
    "check_observation",
    "batched",
    "spawn_seeds",
]


class NotFittedError(RuntimeError):
    """A posterior was asked of a method that has not been fitted."""


def as_tensor(value, dtype: torch.dtype | None = None, name: str = "value") -> Tensor:
    """Convert numpy arrays, lists or tensors to a floating tensor."""
    try:
        t = torch.as_tensor(value)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise TypeError(f"{name} must be array-like, got {type(value).__name__}") from err
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t if dtype is None else t.to(dtype)


def check_training_data(theta, x, num_parameters: int) -> tuple[Tensor, Tensor]:
    """Validate a training set ``theta (n, p)``, ``x (n, *x_shape)``; simulations of one
    number each, ``x`` of shape ``(n,)``, are read as ``(n, 1)``."""
    theta = as_tensor(theta, name="theta")
    x = as_tensor(x, dtype=theta.dtype, name="x")
    if x.ndim == 1 and theta.ndim == 2 and x.shape[0] == theta.shape[0]:
        x = x[:, None]  # a simulator that returns a scalar
    if theta.ndim != 2 or theta.shape[1] != num_parameters:
        raise ValueError(
            f"theta must have shape (n, {num_parameters}) to match the prior, "
            f"got {tuple(theta.shape)}"
        )
    if x.ndim < 2 or x.shape[0] != theta.shape[0]:
        raise ValueError(
            f"x must have shape (n, *x_shape) with n = {theta.shape[0]} rows like theta, "
            f"got {tuple(x.shape)}"
        )
    if theta.shape[0] < 2:
        raise ValueError(f"need at least 2 training pairs, got {theta.shape[0]}")
    for name, t in (("theta", theta), ("x", x)):
        if not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).reshape(t.shape[0], -1).any(1).sum())
            raise ValueError(f"{name} has {bad} rows with NaN or inf values")
    return theta, x


def check_observation(x_o, x_shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """Validate one observation of shape ``x_shape`` (a leading axis of size 1 is accepted, and
    a scalar where simulations are one number each)."""
    x_o = as_tensor(x_o, dtype=dtype, name="x_o")
    if x_o.ndim == 0 and tuple(x_shape) == (1,):
        x_o = x_o.reshape(1)
    if tuple(x_o.shape) == (1, *x_shape):
        x_o = x_o[0]
    if tuple(x_o.shape) != tuple(x_shape):
        raise ValueError(
            f"x_o must have the shape of one simulation {tuple(x_shape)}, got {tuple(x_o.shape)}"
        )
    if not torch.isfinite(x_o).all():
        raise ValueError("x_o contains NaN or inf values")
    return x_o


@torch.no_grad()
def batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 8192) -> Tensor:
    """Apply ``fn`` to ``x`` in chunks along the first axis and concatenate."""
    return torch.cat([fn(chunk) for chunk in x.split(batch_size)], dim=0)


def as_config(value: Any, cls: type, name: str) -> Any:
    """``value`` as a ``cls`` configuration: ``None`` gives the defaults, a dict its fields."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        try:
            return cls(**value)
        except TypeError as err:
            raise TypeError(f"bad {name} options: {err}") from err
    raise TypeError(f"{name} must be a {cls.__name__} or a dict, got {type(value).__name__}")


def spawn_seeds(seed: int | None, m: int) -> list[int]:
    """One integer seed per observation, from the children of ``SeedSequence(seed)``: the
    first ones are the same whatever ``m``."""
    root = np.random.SeedSequence(seed)
    return [int(child.generate_state(1, dtype=np.uint32)[0]) for child in root.spawn(m)]
