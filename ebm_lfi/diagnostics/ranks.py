r"""Rank statistics of a true parameter among posterior draws, and tests of their uniformity.

Simulation-based calibration (Talts et al. 2018) rests on one fact: if
:math:`\theta^* \sim \pi`, :math:`x^* \sim p(x \mid \theta^*)` and
:math:`\theta_1, \dots, \theta_L` are independent draws of the exact posterior
:math:`p(\theta \mid x^*)`, then :math:`\theta^*, \theta_1, \dots, \theta_L` are exchangeable,
so any statistic that treats the :math:`L + 1` points symmetrically ranks :math:`\theta^*`
uniformly on :math:`\{0, \dots, L\}`. Two such ranks are computed here.

* **Marginal rank** of parameter :math:`j`:
  :math:`r_j = \#\{l : \theta_{lj} < \theta^*_j\} + T`, with ties broken at random
  (:math:`T` uniform on :math:`\{0, \dots, \#\{l : \theta_{lj} = \theta^*_j\}\}`).
* **Density rank** (for highest-density regions): every point :math:`z_k` of the pooled set
  :math:`\{\theta^*, \theta_1, \dots, \theta_L\}` gets the leave-one-out Gaussian
  kernel density :math:`q_k = \sum_{i : z_i \ne z_k} \exp(-\tfrac12 \|H^{-1/2}(z_k - z_i)\|^2)`,
  with :math:`H = h^2 \hat\Sigma`, :math:`\hat\Sigma` the covariance of the pooled set and
  :math:`h = (L + 1)^{-1/(p + 4)}` (Scott's rule). Then
  :math:`r_{\mathrm{hpd}} = \#\{l : q_l > q_0\}` (ties broken at random) is the number of draws
  denser than :math:`\theta^*`: :math:`\theta^*` lies in the estimated highest-density region
  of credibility :math:`c` when :math:`r_{\mathrm{hpd}} < c L`. Because the densities are a
  permutation-equivariant function of the pooled set, :math:`r_{\mathrm{hpd}}` is exactly
  uniform under calibration, however rough the kernel estimate. A weighted sample, or one
  with repeated draws (resampled), breaks that symmetry; :func:`split_density_rank` then
  estimates the density on one half of the distinct draws and ranks :math:`\theta^*` among
  draws resampled from the other half.

Each rank also gets a randomised fractional version :math:`u = (r + V) / (L + 1)` with
:math:`V \sim U(0, 1)`, exactly :math:`U(0, 1)` under calibration; the Kolmogorov-Smirnov test and
the coverage curves (:mod:`ebm_lfi.diagnostics.coverage`) use it.

Uniformity tests (:func:`uniformity_table`): Pearson's :math:`\chi^2` on the ranks binned into
:math:`B` bins of consecutive ranks (expected counts from the exact number of ranks per bin), and
the KS test of :math:`u` against :math:`U(0, 1)`. No correction for testing several parameters.

References:
    | Validating Bayesian Inference Algorithms with Simulation-Based Calibration
    | (Talts et al., 2018)
    | https://arxiv.org/abs/1804.06788
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special, stats

__all__ = [
    "marginal_ranks",
    "density_rank",
    "split_density_rank",
    "fractional",
    "bin_ranks",
    "uniformity_table",
    "default_bins",
]


def _tie_break(below: np.ndarray, ties: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r"""``below + T`` with :math:`T` uniform on :math:`\{0, \dots, \mathrm{ties}\}`."""
    extra = np.floor(rng.random(below.shape) * (ties + 1)).astype(np.int64)
    return below.astype(np.int64) + np.minimum(extra, ties)


def marginal_ranks(draws: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r"""Rank of each coordinate of ``truth`` among the draws, ties broken at random.

    Arguments:
        draws: Posterior draws, shape :math:`(L, p)`.
        truth: The true parameter, shape :math:`(p,)`.
        rng: Generator of the tie-breaking.

    Returns:
        Ranks in :math:`\{0, \dots, L\}`, shape :math:`(p,)`, dtype ``int64``.
    """
    below = (draws < truth).sum(axis=0)
    ties = (draws == truth).sum(axis=0)
    return _tie_break(below, ties, rng)


def _whitening(points: np.ndarray, weights: np.ndarray, size: float) -> np.ndarray | None:
    r"""Cholesky factor of the kernel covariance :math:`h^2 \hat\Sigma` (weighted covariance,
    Scott's :math:`h = \mathrm{size}^{-1/(p+4)}`), or ``None`` if the points do not spread."""
    p = points.shape[1]
    mean = weights @ points
    centred = points - mean
    cov = (centred * weights[:, None]).T @ centred / max(1.0 - float(weights @ weights), 1e-12)
    scale = np.trace(cov) / p
    if not scale > 0:
        return None
    cov = cov + 1e-10 * scale * np.eye(p)
    return np.linalg.cholesky(cov * size ** (-2.0 / (p + 4)))


def _log_kde(
    centres: np.ndarray, weights: np.ndarray, queries: np.ndarray, exclude_equal: bool
) -> np.ndarray:
    r"""Log of :math:`\sum_i w_i \exp(-\frac12 \|c_i - z\|^2)` at each (whitened) query
    :math:`z`, leaving out the centres equal to :math:`z` if ``exclude_equal``."""
    out = np.empty(len(queries))
    sq_c, log_w = (centres**2).sum(axis=1), np.log(weights)
    for start in range(0, len(queries), 1024):  # O(1024 n) memory
        block = queries[start : start + 1024]
        dist = (block**2).sum(axis=1)[:, None] + sq_c[None, :] - 2.0 * block @ centres.T
        dist = np.maximum(dist, 0.0)
        if exclude_equal:
            same = np.all(block[:, None, :] == centres[None, :, :], axis=2)
            dist = np.where(same, np.inf, dist)
        out[start : start + 1024] = special.logsumexp(log_w[None, :] - 0.5 * dist, axis=1)
    return out


def _rank_above(values: np.ndarray, value: float, rng: np.random.Generator) -> int:
    below = np.array([(values > value).sum()])
    ties = np.array([(values == value).sum()])
    return int(_tie_break(below, ties, rng)[0])


def density_rank(draws: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> int:
    r"""Number of draws with a higher leave-one-out kernel density than ``truth`` (pooled).

    Exactly uniform on :math:`\{0, \dots, L\}` when ``truth`` and the draws are exchangeable
    (independent draws of the exact posterior); see the module docstring. The cost is
    :math:`O(L^2 p)`. Draws should be distinct: use :func:`split_density_rank` for resampled
    draws.

    Arguments:
        draws: Posterior draws, shape :math:`(L, p)`.
        truth: The true parameter, shape :math:`(p,)`.
        rng: Generator of the tie-breaking.

    Returns:
        A rank in :math:`\{0, \dots, L\}`.
    """
    z = np.concatenate([truth[None], draws], axis=0).astype(np.float64)
    n = len(z)
    chol = _whitening(z, np.full(n, 1.0 / n), n)
    if chol is None:  # every point identical: all densities tie
        return _rank_above(np.zeros(n - 1), 0.0, rng)
    w = np.linalg.solve(chol, z.T).T
    log_q = _log_kde(w, np.ones(n), w, exclude_equal=True)
    return _rank_above(log_q[1:], log_q[0], rng)


def split_density_rank(
    points: np.ndarray,
    weights: np.ndarray | None,
    truth: np.ndarray,
    num_samples: int,
    rng: np.random.Generator,
) -> int:
    r"""Density rank of ``truth`` for a weighted sample or one with repeated draws.

    Repeated points are merged (weights added). A random half :math:`A` of the distinct
    points gives a weighted Gaussian kernel density :math:`q_A` (bandwidth by Scott's rule
    with Kish's effective size of :math:`A`); :math:`L` draws are resampled by weight from the
    other half :math:`B`, and the rank is the number of them with :math:`q_A` above
    :math:`q_A(\theta^*)`. As :math:`q_A` does not depend on :math:`B` nor on :math:`\theta^*`,
    the rank is uniform whenever the resampled draws are posterior draws, the same
    approximation as for the marginal ranks of a weighted sample.

    Arguments:
        points: Posterior draws, shape :math:`(n, p)`.
        weights: Their weights, shape :math:`(n,)`, or ``None`` for equal weights.
        truth: The true parameter, shape :math:`(p,)`.
        num_samples: :math:`L`.
        rng: Generator of the split, the resampling and the tie-breaking.

    Returns:
        A rank in :math:`\{0, \dots, L\}`.
    """
    w = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64)
    unique, inverse = np.unique(points, axis=0, return_inverse=True)
    merged = np.bincount(inverse.reshape(-1), weights=w, minlength=len(unique))
    keep = merged > 0
    unique, merged = unique[keep], merged[keep]
    if len(unique) < 2:  # one point: every density ties
        return _rank_above(np.zeros(num_samples), 0.0, rng)
    order = rng.permutation(len(unique))
    half = (len(unique) + 1) // 2
    a, b = order[:half], order[half:]
    wa = merged[a] / merged[a].sum()
    chol = _whitening(unique[a], wa, 1.0 / float(wa @ wa))
    if chol is None:
        chol = _whitening(unique, merged / merged.sum(), len(unique))
    if chol is None:
        return _rank_above(np.zeros(num_samples), 0.0, rng)
    wb = merged[b] / merged[b].sum()
    draws = unique[b][rng.choice(len(b), num_samples, replace=True, p=wb)]
    centres = np.linalg.solve(chol, unique[a].T).T
    queries = np.linalg.solve(chol, np.concatenate([truth[None], draws]).T).T
    log_q = _log_kde(centres, wa, queries, exclude_equal=False)
    return _rank_above(log_q[1:], log_q[0], rng)


def fractional(ranks: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    r"""Randomised fractional ranks :math:`u = (r + V) / (L + 1)`, :math:`V \sim U(0, 1)`."""
    return (ranks + rng.random(np.shape(ranks))) / (num_samples + 1)


def default_bins(num_observations: int, num_samples: int) -> int:
    r"""Bins of a rank histogram: about 20 expected counts per bin, between 2 and 50, and no
    more than the :math:`L + 1` possible ranks."""
    return int(max(2, min(50, num_observations // 20, num_samples + 1)))


def bin_ranks(
    ranks: np.ndarray, num_samples: int, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Counts of ranks in ``bins`` bins of consecutive ranks.

    Rank :math:`r` goes to bin :math:`\lfloor r B / (L + 1) \rfloor`; when :math:`B` does not
    divide :math:`L + 1` the bins hold unequal numbers of ranks, accounted for exactly.

    Arguments:
        ranks: Ranks in :math:`\{0, \dots, L\}`, shape :math:`(N, m)`.
        num_samples: :math:`L`.
        bins: :math:`B \le L + 1`.

    Returns:
        Counts, shape :math:`(B, m)`; the probability of each bin under uniformity, shape
        :math:`(B,)`; and the bin edges in rank units, shape :math:`(B + 1,)`.
    """
    if not 2 <= bins <= num_samples + 1:
        raise ValueError(f"bins must be in [2, L + 1 = {num_samples + 1}], got {bins}")
    ranks = np.asarray(ranks).reshape(len(ranks), -1)
    index = ranks * bins // (num_samples + 1)
    counts = np.stack([np.bincount(col, minlength=bins) for col in index.T], axis=1)
    per_bin = np.bincount(np.arange(num_samples + 1) * bins // (num_samples + 1), minlength=bins)
    edges = np.concatenate([[0], np.cumsum(per_bin)]) - 0.5
    return counts, per_bin / (num_samples + 1), edges


def uniformity_table(
    ranks: np.ndarray,
    fractions: np.ndarray,
    num_samples: int,
    names: list[str],
    bins: int | None = None,
) -> pd.DataFrame:
    r"""Per-column tests of the uniformity of ranks.

    Arguments:
        ranks: Ranks in :math:`\{0, \dots, L\}`, shape :math:`(N, m)`.
        fractions: Their randomised fractional versions, shape :math:`(N, m)`.
        num_samples: :math:`L`.
        names: The :math:`m` row names.
        bins: Number of bins of the :math:`\chi^2` test, default :func:`default_bins`.

    Returns:
        A DataFrame indexed by ``names`` with columns ``chi2``, ``df``, ``chi2_pvalue``,
        ``ks``, ``ks_pvalue``, ``mean`` and ``sd`` of the fractional ranks (:math:`1/2` and
        :math:`1/\sqrt{12} \approx 0.289` under uniformity: a mean off :math:`1/2` means bias,
        a larger sd an overconfident posterior, a smaller one an underconfident one) and
        ``bins``.
    """
    n = len(ranks)
    bins = default_bins(n, num_samples) if bins is None else int(bins)
    counts, prob, _ = bin_ranks(ranks, num_samples, bins)
    expected = n * prob[:, None]
    chi2 = ((counts - expected) ** 2 / expected).sum(axis=0)
    df = bins - 1
    rows = []
    for j in range(len(names)):
        ks = stats.kstest(fractions[:, j], "uniform")
        rows.append(
            {
                "chi2": float(chi2[j]),
                "df": df,
                "chi2_pvalue": float(stats.chi2.sf(chi2[j], df)),
                "ks": float(ks.statistic),
                "ks_pvalue": float(ks.pvalue),
                "mean": float(fractions[:, j].mean()),
                "sd": float(fractions[:, j].std(ddof=1)) if n > 1 else float("nan"),
                "bins": bins,
            }
        )
    return pd.DataFrame(rows, index=pd.Index(names, name="parameter"))
