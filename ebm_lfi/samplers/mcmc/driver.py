r"""The :func:`sample_mcmc` driver: many MALA or random-walk chains on a tractable log-density.

It runs the kernels of :mod:`ebm_lfi.samplers.mcmc.kernels` (pure ``init`` / ``step`` pairs) on
:math:`c` chains at once. During burn-in the step size :math:`h` and the proposal shape
:math:`L` are adapted by the routine of :mod:`ebm_lfi.samplers.mcmc.adaptation` (Robbins–Monro
on :math:`\log h`, windowed covariance of the chains for :math:`L`) toward a target acceptance
rate :math:`a^\star`, 0.574 for MALA and 0.234 for random walk, the rates optimal in high
dimension; both are frozen for the kept draws, which are returned with their effective sample
size and split :math:`\hat{R}`.

References:
    | Optimal scaling of discrete approximations to Langevin diffusions
      (Roberts & Rosenthal, 1998) https://doi.org/10.1111/1467-9868.00123
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import torch
from torch import Tensor

from ...progress import progress_bar
from .adaptation import adaptation_init, adaptation_update
from .diagnostics import effective_sample_size, rhat
from .jumps import de_sweep
from .kernels import (
    LogProbFn,
    mala_init,
    mala_step,
    random_walk_init,
    random_walk_step,
)

__all__ = [
    "MCMCResult",
    "make_generator",
    "sample_mcmc",
]


def make_generator(
    seed: int | torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Generator:
    r"""Returns a :class:`torch.Generator` on ``device``.

    Arguments:
        seed: An integer seed, an existing generator (returned as is) or ``None`` for a
            non-deterministic seed.
        device: The device the random numbers are drawn on.
    """
    if isinstance(seed, torch.Generator):
        return seed
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


class MCMCResult(NamedTuple):
    r"""Output of :func:`sample_mcmc`.

    Attributes:
        chains: Draws after burn-in, shape :math:`(c, n, d)`.
        acceptance_rate: Acceptance rate of each chain after burn-in, shape :math:`(c,)`.
        step_size: The (frozen) step size used after burn-in.
        ess: Multi-chain effective sample size per parameter, shape :math:`(d,)`.
        rhat: Split :math:`\hat{R}` per parameter, shape :math:`(d,)`.
        seconds: Wall-clock time.
        jump_acceptance: Acceptance rate of the differential-evolution jumps after burn-in
            (``nan`` without jumps).
    """

    chains: Tensor
    acceptance_rate: Tensor
    step_size: float
    ess: Tensor
    rhat: Tensor
    seconds: float
    jump_acceptance: float = math.nan


def sample_mcmc(
    log_prob_fn: LogProbFn,
    initial_position: Tensor,
    *,
    num_samples: int,
    burn_in: int = 500,
    kernel: str = "mala",
    step_size: float | None = None,
    target_acceptance: float | None = None,
    jump_rate: float = 0.0,
    seed: int | torch.Generator | None = None,
    progress: bool = False,
) -> MCMCResult:
    r"""Runs many MALA or random-walk chains on a tractable log-density.

    Unless ``step_size`` is given, the shared step size is tuned during burn-in by
    Robbins–Monro toward ``target_acceptance`` and the proposal shape :math:`L` is set from the
    covariance of the chains (:mod:`ebm_lfi.samplers.mcmc.adaptation`); both are frozen
    afterwards. A given ``step_size`` is used as it is, with :math:`L = I`.

    Arguments:
        log_prob_fn: Maps positions :math:`(c, d)` to log-densities :math:`(c,)`; may return
            :math:`-\infty` outside the support.
        initial_position: Starting points, shape :math:`(c, d)`, with finite log-density.
        num_samples: Number of draws kept per chain.
        burn_in: Number of discarded (and tuning) steps per chain.
        kernel: ``"mala"`` or ``"rw"``.
        step_size: A fixed step size; ``None`` tunes it.
        target_acceptance: Target acceptance rate; 0.574 for MALA and 0.234 for RW by default.
        jump_rate: Probability that a step is followed by a Metropolis step of
            differential-evolution jumps of half of the chains
            (:func:`~ebm_lfi.samplers.mcmc.jumps.de_sweep`; one more evaluation of the
            log-density; 0: none; needs at least 4 chains). It moves chains between modes.
        seed: Integer seed or :class:`torch.Generator`.
        progress: Show a progress bar.

    Returns:
        An :class:`MCMCResult`.
    """
    start = time.perf_counter()
    x0 = torch.as_tensor(initial_position)
    if x0.ndim != 2 or not x0.is_floating_point():
        raise ValueError(
            f"initial_position must be a floating tensor (chains, dim), got {tuple(x0.shape)}"
        )
    if kernel not in ("mala", "rw"):
        raise ValueError(f"kernel must be 'mala' or 'rw', got {kernel!r}")
    if num_samples < 1 or burn_in < 0:
        raise ValueError(f"need num_samples >= 1 and burn_in >= 0, got {num_samples}, {burn_in}")
    c, d = x0.shape
    if not 0 <= jump_rate <= 1 or (jump_rate > 0 and c < 4):
        raise ValueError(
            f"jump_rate must be in [0, 1] and needs at least 4 chains, got {jump_rate} with "
            f"{c} chains"
        )
    generator = make_generator(seed, x0.device)
    init, step = (
        (mala_init, mala_step) if kernel == "mala" else (random_walk_init, random_walk_step)
    )
    target = target_acceptance or (0.574 if kernel == "mala" else 0.234)
    tune = step_size is None
    default = (1.65 if kernel == "mala" else 2.38) / d ** (1 / 6 if kernel == "mala" else 1 / 2)
    log_h = math.log(step_size if step_size is not None else default)
    adaptation = adaptation_init(x0, log_h) if tune else None
    scale_tril = None  # the kernels' L = I, when not tuned
    state = init(x0, log_prob_fn)
    if not bool(torch.isfinite(state.log_prob).all()):
        raise ValueError("initial_position must have finite log-density in every chain")
    draws = x0.new_empty((c, num_samples, d))
    accepted = torch.zeros(c, dtype=x0.dtype, device=x0.device)
    jumps_tried = jumps_accepted = 0
    for t in progress_bar(range(burn_in + num_samples), enabled=progress, desc="mcmc"):
        if adaptation is not None:  # frozen after burn-in
            log_h, scale_tril = adaptation.log_scale, adaptation.scale_tril
        h = math.exp(log_h)
        state, info = step(state, log_prob_fn, h, scale_tril=scale_tril, generator=generator)
        if jump_rate > 0 and float(torch.rand((), generator=generator)) < jump_rate:
            state, tried, took = de_sweep(state, init, log_prob_fn, t, generator)
            if t >= burn_in:
                jumps_tried, jumps_accepted = jumps_tried + tried, jumps_accepted + took
        if t >= burn_in:
            draws[:, t - burn_in] = state.position
            accepted += info.is_accepted.to(x0.dtype)
        elif adaptation is not None:
            rate = float(info.acceptance_rate.mean())
            adaptation = adaptation_update(
                adaptation, state.position, rate, target=target, burn_in=burn_in
            )
    return MCMCResult(
        chains=draws,
        acceptance_rate=accepted / num_samples,
        step_size=math.exp(log_h),
        ess=effective_sample_size(draws) if num_samples >= 4 else draws.new_full((d,), torch.nan),
        rhat=rhat(draws) if num_samples >= 4 else draws.new_full((d,), torch.nan),
        seconds=time.perf_counter() - start,
        jump_acceptance=jumps_accepted / jumps_tried if jumps_tried else math.nan,
    )
