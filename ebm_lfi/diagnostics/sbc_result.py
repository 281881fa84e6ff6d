r"""The outcome of simulation-based calibration: ranks, their tests, coverage and plots.

:class:`SBCResult` holds what :func:`ebm_lfi.diagnostics.sbc` computed per observation (the
ranks of :math:`\theta^*` among the posterior draws, their randomised fractional versions, the
joint density ranks and the posterior mean and sd) and reads the diagnostics off them: tests of
uniformity (:mod:`ebm_lfi.diagnostics.ranks`), rank histograms with the binomial band of a
calibrated posterior, the expected coverage of credible regions
(:mod:`ebm_lfi.diagnostics.coverage`), and next to them the **contraction**
:math:`\bar c_j = \overline{\mathrm{sd}}(\theta_j \mid x^*) / \mathrm{sd}_\pi(\theta_j)`, the
mean posterior sd over the prior sd. Calibration alone cannot tell an informative posterior
from the prior itself (prior draws have exactly uniform ranks); the contraction can: about 1
for a posterior that learned nothing, and for the exact posterior
:math:`\mathbb{E}_x[\mathrm{sd}(\theta_j \mid x)] \le \mathrm{sd}_\pi(\theta_j)` (Jensen
and the law of total variance).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor

from .coverage import expected_coverage, plot_coverage
from .ranks import bin_ranks, default_bins, uniformity_table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["SBCResult", "RankOutcome"]


class RankOutcome(NamedTuple):
    """What one calibration observation gives (internal record of :func:`sbc`)."""

    ranks: np.ndarray  # (p,)
    fractions: np.ndarray  # (p,)
    hpd_rank: int
    hpd_fraction: float
    mean: np.ndarray  # (p,)
    std: np.ndarray  # (p,)
    resampled: bool


class SBCResult:
    r"""The outcome of :func:`~ebm_lfi.diagnostics.sbc`.

    Attributes:
        theta: The true parameters :math:`\theta^*`, shape :math:`(N, p)`.
        x: Their simulations :math:`x^*`, shape :math:`(N, *x\_shape)`.
        ranks: Rank of each :math:`\theta^*_{ij}` among the :math:`L` draws, in
            :math:`\{0, \dots, L\}`, shape :math:`(N, p)`, ``int64``.
        hpd_ranks: Number of draws denser than :math:`\theta^*_i` (kernel estimate), shape
            :math:`(N,)`, or ``None`` when not computed.
        fractions: Randomised fractional ranks :math:`(r + V)/(L + 1)`, shape :math:`(N, p)`.
        hpd_fractions: The same for ``hpd_ranks``, shape :math:`(N,)`, or ``None``.
        posterior_mean: Mean of the :math:`L` draws per observation, shape :math:`(N, p)`.
        posterior_std: Their standard deviation, shape :math:`(N, p)`.
        num_samples: :math:`L`.
        parameter_names: The :math:`p` names.
        num_resampled: Observations whose posterior was resampled or subsampled to :math:`L`.
        prior_std: The prior sd of each parameter, shape :math:`(p,)`, or ``None``.
        seed: The root seed.
        seconds: Wall-clock duration of the run.
    """

    def __init__(
        self,
        *,
        theta: Tensor,
        x: Tensor,
        outcomes: Sequence[RankOutcome],
        num_samples: int,
        parameter_names: Sequence[str],
        seed: int,
        seconds: float,
        hpd: bool,
        prior_std: Tensor | None = None,
    ):
        self.theta = theta
        self.x = x
        self.ranks = torch.as_tensor(np.stack([o.ranks for o in outcomes]), dtype=torch.int64)
        self.fractions = np.stack([o.fractions for o in outcomes])
        self.hpd_ranks = (
            torch.as_tensor([o.hpd_rank for o in outcomes], dtype=torch.int64) if hpd else None
        )
        self.hpd_fractions = np.array([o.hpd_fraction for o in outcomes]) if hpd else None
        self.posterior_mean = torch.as_tensor(np.stack([o.mean for o in outcomes]))
        self.posterior_std = torch.as_tensor(np.stack([o.std for o in outcomes]))
        self.num_samples = int(num_samples)
        self.parameter_names = list(parameter_names)
        self.num_resampled = int(sum(o.resampled for o in outcomes))
        self.seed = int(seed)
        self.seconds = float(seconds)
        self.prior_std = None if prior_std is None else torch.as_tensor(prior_std).double()

    @property
    def contraction(self) -> pd.Series:
        r"""Mean posterior sd over the prior sd, per parameter (NaN without ``prior_std``):
        about 1 for a posterior that learned nothing, however well calibrated."""
        values = self.posterior_std.double().mean(0)
        if self.prior_std is None:
            values = torch.full_like(values, float("nan"))
        else:
            values = values / self.prior_std.to(values)
        return pd.Series(values.numpy(), index=self.parameter_names, name="contraction")

    @property
    def num_observations(self) -> int:
        r"""Number :math:`N` of calibration observations."""
        return int(self.ranks.shape[0])

    def _columns(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        ranks = self.ranks.numpy()
        fractions = self.fractions
        names = list(self.parameter_names)
        if self.hpd_ranks is not None:
            ranks = np.concatenate([ranks, self.hpd_ranks.numpy()[:, None]], axis=1)
            fractions = np.concatenate([fractions, self.hpd_fractions[:, None]], axis=1)
            names.append("hpd")
        return ranks, fractions, names

    def uniformity(self, bins: int | None = None) -> pd.DataFrame:
        r"""Tests of the uniformity of the ranks, one row per parameter (and ``hpd``).

        See :func:`ebm_lfi.diagnostics.ranks.uniformity_table`: :math:`\chi^2` on ``bins``
        bins (default about 20 observations per bin) and Kolmogorov-Smirnov on the randomised
        fractional ranks, with p-values, and the mean and sd of the fractional ranks. The
        ``hpd`` row tests the joint density ranks. p-values are not corrected for multiplicity.
        The column ``contraction`` (:attr:`contraction`; NaN for ``hpd``) says, next to the
        calibration, whether the posterior is any narrower than the prior.

        Arguments:
            bins: Number of bins of the :math:`\chi^2` test.

        Returns:
            A DataFrame indexed by parameter.
        """
        ranks, fractions, names = self._columns()
        table = uniformity_table(ranks, fractions, self.num_samples, names, bins)
        table["contraction"] = self.contraction.reindex(table.index)
        return table

    def coverage(self, levels: Sequence[float] | None = None) -> pd.DataFrame:
        r"""Empirical expected coverage at credibility ``levels``.

        Central intervals per parameter and, when density ranks were computed, the joint
        highest-density region (column ``hpd``); see :mod:`ebm_lfi.diagnostics.coverage`.

        Arguments:
            levels: Levels in :math:`(0, 1)`, default :math:`0.05, 0.10, \dots, 0.95, 0.99`.

        Returns:
            A DataFrame indexed by ``level``, one column per parameter (and ``hpd``).
        """
        return expected_coverage(self.fractions, self.hpd_fractions, self.parameter_names, levels)

    def plot(
        self,
        bins: int | None = None,
        *,
        confidence: float = 0.99,
        path: str | os.PathLike | None = None,
        figsize: tuple[float, float] | None = None,
    ) -> Figure:
        r"""Rank histograms with the ``confidence`` band of the counts under uniformity.

        Bin :math:`b`, holding a fraction :math:`\pi_b` of the :math:`L + 1` ranks, has a
        :math:`\mathrm{Binomial}(N, \pi_b)` count under calibration; the grey band spans its
        central ``confidence`` interval and the line its mean. One panel per parameter, and
        one for the density ranks (``hpd``).

        Arguments:
            bins: Number of bins, default about 20 observations per bin.
            confidence: Probability of the band (per bin).
            path: If given, the figure is saved there.
            figsize: Figure size in inches.

        Returns:
            The :class:`matplotlib.figure.Figure`.
        """
        from matplotlib.figure import Figure

        ranks, _, names = self._columns()
        n, m = ranks.shape
        bins = default_bins(n, self.num_samples) if bins is None else int(bins)
        counts, prob, edges = bin_ranks(ranks, self.num_samples, bins)
        tail = (1.0 - confidence) / 2
        low, high = stats.binom.ppf(tail, n, prob), stats.binom.ppf(1 - tail, n, prob)
        cols = min(m, 4)
        rows = math.ceil(m / cols)
        fig = Figure(figsize=figsize or (3.0 * cols, 2.6 * rows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
        for j, ax in enumerate(axes):
            if j >= m:
                ax.set_axis_off()
                continue
            ax.fill_between(
                edges,
                np.append(low, low[-1]),
                np.append(high, high[-1]),
                step="post",
                color="0.85",
                label=f"{100 * confidence:g}% band",
            )
            ax.stairs(
                counts[:, j],
                edges,
                fill=True,
                alpha=0.7,
                color="k" if j >= len(self.parameter_names) else f"C{j}",
            )
            ax.stairs(n * prob, edges, color="0.3", linewidth=1)
            title = "density rank (joint HPD)" if names[j] == "hpd" else names[j]
            ax.set_title(title, fontsize="medium")
            ax.set_xlabel("rank")
            ax.set_xlim(edges[0], edges[-1])
        axes[0].set_ylabel("count")
        axes[0].legend(fontsize="small", loc="lower right")
        if path is not None:
            fig.savefig(os.fspath(path), dpi=100)
        return fig

    def plot_coverage(
        self,
        levels: Sequence[float] | None = None,
        *,
        confidence: float = 0.99,
        path: str | os.PathLike | None = None,
    ) -> Figure:
        r"""Empirical against nominal coverage (:meth:`coverage`) with the ``confidence``
        band of :math:`\mathrm{Binomial}(N, c)/N`; returns the figure."""
        table = self.coverage(levels)
        return plot_coverage(table, self.num_observations, confidence=confidence, path=path)

    def to_pandas(self) -> pd.DataFrame:
        r"""One row per observation: ``rank_<name>`` (and ``hpd_rank``), ``true_<name>``,
        ``mean_<name>`` and ``std_<name>`` of the posterior draws; index ``observation``."""
        data: dict[str, Any] = {}
        ranks, theta = self.ranks.numpy(), self.theta.detach().cpu().double().numpy()
        for j, name in enumerate(self.parameter_names):
            data[f"rank_{name}"] = ranks[:, j]
        if self.hpd_ranks is not None:
            data["hpd_rank"] = self.hpd_ranks.numpy()
        for prefix, values in (
            ("true", theta),
            ("mean", self.posterior_mean.numpy()),
            ("std", self.posterior_std.numpy()),
        ):
            for j, name in enumerate(self.parameter_names):
                data[f"{prefix}_{name}"] = values[:, j]
        return pd.DataFrame(data, index=pd.RangeIndex(self.num_observations, name="observation"))

    def __repr__(self) -> str:
        table = self.uniformity()
        lines = [
            f"  {name}: chi2 p={row.chi2_pvalue:.3g}, KS p={row.ks_pvalue:.3g}"
            + ("" if math.isnan(row.contraction) else f", contraction {row.contraction:.3g}")
            for name, row in table.iterrows()
        ]
        return (
            f"SBCResult(num_observations={self.num_observations}, "
            f"num_samples={self.num_samples},\n" + "\n".join(lines) + "\n)"
        )
