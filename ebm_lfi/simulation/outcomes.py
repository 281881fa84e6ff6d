r"""What a simulation returned, whether it failed, and the error that reports failures.

Each run of the simulator gives a raw :class:`Outcome`: the output as an array, or the exception
it raised (with its traceback as text when it comes back from another process). A
:class:`Collector` checks the outcomes of a sequence of runs in order: simulation :math:`i`
fails if it raised, if its output has a shape other than ``x_shape`` (the shape of the first
valid output), or if it holds NaN or infinite values once converted to the parameters' dtype;
otherwise it is kept as a tensor. Each failure is a :class:`Failure`, and
:func:`failure_error` turns those of a batch into a :class:`SimulationError` that names the
failing :math:`\theta` and chains the simulator's own exception.
"""

from __future__ import annotations

import pickle
import traceback
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ON_ERROR_HINT",
    "SimulationError",
    "Outcome",
    "Failure",
    "Collector",
    "failure_error",
    "format_theta",
]

_MAX_REPORTED = 5  # failing parameters named in an error message


ON_ERROR_HINT = (
    "Pass on_error='drop' (to ebm_lfi.simulate, in el.infer's simulation_options, or to the "
    "method) to drop failed simulations and draw replacements."
)
"""The advice of a :class:`SimulationError` raised under ``on_error="raise"``."""


class SimulationError(RuntimeError):
    r"""A simulation raised, returned non-finite values or an output of the wrong shape.

    The original exception, if any, is chained as ``__cause__``. A wrong output shape raises a
    :class:`SimulationError` that is also a :class:`ValueError`.

    Arguments:
        message: What failed and for which parameters.
        theta: The failing parameters, shape :math:`(k, p)`, if known.
        hint: Advice appended to the message on its own line (e.g. :data:`ON_ERROR_HINT`);
            kept apart in :attr:`hint` and :attr:`message` so that a front end (the command
            line) can give its own words for it.
    """

    def __init__(self, message: str, theta: Tensor | None = None, hint: str | None = None):
        super().__init__(message if hint is None else f"{message}\n{hint}")
        self.message = message
        self.hint = hint
        self.theta = theta


class _SimulationShapeError(SimulationError, ValueError):
    """The simulator's output shape changed between calls."""


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in another process, as text."""

    def __str__(self) -> str:
        return "\n" + self.args[0]


class Outcome(NamedTuple):
    """One simulation's raw result: an array, or the exception it raised."""

    value: np.ndarray | None
    error: BaseException | None = None
    traceback: str | None = None

    @classmethod
    def failed(cls, error: Exception, portable: bool = False) -> Outcome:
        """The outcome of a run that raised ``error``.

        Arguments:
            error: The exception.
            portable: Make the outcome safe to send back from another process: keep the
                traceback as text, and replace an exception that does not pickle by a
                :class:`RuntimeError` with its type and message.
        """
        if not portable:
            return cls(None, error)
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:
            error = RuntimeError(f"{type(error).__name__}: {error}")
        return cls(None, error, text)


class Failure(NamedTuple):
    """A failed simulation of a batch: its row, parameters, kind and message."""

    row: int  # index within the batch
    theta: Tensor
    kind: str  # "raised", "non-finite" or "wrong-shape"
    message: str
    error: BaseException | None


class Collector:
    """Checks raw outcomes in order, converting valid ones and fixing ``x_shape`` on the first.

    Arguments:
        dtype: The dtype of the kept outputs (that of the parameters).

    Example:
        >>> collector = Collector(torch.float64)
        >>> failures = collector.add(
        ...     torch.zeros(3, 1), [Outcome(np.ones(2)), Outcome(np.ones(3)), Outcome(np.ones(2))]
        ... )
        >>> [f.kind for f in failures], len(collector.xs), collector.x_shape
        (['wrong-shape'], 2, (2,))
    """

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.x_shape: tuple[int, ...] | None = None
        self.xs: list[Tensor] = []

    def add(self, theta: Tensor, outcomes: list[Outcome]) -> list[Failure]:
        r"""Check a batch of outcomes, keeping the valid ones in :attr:`xs`.

        In order, an outcome fails if it raised (a remote traceback, if any, becomes the
        error's ``__cause__``), if its shape differs from :attr:`x_shape` (once set), or if it
        has NaN or infinite values once converted to :attr:`dtype`; otherwise it is appended
        to :attr:`xs` as a tensor of :attr:`dtype` and, for the first one, fixes
        :attr:`x_shape`.

        Arguments:
            theta: The batch's parameters, shape :math:`(b, p)`, row :math:`j` for outcome
                :math:`j`.
            outcomes: The :math:`b` raw outcomes, in the order of the rows.

        Returns:
            The failures of this batch, in row order (``[]`` if all are valid).
        """
        failures = []
        for j, outcome in enumerate(outcomes):
            if outcome.error is not None:
                error = outcome.error
                if outcome.traceback is not None and error.__cause__ is None:
                    error.__cause__ = _RemoteTraceback(outcome.traceback)
                message = f"raised {type(error).__name__}: {error}"
                failures.append(Failure(j, theta[j], "raised", message, error))
                continue
            value = outcome.value
            if self.x_shape is not None and tuple(value.shape) != self.x_shape:
                message = (
                    f"returned an output of shape {tuple(value.shape)}, expected shape "
                    f"{self.x_shape} (that of the first valid output)"
                )
                failures.append(Failure(j, theta[j], "wrong-shape", message, None))
                continue
            x = torch.from_numpy(np.array(value)).to(self.dtype)
            if not bool(torch.isfinite(x).all()):
                message = f"returned non-finite values (NaN or inf in {self.dtype})"
                failures.append(Failure(j, theta[j], "non-finite", message, None))
                continue
            self.x_shape = tuple(value.shape)
            self.xs.append(x)
        return failures


def failure_error(failures: list[Failure], batch: int, name: str) -> SimulationError:
    """The error for the ``failures`` of a batch of ``batch`` runs of the simulator ``name``."""
    cls = _SimulationShapeError if failures[0].kind == "wrong-shape" else SimulationError
    lines = [f"theta={format_theta(f.theta)} {f.message}" for f in failures[:_MAX_REPORTED]]
    if len(failures) > _MAX_REPORTED:
        lines.append(f"... and {len(failures) - _MAX_REPORTED} more")
    error = cls(
        f"simulator {name!r} failed for {len(failures)} of {batch} parameters in a batch:\n  "
        + "\n  ".join(lines),
        theta=torch.stack([f.theta for f in failures]),
        hint=ON_ERROR_HINT,
    )
    error.__cause__ = next((f.error for f in failures if f.error is not None), None)
    return error


def format_theta(theta: Tensor) -> str:
    """``theta`` as text for error messages, to 4 decimals."""
    return np.array2string(theta.detach().cpu().double().numpy(), precision=4, separator=", ")
