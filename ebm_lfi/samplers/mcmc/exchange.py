r"""Exchange MCMC for exponential families with an intractable normaliser.

The model is :math:`p(y \mid \theta) = \exp(\eta(\theta)^\top s(y) + b(y)) / Z(\theta)` with
:math:`Z(\theta)` unknown. The exchange algorithm (Murray et al. 2006) augments the target
with an auxiliary draw :math:`y' \sim p(\cdot \mid \theta')` so that :math:`Z` cancels: a
Gaussian random-walk proposal :math:`\theta' = \theta + L \epsilon` is accepted with

.. math:: \log \alpha = \log \pi(\theta') - \log \pi(\theta)
    + (\eta(\theta') - \eta(\theta))^\top (s(y_o) - s(y')).

The exact draw :math:`y'` is replaced, as in Pacchiardi & Dutta (2022), by an inner MCMC on
:math:`\exp(\eta(\theta')^\top s(y) + b(y))` started at :math:`y_o` (MALA or random walk),
optionally followed by :math:`K` geometric bridge steps toward :math:`\theta`, whose statistics
are averaged into :math:`s(y')` (Murray et al. 2006, §3); or, for a model quadratic in
:math:`y`, by an exact Gaussian draw. Both live in
:mod:`ebm_lfi.samplers.mcmc.exchange_auxiliary`, with the protocol
:class:`~ebm_lfi.samplers.mcmc.exchange_auxiliary.ExponentialFamily` of the model.

All chains move as one batch: every inner step is one batched forward (and, for MALA,
backward) pass over the chains. During burn-in only, the proposal shape :math:`L` and its size
are adapted toward the target outer acceptance by the routine of
:mod:`ebm_lfi.samplers.mcmc.adaptation` (windowed covariance of the chains, Robbins–Monro), and
the inner step size by Robbins–Monro toward the target inner acceptance; both are frozen for
the kept draws.

**Jumps between modes.** The random walk is shaped by the spread across the chains; on a
posterior of separated or curved modes (two crescents) it is tuned down to steps that never
leave the mode a chain started in, and the share of chains per mode stays where the starting
points put it. With ``jump_rate`` > 0, half of each group's chains (alternating) may propose a
differential-evolution jump by the difference of two chains of the other half (ter Braak
2006), which carries a chain to where another one is; see :mod:`ebm_lfi.samplers.mcmc.jumps`
for why this keeps the posterior invariant.

**Several observations at once.** With ``theta_init`` of shape :math:`(g, c, p)` and
``y_obs`` of shape :math:`(g, *y)`, :math:`g` independent samplers (one per observation,
:math:`c` chains each) run as one batch of :math:`g c` chains: each group has its own proposal,
adapted from its own chains, and the inner step size is shared (tuned to the inner
acceptance of all chains). This costs far less than :math:`g` runs where one forward pass is
dominated by its overhead (small networks, low-dimensional data), which is what makes
scoring the exchange posterior on held-out pairs affordable
(:mod:`ebm_lfi.methods.auto`). The inner chain is only approximately converged after ``inner_steps``
steps; its error shows as a biased outer acceptance, so ``inner_steps`` and the inner target
acceptance trade speed for accuracy. There is no Jacobian term: the caller works in the transformed
:math:`y` space, where the Jacobian does not depend on :math:`\theta` and cancels.

References:
    | MCMC for doubly-intractable distributions (Murray et al., 2006)
    | https://arxiv.org/abs/1206.6848

    | Score Matched Neural Exponential Families for Likelihood-Free Inference
      (Pacchiardi & Dutta, 2022) https://arxiv.org/abs/2012.10903

    | A Markov chain Monte Carlo version of the genetic algorithm Differential Evolution
      (ter Braak, 2006), Statistics and Computing 16, 239–249
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution

from ...priors import prior_log_prob
from ...progress import progress_bar
from .adaptation import AdaptationState, adaptation_init, adaptation_update, robbins_monro
from .diagnostics import effective_sample_size, rhat
from .driver import make_generator
from .exchange_auxiliary import (
    ExponentialFamily,
    QuadraticForm,
    auxiliary_statistics,
    quadratic_form,
)
from .jumps import JUMP_NOISE, de_jumps

__all__ = ["ExchangeResult", "exchange_mcmc"]

LogPrior = Callable[[Tensor], Tensor]


class ExchangeResult(NamedTuple):
    r"""Output of :func:`exchange_mcmc`.

    Attributes:
        chains: Kept draws, shape :math:`(c, n, p)` (with groups :math:`(g, c, n, p)`).
        outer_acceptance: Acceptance rate of each chain over the kept draws, shape :math:`(c,)`
            (:math:`(g, c)`).
        inner_acceptance: Mean acceptance rate of the inner kernel over the kept draws.
        ess: Multi-chain effective sample size per parameter, shape :math:`(p,)`
            (:math:`(g, p)`, per group).
        rhat: Split :math:`\hat{R}` per parameter, shape :math:`(p,)` (:math:`(g, p)`).
        proposal_scale: The frozen proposal factor :math:`\lambda L`, shape :math:`(p, p)`
            (:math:`(g, p, p)`; lower-triangular; pass it back as ``proposal_scale`` to reuse
            it).
        inner_step_size: The frozen inner step size.
        seconds: Wall-clock time.
        jump_acceptance: Acceptance rate of the differential-evolution jumps over the kept
            draws (``nan`` without jumps).
    """

    chains: Tensor
    outer_acceptance: Tensor
    inner_acceptance: float
    ess: Tensor
    rhat: Tensor
    proposal_scale: Tensor
    inner_step_size: float
    seconds: float
    jump_acceptance: float = math.nan


class _Chains(NamedTuple):
    """Where the outer chains are: parameters (c, p), log-prior (c,), natural parameters (c, k)."""

    theta: Tensor
    log_prior: Tensor
    eta: Tensor


class _Inner(NamedTuple):
    """The auxiliary draw's settings, all but the (tuned) step size."""

    kernel: str
    steps: int
    bridging: int
    form: QuadraticForm | None = None  # the "gaussian" kernel's family, read off once


def _proposal_factor(scale: float | Tensor, p: int, like: Tensor) -> Tensor:
    scale = torch.as_tensor(scale, dtype=like.dtype, device=like.device)
    if scale.ndim == 0:
        return scale * torch.eye(p, dtype=like.dtype, device=like.device)
    if scale.shape == (p,):
        return torch.diag(scale)
    if scale.shape == (p, p):
        return torch.tril(scale)
    raise ValueError(
        f"proposal_scale must be a scalar, shape ({p},) or ({p}, {p}), got {tuple(scale.shape)}"
    )


def _as_log_prior(log_prior: LogPrior | Distribution) -> LogPrior:
    """A prior distribution as its log-density (``-inf`` off the support), a callable as is."""
    if not isinstance(log_prior, Distribution):
        return log_prior
    prior = log_prior

    def log_prior_fn(theta: Tensor) -> Tensor:
        return prior_log_prob(prior, theta)

    return log_prior_fn


def _initial_inner_log_step(y_rows: Tensor, kernel: str) -> float:
    r""":math:`\log h` of the inner kernel before tuning: the optimal-scaling rate of the
    kernel in :math:`d` dimensions times the spread of the observations' coordinates
    (``y_rows``: the observations, shape :math:`(g, *y)`)."""
    d = y_rows[0].numel()
    spread = float(y_rows.std()) if d > 1 else 1.0
    spread = spread if math.isfinite(spread) and spread > 0 else 1.0
    base = 1.65 * d ** (-1 / 6) if kernel == "mala" else 2.38 / math.sqrt(d)
    return math.log(base * spread)


def _initial_chains(
    family: ExponentialFamily, log_prior: LogPrior, theta: Tensor, y_rows: Tensor
) -> tuple[_Chains, Tensor]:
    """The chains (c, p) at their start and the observed statistics (g, k) of the ``g``
    observations ``y_rows``, with shape checks."""
    c, p = theta.shape
    g = y_rows.shape[0]
    with torch.no_grad():
        lp = log_prior(theta).to(theta.dtype)
        if lp.shape != (c,) or not bool(torch.isfinite(lp).all()):
            raise ValueError(
                f"log_prior must map theta_init ({c}, {p}) to finite values of shape ({c},)"
            )
        eta = family.natural_parameters(theta)
        s_obs = family.statistics_y(y_rows)
        if eta.ndim != 2 or eta.shape[0] != c or s_obs.shape != (g, eta.shape[1]):
            raise ValueError(
                f"natural_parameters gave {tuple(eta.shape)} and statistics_y gave "
                f"{tuple(s_obs.shape)}; expected ({c}, k) and ({g}, k)"
            )
    return _Chains(theta, lp, eta), s_obs


def _exchange_step(
    chains: _Chains,
    family: ExponentialFamily,
    log_prior: LogPrior,
    s_obs: Tensor,
    y_start: Tensor,
    factor: Tensor,
    inner: _Inner,
    inner_step_size: float,
    generator: torch.Generator,
    jump: tuple[Tensor, Tensor] | None = None,
) -> tuple[_Chains, Tensor, Tensor, float]:
    r"""One exchange step of every chain (see the module docstring).

    Arguments:
        chains: The current :class:`_Chains`.
        family, log_prior: The model and the prior's log-density.
        s_obs: Observed statistics, shape :math:`(1, k)`, or :math:`(c, k)`: each chain's.
        y_start: Where the inner chains start, each chain's observation, :math:`(c, *y)`.
        factor: The proposal's :math:`\lambda L`, shape :math:`(p, p)`, or each chain's,
            :math:`(c, p, p)`.
        inner, inner_step_size: The auxiliary draw's settings.
        generator: Random generator.
        jump: ``None``, or a differential-evolution move (see
            :func:`~ebm_lfi.samplers.mcmc.jumps.de_jumps`): each chain's jump, shape
            :math:`(c, p)`, and the factor of its random-walk noise, :math:`(c,)`.

    Returns:
        The new chains, the acceptance probabilities :math:`\min(1, \alpha)` and decisions,
        shape :math:`(c,)` each, and the inner kernel's mean acceptance.
    """
    theta, lp, eta = chains
    noise = torch.randn(theta.shape, generator=generator, dtype=theta.dtype, device=theta.device)
    if factor.ndim == 2:
        proposal = theta + noise @ factor.T
    else:
        proposal = theta + torch.einsum("cq,cpq->cp", noise, factor)
    if jump is not None:
        move, shrink = jump
        proposal = theta + shrink[:, None] * (proposal - theta) + move
    with torch.no_grad():
        lp_prop = log_prior(proposal).to(theta.dtype)
    valid = torch.isfinite(lp_prop)
    theta_run = torch.where(valid[:, None], proposal, theta)
    stats, inner_rate = auxiliary_statistics(
        family,
        y_start,
        theta_run,
        theta,
        inner.kernel,
        inner.steps,
        inner.bridging,
        inner_step_size,
        generator,
        inner.form,
    )
    with torch.no_grad():
        eta_prop = family.natural_parameters(theta_run)
        log_alpha = lp_prop - lp + ((eta_prop - eta) * (s_obs - stats)).sum(dim=-1)
    log_alpha = torch.where(valid, log_alpha, torch.full_like(log_alpha, -torch.inf))
    log_alpha = torch.nan_to_num(log_alpha, nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)
    u = torch.rand(theta.shape[:1], generator=generator, dtype=theta.dtype, device=theta.device)
    accept = torch.log(u) < log_alpha
    moved = _Chains(
        torch.where(accept[:, None], proposal, theta),
        torch.where(accept, lp_prop, lp),
        torch.where(accept[:, None], eta_prop, eta),
    )
    return moved, torch.exp(log_alpha.clamp(max=0.0)), accept, inner_rate


def exchange_mcmc(
    family: ExponentialFamily,
    log_prior: LogPrior | Distribution,
    y_obs: Tensor,
    theta_init: Tensor,
    *,
    num_samples: int,
    burn_in: int,
    inner_steps: int = 30,
    inner_kernel: str = "mala",
    bridging: int = 0,
    proposal_scale: float | Tensor | None = None,
    inner_step_size: float | None = None,
    target_acceptance: float = 0.25,
    inner_target_acceptance: float | None = None,
    jump_rate: float = 0.0,
    seed: int | torch.Generator | None = None,
    progress: bool = False,
) -> ExchangeResult:
    r"""Samples the posterior of :math:`\theta` under an unnormalised exponential family.

    Arguments:
        family: Provides ``natural_parameters``, ``statistics_y`` and ``log_unnormalized_y``
            (see :class:`~ebm_lfi.samplers.mcmc.exchange_auxiliary.ExponentialFamily`), with
            :math:`\theta` in raw space.
        log_prior: Maps :math:`(n, p)` parameters to log-densities :math:`(n,)`, ``-inf``
            outside the support; or a prior distribution.
        y_obs: The observation in the model's (transformed) space, shape :math:`(*y)`; or
            :math:`g` observations :math:`(g, *y)`, one per group of chains.
        theta_init: Starting points of the :math:`c` chains, shape :math:`(c, p)`, inside the
            prior support (e.g. prior draws); or :math:`(g, c, p)`, :math:`c` chains for each
            of the :math:`g` observations (see the module docstring). Sets the dtype and
            device.
        num_samples: Draws kept per chain.
        burn_in: Discarded (tuning) outer steps per chain.
        inner_steps: Inner MCMC steps per outer step.
        inner_kernel: ``"mala"`` (autograd score), ``"rw"``, or ``"gaussian"``: exact draws
            for a family whose log-density is quadratic in :math:`y` (see
            :func:`~ebm_lfi.samplers.mcmc.exchange_auxiliary.gaussian_draw`; ``inner_steps``
            and ``bridging`` are then unused).
        bridging: Number :math:`K` of geometric bridge steps (0: plain exchange).
        proposal_scale: ``None`` tunes the proposal during burn-in; otherwise a fixed scalar,
            per-parameter scales :math:`(p,)` or lower-triangular factor :math:`(p, p)`
            (shared by the groups).
        inner_step_size: ``None`` tunes the inner step size during burn-in; otherwise fixed.
        target_acceptance: Target outer acceptance rate for the tuning.
        inner_target_acceptance: Target inner acceptance rate; 0.8 (MALA) or 0.4 (RW) by
            default. These are above the rates optimal for a fixed target (0.574, 0.234)
            because the step size is shared by all proposals :math:`\theta'`: a step too
            large for a narrow :math:`p(\cdot \mid \theta')` stalls the inner chain at
            :math:`y_o`, which biases the outer acceptance, while a small step only mixes
            a little slower.
        jump_rate: Probability that a chain of the moving half of its group proposes a
            differential-evolution jump instead of the random walk (see
            :func:`~ebm_lfi.samplers.mcmc.jumps.de_jumps`; 0: none; needs at least 4 chains
            per group). Jumps move chains between separated modes, which the random walk,
            shaped by the spread across the chains, does not cross.
        seed: Integer seed or :class:`torch.Generator` (on the device of ``theta_init``).
        progress: Show a progress bar.

    Returns:
        An :class:`ExchangeResult`.
    """
    start = time.perf_counter()
    theta = torch.as_tensor(theta_init)
    if theta.ndim not in (2, 3) or not theta.is_floating_point():
        raise ValueError(
            "theta_init must be a floating tensor (chains, p) or (groups, chains, p), got "
            f"{tuple(theta.shape)}"
        )
    if inner_kernel not in ("mala", "rw", "gaussian"):
        raise ValueError(f"inner_kernel must be 'mala', 'rw' or 'gaussian', got {inner_kernel!r}")
    if num_samples < 1 or burn_in < 0 or inner_steps < 1 or bridging < 0:
        raise ValueError(
            "need num_samples >= 1, burn_in >= 0, inner_steps >= 1 and bridging >= 0, got "
            f"{num_samples}, {burn_in}, {inner_steps}, {bridging}"
        )
    grouped = theta.ndim == 3
    g, c, p = theta.shape if grouped else (1, *theta.shape)
    if not 0 <= jump_rate <= 1 or (jump_rate > 0 and c < 4):
        raise ValueError(
            f"jump_rate must be in [0, 1] and needs at least 4 chains per group, got "
            f"{jump_rate} with {c} chains"
        )
    dtype, device = theta.dtype, theta.device
    y_obs = torch.as_tensor(y_obs).to(device=device)
    if not y_obs.is_floating_point():
        y_obs = y_obs.to(dtype)
    if grouped and (y_obs.ndim < 1 or y_obs.shape[0] != g):
        raise ValueError(
            f"with theta_init of shape {tuple(theta.shape)}, y_obs must hold {g} observations "
            f"(shape ({g}, *y)), got {tuple(y_obs.shape)}"
        )
    y_rows = y_obs if grouped else y_obs.unsqueeze(0)
    theta = theta.reshape(g * c, p)
    log_prior_fn = _as_log_prior(log_prior)
    generator = make_generator(seed, device)
    chains, s_obs = _initial_chains(family, log_prior_fn, theta, y_rows)
    if grouped:
        s_obs = s_obs.repeat_interleave(c, dim=0)
        y_start = y_rows.repeat_interleave(c, dim=0)
    else:
        y_start = y_obs.unsqueeze(0).expand((c,) + tuple(y_obs.shape)).contiguous()
    form = quadratic_form(family, theta, y_rows[0]) if inner_kernel == "gaussian" else None
    inner = _Inner(inner_kernel, inner_steps, bridging, form)

    inner_target = inner_target_acceptance or (0.8 if inner_kernel == "mala" else 0.4)
    tune_outer, tune_inner = proposal_scale is None, inner_step_size is None
    starts = theta.reshape(g, c, p)
    if tune_outer:
        outer = [adaptation_init(starts[i], math.log(2.38 / math.sqrt(p))) for i in range(g)]
    else:
        fixed = _proposal_factor(proposal_scale, p, theta)
        outer = [AdaptationState(0.0, fixed, (), 0)] * g
    if tune_inner:
        log_h = _initial_inner_log_step(y_rows, inner_kernel)
    else:
        log_h = math.log(float(inner_step_size))

    draws = theta.new_empty((g * c, num_samples, p))
    accepted_total = torch.zeros(g * c, dtype=dtype, device=device)
    inner_total = 0.0
    jumps_tried, jumps_accepted = 0, 0
    walked = torch.ones(g * c, dtype=dtype, device=device)  # chains that proposed a random walk
    for t in progress_bar(range(burn_in + num_samples), enabled=progress, desc="exchange"):
        factor = (
            _factors(outer, c) if grouped else math.exp(outer[0].log_scale) * outer[0].scale_tril
        )
        jump = None
        if jump_rate > 0:
            move, jumping = de_jumps(chains.theta, g, c, t, jump_rate, generator)
            walked = (~jumping).to(dtype)
            jump = (move, torch.where(jumping, JUMP_NOISE, 1.0).to(dtype))  # noise kept
        chains, rate, accept, inner_rate = _exchange_step(
            chains,
            family,
            log_prior_fn,
            s_obs,
            y_start,
            factor,
            inner,
            math.exp(log_h),
            generator,
            jump,
        )
        if t < burn_in:
            if tune_inner:
                log_h = robbins_monro(log_h, inner_rate, inner_target, t)
            if tune_outer:
                position = chains.theta.reshape(g, c, p)
                if jump is not None:  # the random walk's own acceptance tunes it
                    mask = walked.reshape(g, c)
                    walk_rate = (rate.reshape(g, c) * mask).sum(1) / mask.sum(1).clamp(min=1)
                    group_rate = walk_rate.tolist()
                elif grouped:
                    group_rate = rate.reshape(g, c).mean(dim=1).tolist()
                else:
                    group_rate = [float(rate.mean())]
                outer = [
                    adaptation_update(
                        state,
                        position[i],
                        group_rate[i],
                        target=target_acceptance,
                        burn_in=burn_in,
                    )
                    for i, state in enumerate(outer)
                ]
        else:
            draws[:, t - burn_in] = chains.theta
            accepted_total += accept.to(dtype)
            inner_total += inner_rate
            if jump is not None:
                jumps_tried += int(c * g - walked.sum())
                jumps_accepted += int((accept.to(dtype) * (1 - walked)).sum())

    draws = draws.reshape(g, c, num_samples, p)
    enough = num_samples >= 4
    nan = draws.new_full((g, p), torch.nan)
    ess = torch.stack([effective_sample_size(d) for d in draws]) if enough else nan
    split_rhat = torch.stack([rhat(d) for d in draws]) if enough else nan
    scales = torch.stack([math.exp(state.log_scale) * state.scale_tril for state in outer])
    acceptance = (accepted_total / num_samples).reshape(g, c)
    if not grouped:
        draws, acceptance, ess, split_rhat, scales = (
            draws[0],
            acceptance[0],
            ess[0],
            split_rhat[0],
            scales[0],
        )
    return ExchangeResult(
        chains=draws,
        outer_acceptance=acceptance,
        inner_acceptance=inner_total / num_samples,
        ess=ess,
        rhat=split_rhat,
        proposal_scale=scales,
        inner_step_size=math.exp(log_h),
        seconds=time.perf_counter() - start,
        jump_acceptance=jumps_accepted / jumps_tried if jumps_tried else math.nan,
    )


def _factors(states: list[AdaptationState], c: int) -> Tensor:
    r"""Each chain's proposal factor :math:`\lambda L` of its group, shape (g c, p, p)."""
    factors = torch.stack([math.exp(state.log_scale) * state.scale_tril for state in states])
    return factors.repeat_interleave(c, dim=0)
