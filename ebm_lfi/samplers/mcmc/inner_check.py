r"""Has the inner chain of the exchange sampler mixed? A check against a longer chain and
against the simulator.

The exchange sampler (:mod:`ebm_lfi.samplers.mcmc.exchange`) replaces an exact draw from the model
at :math:`\theta'` by the end of a short MCMC chain started at the observation. If the chain is
too short, the auxiliary statistics stay near the observed ones and the sampler targets the
wrong posterior. :func:`inner_chain_check` draws, for parameters :math:`\theta_j`, one auxiliary
sample exactly as the sampler does, one from a chain ``reference_factor`` times longer, and one
simulation, and compares their statistics two ways:

* **Mixing**: the sampler's chain against the longer one. Both target the model, so their
  statistics have the same spread across :math:`j` and paired differences centred at zero
  once the short chain has forgotten its start, whether or not the model fits the simulator.
* **Fit**: the longer chain (the exact draw, for the exact Gaussian kernel) against the
  simulator. A model that misses the simulator at the posterior draws shows here, not as a
  mixing failure: comparing the sampler's chain with the simulator alone (as this check did
  before) blamed the chain for the fit, e.g. on MA(2) with the MALA inner chain.

References:
    | MCMC for doubly-intractable distributions (Murray, Ghahramani & MacKay, 2006)
    | https://arxiv.org/abs/1206.6848
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .driver import make_generator
from .exchange_auxiliary import ExponentialFamily, auxiliary_statistics

__all__ = ["InnerChainCheck", "inner_chain_check"]


class InnerChainCheck(NamedTuple):
    r"""Output of :func:`inner_chain_check`, per statistic (shapes :math:`(k,)`).

    Attributes:
        sd_ratio: Spread of the sampler's auxiliary statistics across the parameters over that
            of the longer chain's, about 1 when the inner chain forgot its start; well below 1
            when the auxiliary draws stay near the observation.
        z: Mean paired difference (sampler's chain minus longer chain) over its standard error,
            about standard normal when the inner chain has mixed.
        mixed: Whether every :math:`|\log \text{sd\_ratio}| \le 3.5 / \sqrt{m - 1}` (about
            3.5 standard errors of a log ratio of two standard deviations from :math:`m` draws
            each) and every :math:`|z| \le 4`. Always true for exact draws.
        fit_sd_ratio: Spread of the longer chain's statistics over the simulator's.
        fit_shift: Mean difference (longer chain minus simulator) in standard deviations of
            the simulator's statistics.
        fits: Whether the model agrees with the simulator at these parameters, both within
            sampling error and to a practical tolerance: every :math:`|\log
            \text{fit\_sd\_ratio}|` within the larger of the band above and
            :math:`\log 1.25`, and every :math:`|\text{fit\_shift}|` within the larger of
            :math:`4 \sqrt{2 / m}` (four standard errors of a paired shift) and 0.25.
    """

    sd_ratio: Tensor
    z: Tensor
    mixed: bool
    fit_sd_ratio: Tensor
    fit_shift: Tensor
    fits: bool


def _agree(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Spread ratio, paired z and whether two sets of statistics :math:`(m, k)` agree."""
    m = a.shape[0]
    diff = a - b
    sd_ratio = a.std(dim=0) / b.std(dim=0).clamp_min(1e-12)
    z = diff.mean(dim=0) / (diff.std(dim=0) / math.sqrt(m)).clamp_min(1e-12)
    band = 3.5 / math.sqrt(m - 1)
    return sd_ratio, z, bool(((sd_ratio.log().abs() <= band) & (z.abs() <= 4.0)).all())


def inner_chain_check(
    family: ExponentialFamily,
    y_obs: Tensor,
    theta: Tensor,
    y_simulated: Tensor,
    *,
    inner_steps: int,
    inner_step_size: float,
    inner_kernel: str = "mala",
    reference_factor: int = 10,
    seed: int | torch.Generator | None = None,
) -> InnerChainCheck:
    r"""Has the inner chain of the exchange sampler mixed, and does the model match the
    simulator? (See the module docstring.)

    For each :math:`\theta_j` (e.g. posterior draws), one auxiliary draw :math:`y'_j` is made
    exactly as the exchange sampler makes it (``inner_steps`` kernel steps started at the
    observation), one :math:`y''_j` by a chain ``reference_factor`` times as long from the same
    start (for the exact Gaussian kernel, :math:`y'_j` is exact and serves as both), and both
    are compared, statistic by statistic: :math:`s(y'_j)` with :math:`s(y''_j)` (mixing) and
    :math:`s(y''_j)` with a simulation :math:`s(y_j)` at the same :math:`\theta_j` mapped to
    the model's space (fit).

    Arguments:
        family: The fitted family (see :class:`ExponentialFamily`).
        y_obs: The observation in the model's space, shape :math:`(*y)`.
        theta: Parameters, shape :math:`(m, p)`, :math:`m \geq 2`.
        y_simulated: One simulation per parameter in the model's space, shape :math:`(m, *y)`.
        inner_steps, inner_step_size, inner_kernel: The inner chain's settings.
        reference_factor: How many times longer the reference chain is.
        seed: Seed or generator of the inner chains.

    Returns:
        An :class:`InnerChainCheck`.
    """
    m = theta.shape[0]
    if m < 2 or y_simulated.shape[0] != m:
        raise ValueError(
            f"need m >= 2 parameters and one simulation each, got {tuple(theta.shape)} and "
            f"{tuple(y_simulated.shape)}"
        )
    if reference_factor < 1:
        raise ValueError(f"reference_factor must be at least 1, got {reference_factor}")
    generator = make_generator(seed, theta.device)
    start = y_obs.unsqueeze(0).expand(m, *y_obs.shape).clone()

    def auxiliary(steps: int) -> Tensor:
        stats, _ = auxiliary_statistics(
            family, start, theta, theta, inner_kernel, steps, 0, inner_step_size, generator
        )
        return stats

    aux = auxiliary(inner_steps)
    exact = inner_kernel == "gaussian"
    longer = aux if exact else auxiliary(reference_factor * inner_steps)
    with torch.no_grad():
        sim = family.statistics_y(y_simulated)
    if exact:
        k = aux.shape[1]
        sd_ratio, z, mixed = aux.new_ones(k), aux.new_zeros(k), True
    else:
        sd_ratio, z, mixed = _agree(aux, longer)
    fit_sd_ratio, _, _ = _agree(longer, sim)
    fit_shift = (longer.mean(dim=0) - sim.mean(dim=0)) / sim.std(dim=0).clamp_min(1e-12)
    band = max(3.5 / math.sqrt(m - 1), math.log(1.25))
    shift_band = max(4.0 * math.sqrt(2.0 / m), 0.25)
    fits = bool(((fit_sd_ratio.log().abs() <= band) & (fit_shift.abs() <= shift_band)).all())
    return InnerChainCheck(sd_ratio, z, mixed, fit_sd_ratio, fit_shift, fits)
