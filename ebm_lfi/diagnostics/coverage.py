r"""Expected coverage of credible regions, read off the ranks of a calibration run.

For a credibility level :math:`c \in (0, 1)` the expected coverage is
:math:`\mathbb{E}_{\theta^*, x^*}\, \mathbb{1}[\theta^* \in R_c(x^*)]`, the probability that the
level-:math:`c` region of the posterior given :math:`x^*` contains the parameter that produced
:math:`x^*`. It equals :math:`c` for every :math:`c` when the posterior is calibrated; a curve
below the diagonal means overconfident (too narrow) regions, above means underconfident ones
(Hermans et al. 2022).

With the randomised fractional ranks :math:`u` of :mod:`ebm_lfi.diagnostics.ranks`,
uniform on :math:`(0, 1)` under calibration:

* **central interval** of parameter :math:`j`, between the :math:`(1 - c)/2` and
  :math:`(1 + c)/2` posterior quantiles: :math:`\theta^*_j` lies inside when
  :math:`|u_j - \tfrac12| \le c/2`;
* **highest-density region** (joint, all parameters): :math:`\theta^*` lies inside when the
  fraction of draws denser than it is below :math:`c`, i.e. :math:`u_{\mathrm{hpd}} \le c`.

Both are exactly :math:`c` in expectation under calibration (the randomisation removes the
discreteness of the :math:`L + 1` ranks), so the empirical coverage over :math:`N` observations
is :math:`\mathrm{Binomial}(N, c) / N`; :func:`coverage_band` gives its central band.

References:
    | A Trust Crisis In Simulation-Based Inference? (Hermans et al., 2022)
    | https://arxiv.org/abs/2110.06581
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["expected_coverage", "coverage_band", "plot_coverage", "default_levels"]


def default_levels() -> np.ndarray:
    r"""The levels :math:`0.05, 0.10, \dots, 0.95` and :math:`0.99`."""
    return np.concatenate([np.arange(1, 20) / 20, [0.99]])


def _check_levels(levels: Sequence[float] | np.ndarray | None) -> np.ndarray:
    c = default_levels() if levels is None else np.asarray(levels, dtype=np.float64).reshape(-1)
    if c.size == 0 or not np.all((c > 0) & (c < 1)):
        raise ValueError(f"levels must be in (0, 1), got {c.tolist()}")
    return c


def expected_coverage(
    central: np.ndarray,
    hpd: np.ndarray | None,
    names: Sequence[str],
    levels: Sequence[float] | np.ndarray | None = None,
) -> pd.DataFrame:
    r"""Empirical coverage of central intervals (per parameter) and of the joint HPD region.

    Arguments:
        central: Fractional ranks of the parameters, shape :math:`(N, p)`.
        hpd: Fractional density ranks, shape :math:`(N,)`, or ``None``.
        names: The :math:`p` parameter names.
        levels: Credibility levels in :math:`(0, 1)`, default :func:`default_levels`.

    Returns:
        A DataFrame indexed by ``level`` with one column per parameter (central intervals) and
        a column ``hpd`` (joint highest-density region) when ``hpd`` is given.
    """
    c = _check_levels(levels)
    inside = np.abs(central[:, None, :] - 0.5) <= c[None, :, None] / 2  # (N, K, p)
    table = {name: inside[:, :, j].mean(axis=0) for j, name in enumerate(names)}
    if hpd is not None:
        table["hpd"] = (hpd[:, None] <= c[None, :]).mean(axis=0)
    return pd.DataFrame(table, index=pd.Index(c, name="level"))


def coverage_band(
    levels: Sequence[float] | np.ndarray, num_observations: int, confidence: float = 0.99
) -> tuple[np.ndarray, np.ndarray]:
    r"""Central ``confidence`` band of the empirical coverage of a calibrated posterior.

    Arguments:
        levels: Credibility levels :math:`c`, shape :math:`(K,)`.
        num_observations: :math:`N`.
        confidence: Probability of the band.

    Returns:
        Lower and upper ends, each shape :math:`(K,)`: quantiles of
        :math:`\mathrm{Binomial}(N, c) / N`.
    """
    c = _check_levels(levels)
    tail = (1.0 - confidence) / 2
    lower = stats.binom.ppf(tail, num_observations, c) / num_observations
    upper = stats.binom.ppf(1.0 - tail, num_observations, c) / num_observations
    return lower, upper


def plot_coverage(
    table: pd.DataFrame,
    num_observations: int,
    *,
    confidence: float = 0.99,
    path: str | os.PathLike | None = None,
    figsize: tuple[float, float] = (4.2, 4.0),
) -> Figure:
    r"""Empirical against nominal coverage, with the band of a calibrated posterior.

    Arguments:
        table: A table of :func:`expected_coverage`.
        num_observations: :math:`N`, for the band.
        confidence: Probability of the grey band.
        path: If given, the figure is saved there.
        figsize: Figure size in inches.

    Returns:
        The :class:`matplotlib.figure.Figure` (one axes).
    """
    from matplotlib.figure import Figure

    levels = table.index.to_numpy(dtype=np.float64)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    grid = np.linspace(levels.min(), levels.max(), 200)
    lower, upper = coverage_band(grid, num_observations, confidence)
    ax.fill_between(
        grid, lower, upper, color="0.85", step="mid", label=f"{100 * confidence:g}% band"
    )
    ax.plot([0, 1], [0, 1], color="k", linewidth=1, linestyle=":")
    for k, column in enumerate(table.columns):
        hpd = column == "hpd"
        ax.plot(
            levels,
            table[column].to_numpy(),
            marker="o",
            markersize=3,
            linestyle="--" if hpd else "-",
            color="k" if hpd else f"C{k}",
            label="HPD (joint)" if hpd else f"{column} (central)",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("credibility level")
    ax.set_ylabel("empirical coverage")
    ax.legend(fontsize="small", loc="upper left")
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100)
    return fig
