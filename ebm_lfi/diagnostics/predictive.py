r"""Posterior predictive checks: could the fitted model have produced the observation?

Draw :math:`\theta_i` from the posterior given :math:`x_o`, simulate
:math:`x_i \sim p(x \mid \theta_i)`, :math:`i = 1, \dots, n`, and compare statistics
:math:`T(x_i)` with :math:`T(x_o)` (Gelman, Meng & Stern 1996). For each statistic the table
reports the predictive mean and sd, the quantile of the observed value,

.. math:: q = \frac{\#\{i : T(x_i) < T(x_o)\} + \tfrac12 \#\{i : T(x_i) = T(x_o)\}}{n},

and the two-sided Monte Carlo p-value

.. math:: p = \min\Big(1,\ 2 \min\Big(\frac{1 + \#\{T(x_i) \le T(x_o)\}}{n + 1},
    \frac{1 + \#\{T(x_i) \ge T(x_o)\}}{n + 1}\Big)\Big),

which is never below :math:`2/(n + 1)`, so :math:`n` sets the resolution. A small :math:`p`
says the model (prior, simulator and posterior approximation together) rarely reproduces that
feature of the data. Predictive p-values are conservative (they use the data twice) and are not
corrected for testing several statistics.

:func:`predictive_scores` draws the same posterior predictive sample and scores it against
:math:`x_o` by the energy and kernel scores of :mod:`ebm_lfi.metrics` (per time step, summed;
lower is better), the paper's measure where no reference posterior exists.

Statistics: a callable :math:`x\ (n, *x\_shape) \mapsto (n, k)`, a mapping of names to such
callables, a fitted method (its learned ``statistics``), or ``None`` for the mean, sd and
10 %, 50 %, 90 % quantiles of each simulation flattened.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..metrics import energy_score, kernel_score
from ..posterior.posterior import Posterior
from ..simulation.simulate import simulate_at
from ..simulation.simulator import Simulator, root_entropy

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "predictive_check",
    "PredictiveCheck",
    "default_statistics",
    "predictive_scores",
    "PredictiveScores",
]

_QUANTILES = (0.1, 0.5, 0.9)


def default_statistics(x: Tensor) -> Tensor:
    r"""Mean, sd and the 10 %, 50 %, 90 % quantiles of each simulation flattened.

    Arguments:
        x: Simulations, shape :math:`(n, *x\_shape)`.

    Returns:
        Statistics, shape :math:`(n, 5)`.
    """
    flat = x.reshape(x.shape[0], -1).double()
    sd = flat.std(dim=1) if flat.shape[1] > 1 else torch.zeros(flat.shape[0], dtype=flat.dtype)
    q = torch.quantile(flat, torch.tensor(_QUANTILES, dtype=flat.dtype), dim=1).T
    return torch.cat([flat.mean(dim=1, keepdim=True), sd[:, None], q], dim=1)


_DEFAULT_NAMES = ["mean", "sd"] + [f"q{round(100 * q)}" for q in _QUANTILES]


class PredictiveCheck:
    r"""The outcome of :func:`predictive_check`.

    Attributes:
        table: One row per statistic: ``observed``, ``mean`` and ``sd`` of the predictive
            statistics, ``z`` (observed minus mean, over sd), ``quantile`` and ``p_value``
            (see the module docstring).
        observed: The statistics of :math:`x_o`, shape :math:`(k,)`.
        predicted: The statistics of the predictive simulations, shape :math:`(n, k)`.
        theta: The posterior draws simulated from, shape :math:`(n, p)`.
        x: The predictive simulations, shape :math:`(n, *x\_shape)`.
        statistic_names: The :math:`k` names.
    """

    def __init__(
        self, observed: Tensor, predicted: Tensor, theta: Tensor, x: Tensor, names: list[str]
    ):
        self.observed, self.predicted, self.theta, self.x = observed, predicted, theta, x
        self.statistic_names = names
        obs = observed.numpy()
        pred = predicted.numpy()
        n = pred.shape[0]
        below = (pred < obs).sum(axis=0)
        equal = (pred == obs).sum(axis=0)
        mean, sd = pred.mean(axis=0), pred.std(axis=0, ddof=1)
        lower = (1 + below + equal) / (n + 1)
        upper = (1 + n - below) / (n + 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sd > 0, (obs - mean) / sd, np.sign(obs - mean) * np.inf)
        z = np.where((sd == 0) & (obs == mean), 0.0, z)
        self.table = pd.DataFrame(
            {
                "observed": obs,
                "mean": mean,
                "sd": sd,
                "z": z,
                "quantile": (below + 0.5 * equal) / n,
                "p_value": np.minimum(1.0, 2 * np.minimum(lower, upper)),
            },
            index=pd.Index(names, name="statistic"),
        )

    def to_pandas(self) -> pd.DataFrame:
        """The table (a copy)."""
        return self.table.copy()

    def flagged(self, alpha: float = 0.05) -> list[str]:
        r"""Names of the statistics with a predictive p-value below ``alpha``."""
        return [name for name, p in self.table["p_value"].items() if p < alpha]

    def plot(
        self,
        *,
        bins: int = 30,
        path: str | os.PathLike | None = None,
        figsize: tuple[float, float] | None = None,
    ) -> Figure:
        r"""Histograms of the predictive statistics, the observed value as a vertical line.

        Arguments:
            bins: Number of histogram bins.
            path: If given, the figure is saved there.
            figsize: Figure size in inches.

        Returns:
            The :class:`matplotlib.figure.Figure`, one panel per statistic (titled with its
            p-value).
        """
        from matplotlib.figure import Figure

        k = len(self.statistic_names)
        cols = min(k, 4)
        rows = math.ceil(k / cols)
        fig = Figure(figsize=figsize or (3.0 * cols, 2.4 * rows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
        pred, obs = self.predicted.numpy(), self.observed.numpy()
        for j, ax in enumerate(axes):
            if j >= k:
                ax.set_axis_off()
                continue
            ax.hist(pred[:, j], bins=bins, color="C0", alpha=0.7, label="predictive")
            ax.axvline(obs[j], color="k", linewidth=1.5, label="observed")
            p_value = self.table["p_value"].iloc[j]
            ax.set_title(f"{self.statistic_names[j]}  (p = {p_value:.2g})", fontsize="medium")
            ax.set_yticks([])
        axes[0].legend(fontsize="small")
        if path is not None:
            fig.savefig(os.fspath(path), dpi=100)
        return fig

    def __repr__(self) -> str:
        return f"PredictiveCheck(num_simulations={self.predicted.shape[0]},\n{self.table}\n)"


def _as_2d(s: Any, n: int, name: str) -> Tensor:
    t = torch.as_tensor(s).detach().cpu().double()
    if t.ndim == 1 and t.shape[0] == n:
        t = t[:, None]
    if t.ndim != 2 or t.shape[0] != n:
        raise ValueError(
            f"statistics {name} must return shape ({n}, k) for {n} inputs, got {tuple(t.shape)}"
        )
    return t


def _statistics_fn(statistics: Any) -> Callable[[Tensor], tuple[Tensor, list[str]]]:
    r"""A batched function of ``x (n, *x_shape)`` giving the statistics ``(n, k)`` and their
    ``k`` names."""
    if statistics is None:
        return lambda x: (_as_2d(default_statistics(x), x.shape[0], "defaults"), _DEFAULT_NAMES)
    if isinstance(statistics, Mapping):
        fns = dict(statistics)
        bad = [key for key, fn in fns.items() if not callable(fn)]
        if not fns or bad:
            raise TypeError(f"statistics must map names to callables; bad entries: {bad}")

        def combined(x: Tensor) -> tuple[Tensor, list[str]]:
            parts, names = [], []
            for key, fn in fns.items():
                part = _as_2d(fn(x), x.shape[0], repr(key))
                parts.append(part)
                k = part.shape[1]
                names += [str(key)] if k == 1 else [f"{key}[{j}]" for j in range(k)]
            return torch.cat(parts, dim=1), names

        return combined
    if callable(statistics):
        fn, label = statistics, "function"
    elif callable(getattr(statistics, "statistics", None)):
        fn, label = statistics.statistics, f"of {type(statistics).__name__}"
    else:
        raise TypeError(
            "statistics must be None, a callable x -> (n, k), a mapping of names to callables "
            f"or a fitted method with .statistics, got {type(statistics).__name__}"
        )

    def numbered(x: Tensor) -> tuple[Tensor, list[str]]:
        s = _as_2d(fn(x), x.shape[0], label)
        return s, [f"s_{j + 1}" for j in range(s.shape[1])]

    return numbered


def _predictive_draws(
    posterior: Any,
    simulator: Any,
    num_simulations: Any,
    seed: int | None,
    executor: Any,
    on_error: str,
) -> tuple[Tensor, Tensor]:
    r"""Posterior draws :math:`\theta_i` and predictive simulations :math:`x_i`, seeded by
    ``SeedSequence(seed)`` (child 0: the draws, child 1: the simulations); rows whose
    simulation failed are dropped with their draw under ``on_error="drop"``."""
    if not isinstance(posterior, Posterior):
        try:
            posterior = Posterior(posterior)
        except (TypeError, ValueError) as err:
            raise type(err)(f"posterior must be a Posterior or draws (m, p): {err}") from err
    if not isinstance(simulator, Simulator):
        if not callable(simulator):
            raise TypeError(
                f"simulator must be a Simulator or a callable, got {type(simulator).__name__}"
            )
        simulator = Simulator(simulator)
    if (
        isinstance(num_simulations, bool)
        or not isinstance(num_simulations, numbers.Integral)
        or num_simulations < 2
    ):
        raise ValueError(f"num_simulations must be an integer >= 2, got {num_simulations!r}")
    n = int(num_simulations)
    entropy = root_entropy(seed)
    seeds = np.random.SeedSequence(entropy).spawn(2)
    theta = posterior.sample(n, seed=int(seeds[0].generate_state(1, np.uint32)[0]))
    x = simulate_at(
        simulator,
        theta.detach().cpu(),
        seed=int(seeds[1].generate_state(1, np.uint32)[0]),
        executor=executor,
        on_error=on_error,
    )
    if on_error == "drop":
        x, valid = x
        theta = theta[valid.to(theta.device)]
    return theta, x


def predictive_check(
    posterior: Posterior | Tensor | np.ndarray,
    simulator: Simulator | Callable[..., Any],
    x_o: Tensor | np.ndarray,
    *,
    statistics: Any = None,
    num_simulations: int = 200,
    seed: int | None = 0,
    executor: Any = None,
    on_error: str = "raise",
) -> PredictiveCheck:
    r"""Posterior predictive check of ``x_o`` under a posterior.

    Arguments:
        posterior: A :class:`~ebm_lfi.Posterior` (weights respected) or draws of shape
            :math:`(m, p)`.
        simulator: The simulator, as for :func:`ebm_lfi.simulate` (a callable of one
            :math:`\theta` or a :class:`~ebm_lfi.Simulator`).
        x_o: The observation, shape ``x_shape`` (a leading axis of size 1 is accepted).
        statistics: ``None`` (mean, sd, quantiles of x flattened), a callable
            ``x (n, *x_shape) -> (n, k)``, a mapping ``{name: callable}`` or a fitted method
            whose learned ``statistics`` are used.
        num_simulations: Number :math:`n` of predictive simulations.
        seed: Root seed: ``numpy.random.SeedSequence(seed)`` child 0 seeds the posterior
            draws, child 1 the simulations. ``None`` draws a fresh one.
        executor: A :class:`concurrent.futures.Executor` (or a Dask client's executor) to
            run the simulations on; the result is bit-identical to a serial run.
        on_error: ``"raise"`` or ``"drop"``: the policy for failed simulations (a dropped one
            is left out, with its posterior draw; see :func:`ebm_lfi.simulate`).

    Returns:
        A :class:`PredictiveCheck` with the table, the statistics and the simulations.

    Example:
        >>> post = Posterior(torch.randn(500, 1))
        >>> check = predictive_check(post, lambda t, rng: t.numpy() + rng.normal(size=5),
        ...                          torch.zeros(5), num_simulations=100)
        >>> list(check.table.columns)
        ['observed', 'mean', 'sd', 'z', 'quantile', 'p_value']
    """
    fn = _statistics_fn(statistics)
    theta, x = _predictive_draws(posterior, simulator, num_simulations, seed, executor, on_error)
    x_shape = tuple(x.shape[1:])
    x_obs = torch.as_tensor(np.asarray(x_o) if not isinstance(x_o, Tensor) else x_o)
    x_obs = x_obs.detach().cpu().to(x.dtype)
    if tuple(x_obs.shape) == (1, *x_shape):
        x_obs = x_obs[0]
    if tuple(x_obs.shape) != x_shape:
        raise ValueError(
            f"x_o must have the shape of one simulation {x_shape}, got {tuple(x_obs.shape)}"
        )
    with torch.no_grad():
        both = torch.cat([x_obs[None], x], dim=0)
        s, names = fn(both)
    if not torch.isfinite(s).all():
        bad = (~torch.isfinite(s)).any(dim=0).nonzero().flatten().tolist()
        raise ValueError(f"statistics {bad} are NaN or infinite for some simulations")
    return PredictiveCheck(s[0], s[1:], theta, x, names)


class PredictiveScores(NamedTuple):
    r"""The outcome of :func:`predictive_scores` (lower scores are better).

    Attributes:
        energy: The energy score summed over time steps.
        kernel: The Gaussian-kernel score summed over time steps (``None`` without a bandwidth).
        energy_per_step: Per-step energy scores, shape :math:`(T,)`.
        kernel_per_step: Per-step kernel scores, shape :math:`(T,)`, or ``None``.
        theta: The posterior draws simulated from, shape :math:`(n, p)`.
        x: The predictive simulations, shape :math:`(n, T, K)`.
    """

    energy: float
    kernel: float | None
    energy_per_step: np.ndarray
    kernel_per_step: np.ndarray | None
    theta: Tensor
    x: Tensor


def predictive_scores(
    posterior: Posterior | Tensor | np.ndarray,
    simulator: Simulator | Callable[..., Any],
    x_o: Tensor | np.ndarray,
    *,
    bandwidth: float | None = None,
    num_simulations: int = 200,
    seed: int | None = 0,
    executor: Any = None,
    on_error: str = "raise",
) -> PredictiveScores:
    r"""Energy and kernel scores of the posterior predictive of a series at ``x_o``.

    Draws :math:`\theta_i` from the posterior and simulates :math:`x_i \sim p(x \mid
    \theta_i)` (seeded and run on ``executor`` exactly as :func:`predictive_check`, so an
    executor changes nothing), then scores the predictive sample with
    :func:`ebm_lfi.metrics.energy_score` and :func:`ebm_lfi.metrics.kernel_score`.

    Arguments:
        posterior: A :class:`~ebm_lfi.Posterior` (weights respected) or draws :math:`(m, p)`.
        simulator: The simulator (a callable of one :math:`\theta` or a
            :class:`~ebm_lfi.Simulator`) giving series of shape :math:`(T, K)` or :math:`(T,)`.
        x_o: The observed series, shape :math:`(T, K)` or :math:`(T,)`.
        bandwidth: Bandwidth of the Gaussian kernel; ``None`` skips the kernel score.
        num_simulations: Number :math:`n \ge 2` of predictive simulations.
        seed: Root seed (see :func:`predictive_check`).
        executor: A :class:`concurrent.futures.Executor` for the simulations.
        on_error: ``"raise"`` or ``"drop"`` failed simulations.

    Returns:
        A :class:`PredictiveScores`.

    Example:
        >>> post = Posterior(torch.randn(300, 1))
        >>> sim = lambda t, rng: t.numpy() + rng.normal(size=(4, 2))
        >>> out = predictive_scores(post, sim, torch.zeros(4, 2), bandwidth=1.0, num_simulations=50)
        >>> out.energy_per_step.shape, out.kernel is not None
        ((4,), True)
    """
    if bandwidth is not None:
        kernel_score(np.zeros((2, 1)), np.zeros(1), bandwidth)  # check it before simulating
    theta, x = _predictive_draws(posterior, simulator, num_simulations, seed, executor, on_error)
    x_obs = torch.as_tensor(np.asarray(x_o) if not isinstance(x_o, Tensor) else x_o)
    x_obs = x_obs.detach().cpu().to(x.dtype)
    if tuple(x_obs.shape) == (1, *x.shape[1:]):
        x_obs = x_obs[0]
    if tuple(x_obs.shape) != tuple(x.shape[1:]) or x_obs.ndim not in (1, 2):
        raise ValueError(
            "x_o must be a series (T, K) or (T,) of the shape of one simulation "
            f"{tuple(x.shape[1:])}, got {tuple(x_obs.shape)}"
        )
    energy = energy_score(x, x_obs, per_step=True)
    kernel = None if bandwidth is None else kernel_score(x, x_obs, bandwidth, per_step=True)
    return PredictiveScores(
        energy=float(energy.sum()),
        kernel=None if kernel is None else float(kernel.sum()),
        energy_per_step=energy,
        kernel_per_step=kernel,
        theta=theta,
        x=x,
    )
