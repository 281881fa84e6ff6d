r"""Convergence diagnostics for multi-chain MCMC output.

:func:`rhat` and :func:`effective_sample_size` take draws of shape :math:`(c, n)` or
:math:`(c, n, *)` (chains, draws, parameters) and return one number per parameter. They split
every chain in two halves, as Stan does, so that a drift inside a chain shows up as
disagreement between half-chains. :func:`extension_factor` says how much longer chains must
run for their draws to be worth a given number of independent ones, and :func:`run_longer`
runs them again until they are.

**Split** :math:`\hat{R}` (Gelman et al. 2013, Vehtari et al. 2021). With :math:`M` half-chains
of length :math:`N`, :math:`W` the mean within-chain variance and :math:`B / N` the variance of
the chain means,

.. math:: \hat{R} = \sqrt{\frac{\widehat{\mathrm{var}}^+}{W}}, \qquad
    \widehat{\mathrm{var}}^+ = \frac{N - 1}{N} W + \frac{B}{N}.

**Effective sample size** (Geyer 1992; Stan reference manual). With per-chain autocovariances
:math:`\hat{\gamma}_m(t)` (computed by FFT), the combined autocorrelation is
:math:`\hat{\rho}_t = 1 - (W - \frac{1}{M}\sum_m \hat{\gamma}_m(t)) / \widehat{\mathrm{var}}^+`.
Pairs :math:`P_k = \hat{\rho}_{2k} + \hat{\rho}_{2k+1}` are summed up to the first negative pair
and made monotone (Geyer's initial monotone sequence), :math:`\hat{\tau} = -1 + 2 \sum_k P_k`
and :math:`\mathrm{ESS} = M N / \hat{\tau}`, capped at :math:`M N \log_{10}(M N)`.

References:
    | Practical Markov chain Monte Carlo (Geyer, 1992)
    | https://doi.org/10.1214/ss/1177011137

    | Rank-normalization, folding, and localization: an improved R-hat (Vehtari et al., 2021)
    | https://arxiv.org/abs/1903.08008
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

R = TypeVar("R")

__all__ = [
    "effective_sample_size",
    "extension_factor",
    "rhat",
    "run_longer",
    "split_chains",
]


def _as_draws(draws: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    draws = torch.as_tensor(draws)
    if draws.ndim < 2:
        raise ValueError(
            f"draws must have shape (chains, draws) or (chains, draws, *), got {tuple(draws.shape)}"
        )
    rest = tuple(draws.shape[2:])
    x = draws.detach().to(torch.float64).reshape(draws.shape[0], draws.shape[1], -1)
    return x, rest


def split_chains(draws: Tensor) -> Tensor:
    r"""Splits each chain in two halves (the middle draw of an odd-length chain is dropped).

    Arguments:
        draws: Draws, shape :math:`(c, n, *)`.

    Returns:
        The half-chains, shape :math:`(2c, \lfloor n/2 \rfloor, *)`.
    """
    half = draws.shape[1] // 2
    return torch.cat([draws[:, :half], draws[:, draws.shape[1] - half :]], dim=0)


def _finish(values: Tensor, like: Tensor, rest: tuple[int, ...]) -> Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.float64
    return values.reshape(rest).to(dtype=dtype, device=like.device)


def rhat(draws: Tensor) -> Tensor:
    r"""Split :math:`\hat{R}` of each parameter.

    Values near 1 (say below 1.01) indicate agreement between chains; chains stuck in
    different places give values well above 1.

    Arguments:
        draws: Draws, shape :math:`(c, n)` or :math:`(c, n, *)`, with :math:`n \geq 4`.

    Returns:
        :math:`\hat{R}`, shape :math:`()` or :math:`(*)`. NaN where every draw is identical.
    """
    x, rest = _as_draws(draws)
    if x.shape[1] < 4:
        raise ValueError(f"rhat needs at least 4 draws per chain, got {x.shape[1]}")
    x = split_chains(x)
    n = x.shape[1]
    means = x.mean(dim=1)  # (M, P)
    w = x.var(dim=1, correction=1).mean(dim=0)
    b_over_n = means.var(dim=0, correction=1)
    var_plus = (n - 1) / n * w + b_over_n
    return _finish(torch.sqrt(var_plus / w), torch.as_tensor(draws), rest)


def _autocovariance(x: Tensor) -> Tensor:
    """Biased autocovariance of each column along dim 1 by FFT; x has shape (M, N, P)."""
    n = x.shape[1]
    centred = x - x.mean(dim=1, keepdim=True)
    size = 1 << (2 * n - 1).bit_length()
    f = torch.fft.rfft(centred, n=size, dim=1)
    acov = torch.fft.irfft(f * f.conj(), n=size, dim=1)[:, :n]
    return acov / n


def effective_sample_size(draws: Tensor) -> Tensor:
    r"""Multi-chain effective sample size of the mean of each parameter (Stan style).

    Arguments:
        draws: Draws, shape :math:`(c, n)` or :math:`(c, n, *)`, with :math:`n \geq 4`.

    Returns:
        The effective sample size, shape :math:`()` or :math:`(*)`; for independent draws it
        is close to :math:`c n`. NaN where every draw is identical.
    """
    x, rest = _as_draws(draws)
    if x.shape[1] < 4:
        raise ValueError(
            f"effective_sample_size needs at least 4 draws per chain, got {x.shape[1]}"
        )
    x = split_chains(x)
    m, n, _ = x.shape
    acov = _autocovariance(x)  # (M, N, P)
    chain_var = acov[:, 0] * n / (n - 1)  # (M, P)
    w = chain_var.mean(dim=0)
    var_plus = w * (n - 1) / n
    if m > 1:
        var_plus = var_plus + x.mean(dim=1).var(dim=0, correction=1)
    rho = 1.0 - (w - acov.mean(dim=0)) / var_plus  # (N, P)
    rho[0] = 1.0

    num_pairs = n // 2
    pairs = rho[: 2 * num_pairs].reshape(num_pairs, 2, -1).sum(dim=1)  # (K, P)
    # Geyer's initial positive sequence: keep pairs up to (excluding) the first negative one.
    positive = torch.cumprod((pairs > 0).to(torch.float64), dim=0)
    # Initial monotone sequence: running minimum of the kept pairs.
    monotone = torch.cummin(pairs, dim=0).values.clamp_min(0.0) * positive
    tau = -1.0 + 2.0 * monotone.sum(dim=0)
    total = m * n
    tau = torch.clamp(tau, min=1.0 / math.log10(total))
    ess = total / tau
    constant = (w == 0) | ~torch.isfinite(w)
    ess = torch.where(constant, torch.full_like(ess, torch.nan), ess)
    return _finish(ess, torch.as_tensor(draws), rest)


EXTENSION_SEED = 15_485_863
"""Offset per unit of the factor between a seeded run's seed and the seed of its longer run
(:func:`run_longer`): each longer run draws fresh randomness, reproducibly."""

MIN_STEPS_TO_EXTEND = 100
"""Kept steps per chain below which :func:`extension_factor` does not run chains again: the
effective size of shorter chains is too rough to act on (and a few draws per chain, as in the
posteriors of simulation-based calibration, are dominated by the burn-in a new run pays)."""


def extension_factor(
    ess: Tensor,
    num_samples: int,
    min_ess: float,
    max_extension: int,
    factor: int = 1,
    *,
    steps: int | None = None,
) -> int:
    r"""How many times longer than planned MCMC chains run next, after a run ``factor`` times
    longer than planned whose effective sample sizes per parameter are ``ess``, for
    ``num_samples`` draws asked, so that the draws are worth at least ``min_ess *
    num_samples`` independent ones; ``factor`` itself where they need not run again (the rule
    of the posterior stages' ``min_ess`` and ``max_extension``).

    The effective size grows about linearly with the length of a run, so the next run is
    longer by the target over the smallest size, rounded up; capped at ``max_extension``. Not
    run again where no size could be estimated (fewer than 4 draws), nor where the planned run
    keeps fewer than :data:`MIN_STEPS_TO_EXTEND` ``steps`` per chain.

    >>> extension_factor(torch.tensor([50.0, 80.0]), 1000, 0.25, 8)
    5
    >>> extension_factor(torch.tensor([20.0, 600.0]), 1000, 0.25, 8)
    8
    >>> extension_factor(torch.tensor([300.0, 250.0]), 1000, 0.25, 8)
    1
    >>> extension_factor(torch.tensor([200.0, 600.0]), 1000, 0.25, 8, factor=3)
    4
    >>> extension_factor(torch.tensor([5.0, 8.0]), 100, 0.25, 8, steps=10)
    1
    """
    smallest = float(torch.as_tensor(ess).min())
    target = min_ess * num_samples
    short = steps is not None and steps < MIN_STEPS_TO_EXTEND
    if short or not math.isfinite(smallest) or smallest >= target:
        return factor
    return max(factor, min(max_extension, math.ceil(factor * target / max(smallest, 1.0))))


def run_longer(
    result: R,
    again: Callable[[R, int], R],
    num_samples: int,
    min_ess: float,
    max_extension: int,
    *,
    steps: int,
) -> tuple[R, int]:
    r"""Runs chains again, longer, until their draws are worth ``min_ess * num_samples``
    independent ones or the run is ``max_extension`` times longer than planned (the rule of
    :func:`extension_factor`).

    Arguments:
        result: The planned run, with its effective sample sizes as ``result.ess``.
        again: ``again(result, f)`` runs the chains again from where ``result`` ended, ``f``
            times longer than planned, and returns the new run.
        num_samples, min_ess, max_extension, steps: As for :func:`extension_factor`.

    Returns:
        The last run and how many times longer than planned it was (1: the planned run).
    """
    factor = 1
    while True:
        longer = extension_factor(
            result.ess, num_samples, min_ess, max_extension, factor, steps=steps
        )
        if longer == factor:
            return result, factor
        factor = longer
        result = again(result, factor)
