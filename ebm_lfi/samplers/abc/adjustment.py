r"""Local-linear regression adjustment of accepted ABC samples.

Rejection ABC accepts the parameters :math:`\theta_i` whose simulated (scaled) statistics
:math:`s_i` lie within a tolerance :math:`\epsilon` of the observed :math:`s_o`. Each accepted
:math:`\theta_i` is a draw from :math:`p(\theta \mid s_i)` rather than from the target
:math:`p(\theta \mid s_o)`, so the sample is blurred by the spread of the :math:`s_i`.
Beaumont, Zhang & Balding (2002) remove the first-order part of that blur: near :math:`s_o`
model the accepted pairs as

.. math:: u_i = \alpha + (s_i - s_o)^\top B + r_i ,

where :math:`u = g^{-1}(\theta)` is the parameter mapped to an unbounded space and the residuals
:math:`r_i` are taken to have a distribution that does not depend on :math:`s_i`. Then
:math:`\alpha + r_i` is a draw of :math:`u` given :math:`s = s_o`, and the adjusted sample is

.. math:: u_i^{\mathrm{adj}} = u_i - (s_i - s_o)^\top \hat B , \qquad
    \theta_i^{\mathrm{adj}} = g(u_i^{\mathrm{adj}}) .

:math:`\hat\alpha, \hat B` come from weighted least squares with the Epanechnikov kernel
weights :math:`w_i = \max(0, 1 - (d_i / \epsilon)^2)`, :math:`d_i = \| s_i - s_o \|`, which
also weight the adjusted sample; a small ridge on :math:`B` (relative to the scale of the
regressors) keeps the solve stable when statistics are nearly collinear.

**Transform.** :math:`g^{-1}` is the bijection of the prior's support onto
:math:`\mathbb{R}^p` (:class:`~ebm_lfi.priors.SupportBijection`), per coordinate: the logit of
:math:`(\theta - l)/(h - l)` on a box :math:`[l, h]`, :math:`\log(\theta - l)` or
:math:`\log(h - \theta)` for a bound on one side only, the identity for none. The regression is
fitted on :math:`u`, so the adjusted
parameters always fall back inside the prior support (Beaumont et al. suggest this for
bounded parameters).

**Heteroscedastic correction** (optional; Blum & François 2010 use neural networks, here both
regressions are linear). The residual spread may also depend on :math:`s`. Regress
:math:`\log r_{ij}^2` on :math:`s_i - s_o` with the same weights, giving
:math:`\log \hat\sigma_j^2(s) = c_j + (s - s_o)^\top b_j`, and rescale each residual to its
value at :math:`s_o`:

.. math:: u_{ij}^{\mathrm{adj}} = \hat\alpha_j + r_{ij}\,
    \frac{\hat\sigma_j(s_o)}{\hat\sigma_j(s_i)}
    = \hat\alpha_j + r_{ij} \exp\!\big(-\tfrac12 (s_i - s_o)^\top b_j\big) .

The constant :math:`c_j` (and the bias of :math:`\mathbb{E} \log \chi^2_1`) cancels.

**When it is skipped.** The weighted regression has :math:`k + 1` coefficients per
parameter; with at most :math:`k + 1` samples of positive weight it is not identified, and
when the weights rest on fewer samples than that (Kish effective size :math:`1 / \sum_i w_i^2
\le k + 1`, as with importance weights of a table drawn from sequential proposals, which can
put nearly all the mass on a few prior draws) it is identified in name only: it passes
through those few samples, their residuals vanish and every adjusted parameter lands on one
point. In both cases the samples are returned unadjusted (with their kernel weights), a
warning is logged, and ``info["applied"]`` is ``False``.

References:
    | Approximate Bayesian computation in population genetics
      (Beaumont, Zhang & Balding, 2002), Genetics 162:2025–2035
    | https://doi.org/10.1093/genetics/162.4.2025

    | Non-linear regression models for approximate Bayesian computation
      (Blum & François, 2010) https://arxiv.org/abs/0809.4178
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution

from ...priors import SupportBijection, support_bounds

__all__ = [
    "AdjustmentResult",
    "epanechnikov_weights",
    "regression_adjustment",
]

logger = logging.getLogger(__name__)


class AdjustmentResult(NamedTuple):
    r"""Output of :func:`regression_adjustment`.

    Attributes:
        samples: Adjusted parameters, shape :math:`(m, p)` (the inputs when not applied).
        weights: Normalised kernel weights of the samples, shape :math:`(m,)`.
        info: ``applied`` (bool), ``reason`` (why not, or ``None``), ``r2`` (weighted
            :math:`R^2` of the regression, one per parameter, on the transformed scale),
            ``coef_norm`` (Frobenius norm of :math:`\hat B`), ``ess`` (Kish effective size
            :math:`1 / \sum_i w_i^2` of the weights), ``num_positive`` (samples of positive
            weight), ``epsilon`` and ``heteroscedastic``.
    """

    samples: Tensor
    weights: Tensor
    info: dict


def epanechnikov_weights(distances: Tensor, epsilon: float | None = None) -> Tensor:
    r"""Epanechnikov kernel weights :math:`\max(0, 1 - (d / \epsilon)^2)` (not normalised).

    Arguments:
        distances: Distances :math:`d_i \geq 0`, shape :math:`(m,)`.
        epsilon: Bandwidth. ``None`` uses :math:`(1 + 10^{-6}) \max_i d_i`, so the farthest
            sample keeps a tiny positive weight (all weights equal when every distance is 0).

    Returns:
        Weights, shape :math:`(m,)`, in the dtype of ``distances``.
    """
    d = torch.as_tensor(distances)
    if epsilon is None:
        epsilon = float(d.max()) * (1.0 + 1e-6) if d.numel() else 0.0
    if not epsilon > 0:
        return torch.ones_like(d)
    return (1.0 - (d / epsilon) ** 2).clamp_min(0.0)


def _weighted_fit(x: Tensor, y: Tensor, w: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    r"""Weighted least squares of ``y (m, q)`` on ``[1, x (m, k)]`` with a ridge on the slopes.

    Returns the intercept :math:`(q,)` and slopes :math:`(k, q)` (``w`` sums to one).
    """
    x_bar, y_bar = w @ x, w @ y
    xc, yc = x - x_bar, y - y_bar
    sw = w.sqrt()[:, None]
    k = x.shape[1]
    gram_scale = float((w @ xc.square()).mean()) if k else 0.0
    lam = ridge * max(gram_scale, torch.finfo(x.dtype).tiny)
    eye = math.sqrt(lam) * torch.eye(k, dtype=x.dtype, device=x.device)
    a = torch.cat([sw * xc, eye])
    b = torch.cat([sw * yc, y.new_zeros((k, y.shape[1]))])
    slopes = torch.linalg.lstsq(a, b).solution
    return y_bar - x_bar @ slopes, slopes


def _check_inputs(
    theta: Tensor, stats: Tensor, stats_obs: Tensor, distances: Tensor, weights: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """The inputs of :func:`regression_adjustment` as tensors, their shapes checked."""
    theta = torch.as_tensor(theta)
    stats, stats_obs = torch.as_tensor(stats), torch.as_tensor(stats_obs)
    distances = torch.as_tensor(distances)
    if theta.ndim != 2 or stats.ndim != 2 or stats.shape[0] != theta.shape[0]:
        raise ValueError(
            f"theta and stats must have shapes (m, p) and (m, k), got {tuple(theta.shape)} "
            f"and {tuple(stats.shape)}"
        )
    m, k = stats.shape
    if stats_obs.shape != (k,):
        raise ValueError(f"stats_obs must have shape ({k},), got {tuple(stats_obs.shape)}")
    if distances.shape != (m,):
        raise ValueError(f"distances must have shape ({m},), got {tuple(distances.shape)}")
    if weights is not None:
        weights = torch.as_tensor(weights)
        if weights.shape != (m,):
            raise ValueError(f"weights must have shape ({m},), got {tuple(weights.shape)}")
    if m == 0:
        raise ValueError("need at least one accepted sample")
    return theta, stats, stats_obs, distances, weights


def _bounds(bounds: Distribution | tuple[Tensor, Tensor] | None, p: int) -> tuple[Tensor, Tensor]:
    """The ``bounds`` argument as float64 ``(low, high)`` of shape ``(p,)``, ``±inf`` where
    open."""
    if isinstance(bounds, Distribution):
        return support_bounds(bounds, p)
    if bounds is None:
        low = torch.full((p,), -math.inf, dtype=torch.float64)
        return low, torch.full((p,), math.inf, dtype=torch.float64)
    low, high = (torch.as_tensor(b, dtype=torch.float64).reshape(-1) for b in bounds)
    if low.shape != (p,) or high.shape != (p,):
        raise ValueError(f"bounds must be two tensors of shape ({p},)")
    return low, high


def _adjust(
    u: Tensor, x: Tensor, w: Tensor, ridge: float, heteroscedastic: bool
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The adjusted :math:`u^{\mathrm{adj}} = \hat\alpha + r` (residuals rescaled to their
    spread at :math:`s_o` if ``heteroscedastic``), with :math:`\hat\alpha, \hat B`.

    Arguments:
        u: Transformed parameters, shape :math:`(m, p)`.
        x: Statistics minus the observed ones, :math:`s_i - s_o`, shape :math:`(m, k)`.
        w: Normalised kernel weights, shape :math:`(m,)`.
        ridge, heteroscedastic: As in :func:`regression_adjustment`.

    Returns:
        :math:`u^{\mathrm{adj}}` :math:`(m, p)`, the intercept :math:`(p,)` and the slopes
        :math:`(k, p)`.
    """
    intercept, slopes = _weighted_fit(x, u, w, ridge)
    residuals = u - intercept - x @ slopes
    if heteroscedastic:
        log_r2 = torch.log(residuals.square() + torch.finfo(torch.float64).tiny)
        _, log_slopes = _weighted_fit(x, log_r2, w, ridge)
        residuals = residuals * torch.exp(-0.5 * x @ log_slopes)
    return intercept + residuals, intercept, slopes


def regression_adjustment(
    theta: Tensor,
    stats: Tensor,
    stats_obs: Tensor,
    distances: Tensor,
    *,
    epsilon: float | None = None,
    weights: Tensor | None = None,
    bounds: Distribution | tuple[Tensor, Tensor] | None = None,
    heteroscedastic: bool = False,
    ridge: float = 1e-8,
) -> AdjustmentResult:
    r"""Local-linear regression adjustment of accepted ABC samples (Beaumont et al., 2002).

    Arguments:
        theta: Accepted parameters, shape :math:`(m, p)`.
        stats: Their statistics, shape :math:`(m, k)`, scaled as in the ABC distance.
        stats_obs: The observed statistics, shape :math:`(k,)`, scaled the same way.
        distances: Distances :math:`\| s_i - s_o \|`, shape :math:`(m,)`.
        epsilon: Kernel bandwidth; ``None`` uses :math:`(1 + 10^{-6}) \max_i d_i` (see
            :func:`epanechnikov_weights`).
        weights: Optional prior weights of the samples, shape :math:`(m,)` (e.g. SMC-ABC
            importance weights); the kernel weights multiply them.
        bounds: The prior (its support gives :math:`g`, see
            :func:`~ebm_lfi.priors.support_bounds`), or
            ``(low, high)`` tensors :math:`(p,)` with ``±inf`` for open sides, or ``None``
            (unbounded, :math:`g` the identity).
        heteroscedastic: Also rescale the residuals by a log-linear model of their spread.
        ridge: Ridge on the slopes, relative to the mean weighted variance of the regressors.

    Returns:
        An :class:`AdjustmentResult` ``(samples (m, p), weights (m,), info)``; samples and
        weights follow the dtype and device of ``theta``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> theta = torch.randn(2000, 1, generator=g, dtype=torch.float64)
        >>> s = theta + 0.1 * torch.randn(2000, 1, generator=g, dtype=torch.float64)
        >>> d = s[:, 0].abs()
        >>> keep = d.argsort()[:500]
        >>> out = regression_adjustment(theta[keep], s[keep], torch.zeros(1), d[keep])
        >>> out.info["applied"], out.samples.shape
        (True, torch.Size([500, 1]))
    """
    theta, stats, stats_obs, distances, weights = _check_inputs(
        theta, stats, stats_obs, distances, weights
    )
    m, p = theta.shape
    k = stats.shape[1]
    dtype, device = theta.dtype, theta.device
    f64 = dict(dtype=torch.float64, device=device)

    w = epanechnikov_weights(distances.to(**f64), epsilon)
    if weights is not None:
        w = w * weights.to(**f64)
    if not bool(w.sum() > 0):  # all weights zero (e.g. epsilon below every distance)
        raise ValueError("every sample has zero kernel weight: epsilon is below all distances")
    w = w / w.sum()
    num_positive = int((w > 0).sum())
    info = {
        "applied": False,
        "reason": None,
        "r2": [math.nan] * p,
        "coef_norm": math.nan,
        "ess": float(1.0 / (w**2).sum()),
        "num_positive": num_positive,
        "epsilon": float(epsilon) if epsilon is not None else float(distances.max()) * (1 + 1e-6),
        "heteroscedastic": bool(heteroscedastic),
    }

    def unadjusted(reason: str) -> AdjustmentResult:
        logger.warning("regression adjustment skipped: %s", reason)
        info["reason"] = reason
        return AdjustmentResult(theta, w.to(dtype), info)

    if num_positive <= k + 1:
        return unadjusted(
            f"{num_positive} samples of positive weight for {k + 1} coefficients per parameter"
        )
    if info["ess"] <= k + 1:
        return unadjusted(
            f"the weights' effective sample size {info['ess']:.1f} is at most the {k + 1} "
            "coefficients per parameter"
        )

    low, high = _bounds(bounds, p)
    transform = SupportBijection(low.to(device), high.to(device), torch.finfo(dtype).eps)
    u = transform.forward(theta.to(**f64))
    x = stats.to(**f64) - stats_obs.to(**f64)
    if not bool(torch.isfinite(u).all() & torch.isfinite(x).all()):
        return unadjusted("non-finite transformed parameters or statistics")
    u_adj, intercept, slopes = _adjust(u, x, w, ridge, heteroscedastic)
    theta_adj = transform.inverse(u_adj)
    if not bool(torch.isfinite(theta_adj).all()):
        return unadjusted("the adjusted parameters are not finite")

    total = w @ (u - w @ u).square()
    unexplained = w @ (u - intercept - x @ slopes).square()
    r2 = torch.where(total > 0, 1.0 - unexplained / total, torch.zeros_like(total))
    info.update(applied=True, r2=r2.tolist(), coef_norm=float(torch.linalg.norm(slopes)))
    samples = theta_adj.to(dtype)
    if bounds is not None:  # rounding to a lower precision must not leave the support
        samples = torch.minimum(
            torch.maximum(samples, low.to(device=device, dtype=dtype)),
            high.to(device=device, dtype=dtype),
        )
    return AdjustmentResult(samples, w.to(dtype), info)
