r"""The :class:`Task` record: a benchmark problem with its simulator and stored data.

A task bundles a prior :math:`\pi(\theta)` (a :class:`~ebm_lfi.priors.BoxUniform`), a batched
numpy simulator :math:`x \sim p(x \mid \theta)`, the exact log-likelihood
:math:`\log p(x \mid \theta)` where it is tractable (vectorised in torch, computed in float64)
and, where the model is an exponential family, its sufficient statistics. The observations,
their true parameters and, for tasks with a likelihood, the reference posterior samples live in
``<name>.npz`` files of the data directory (see its ``README.md``), built by
``python -m ebm_lfi.benchmarks.reference``. A task without a likelihood (Lorenz96) has no
reference posterior: :attr:`Task.has_reference_posterior` is ``False`` and
:meth:`Task.reference_posterior` and :meth:`Task.log_likelihood` raise a ``ValueError`` that
says so.

The data directory is ``$EBM_LFI_DATA`` when that variable is set, else the folder ``data``
inside this package (``ebm_lfi/benchmarks/data``), installed with the package.

Reference posterior samples are stored quantised to ``uint16`` inside the prior box,
:math:`\theta = l + (q + \tfrac12)(h - l) / 2^{16}`, an error of at most :math:`(h - l)/2^{17}`.
"""

from __future__ import annotations

import functools
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..priors import BoxUniform

__all__ = [
    "Task",
    "data_directory",
    "quantize",
    "dequantize",
    "DATA_FORMAT_VERSION",
]

DATA_FORMAT_VERSION = 1
_LEVELS = 65536


def data_directory() -> Path:
    r"""Directory holding the benchmark data: ``$EBM_LFI_DATA`` or ``ebm_lfi/benchmarks/data``."""
    env = os.environ.get("EBM_LFI_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "data"


def quantize(samples: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    r"""Quantise samples inside the box :math:`[l, h]` to ``uint16`` cell indices.

    Arguments:
        samples: Samples, shape :math:`(*, p)`.
        low: Lower bounds, shape :math:`(p,)`.
        high: Upper bounds, shape :math:`(p,)`.

    Returns:
        Indices :math:`q = \lfloor 2^{16} (\theta - l) / (h - l) \rfloor`, clipped to
        :math:`[0, 2^{16} - 1]`, shape :math:`(*, p)`, dtype ``uint16``.
    """
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    u = (np.asarray(samples, dtype=np.float64) - low) / (high - low)
    q = np.floor(u * _LEVELS)
    return np.clip(q, 0, _LEVELS - 1).astype(np.uint16)


def dequantize(codes: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    r"""Inverse of :func:`quantize`: the centres :math:`l + (q + \frac12)(h - l)/2^{16}`.

    Arguments:
        codes: ``uint16`` indices, shape :math:`(*, p)`.
        low: Lower bounds, shape :math:`(p,)`.
        high: Upper bounds, shape :math:`(p,)`.

    Returns:
        Samples in float64, shape :math:`(*, p)`.
    """
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    return low + (codes.astype(np.float64) + 0.5) * ((high - low) / _LEVELS)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {key: f[key] for key in f.files}


def _check_index(i: object, n: int) -> int:
    try:
        if isinstance(i, bool):
            raise TypeError
        i = operator.index(i)
    except TypeError:
        raise TypeError(f"observation index must be an int in 0 .. {n - 1}, got {i!r}") from None
    if not 0 <= i < n:
        raise IndexError(f"observation index {i} out of range; valid indices are 0 .. {n - 1}")
    return i


@dataclass(frozen=True, eq=False)
class Task:
    r"""A benchmark task: prior, simulator, exact likelihood and reference data.

    Tasks are built by :func:`ebm_lfi.benchmarks.get`; users rarely construct them.

    Arguments:
        name: Registry name, also the stem of the data file ``<name>.npz``.
        low: Lower bounds of the uniform prior box, length :math:`p`.
        high: Upper bounds of the uniform prior box, length :math:`p`.
        parameter_names: Names of the :math:`p` parameters.
        x_shape: Shape of one simulation.
        x_support: ``(lower, upper)`` bounds of every entry of :math:`x`; ``None`` for an
            unbounded side.
        structure: ``"iid"`` (exchangeable entries) or ``"markov"`` (a time series).
        simulate_fn: Batched numpy simulator ``fn(theta (b, p), rng) -> x (b, *x_shape)``
            drawing row ``i``'s noise only from ``rng[i]``.
        log_likelihood_fn: ``fn(theta (n, p), x (n or 1, *x_shape)) -> (n,)`` in float64 torch,
            or ``None`` when the likelihood is intractable (then no reference posterior).
        statistics_fn: ``fn(x (n, *x_shape)) -> (n, k)`` sufficient statistics, or ``None``.
        seed: Root seed of the stored data (see the data directory's ``README.md``).
        description: One line describing the model and its conventions.
        num_observations: Number of stored observations.
    """

    name: str
    low: tuple[float, ...]
    high: tuple[float, ...]
    parameter_names: tuple[str, ...]
    x_shape: tuple[int, ...]
    x_support: tuple[float | None, float | None]
    structure: str
    simulate_fn: Callable[..., np.ndarray] = field(repr=False)
    log_likelihood_fn: Callable[[Tensor, Tensor], Tensor] | None = field(default=None, repr=False)
    statistics_fn: Callable[[Tensor], Tensor] | None = field(default=None, repr=False)
    seed: int = 0
    description: str = ""
    num_observations: int = 100

    # --- model -----------------------------------------------------------------------------

    @property
    def prior(self) -> BoxUniform:
        r"""The uniform prior over the box, with :attr:`parameter_names`."""
        return BoxUniform(self.low, self.high, parameter_names=list(self.parameter_names))

    @property
    def dim(self) -> int:
        r"""Number of parameters :math:`p`."""
        return len(self.low)

    @property
    def simulator(self):
        r"""The simulator as an :class:`~ebm_lfi.simulation.simulator.Simulator` (batched, seeded
        per row)."""
        from ..simulation.simulator import Simulator

        return Simulator(self.simulate_fn, batched=True)

    @property
    def has_reference_posterior(self) -> bool:
        r"""Whether the task has an exact likelihood and stored reference posteriors."""
        return self.log_likelihood_fn is not None

    def _require_likelihood(self, what: str) -> None:
        if self.log_likelihood_fn is None:
            raise ValueError(
                f"task {self.name!r} has no {what}: its likelihood is intractable (check "
                "task.has_reference_posterior); score its posteriors by the posterior "
                "predictive, e.g. ebm_lfi.metrics.energy_score / kernel_score"
            )

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        r"""Exact log-likelihood :math:`\log p(x \mid \theta)`.

        Computed in float64 and returned in the floating dtype of the inputs (on ``theta``'s
        device); ``-inf`` where :math:`x` lies outside :attr:`x_support` or :math:`\theta`
        outside the model's parameter domain (e.g. a non-positive scale). Values of
        :math:`\theta` outside the prior box but valid for the model get their likelihood.

        Arguments:
            theta: Parameters, shape :math:`(n, p)` (or :math:`(p,)`, read as :math:`n = 1`).
            x: One observation of shape ``x_shape`` (broadcast over the :math:`n` rows of
                ``theta``) or a batch :math:`(n, *x\_shape)`; :math:`n` may be 1 on either side.

        Returns:
            Log-likelihoods, shape :math:`(n,)`.

        Raises:
            ValueError: If the task has no tractable likelihood.
        """
        self._require_likelihood("exact likelihood")
        theta_t = torch.as_tensor(theta)
        device = theta_t.device
        x_t = torch.as_tensor(x, device=device)
        dtype = torch.promote_types(theta_t.dtype, x_t.dtype)
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        if theta_t.ndim == 1:
            theta_t = theta_t.unsqueeze(0)
        if theta_t.ndim != 2 or theta_t.shape[-1] != self.dim:
            raise ValueError(
                f"{self.name}: theta must have shape (n, {self.dim}), got {tuple(theta_t.shape)}"
            )
        nd = len(self.x_shape)
        if tuple(x_t.shape) == self.x_shape:
            x_t = x_t.unsqueeze(0)
        if x_t.ndim != nd + 1 or tuple(x_t.shape[1:]) != self.x_shape:
            raise ValueError(
                f"{self.name}: x must have shape {self.x_shape} or (n, *{self.x_shape}), "
                f"got {tuple(x_t.shape)}"
            )
        n_theta, n_x = theta_t.shape[0], x_t.shape[0]
        if n_theta != n_x and 1 not in (n_theta, n_x):
            raise ValueError(
                f"{self.name}: theta has {n_theta} rows but x has {n_x}; they must match "
                "or one of them must be 1"
            )
        out = self.log_likelihood_fn(theta_t.to(torch.float64), x_t.to(torch.float64))
        return out.expand(max(n_theta, n_x)).to(dtype)

    def sufficient_statistics(self, x: Tensor) -> Tensor | None:
        r"""Sufficient statistics :math:`s(x)` of the exponential family, or ``None``.

        Arguments:
            x: Simulations, shape :math:`(*, *x\_shape)`.

        Returns:
            Statistics, shape :math:`(*, k)`, in ``x``'s floating dtype; ``None`` for tasks
            that are not exponential families in :math:`\theta` (MA(2)).
        """
        if self.statistics_fn is None:
            return None
        x_t = torch.as_tensor(x)
        if not x_t.dtype.is_floating_point:
            x_t = x_t.to(torch.get_default_dtype())
        nd = len(self.x_shape)
        if x_t.ndim < nd or tuple(x_t.shape[x_t.ndim - nd :]) != self.x_shape:
            raise ValueError(
                f"{self.name}: x must have shape (*, *{self.x_shape}), got {tuple(x_t.shape)}"
            )
        batch = x_t.shape[: x_t.ndim - nd]
        flat = x_t.reshape(-1, *self.x_shape).to(torch.float64)
        s = self.statistics_fn(flat)
        return s.reshape(*batch, s.shape[-1]).to(x_t.dtype)

    # --- stored data -----------------------------------------------------------------------

    @property
    def data_path(self) -> Path:
        r"""Path of this task's data file, ``<data directory>/<name>.npz``."""
        return data_directory() / f"{self.name}.npz"

    def _data(self) -> dict[str, np.ndarray]:
        path = self.data_path
        if not path.is_file():
            raise FileNotFoundError(
                f"no data for task {self.name!r} at {path}; set EBM_LFI_DATA or regenerate "
                "with `python -m ebm_lfi.benchmarks.reference`"
            )
        return _load(str(path), path.stat().st_mtime_ns)

    def observation(self, i: int, dtype: torch.dtype | None = None) -> Tensor:
        r"""The ``i``-th stored observation :math:`x_o`.

        Arguments:
            i: Index in ``0 .. num_observations - 1``.
            dtype: Output dtype (default: torch's default dtype). Stored in float64 (float32
                for the Lorenz96 tasks).

        Returns:
            The observation, shape ``x_shape``.
        """
        i = _check_index(i, self.num_observations)
        x = self._data()["x"][i]
        return torch.as_tensor(x, dtype=dtype or torch.get_default_dtype())

    def true_parameters(self, i: int, dtype: torch.dtype | None = None) -> Tensor:
        r"""The parameters that generated observation ``i`` (drawn from the prior).

        Returns:
            Parameters, shape :math:`(p,)`.
        """
        i = _check_index(i, self.num_observations)
        theta = self._data()["theta"][i]
        return torch.as_tensor(theta, dtype=dtype or torch.get_default_dtype())

    def reference_posterior(self, i: int, dtype: torch.dtype | None = None) -> Tensor:
        r"""Reference posterior samples for observation ``i``.

        Drawn from the exact posterior (uniform prior times exact likelihood) on a refined
        grid; see the data directory's ``README.md``.

        Arguments:
            i: Index in ``0 .. num_observations - 1``.
            dtype: Output dtype (default: torch's default dtype).

        Returns:
            Samples, shape :math:`(m, p)` with :math:`m = 10\,000`.

        Raises:
            ValueError: If the task has no reference posterior (see
                :attr:`has_reference_posterior`).
        """
        self._require_likelihood("reference posterior")
        i = _check_index(i, self.num_observations)
        data = self._data()
        samples = dequantize(data["reference"][i], data["low"], data["high"])
        return torch.as_tensor(samples, dtype=dtype or torch.get_default_dtype())
