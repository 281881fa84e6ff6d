r"""Approximate Bayesian computation on (learned) summary statistics.

**Distance.** Statistics are identified only up to an affine map, so each one is divided by
its standard deviation over prior-predictive simulations (:class:`StatisticScaler`) and the
distance is Euclidean on the scaled statistics.

**Rejection ABC** keeps, for each observation, the ``num_samples`` reference-table entries
nearest to it; the tolerance :math:`\epsilon` is the largest kept distance. One reference
table serves any number of observations (amortised), and the search runs in chunks of the
table so memory stays bounded for :math:`10^5`–:math:`10^6` simulations.

**SMC-ABC** (population Monte Carlo ABC, Beaumont et al. 2009, with the adaptive tolerance
of Del Moral et al. 2012). Round 0 draws :math:`N` particles from the prior. At round
:math:`t` the tolerance :math:`\epsilon_t` is the :math:`\alpha`-quantile of the current
(weighted) distances; particles :math:`\theta^\star` are proposed by picking
:math:`\theta_j` with probability :math:`w_j` and perturbing it with
:math:`K = \mathcal{N}(\theta_j, 2 \hat{\Sigma})` (:math:`\hat{\Sigma}` the weighted
covariance of the particles); proposals outside the prior support are rejected without
simulating; a simulated proposal is accepted when its distance is at most
:math:`\epsilon_t`, with importance weight

.. math:: w^\star \propto \frac{\pi(\theta^\star)}{\sum_j w_j K(\theta^\star \mid \theta_j)}.

Sampling stops when a round's acceptance rate falls below ``min_acceptance_rate`` or the
simulation budget is spent (a round cut short by the budget is discarded; the budget is never
exceeded).

**How many table entries to keep** (:func:`auto_num_accepted`). With a kernel of bandwidth
:math:`\epsilon` on :math:`d`-dimensional statistics, the ABC estimate has a bias of order
:math:`\epsilon^2` and, from :math:`m \approx N \epsilon^d` kept entries, a variance of order
:math:`1/m`; balancing the two gives :math:`\epsilon \propto N^{-1/(d+4)}` and
:math:`m \propto N^{4/(d+4)}` (Blum, 2010). We take :math:`d = p`, the number of parameters:
ideal statistics (the posterior mean, Fearnhead & Prangle 2012) have :math:`p` dimensions and
the learned ones are of that order, while the rate in the raw statistic dimension would keep
almost nothing for raw-data statistics. The constant and the clipping are explained at
:func:`auto_num_accepted`.

**Resampling** (:func:`systematic_resample`): a weighted sample of :math:`m` draws becomes
:math:`n` equally weighted ones with one uniform number, draw :math:`i` taking the row whose
cumulative weight first reaches :math:`(i + U)/n`; each row is taken
:math:`\lfloor n w_i \rfloor` or :math:`\lceil n w_i \rceil` times, the least noise an
unbiased resampler can add (Kitagawa, 1996).

References:
    | Adaptive approximate Bayesian computation (Beaumont et al., 2009)
    | https://arxiv.org/abs/0805.2256

    | An adaptive sequential Monte Carlo method for approximate Bayesian computation
      (Del Moral et al., 2012) https://doi.org/10.1007/s11222-011-9271-y

    | Approximate Bayesian computation: a nonparametric perspective (Blum, 2010)
      https://arxiv.org/abs/0904.0635

    | Monte Carlo filter and smoother for non-Gaussian nonlinear state space models
      (Kitagawa, 1996) https://doi.org/10.1080/10618600.1996.10474692
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm.auto import tqdm

from ._prior import prior_log_prob, prior_sample
from .mcmc import make_generator

__all__ = [
    "StatisticScaler",
    "RejectionABCResult",
    "rejection_abc",
    "SMCABCResult",
    "smc_abc",
    "auto_num_accepted",
    "systematic_resample",
]

logger = logging.getLogger(__name__)


class StatisticScaler:
    r"""Divides each summary statistic by its standard deviation.

    Arguments:
        scale: Optional known scales, shape :math:`(k,)`; otherwise call :meth:`fit`.

    Example:
        >>> stats = torch.randn(1000, 3) * torch.tensor([1.0, 10.0, 100.0])
        >>> scaler = StatisticScaler().fit(stats)
        >>> scaler(stats).std(dim=0).allclose(torch.ones(3))
        True
    """

    def __init__(self, scale: Tensor | None = None):
        self.scale = None if scale is None else self._checked(torch.as_tensor(scale))

    @staticmethod
    def _checked(scale: Tensor) -> Tensor:
        if scale.ndim != 1 or not bool((scale > 0).all()) or not bool(scale.isfinite().all()):
            raise ValueError(
                f"scale must be a 1-D tensor of positive finite values, got shape "
                f"{tuple(scale.shape)}"
            )
        return scale

    def fit(self, stats: Tensor) -> StatisticScaler:
        r"""Sets the scales to the standard deviations of prior-predictive statistics.

        Arguments:
            stats: Statistics of prior-predictive simulations, shape :math:`(n, k)`,
                :math:`n \geq 2`. Constant statistics get scale 1.

        Returns:
            The scaler itself.
        """
        stats = torch.as_tensor(stats)
        if stats.ndim != 2 or stats.shape[0] < 2:
            raise ValueError(f"stats must have shape (n >= 2, k), got {tuple(stats.shape)}")
        std = stats.detach().std(dim=0)
        if not bool(std.isfinite().all()):
            raise ValueError("stats contain NaN or inf values")
        constant = std <= 0
        if bool(constant.any()):
            logger.warning("%d constant statistics get scale 1", int(constant.sum()))
        self.scale = torch.where(constant, torch.ones_like(std), std)
        return self

    def __call__(self, stats: Tensor) -> Tensor:
        r"""Scales statistics of shape :math:`(*, k)`."""
        if self.scale is None:
            raise RuntimeError("StatisticScaler is not fitted; call fit(stats) first")
        stats = torch.as_tensor(stats)
        if stats.shape[-1:] != self.scale.shape:
            raise ValueError(
                f"stats must have shape (*, {self.scale.shape[0]}), got {tuple(stats.shape)}"
            )
        return stats / self.scale.to(dtype=stats.dtype, device=stats.device)

    def __repr__(self) -> str:
        return f"StatisticScaler(scale={None if self.scale is None else self.scale.tolist()})"


def _scaler(scale: StatisticScaler | Tensor | None, reference: Tensor) -> StatisticScaler:
    if scale is None:
        return StatisticScaler().fit(reference)
    if isinstance(scale, StatisticScaler):
        return scale
    return StatisticScaler(torch.as_tensor(scale))


@dataclass(frozen=True)
class RejectionABCResult:
    r"""Output of :func:`rejection_abc`.

    Attributes:
        samples: Accepted parameters, shape :math:`(m, s, p)` (one row per observation).
        distances: Their distances, shape :math:`(m, s)`, sorted ascending.
        indices: Their rows in the reference table, shape :math:`(m, s)`.
        epsilon: Tolerance of each observation (largest kept distance), shape :math:`(m,)`.
    """

    samples: Tensor
    distances: Tensor
    indices: Tensor
    epsilon: Tensor


def rejection_abc(
    theta_table: Tensor,
    stats_table: Tensor,
    stats_obs: Tensor,
    *,
    num_samples: int | None = None,
    quantile: float | None = None,
    scale: StatisticScaler | Tensor | None = None,
    chunk_size: int = 65_536,
    progress: bool = False,
) -> RejectionABCResult:
    r"""Rejection ABC on a reference table, for one or many observations at once.

    Arguments:
        theta_table: Parameters of the reference table, shape :math:`(N, p)`.
        stats_table: Their statistics, shape :math:`(N, k)`.
        stats_obs: Observed statistics, shape :math:`(k,)` or :math:`(m, k)`.
        num_samples: Number :math:`s` of nearest entries kept per observation.
        quantile: Alternatively, the kept fraction of the table,
            :math:`s = \lceil q N \rceil`.
        scale: A :class:`StatisticScaler` or scales :math:`(k,)`; ``None`` fits the scaler on
            ``stats_table`` (prior-predictive simulations).
        chunk_size: Table rows compared at once (memory :math:`\propto m \times` chunk).
        progress: Show a progress bar over chunks.

    Returns:
        A :class:`RejectionABCResult`; its leading dimension is :math:`m` (1 for a single
        observation).
    """
    theta_table = torch.as_tensor(theta_table)
    stats_table = torch.as_tensor(stats_table)
    stats_obs = torch.as_tensor(stats_obs)
    if theta_table.ndim != 2 or stats_table.ndim != 2:
        raise ValueError(
            f"theta_table and stats_table must be 2-D (N, p) and (N, k), got "
            f"{tuple(theta_table.shape)} and {tuple(stats_table.shape)}"
        )
    n, k = stats_table.shape
    if theta_table.shape[0] != n:
        raise ValueError(f"theta_table has {theta_table.shape[0]} rows but stats_table has {n}")
    if stats_obs.ndim == 1:
        stats_obs = stats_obs.unsqueeze(0)
    if stats_obs.ndim != 2 or stats_obs.shape[1] != k:
        raise ValueError(
            f"stats_obs must have shape ({k},) or (m, {k}), got {tuple(stats_obs.shape)}"
        )
    if (num_samples is None) == (quantile is None):
        raise ValueError("give exactly one of num_samples and quantile")
    if quantile is not None:
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        num_samples = max(1, math.ceil(quantile * n - 1e-9))
    if not 1 <= num_samples <= n:
        raise ValueError(f"num_samples must be in [1, {n}], got {num_samples}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")

    scaler = _scaler(scale, stats_table)
    dtype = torch.promote_types(stats_table.dtype, stats_obs.dtype)
    obs = scaler(stats_obs.to(device=stats_table.device, dtype=dtype))
    m = obs.shape[0]
    best_d = obs.new_empty((m, 0))
    best_i = torch.empty((m, 0), dtype=torch.long, device=obs.device)
    with torch.no_grad():
        for lo in tqdm(range(0, n, chunk_size), disable=not progress, desc="rejection-abc"):
            chunk = scaler(stats_table[lo : lo + chunk_size].to(dtype))
            d = torch.cdist(obs, chunk, compute_mode="donot_use_mm_for_euclid_dist")
            idx = torch.arange(lo, lo + chunk.shape[0], device=obs.device).expand(m, -1)
            cand_d = torch.cat([best_d, d], dim=1)
            cand_i = torch.cat([best_i, idx], dim=1)
            keep = min(num_samples, cand_d.shape[1])
            best_d, pos = torch.topk(cand_d, keep, dim=1, largest=False, sorted=True)
            best_i = torch.gather(cand_i, 1, pos)
    return RejectionABCResult(
        samples=theta_table[best_i],
        distances=best_d,
        indices=best_i,
        epsilon=best_d[:, -1],
    )


def auto_num_accepted(
    table_size: int, num_parameters: int, *, constant: float = 2.0, minimum: int = 100
) -> int:
    r"""Number of reference-table entries to keep: :math:`m = c\, N^{4/(p+4)}`, clipped.

    The rate is the bias–variance balance of kernel ABC (module docstring). The result is
    clipped to :math:`[\min(N, 100), \max(\min(N, 100), \lfloor N/10 \rfloor)]`: fewer
    than about a hundred draws give a noisy posterior whatever the tolerance, and beyond 10 %
    of the table the tolerance is so wide that even the regression adjustment (which removes
    the first-order effect of the tolerance) leaves a visible bias. :math:`c = 2` keeps about
    4 % of :math:`10^5` simulations for :math:`p = 2`; on the beta, gamma, gaussian and
    MA(2) benchmarks, adjusted samples from 3–10 % of a :math:`10^5` table were as close to the
    reference posterior as, or closer than, the 1 % nearest unadjusted.

    ================  ========  ========  ========
    :math:`p`         N = 1e4   N = 1e5   N = 1e6
    ================  ========  ========  ========
    1                 1000      10000     100000
    2                 928       4309      20000
    3                 386       1439      5365
    5                 120       334       928
    ================  ========  ========  ========

    Arguments:
        table_size: Reference-table size :math:`N \geq 1`.
        num_parameters: Parameter dimension :math:`p \geq 1`.
        constant: The constant :math:`c`.
        minimum: The lower clip (100).

    Returns:
        :math:`m`, between 1 and :math:`N`.

    Example:
        >>> auto_num_accepted(100_000, 2)
        4309
    """
    if table_size < 1 or num_parameters < 1:
        raise ValueError(
            f"table_size and num_parameters must be positive, got {table_size}, {num_parameters}"
        )
    if not constant > 0 or minimum < 1:
        raise ValueError(f"need constant > 0 and minimum >= 1, got {constant}, {minimum}")
    rate = constant * table_size ** (4.0 / (num_parameters + 4.0))
    low = min(table_size, minimum)
    high = max(low, table_size // 10)
    return int(min(max(round(rate), low), high))


def systematic_resample(
    weights: Tensor, num_samples: int, *, generator: torch.Generator | None = None
) -> Tensor:
    r"""Indices of a systematic resample of a weighted sample.

    Arguments:
        weights: Non-negative weights, shape :math:`(m,)`, not all zero (normalised here).
        num_samples: Number :math:`n` of indices to draw.
        generator: Source of the one uniform number (torch's global generator if ``None``).

    Returns:
        Indices into the weighted sample, shape :math:`(n,)`, in increasing order: row
        :math:`i` appears :math:`\lfloor n w_i \rfloor` or :math:`\lceil n w_i \rceil` times.

    Example:
        >>> systematic_resample(torch.tensor([0.5, 0.25, 0.25]), 4).tolist()
        [0, 0, 1, 2]
    """
    weights = torch.as_tensor(weights)
    if weights.ndim != 1 or weights.numel() == 0:
        raise ValueError(f"weights must have shape (m,), got {tuple(weights.shape)}")
    if num_samples < 0:
        raise ValueError(f"num_samples must be non-negative, got {num_samples}")
    w = weights.detach().to(torch.float64)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not bool(w.sum() > 0):
        raise ValueError("weights must be finite, non-negative and not all zero")
    cum = torch.cumsum(w, 0)
    cum = cum / cum[-1]  # ends at exactly 1: trailing zero-weight rows are never drawn
    device = generator.device if generator is not None else w.device
    u = torch.rand((), generator=generator, dtype=torch.float64, device=device).to(w.device)
    positions = (torch.arange(num_samples, dtype=torch.float64, device=w.device) + u) / max(
        num_samples, 1
    )
    return torch.searchsorted(cum, positions, right=True).clamp_(max=w.numel() - 1)


@dataclass(frozen=True)
class SMCABCResult:
    r"""Output of :func:`smc_abc`.

    Attributes:
        particles: Final population, shape :math:`(N, p)`.
        weights: Their normalised importance weights, shape :math:`(N,)`.
        distances: Their distances to the observation, shape :math:`(N,)`.
        epsilon: Tolerance of each completed round, shape :math:`(T,)` (round 0: ``inf``).
        acceptance_rate: Accepted / simulated in each completed round, shape :math:`(T,)`.
        simulations_per_round: Simulations of each completed round, shape :math:`(T,)`.
        simulations: All simulations run, a discarded last round included.
        stop_reason: ``"acceptance"``, ``"budget"`` or ``"max_rounds"``.
        statistics: Unscaled statistics of the final population, shape :math:`(N, k)`.
    """

    particles: Tensor
    weights: Tensor
    distances: Tensor
    epsilon: Tensor
    acceptance_rate: Tensor
    simulations_per_round: Tensor
    simulations: int
    stop_reason: str
    statistics: Tensor | None = None

    @property
    def ess(self) -> float:
        r"""Effective sample size :math:`1 / \sum_i w_i^2` of the weights."""
        return float(1.0 / (self.weights**2).sum())


def _weighted_quantile(values: Tensor, weights: Tensor, q: float) -> Tensor:
    order = torch.argsort(values)
    cum = torch.cumsum(weights[order], 0)
    pos = int(torch.searchsorted(cum, q * cum[-1]).clamp(max=values.numel() - 1))
    return values[order[pos]]


def _log_kernel_mixture(
    new: Tensor, old: Tensor, log_w: Tensor, scale_tril: Tensor, chunk: int = 4096
) -> Tensor:
    r""":math:`\log \sum_j w_j K(\theta_i \mid \theta_j)` up to a constant, in row chunks."""
    out = []
    for lo in range(0, new.shape[0], chunk):
        diff = new[lo : lo + chunk, None, :] - old[None, :, :]  # (b, N, p)
        z = torch.linalg.solve_triangular(
            scale_tril, diff.reshape(-1, diff.shape[-1]).T, upper=False
        ).T.reshape(diff.shape)
        out.append(torch.logsumexp(log_w - 0.5 * (z**2).sum(-1), dim=1))
    return torch.cat(out)


def _simulate(fn: Callable[[Tensor], Tensor], theta: Tensor, k: int) -> Tensor:
    stats = torch.as_tensor(fn(theta))
    if stats.shape != (theta.shape[0], k):
        raise ValueError(
            f"simulate_stats must map ({theta.shape[0]}, p) parameters to "
            f"({theta.shape[0]}, {k}) statistics, got {tuple(stats.shape)}"
        )
    return stats.to(device=theta.device)


def smc_abc(
    simulate_stats: Callable[[Tensor], Tensor],
    prior: Distribution,
    stats_obs: Tensor,
    *,
    num_particles: int = 1000,
    alpha: float = 0.5,
    scale: StatisticScaler | Tensor | None = None,
    max_simulations: int = 100_000,
    min_acceptance_rate: float = 0.01,
    max_rounds: int | None = None,
    seed: int | torch.Generator | None = None,
    progress: bool = False,
) -> SMCABCResult:
    r"""Population Monte Carlo ABC with adaptive tolerances.

    Arguments:
        simulate_stats: Maps parameters :math:`(n, p)` to statistics :math:`(n, k)` of one
            simulation each (seeding is the callable's business).
        prior: Prior distribution over :math:`(p,)` vectors.
        stats_obs: Observed statistics, shape :math:`(k,)`.
        num_particles: Population size :math:`N`.
        alpha: Each tolerance is the :math:`\alpha`-quantile of the current distances.
        scale: A :class:`StatisticScaler` or scales :math:`(k,)`; ``None`` fits the scaler on
            the statistics of round 0 (prior-predictive simulations).
        max_simulations: Simulation budget, never exceeded.
        min_acceptance_rate: Stop after a round whose acceptance rate is below this.
        max_rounds: Maximum number of rounds, round 0 included (``None``: no limit).
        seed: Integer seed or :class:`torch.Generator` (proposals and prior draws).
        progress: Show a progress bar over rounds.

    Returns:
        An :class:`SMCABCResult`.
    """
    if not isinstance(prior, Distribution):
        raise TypeError(f"prior must be a torch Distribution, got {type(prior).__name__}")
    stats_obs = torch.as_tensor(stats_obs)
    if stats_obs.ndim != 1:
        raise ValueError(f"stats_obs must have shape (k,), got {tuple(stats_obs.shape)}")
    if num_particles < 2 or not 0 < alpha < 1:
        raise ValueError(f"need num_particles >= 2 and 0 < alpha < 1, got {num_particles}, {alpha}")
    if max_simulations < num_particles:
        raise ValueError(
            f"max_simulations ({max_simulations}) must be at least num_particles ({num_particles})"
        )
    if max_rounds is not None and max_rounds < 1:
        raise ValueError(f"max_rounds must be at least 1, got {max_rounds}")
    k = stats_obs.shape[0]
    generator = make_generator(seed)

    # Round 0: the prior.
    theta = prior_sample(prior, num_particles, generator)
    if theta.ndim != 2:
        raise ValueError(f"prior draws must have shape (n, p), got {tuple(theta.shape)}")
    device, dtype = theta.device, theta.dtype
    if generator.device != device:
        derived = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        generator = make_generator(derived, device)
    p = theta.shape[1]
    stats = _simulate(simulate_stats, theta, k)
    raw = stats
    used = num_particles
    scaler = _scaler(scale, stats)
    obs = scaler(stats_obs.to(device=device, dtype=stats.dtype))
    dist = torch.linalg.vector_norm(scaler(stats) - obs, dim=-1)
    weights = torch.full((num_particles,), 1.0 / num_particles, dtype=dtype, device=device)
    epsilons, rates, sims = [math.inf], [1.0], [num_particles]
    stop_reason = "max_rounds"

    bar = tqdm(disable=not progress, desc="smc-abc", unit="round")
    while max_rounds is None or len(epsilons) < max_rounds:
        eps = float(_weighted_quantile(dist, weights, alpha))
        mean = weights @ theta
        centred = theta - mean
        cov = 2.0 * (centred.T * weights) @ centred / (1.0 - (weights**2).sum())
        eye = torch.eye(p, dtype=dtype, device=device)
        cov = cov + 1e-12 * cov.diagonal().mean().clamp_min(1e-30) * eye
        scale_tril = torch.linalg.cholesky(cov)
        log_w = torch.log(weights)

        new_theta, new_dist, new_raw, round_sims, accepted = [], [], [], 0, 0
        rate_guess, empty_batches = alpha, 0
        while accepted < num_particles:
            remaining = max_simulations - used
            if remaining <= 0:
                break
            if empty_batches > 1000:
                raise RuntimeError("1000 batches of proposals in a row fell outside the prior")
            want = math.ceil(1.2 * (num_particles - accepted) / max(rate_guess, 1e-3))
            batch = int(min(max(want, 64), 20 * num_particles))
            ancestors = torch.multinomial(weights, batch, replacement=True, generator=generator)
            noise = torch.randn((batch, p), generator=generator, dtype=dtype, device=device)
            proposal = theta[ancestors] + noise @ scale_tril.T
            inside = torch.isfinite(prior_log_prob(prior, proposal))
            proposal = proposal[inside][:remaining]
            if proposal.shape[0] == 0:
                empty_batches += 1
                continue
            empty_batches = 0
            proposal_stats = _simulate(simulate_stats, proposal, k)
            d = torch.linalg.vector_norm(scaler(proposal_stats) - obs, dim=-1)
            used += proposal.shape[0]
            round_sims += proposal.shape[0]
            ok = d <= eps
            new_theta.append(proposal[ok])
            new_dist.append(d[ok])
            new_raw.append(proposal_stats[ok])
            accepted += int(ok.sum())
            rate_guess = max(accepted, 1) / round_sims
        if accepted < num_particles:
            stop_reason = "budget"
            break
        new_theta_t = torch.cat(new_theta)[:num_particles]
        dist = torch.cat(new_dist)[:num_particles]
        raw = torch.cat(new_raw)[:num_particles]
        log_new = prior_log_prob(prior, new_theta_t) - _log_kernel_mixture(
            new_theta_t, theta, log_w, scale_tril
        )
        theta, weights = new_theta_t, torch.softmax(log_new, dim=0)
        epsilons.append(eps)
        rates.append(accepted / round_sims)
        sims.append(round_sims)
        bar.update(1)
        bar.set_postfix(eps=f"{eps:.3g}", rate=f"{rates[-1]:.3f}")
        if rates[-1] < min_acceptance_rate:
            stop_reason = "acceptance"
            break
        if used >= max_simulations:
            stop_reason = "budget"
            break
    bar.close()
    return SMCABCResult(
        particles=theta,
        weights=weights,
        distances=dist,
        epsilon=torch.tensor(epsilons, dtype=dtype),
        acceptance_rate=torch.tensor(rates, dtype=dtype),
        simulations_per_round=torch.tensor(sims),
        simulations=used,
        stop_reason=stop_reason,
        statistics=raw,
    )
