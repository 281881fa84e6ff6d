r"""MCMC on a tractable posterior potential, run in an unconstrained space.

Some methods end with a posterior known up to a constant, e.g. an NCE fit of an exponential
family gives :math:`\log \pi(\theta) + \eta(\theta)^\top s(y_o) + c(\theta)`, cheap and
differentiable in :math:`\theta`. :func:`sample_potential` draws from such a density
:math:`f(\theta) \propto \exp V(\theta)` with the chains of
:func:`~ebm_lfi.samplers.mcmc.driver.sample_mcmc`.

**Change of variables.** Near a bounded side of the prior support MALA and random-walk
proposals often leave the support (and are rejected), and a density with mass piled at the
boundary (e.g. :math:`\mathrm{Beta}(0.8, \cdot)`) mixes badly. So the chains move in
:math:`u = g^{-1}(\theta) \in \mathbb{R}^p`, with :math:`\theta = g(u)` the per-coordinate
bijection of the prior's support (:class:`~ebm_lfi.priors.SupportBijection`: a scaled logistic
on a box, :math:`l + e^u` or :math:`h - e^u` for one bound, the identity for none; the same map
as the regression adjustment, :mod:`~ebm_lfi.samplers.abc.adjustment`). The density of
:math:`u` is

.. math:: \log f_u(u) = V(g(u)) + \sum_{j=1}^p \log |g_j'(u_j)|, \qquad
    \log |g_j'(u_j)| = \begin{cases}
    \log (h_j - l_j) + \log \sigma(u_j) + \log \sigma(-u_j) & \text{box}, \\
    u_j & \text{one bound}, \\
    0 & \text{unbounded},
    \end{cases}

with :math:`\sigma` the logistic function, and the draws :math:`u` are mapped back by
:math:`g`, so that the returned :math:`\theta` are draws from :math:`f`. Without the Jacobian
term the chains would target :math:`f(\theta) / |g'(g^{-1}(\theta))|` instead, e.g.
:math:`\mathrm{Beta}(a - 1, b - 1)` for a :math:`\mathrm{Beta}(a, b)` target on a unit box.

In floating point :math:`g(u)` can round onto a finite bound when :math:`|u|` is large
(onto the upper end of a unit box once :math:`u \gtrsim 37` in float64, :math:`\gtrsim 17` in
float32); such points get :math:`\log f_u = -\infty` (the proposal is rejected) and
:math:`V` is not evaluated there, since a potential may be :math:`\pm\infty` or raise on the
boundary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution

from ...priors import SupportBijection, prior_dim
from .diagnostics import effective_sample_size, rhat
from .driver import sample_mcmc

__all__ = ["PotentialResult", "sample_potential"]


class PotentialResult(NamedTuple):
    r"""Output of :func:`sample_potential`.

    Attributes:
        chains: Draws after burn-in in the original :math:`\theta` space, shape
            :math:`(c, n, p)`, inside the prior support.
        acceptance_rate: Acceptance rate of each chain after burn-in, shape :math:`(c,)`.
        step_size: The (frozen) step size used after burn-in, in the unconstrained space.
        ess: Multi-chain effective sample size of each parameter, computed on ``chains``,
            shape :math:`(p,)` (NaN for :math:`n < 4`).
        rhat: Split :math:`\hat{R}` of each parameter, computed on ``chains``, shape
            :math:`(p,)` (NaN for :math:`n < 4`).
        seconds: Wall-clock time, including the transforms.
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


def checked_values(name: str, value: object, shape: torch.Size) -> Tensor:
    """``value``, checked to be a tensor of one value per row of parameters of ``shape``."""
    if not isinstance(value, Tensor) or value.shape != (shape[0],):
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"{name} must map parameters of shape {tuple(shape)} to ({shape[0]},), got {got}"
        )
    return value


def sample_potential(
    log_potential: Callable[[Tensor], Tensor],
    prior: Distribution,
    initial: Tensor,
    *,
    num_samples: int,
    burn_in: int = 500,
    kernel: str = "mala",
    jump_rate: float = 0.0,
    seed: int | torch.Generator | None = None,
    progress: bool = False,
) -> PotentialResult:
    r"""Draws from a tractable unnormalised posterior by MCMC in an unconstrained space.

    The chains run with :func:`~ebm_lfi.samplers.mcmc.driver.sample_mcmc` (step size and
    proposal shape adapted during burn-in) on :math:`u = g^{-1}(\theta)`, with
    the log-Jacobian of :math:`\theta = g(u)` added to the potential (see the module
    docstring), and the draws are mapped back to :math:`\theta`.

    Arguments:
        log_potential: The full unnormalised log posterior :math:`V(\theta)`, e.g.
            :math:`\log \pi(\theta) + \eta(\theta)^\top s(y_o) + c(\theta)`: maps raw
            parameters :math:`(c, p)` to :math:`(c,)`, differentiable in :math:`\theta` for
            MALA. The prior is **not** added here; include :math:`\log \pi(\theta)` in
            ``log_potential`` if the target needs it. It may return :math:`-\infty` where
            the target has no mass; it is only called strictly inside the prior support.
        prior: The prior over :math:`(p,)` vectors; only its support is used (see
            :func:`~ebm_lfi.priors.support_bounds`), to choose the map :math:`g`.
        initial: Starting points, shape :math:`(c, p)` (floating point), inside the support
            (points on a finite bound are moved slightly inside) and with finite
            ``log_potential``. Spread-out points, e.g. prior draws, give the burn-in a good
            first proposal shape.
        num_samples: Number of draws kept per chain.
        burn_in: Number of discarded (and tuning) steps per chain.
        kernel: ``"mala"`` or ``"rw"``.
        jump_rate: Differential-evolution jumps between the chains (see
            :func:`~ebm_lfi.samplers.mcmc.driver.sample_mcmc`; 0: none).
        seed: Integer seed or :class:`torch.Generator`.
        progress: Show a progress bar.

    Returns:
        A :class:`PotentialResult` with chains :math:`(c, n, p)` in :math:`\theta` space and
        in the dtype and device of ``initial``.

    Example:
        >>> from ebm_lfi.priors import BoxUniform
        >>> beta = torch.distributions.Beta(torch.tensor([2.0, 3.0]), torch.tensor([5.0, 1.0]))
        >>> out = sample_potential(
        ...     lambda t: beta.log_prob(t).sum(-1), BoxUniform([0.0, 0.0], [1.0, 1.0]),
        ...     torch.full((8, 2), 0.5), num_samples=200, burn_in=100, seed=0)
        >>> out.chains.shape
        torch.Size([8, 200, 2])
    """
    start = time.perf_counter()
    theta0 = torch.as_tensor(initial)
    if theta0.ndim != 2 or not theta0.is_floating_point():
        raise ValueError(
            f"initial must be a floating tensor of shape (chains, p), got "
            f"{tuple(theta0.shape)} of dtype {theta0.dtype}"
        )
    c, p = theta0.shape
    if c < 1 or p < 1:
        raise ValueError(f"initial needs at least one chain and one parameter, got {(c, p)}")
    if prior_dim(prior) != p:
        raise ValueError(f"initial has {p} parameters but the prior has {prior_dim(prior)}")
    dtype, device = theta0.dtype, theta0.device
    transform = SupportBijection.interior(prior, dtype=dtype, device=device)
    low, high = transform.low, transform.high
    inside0 = (theta0 >= low) & (theta0 <= high) & torch.isfinite(theta0)  # False for NaN
    if not bool(inside0.all()):
        bad = (~inside0.all(dim=1)).nonzero().flatten().tolist()
        raise ValueError(
            f"initial points of chains {bad} are outside the prior support or not finite"
        )

    def log_prob_u(u: Tensor) -> Tensor:
        theta = transform.inverse(u)
        inside = ((theta > low) & (theta < high)).all(dim=1)  # strictly; False for NaN
        # Rows rounded onto a bound are evaluated at the (interior) point g(0) and discarded.
        safe = torch.where(inside[:, None], theta, transform.inverse(torch.zeros_like(u[:1])))
        lp = checked_values("log_potential", log_potential(safe), u.shape)
        lp = lp.to(u.dtype) + transform.log_abs_det_jacobian(u).sum(dim=1)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    u0 = transform.forward(theta0)
    with torch.no_grad():
        lp0 = log_prob_u(u0)
    if not bool(torch.isfinite(lp0).all()):
        bad = (~torch.isfinite(lp0)).nonzero().flatten().tolist()
        raise ValueError(f"log_potential is not finite at the initial points of chains {bad}")

    out = sample_mcmc(
        log_prob_u,
        u0,
        num_samples=num_samples,
        burn_in=burn_in,
        kernel=kernel,
        jump_rate=jump_rate,
        seed=seed,
        progress=progress,
    )
    with torch.no_grad():
        chains = transform.inverse(out.chains.reshape(-1, p)).reshape(c, num_samples, p)
    if num_samples >= 4:
        ess, r = effective_sample_size(chains), rhat(chains)
    else:
        ess = r = chains.new_full((p,), math.nan)
    return PotentialResult(
        chains=chains,
        acceptance_rate=out.acceptance_rate,
        step_size=out.step_size,
        ess=ess,
        rhat=r,
        seconds=time.perf_counter() - start,
        jump_acceptance=out.jump_acceptance,
    )
