r"""SMC-ABC: population Monte Carlo ABC with adaptive tolerances.

Population Monte Carlo ABC (Beaumont et al. 2009, with the adaptive tolerance of Del Moral et
al. 2012), on statistics scaled by a :class:`~ebm_lfi.samplers.abc.scaler.StatisticScaler` and
compared by Euclidean distance. Round 0 draws :math:`N` particles from the prior. At round
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

References:
    | Adaptive approximate Bayesian computation (Beaumont et al., 2009)
    | https://arxiv.org/abs/0805.2256

    | An adaptive sequential Monte Carlo method for approximate Bayesian computation
      (Del Moral et al., 2012) https://doi.org/10.1007/s11222-011-9271-y
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution

from ...priors import prior_log_prob, prior_sample
from ...progress import progress_bar
from ..mcmc.driver import make_generator
from .scaler import StatisticScaler, as_scaler

__all__ = ["SMCABCResult", "smc_abc"]


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


class _Population(NamedTuple):
    """Particles (N, p), normalised weights (N,), distances (N,), unscaled statistics (N, k)."""

    theta: Tensor
    weights: Tensor
    distances: Tensor
    statistics: Tensor


Distance = Callable[[Tensor], tuple[Tensor, Tensor]]
"""Simulates at parameters (n, p): their unscaled statistics (n, k) and distances (n,)."""


def _check_arguments(
    prior: Distribution,
    stats_obs: Tensor,
    num_particles: int,
    alpha: float,
    max_simulations: int,
    max_rounds: int | None,
) -> None:
    """Type and range checks of :func:`smc_abc`'s arguments."""
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


def _prior_round(
    simulate_stats: Callable[[Tensor], Tensor],
    prior: Distribution,
    num_particles: int,
    k: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, torch.Generator]:
    """Round 0: :math:`N` prior draws :math:`(N, p)` and their statistics :math:`(N, k)`; the
    generator moves to the device of the draws (seeded from the given one) if it is elsewhere."""
    theta = prior_sample(prior, num_particles, generator)
    if theta.ndim != 2:
        raise ValueError(f"prior draws must have shape (n, p), got {tuple(theta.shape)}")
    if generator.device != theta.device:
        derived = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        generator = make_generator(derived, theta.device)
    return theta, _simulate(simulate_stats, theta, k), generator


def _perturbation_factor(population: _Population) -> Tensor:
    r"""Cholesky factor of :math:`2 \hat\Sigma`, the perturbation kernel's covariance."""
    theta, weights = population.theta, population.weights
    p = theta.shape[1]
    centred = theta - weights @ theta
    cov = 2.0 * (centred.T * weights) @ centred / (1.0 - (weights**2).sum())
    eye = torch.eye(p, dtype=theta.dtype, device=theta.device)
    cov = cov + 1e-12 * cov.diagonal().mean().clamp_min(1e-30) * eye
    return torch.linalg.cholesky(cov)


def _sample_round(
    population: _Population,
    scale_tril: Tensor,
    epsilon: float,
    distance: Distance,
    prior: Distribution,
    budget: int,
    rate_guess: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, int]:
    r"""Proposes, simulates and accepts (distance at most :math:`\epsilon`) until :math:`N`
    particles are accepted or ``budget`` (at least 1) simulations are spent. Batches are sized
    from the acceptance rate seen so far in the round, ``rate_guess`` before the first.

    Returns:
        The accepted particles :math:`(m, p)`, their distances :math:`(m,)` and unscaled
        statistics :math:`(m, k)` (:math:`m \geq N`, or fewer when the budget ran out), and the
        number of simulations run.
    """
    theta, weights = population.theta, population.weights
    n, p = theta.shape
    new_theta, new_dist, new_raw, round_sims, accepted, empty_batches = [], [], [], 0, 0, 0
    while accepted < n:
        remaining = budget - round_sims
        if remaining <= 0:
            break
        if empty_batches > 1000:
            raise RuntimeError("1000 batches of proposals in a row fell outside the prior")
        want = math.ceil(1.2 * (n - accepted) / max(rate_guess, 1e-3))
        batch = int(min(max(want, 64), 20 * n))
        ancestors = torch.multinomial(weights, batch, replacement=True, generator=generator)
        noise = torch.randn((batch, p), generator=generator, dtype=theta.dtype, device=theta.device)
        proposal = theta[ancestors] + noise @ scale_tril.T
        inside = torch.isfinite(prior_log_prob(prior, proposal))
        proposal = proposal[inside][:remaining]
        if proposal.shape[0] == 0:
            empty_batches += 1
            continue
        empty_batches = 0
        proposal_stats, d = distance(proposal)
        round_sims += proposal.shape[0]
        ok = d <= epsilon
        new_theta.append(proposal[ok])
        new_dist.append(d[ok])
        new_raw.append(proposal_stats[ok])
        accepted += int(ok.sum())
        rate_guess = max(accepted, 1) / round_sims
    return torch.cat(new_theta), torch.cat(new_dist), torch.cat(new_raw), round_sims


def _importance_weights(
    theta: Tensor, previous: _Population, scale_tril: Tensor, prior: Distribution
) -> Tensor:
    r"""Normalised :math:`w^\star \propto \pi(\theta^\star) / \sum_j w_j K(\theta^\star \mid
    \theta_j)`."""
    log_w = torch.log(previous.weights)
    log_new = prior_log_prob(prior, theta) - _log_kernel_mixture(
        theta, previous.theta, log_w, scale_tril
    )
    return torch.softmax(log_new, dim=0)


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
            simulation each (seeding is the callable's business). It is called once per batch
            of proposals, in a fixed order, so a callable that seeds each simulation from its
            batch and row (as :meth:`~ebm_lfi.methods.ABCStage.sample` does) may run the
            batch on any executor without changing the result. A row of NaN marks a failed
            simulation: its distance is infinite, so it is never accepted (give ``scale``
            then, as the scaler fitted on round 0 would read the NaN).
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
    _check_arguments(prior, stats_obs, num_particles, alpha, max_simulations, max_rounds)
    stats_obs = torch.as_tensor(stats_obs)
    k = stats_obs.shape[0]
    theta, stats, generator = _prior_round(
        simulate_stats, prior, num_particles, k, make_generator(seed)
    )
    device, dtype = theta.device, theta.dtype
    scaler = as_scaler(scale, stats)
    obs = scaler(stats_obs.to(device=device, dtype=stats.dtype))

    def norm(raw: Tensor) -> Tensor:  # a failed simulation (NaN statistics) is never accepted
        return torch.linalg.vector_norm(scaler(raw) - obs, dim=-1).nan_to_num(math.inf)

    def distance(proposal: Tensor) -> tuple[Tensor, Tensor]:
        proposal_stats = _simulate(simulate_stats, proposal, k)
        return proposal_stats, norm(proposal_stats)

    population = _Population(
        theta,
        torch.full((num_particles,), 1.0 / num_particles, dtype=dtype, device=device),
        norm(stats),
        stats,
    )
    used = num_particles
    epsilons, rates, sims = [math.inf], [1.0], [num_particles]
    stop_reason = "max_rounds"

    bar = progress_bar(enabled=progress, desc="smc-abc", unit="round")
    while max_rounds is None or len(epsilons) < max_rounds:
        if used >= max_simulations:  # round 0 spent the budget
            stop_reason = "budget"
            break
        eps = float(_weighted_quantile(population.distances, population.weights, alpha))
        scale_tril = _perturbation_factor(population)
        new_theta, new_dist, new_stats, round_sims = _sample_round(
            population, scale_tril, eps, distance, prior, max_simulations - used, alpha, generator
        )
        used += round_sims
        accepted = new_theta.shape[0]
        if accepted < num_particles:
            stop_reason = "budget"
            break
        new_theta = new_theta[:num_particles]
        population = _Population(
            new_theta,
            _importance_weights(new_theta, population, scale_tril, prior),
            new_dist[:num_particles],
            new_stats[:num_particles],
        )
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
        particles=population.theta,
        weights=population.weights,
        distances=population.distances,
        epsilon=torch.tensor(epsilons, dtype=dtype),
        acceptance_rate=torch.tensor(rates, dtype=dtype),
        simulations_per_round=torch.tensor(sims),
        simulations=used,
        stop_reason=stop_reason,
        statistics=population.statistics,
    )
