r"""Burn-in adaptation of a Gaussian proposal: one routine for every sampler of the package.

The random-walk and Langevin kernels (:mod:`ebm_lfi.samplers.mcmc.kernels`) and the outer step of
the exchange sampler (:mod:`ebm_lfi.samplers.mcmc.exchange`) propose
:math:`x' = x + \lambda L \xi` (plus, for MALA, the drift :math:`\frac{\lambda^2}{2} L L^\top
\nabla \log \pi(x)`), :math:`\xi \sim \mathcal{N}(0, I)`. During burn-in the size
:math:`\lambda` and the shape :math:`L` (lower-triangular, :math:`p \times p`) are adapted from
the :math:`c` chains that run side by side; both are frozen for the kept draws, so that these
are a Markov chain with a fixed kernel.

**Size** (:func:`robbins_monro`). A Robbins–Monro recursion drives the mean acceptance
probability :math:`\bar{a}_t` of the chains to a target :math:`a^\star`:

.. math:: \log \lambda_{t+1} = \log \lambda_t + \frac{\bar{a}_t - a^\star}{(t + 1)^{0.6}} .

The gains :math:`(t + 1)^{-0.6}` sum to infinity while their squares do not, the condition
under which the recursion settles where the expected acceptance equals :math:`a^\star`
(Andrieu & Thoms 2008, §4 and §5.1).

**Shape** (:func:`adaptation_update`). The positions of all chains are pooled over windows
of :math:`w = \max(10, \lfloor B / 10 \rfloor)` steps (:math:`B` the burn-in length). At the
end of a window, :math:`L` becomes the Cholesky factor of the window's covariance
:math:`\hat\Sigma` (plus :math:`10^{-10}` of its mean variance on the diagonal), as in the
adaptive Metropolis algorithm (Haario et al. 2001), where the proposal covariance is
:math:`\lambda^2 \hat\Sigma` with :math:`\lambda` near its optimal value for a Gaussian target
(:math:`2.38 / \sqrt{p}` for a random walk, Roberts & Rosenthal 2001): :math:`\lambda` is
measured in units of the target's spread and keeps its value when the shape changes. The shape
is not changed in the last window of burn-in, so that the size has :math:`w` steps to settle on
the final shape before both are frozen. A window in which some coordinate did not vary, or
whose covariance is not positive definite, leaves :math:`L` as it is. Before the first window
(:func:`adaptation_init`), :math:`L` is the diagonal of the starting points' standard
deviations, which needs no more chains than parameters.

**Alternatives measured.** On targets with exact draws (correlated and badly scaled
Gaussians, Beta and Gamma products through the support bijection, the exchange sampler on a
Gaussian family; 4 seeds each), rescaling :math:`\lambda` at each change of shape so as to keep
the geometric size :math:`\lambda (\det L)^{1/p}` halved the effective sample size on a Gamma
target whose chains start in a narrow region (the shape grows over burn-in, the rescaling
cancels the growth, and the recursion's decaying gain is too slow to make it up); starting from
the full covariance of 20 starting points made the exchange sampler worse; changing the shape up
to the end of burn-in did worse on the Gaussians. Other differences were within the spread
between seeds.

References:
    | A tutorial on adaptive MCMC (Andrieu & Thoms, 2008)
    | https://doi.org/10.1007/s11222-008-9110-y

    | An adaptive Metropolis algorithm (Haario, Saksman & Tamminen, 2001)
    | https://doi.org/10.2307/3318737

    | Optimal scaling for various Metropolis–Hastings algorithms (Roberts & Rosenthal, 2001)
    | https://doi.org/10.1214/ss/1015346320
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "AdaptationState",
    "adaptation_init",
    "adaptation_update",
    "robbins_monro",
    "window_length",
]


class AdaptationState(NamedTuple):
    r"""State of the burn-in adaptation.

    Attributes:
        log_scale: The size :math:`\log \lambda`.
        scale_tril: The shape :math:`L`, lower-triangular, shape :math:`(p, p)`.
        window: Positions of the chains since the last change of shape, each :math:`(c, p)`.
        count: Number of updates so far, the :math:`t` of the Robbins–Monro gain.
    """

    log_scale: float
    scale_tril: Tensor
    window: tuple[Tensor, ...]
    count: int


def robbins_monro(log_value: float, acceptance: float, target: float, t: int) -> float:
    r"""One Robbins–Monro update of a log step size toward a target acceptance rate.

    :math:`\log h \leftarrow \log h + (\bar{a} - a^\star) / (t + 1)^{0.6}`, where
    :math:`\bar{a}` is the acceptance rate just observed.

    Arguments:
        log_value: Current :math:`\log h`.
        acceptance: Observed (mean) acceptance probability :math:`\bar{a}`.
        target: Target acceptance rate :math:`a^\star`.
        t: Iteration counter, from 0.

    Returns:
        The updated :math:`\log h`.

    Example:
        >>> robbins_monro(0.0, acceptance=0.5, target=0.25, t=0)
        0.25
    """
    return log_value + (acceptance - target) / (t + 1) ** 0.6


def window_length(burn_in: int) -> int:
    r"""Steps per covariance window, :math:`\max(10, \lfloor B / 10 \rfloor)`."""
    return max(10, burn_in // 10)


def adaptation_init(position: Tensor, log_scale: float) -> AdaptationState:
    r"""The state before burn-in: the given size and a diagonal shape from the chains' spread.

    :math:`L = \operatorname{diag}(\hat\sigma_1, \ldots, \hat\sigma_p)`, the standard
    deviations of the starting points across chains; where a coordinate does not vary (or
    there is one chain) :math:`\hat\sigma_j = 0.1 \max(1, |\bar{x}_j|)`.

    Arguments:
        position: Starting points of the chains, shape :math:`(c, p)`.
        log_scale: Initial size :math:`\log \lambda`.

    Returns:
        An :class:`AdaptationState`.

    Example:
        >>> state = adaptation_init(torch.tensor([[0.0, 5.0], [2.0, 5.0]]), log_scale=0.0)
        >>> state.scale_tril
        tensor([[1.4142, 0.0000],
                [0.0000, 0.5000]])
    """
    c = position.shape[0]
    fallback = 0.1 * position.abs().mean(dim=0).clamp_min(1.0)
    std = position.std(dim=0) if c > 1 else fallback
    std = torch.where(std > 0, std, fallback)
    return AdaptationState(float(log_scale), torch.diag(std), (), 0)


def adaptation_update(
    state: AdaptationState,
    position: Tensor,
    acceptance: float,
    *,
    target: float,
    burn_in: int,
) -> AdaptationState:
    r"""One burn-in update: Robbins–Monro on the size and, at a window's end, a new shape.

    Arguments:
        state: The current :class:`AdaptationState`.
        position: Positions of the chains after the step just made, shape :math:`(c, p)`.
        acceptance: Mean acceptance probability of that step over the chains.
        target: Target acceptance rate :math:`a^\star`.
        burn_in: Length :math:`B` of the burn-in (sets the window and its last update).

    Returns:
        The updated :class:`AdaptationState`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> state = adaptation_init(torch.randn(8, 2, generator=g), log_scale=0.0)
        >>> for t in range(100):  # acceptance on target: the size stays, the shape is learnt
        ...     x = torch.randn(8, 2, generator=g) * torch.tensor([1.0, 3.0])
        ...     state = adaptation_update(state, x, 0.234, target=0.234, burn_in=200)
        >>> state.log_scale, state.count
        (0.0, 100)
        >>> bool((state.scale_tril.diagonal() / torch.tensor([1.0, 3.0]) - 1).abs().max() < 0.3)
        True
    """
    t = state.count
    log_scale = robbins_monro(state.log_scale, acceptance, target, t)
    scale_tril, window = state.scale_tril, state.window + (position,)
    length = window_length(burn_in)
    if len(window) >= length and t < burn_in - length:
        p = scale_tril.shape[0]
        pooled = torch.cat(window).T.cov().reshape(p, p)
        variances = pooled.diagonal()
        if bool((variances > 0).all()):  # also False for NaN
            eye = torch.eye(p, dtype=pooled.dtype, device=pooled.device)
            new, bad = torch.linalg.cholesky_ex(pooled + 1e-10 * variances.mean() * eye)
            if not bool(bad) and bool(torch.isfinite(new).all()):
                scale_tril = new
        window = ()
    return AdaptationState(log_scale, scale_tril, window, t + 1)
