r"""Has the inner chain of the exchange sampler mixed? A check against the simulator.

The exchange sampler (:mod:`ebm_lfi.samplers.mcmc.exchange`) replaces an exact draw from the model
at :math:`\theta'` by the end of a short MCMC chain started at the observation. If the chain is
too short, the auxiliary statistics stay near the observed ones and the sampler targets the
wrong posterior. :func:`inner_chain_check` draws, for parameters :math:`\theta_j`, one auxiliary
sample exactly as the sampler does and one simulation, and compares their statistics: same
spread across :math:`j` and paired differences centred at zero when the chain has mixed and the
model fits.

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
        sd_ratio: Spread of the auxiliary draws' statistics across the parameters over that of
            the simulator's, about 1 when the inner chain forgot its start; well below 1 when
            the auxiliary draws stay near the observation.
        z: Mean paired difference (auxiliary minus simulated) over its standard error, about
            standard normal when the model and the inner chain agree with the simulator.
        mixed: Whether every :math:`|\log \text{sd\_ratio}| \le 3.5 / \sqrt{m - 1}` (about
            3.5 standard errors of a log ratio of two standard deviations from :math:`m` draws
            each) and every :math:`|z| \le 4`.
    """

    sd_ratio: Tensor
    z: Tensor
    mixed: bool


def inner_chain_check(
    family: ExponentialFamily,
    y_obs: Tensor,
    theta: Tensor,
    y_simulated: Tensor,
    *,
    inner_steps: int,
    inner_step_size: float,
    inner_kernel: str = "mala",
    seed: int | torch.Generator | None = None,
) -> InnerChainCheck:
    r"""Has the inner chain of the exchange sampler mixed? Compare its draws with the simulator.

    For each :math:`\theta_j` (e.g. posterior draws), one auxiliary draw :math:`y'_j` is made
    exactly as the exchange sampler makes it (``inner_steps`` kernel steps started at the
    observation) and compared, statistic by statistic, with a simulation :math:`y_j` at the same
    :math:`\theta_j` mapped to the model's space. If the inner chain has mixed and the model
    fits, :math:`s(y'_j)` and :math:`s(y_j)` have the same distribution: their spreads across
    :math:`j` agree and the paired differences average to zero. A chain too short to leave the
    observation gives auxiliary statistics that hardly vary with :math:`\theta`.

    Arguments:
        family: The fitted family (see :class:`ExponentialFamily`).
        y_obs: The observation in the model's space, shape :math:`(*y)`.
        theta: Parameters, shape :math:`(m, p)`, :math:`m \geq 2`.
        y_simulated: One simulation per parameter in the model's space, shape :math:`(m, *y)`.
        inner_steps, inner_step_size, inner_kernel: The inner chain's settings.
        seed: Seed or generator of the inner chain.

    Returns:
        An :class:`InnerChainCheck`.
    """
    m = theta.shape[0]
    if m < 2 or y_simulated.shape[0] != m:
        raise ValueError(
            f"need m >= 2 parameters and one simulation each, got {tuple(theta.shape)} and "
            f"{tuple(y_simulated.shape)}"
        )
    generator = make_generator(seed, theta.device)
    start = y_obs.unsqueeze(0).expand(m, *y_obs.shape).clone()
    aux, _ = auxiliary_statistics(
        family, start, theta, theta, inner_kernel, inner_steps, 0, inner_step_size, generator
    )
    with torch.no_grad():
        sim = family.statistics_y(y_simulated)
    diff = aux - sim
    sd_sim = sim.std(dim=0)
    sd_ratio = aux.std(dim=0) / sd_sim.clamp_min(1e-12)
    z = diff.mean(dim=0) / (diff.std(dim=0) / math.sqrt(m)).clamp_min(1e-12)
    band = 3.5 / math.sqrt(m - 1)
    mixed = bool(((sd_ratio.log().abs() <= band) & (z.abs() <= 4.0)).all())
    return InnerChainCheck(sd_ratio, z, mixed)
