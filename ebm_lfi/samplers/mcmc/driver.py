r"""The :func:`sample_mcmc` driver: many MALA or random-walk chains on a tractable log-density.

It runs the kernels of :mod:`ebm_lfi.samplers.mcmc.kernels` (pure ``init`` / ``step`` pairs, re-exported
here) on :math:`c` chains at once. During burn-in the shared step size :math:`h` is tuned by
Robbins–Monro (:func:`robbins_monro`),

.. math:: \log h \leftarrow \log h + (\bar{a} - a^\star) / (t + 1)^{0.6},

toward a target acceptance rate :math:`a^\star` (0.574 for MALA, 0.234 for random walk, the
rates optimal in high dimension), and the proposal shape :math:`L` is set from the pooled
covariance of the chains; both are frozen for the kept draws, which are returned with their
effective sample size and split :math:`\hat{R}`.

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
from tqdm.auto import tqdm

from .diagnostics import effective_sample_size, rhat
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
    "robbins_monro",
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


def robbins_monro(log_value: Tensor, acceptance: Tensor, target: float, t: int) -> Tensor:
    r"""One Robbins–Monro update of a log step size toward a target acceptance rate.

    :math:`\log h \leftarrow \log h + (\bar{a} - a^\star) / (t + 1)^{0.6}`, where
    :math:`\bar{a}` is the acceptance rate just observed.

    Arguments:
        log_value: Current :math:`\log h`, any shape.
        acceptance: Observed acceptance rate(s), broadcastable to ``log_value``.
        target: Target acceptance rate :math:`a^\star`.
        t: Iteration counter, from 0.
    """
    return log_value + (acceptance - target) / (t + 1) ** 0.6


class MCMCResult(NamedTuple):
    r"""Output of :func:`sample_mcmc`.

    Attributes:
        chains: Draws after burn-in, shape :math:`(c, n, d)`.
        acceptance_rate: Acceptance rate of each chain after burn-in, shape :math:`(c,)`.
        step_size: The (frozen) step size used after burn-in.
        ess: Multi-chain effective sample size per parameter, shape :math:`(d,)`.
        rhat: Split :math:`\hat{R}` per parameter, shape :math:`(d,)`.
        seconds: Wall-clock time.
    """

    chains: Tensor
    acceptance_rate: Tensor
    step_size: float
    ess: Tensor
    rhat: Tensor
    seconds: float


def sample_mcmc(
    log_prob_fn: LogProbFn,
    initial_position: Tensor,
    *,
    num_samples: int,
    burn_in: int = 500,
    kernel: str = "mala",
    step_size: float | None = None,
    target_acceptance: float | None = None,
    seed: int | torch.Generator | None = None,
    progress: bool = False,
) -> MCMCResult:
    r"""Runs many MALA or random-walk chains on a tractable log-density.

    During burn-in the shared step size is tuned by Robbins–Monro toward
    ``target_acceptance`` (unless ``step_size`` is given) and the proposal shape
    :math:`L` is set from the covariance of the chains; both are frozen afterwards.

    Arguments:
        log_prob_fn: Maps positions :math:`(c, d)` to log-densities :math:`(c,)`; may return
            :math:`-\infty` outside the support.
        initial_position: Starting points, shape :math:`(c, d)`, with finite log-density.
        num_samples: Number of draws kept per chain.
        burn_in: Number of discarded (and tuning) steps per chain.
        kernel: ``"mala"`` or ``"rw"``.
        step_size: A fixed step size; ``None`` tunes it.
        target_acceptance: Target acceptance rate; 0.574 for MALA and 0.234 for RW by default.
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
    generator = make_generator(seed, x0.device)
    init, step = (
        (mala_init, mala_step) if kernel == "mala" else (random_walk_init, random_walk_step)
    )
    target = target_acceptance or (0.574 if kernel == "mala" else 0.234)
    tune = step_size is None
    default = (1.65 if kernel == "mala" else 2.38) / d ** (1 / 6 if kernel == "mala" else 1 / 2)
    log_h = torch.tensor(math.log(step_size if step_size is not None else default))
    if tune and c > d:
        spread = torch.atleast_2d(x0.T.cov()) + 1e-8 * torch.eye(
            d, dtype=x0.dtype, device=x0.device
        )
        scale_tril = torch.linalg.cholesky(spread) if bool(torch.isfinite(spread).all()) else None
    else:
        scale_tril = None
    state = init(x0, log_prob_fn)
    if not bool(torch.isfinite(state.log_prob).all()):
        raise ValueError("initial_position must have finite log-density in every chain")
    draws = x0.new_empty((c, num_samples, d))
    accepted = torch.zeros(c, dtype=x0.dtype, device=x0.device)
    window: list[Tensor] = []
    for t in tqdm(range(burn_in + num_samples), disable=not progress, desc="mcmc"):
        state, info = step(
            state, log_prob_fn, float(log_h.exp()), scale_tril=scale_tril, generator=generator
        )
        if t < burn_in:
            if tune:
                log_h = robbins_monro(log_h, float(info.acceptance_rate.mean()), target, t)
                window.append(state.position)
                if len(window) >= max(10, burn_in // 10):
                    pooled = torch.atleast_2d(torch.cat(window).T.cov())
                    pooled = pooled + 1e-10 * pooled.diagonal().mean() * torch.eye(
                        d, dtype=x0.dtype, device=x0.device
                    )
                    chol, bad = torch.linalg.cholesky_ex(pooled)
                    if not bool(bad) and bool(torch.isfinite(chol).all()):
                        scale_tril = chol
                    window = []
        else:
            draws[:, t - burn_in] = state.position
            accepted += info.is_accepted.to(x0.dtype)
    return MCMCResult(
        chains=draws,
        acceptance_rate=accepted / num_samples,
        step_size=float(log_h.exp()),
        ess=effective_sample_size(draws) if num_samples >= 4 else draws.new_full((d,), torch.nan),
        rhat=rhat(draws) if num_samples >= 4 else draws.new_full((d,), torch.nan),
        seconds=time.perf_counter() - start,
    )
