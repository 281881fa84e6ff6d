r"""Vectorised Metropolis–Hastings kernels (random walk and MALA) as pure ``init`` / ``step``.

Every kernel moves :math:`c` independent chains at once; positions have shape
:math:`(c, *)` and a log-density ``log_prob_fn`` maps them to :math:`(c,)`. As in blackjax,
a kernel is a pair of pure functions: ``init(position, log_prob_fn) -> state`` and
``step(state, log_prob_fn, step_size, generator=...) -> (state, info)`` with ``NamedTuple``
states and infos, so that callers write their own loops (adaptation, thinning, early stops).

**Random walk Metropolis.** :math:`x' = x + h L \xi`, :math:`\xi \sim \mathcal{N}(0, I)`,
accepted with probability :math:`\min(1, \pi(x') / \pi(x))`.

**MALA** (Roberts & Tweedie 1996). :math:`x' = x + \frac{h^2}{2} M \nabla \log \pi(x) +
h L \xi` with :math:`M = L L^\top`, accepted with probability

.. math:: \min\left(1, \frac{\pi(x') \, q(x \mid x')}{\pi(x) \, q(x' \mid x)}\right), \quad
    q(x' \mid x) = \mathcal{N}\left(x'; x + \tfrac{h^2}{2} M \nabla \log \pi(x), h^2 M\right).

The score comes from autograd of ``log_prob_fn`` (one forward and one backward pass per
step, for the whole batch). The step size :math:`h` is a scalar or one value per chain,
shape :math:`(c,)`; the optional preconditioner ``scale_tril`` :math:`L` is a
:math:`(d, d)` lower-triangular matrix for flat positions :math:`(c, d)`.

The driver :func:`~ebm_lfi.samplers.mcmc.driver.sample_mcmc` and the exchange sampler loop over
these kernels.

References:
    | Exponential convergence of Langevin distributions and their discrete approximations
      (Roberts & Tweedie, 1996) https://doi.org/10.2307/3318418
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "LogProbFn",
    "RWState",
    "MALAState",
    "MCMCInfo",
    "random_walk_init",
    "random_walk_step",
    "mala_init",
    "mala_step",
    "log_prob_and_grad",
]

LogProbFn = Callable[[Tensor], Tensor]


class RWState(NamedTuple):
    r"""State of random-walk chains.

    Attributes:
        position: Current positions, shape :math:`(c, *)`.
        log_prob: Log-density at ``position``, shape :math:`(c,)`.
    """

    position: Tensor
    log_prob: Tensor


class MALAState(NamedTuple):
    r"""State of MALA chains.

    Attributes:
        position: Current positions, shape :math:`(c, *)`.
        log_prob: Log-density at ``position``, shape :math:`(c,)`.
        grad: Score :math:`\nabla \log \pi` at ``position``, shape :math:`(c, *)`.
    """

    position: Tensor
    log_prob: Tensor
    grad: Tensor


class MCMCInfo(NamedTuple):
    r"""What one kernel step did.

    Attributes:
        acceptance_rate: Metropolis–Hastings acceptance probability, shape :math:`(c,)`.
        is_accepted: Whether each chain moved, shape :math:`(c,)`.
    """

    acceptance_rate: Tensor
    is_accepted: Tensor


def _check(position: Tensor, log_prob: Tensor) -> Tensor:
    if position.ndim < 1:
        raise ValueError(f"position must have shape (chains, *), got {tuple(position.shape)}")
    if log_prob.shape != position.shape[:1]:
        raise ValueError(
            f"log_prob_fn must map positions of shape {tuple(position.shape)} to "
            f"({position.shape[0]},), got {tuple(log_prob.shape)}"
        )
    return log_prob


def log_prob_and_grad(log_prob_fn: LogProbFn, position: Tensor) -> tuple[Tensor, Tensor]:
    r"""Evaluates a log-density and its gradient (the score) by autograd.

    Arguments:
        log_prob_fn: Maps positions :math:`(c, *)` to log-densities :math:`(c,)`; chains
            must not interact.
        position: Positions, shape :math:`(c, *)`.

    Returns:
        The detached log-densities :math:`(c,)` and scores :math:`(c, *)`.
    """
    with torch.enable_grad():
        x = position.detach().requires_grad_(True)
        lp = _check(x, log_prob_fn(x))
        (grad,) = torch.autograd.grad(lp.sum(), x)
    return lp.detach(), grad.detach()


def _per_chain(value: float | Tensor, like: Tensor) -> Tensor:
    """Broadcasts a scalar or (c,) value against positions of shape (c, *)."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.ndim == 0:
        return value
    if value.shape != like.shape[:1]:
        raise ValueError(
            f"step_size must be a scalar or have shape ({like.shape[0]},), got {tuple(value.shape)}"
        )
    return value.reshape(value.shape + (1,) * (like.ndim - 1))


def _apply_tril(scale_tril: Tensor | None, noise: Tensor) -> Tensor:
    if scale_tril is None:
        return noise
    if noise.ndim != 2 or scale_tril.shape != (noise.shape[1], noise.shape[1]):
        raise ValueError(
            f"scale_tril of shape {tuple(scale_tril.shape)} needs flat positions (c, d) with "
            f"d = {scale_tril.shape[-1]}, got positions of shape {tuple(noise.shape)}"
        )
    return noise @ scale_tril.T


def _accept(log_ratio: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    log_ratio = torch.nan_to_num(log_ratio, nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf)
    u = torch.rand(
        log_ratio.shape, generator=generator, dtype=log_ratio.dtype, device=log_ratio.device
    )
    accepted = torch.log(u) < log_ratio
    return torch.exp(log_ratio.clamp(max=0.0)), accepted


def _select(accepted: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(accepted.reshape(accepted.shape + (1,) * (new.ndim - 1)), new, old)


def random_walk_init(position: Tensor, log_prob_fn: LogProbFn) -> RWState:
    r"""Initialises random-walk chains.

    Arguments:
        position: Initial positions, shape :math:`(c, *)`.
        log_prob_fn: Maps positions :math:`(c, *)` to log-densities :math:`(c,)`.
    """
    with torch.no_grad():
        lp = _check(position, log_prob_fn(position))
    return RWState(position, lp.detach())


def random_walk_step(
    state: RWState,
    log_prob_fn: LogProbFn,
    step_size: float | Tensor,
    *,
    scale_tril: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[RWState, MCMCInfo]:
    r"""One Gaussian random-walk Metropolis step of every chain.

    Arguments:
        state: Current state.
        log_prob_fn: Maps positions :math:`(c, *)` to log-densities :math:`(c,)`.
        step_size: Proposal scale :math:`h`, a scalar or shape :math:`(c,)`.
        scale_tril: Optional :math:`(d, d)` lower-triangular proposal shape :math:`L`.
        generator: Source of randomness (on the positions' device).

    Returns:
        The new state and an :class:`MCMCInfo`.
    """
    x = state.position
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    proposal = x + _per_chain(step_size, x) * _apply_tril(scale_tril, noise)
    with torch.no_grad():
        lp = _check(proposal, log_prob_fn(proposal)).detach()
    rate, accepted = _accept(lp - state.log_prob, generator)
    new = RWState(_select(accepted, proposal, x), torch.where(accepted, lp, state.log_prob))
    return new, MCMCInfo(rate, accepted)


def mala_init(position: Tensor, log_prob_fn: LogProbFn) -> MALAState:
    r"""Initialises MALA chains (one forward and backward pass).

    Arguments:
        position: Initial positions, shape :math:`(c, *)`.
        log_prob_fn: Maps positions :math:`(c, *)` to log-densities :math:`(c,)`,
            differentiable in the positions.
    """
    lp, grad = log_prob_and_grad(log_prob_fn, position)
    return MALAState(position.detach(), lp, grad)


def _flat_sum(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).sum(dim=1)


def mala_step(
    state: MALAState,
    log_prob_fn: LogProbFn,
    step_size: float | Tensor,
    *,
    scale_tril: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[MALAState, MCMCInfo]:
    r"""One Metropolis-adjusted Langevin step of every chain.

    Arguments:
        state: Current state.
        log_prob_fn: Maps positions :math:`(c, *)` to log-densities :math:`(c,)`,
            differentiable in the positions.
        step_size: Step size :math:`h` (the proposal standard deviation), a scalar or shape
            :math:`(c,)`.
        scale_tril: Optional :math:`(d, d)` lower-triangular preconditioner :math:`L`.
        generator: Source of randomness (on the positions' device).

    Returns:
        The new state and an :class:`MCMCInfo`.
    """
    x, lp_x, grad_x = state
    h = _per_chain(step_size, x)
    if scale_tril is None:
        drift_x = grad_x
        solve = None
    else:
        drift_x = _apply_tril(scale_tril, _apply_tril(scale_tril.T, grad_x))

        def solve(v: Tensor) -> Tensor:  # L^{-1} v for rows v
            return torch.linalg.solve_triangular(scale_tril, v.T, upper=False).T

    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    proposal = x + 0.5 * h**2 * drift_x + h * _apply_tril(scale_tril, noise)
    lp_y, grad_y = log_prob_and_grad(log_prob_fn, proposal)
    drift_y = (
        grad_y if scale_tril is None else _apply_tril(scale_tril, _apply_tril(scale_tril.T, grad_y))
    )
    # log q(x | y) - log q(y | x); the forward residual is h * noise by construction.
    backward = x - proposal - 0.5 * h**2 * drift_y
    if solve is not None:
        backward = solve(backward)
    log_q_ratio = (_flat_sum(noise**2) - _flat_sum(backward**2) / h.reshape(-1) ** 2) / 2
    rate, accepted = _accept(lp_y - lp_x + log_q_ratio, generator)
    new = MALAState(
        _select(accepted, proposal, x),
        torch.where(accepted, lp_y, lp_x),
        _select(accepted, grad_y, grad_x),
    )
    return new, MCMCInfo(rate, accepted)
