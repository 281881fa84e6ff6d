r"""Weighted samples: the checks of a posterior sample and the summaries of its measure.

A sample of :math:`n` draws :math:`\theta_i \in \mathbb{R}^p` with weights :math:`w_i \ge 0`
(normalised, :math:`\sum_i w_i = 1`; uniform when unweighted) is summarised as the weighted
empirical measure :math:`\sum_i w_i \delta_{\theta_i}`:

* mean :math:`\bar\theta = \sum_i w_i \theta_i` (:func:`weighted_mean`);
* covariance with the reliability-weights correction
  :math:`\sum_i w_i (\theta_i - \bar\theta)(\theta_i - \bar\theta)^\top / (1 - \sum_i w_i^2)`,
  which is the usual :math:`1/(n-1)` sample covariance for uniform weights (:func:`weighted_cov`);
* quantiles by the inverted weighted empirical CDF,
  :math:`Q(q) = \min\{\theta_{(k)} : \sum_{j \le k} w_{(j)} \ge q\}` per coordinate
  (numpy's ``method="inverted_cdf"``; integer weights act as repeated draws;
  :func:`weighted_quantile`);
* Kish's effective sample size :math:`1 / \sum_i w_i^2` (:func:`kish_ess`).

:func:`check_samples`, :func:`check_weights` and :func:`check_names` validate the arguments of
:class:`ebm_lfi.posterior.posterior.Posterior` (draws or chains, weights, parameter names),
with messages that name the shapes; :func:`as_real_tensor` turns any real array-like into a
tensor for them and for the pair plots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "as_real_tensor",
    "check_samples",
    "check_weights",
    "check_names",
    "normalised_weights",
    "weighted_mean",
    "weighted_cov",
    "weighted_quantile",
    "kish_ess",
]


def as_real_tensor(a: Any, name: str, device: torch.device | None = None) -> Tensor:
    r"""``a`` (array-like or tensor) as a detached real floating tensor; integers become the
    default float type. Raises ``TypeError`` naming ``name`` for anything else."""
    if isinstance(a, Tensor):
        t = a.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(a))
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(
                f"{name} must be a numeric array or tensor, got {type(a).__name__}"
            ) from e
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t if device is None else t.to(device)


def check_samples(samples: Any, chains: Any) -> tuple[Tensor, Tensor | None]:
    r"""Checks the draws, given as ``samples`` or as ``chains`` (or as both, if they agree).

    Arguments:
        samples: Draws, shape :math:`(n, p)`, or ``None`` when ``chains`` is given.
        chains: MCMC draws, shape :math:`(c, d, p)`, or ``None``.

    Returns:
        The finite draws, shape :math:`(n, p)` (the chains flattened chain by chain), and the
        chains as a tensor, or ``None``.
    """
    if samples is None and chains is None:
        raise ValueError("give samples of shape (n, p) or chains of shape (c, d, p)")
    chain_t = None
    if chains is not None:
        chain_t = as_real_tensor(chains, "chains")
        if chain_t.ndim != 3 or 0 in chain_t.shape:
            raise ValueError(
                f"chains must have shape (c, d, p) with c, d, p >= 1, got {tuple(chain_t.shape)}"
            )
        flat = chain_t.reshape(-1, chain_t.shape[-1])
        if samples is not None:
            samples_t = as_real_tensor(samples, "samples", device=chain_t.device)
            if samples_t.shape != flat.shape or not torch.equal(samples_t.to(flat.dtype), flat):
                raise ValueError(
                    f"samples {tuple(samples_t.shape)} must equal chains "
                    f"{tuple(chain_t.shape)} flattened to {tuple(flat.shape)}; "
                    "pass only one of them"
                )
        samples_t = flat
    else:
        samples_t = as_real_tensor(samples, "samples")
        if samples_t.ndim != 2 or 0 in samples_t.shape:
            raise ValueError(
                f"samples must have shape (n, p) with n, p >= 1, got {tuple(samples_t.shape)}"
            )
    if not bool(torch.isfinite(samples_t).all()):
        bad = int((~torch.isfinite(samples_t)).any(-1).sum())
        raise ValueError(f"samples contain NaN or infinite values in {bad} rows")
    return samples_t, chain_t


def check_weights(weights: Any, samples: Tensor, chains: Tensor | None) -> Tensor | None:
    r"""Checks and normalises the weights of the draws ``samples`` (of the ``chains``).

    Arguments:
        weights: Non-negative weights, shape :math:`(n,)` (or :math:`(c, d)` with chains), not
            all zero; or ``None``.
        samples: The draws, shape :math:`(n, p)`.
        chains: The chains, shape :math:`(c, d, p)`, or ``None``.

    Returns:
        The weights in the draws' dtype, normalised to sum to one, shape :math:`(n,)`; or
        ``None``.
    """
    if weights is None:
        return None
    n, p = samples.shape
    weights_t = as_real_tensor(weights, "weights", device=samples.device)
    weights_t = weights_t.to(samples.dtype)
    if chains is not None and tuple(weights_t.shape) == tuple(chains.shape[:2]):
        weights_t = weights_t.reshape(-1)
    if tuple(weights_t.shape) != (n,):
        expected = f"({n},)"
        if chains is not None:
            expected += f" or {tuple(chains.shape[:2])}"
        raise ValueError(
            f"weights must have shape {expected} for samples of shape {(n, p)}, "
            f"got {tuple(weights_t.shape)}"
        )
    if not bool(torch.isfinite(weights_t).all()):
        raise ValueError("weights contain NaN or infinite values")
    if bool((weights_t < 0).any()):
        raise ValueError(f"weights must be non-negative; {int((weights_t < 0).sum())} are negative")
    total = weights_t.sum()
    if not bool(total > 0):
        raise ValueError("weights are all zero")
    return weights_t / total


def check_names(parameter_names: Sequence[str] | None, p: int) -> list[str]:
    r"""The names of the :math:`p` parameters, default ``theta_1, ..., theta_p``; unique."""
    if parameter_names is None:
        names = [f"theta_{i + 1}" for i in range(p)]
    else:
        if isinstance(parameter_names, str):
            raise TypeError("parameter_names must be a sequence of strings, not one string")
        names = [str(name) for name in parameter_names]
        if len(names) != p:
            raise ValueError(f"{len(names)} parameter names for {p} parameters")
        if len(set(names)) != p:
            raise ValueError(f"parameter names must be unique, got {names}")
    return names


def normalised_weights(samples: Tensor, weights: Tensor | None) -> Tensor:
    r"""The weights, shape :math:`(n,)`: ``weights``, or uniform ones if ``None``."""
    if weights is None:
        return torch.full(
            (samples.shape[0],),
            1.0 / samples.shape[0],
            dtype=samples.dtype,
            device=samples.device,
        )
    return weights


def weighted_mean(samples: Tensor, weights: Tensor) -> Tensor:
    r"""Mean of draws :math:`(n, p)` with normalised weights :math:`(n,)`, shape :math:`(p,)`."""
    return weights @ samples


def weighted_cov(samples: Tensor, weights: Tensor) -> Tensor:
    r"""Covariance of draws :math:`(n, p)` with normalised weights :math:`(n,)`.

    Uses the unbiased reliability-weights normalisation :math:`1 - \sum_i w_i^2` (equal to
    ``numpy.cov(samples.T, aweights=weights)``); NaN when fewer than two draws carry weight.

    Returns:
        Shape :math:`(p, p)`.
    """
    centred = samples - weights @ samples
    denom = 1.0 - (weights * weights).sum()
    if float(denom) <= 0:
        return torch.full(
            (samples.shape[1], samples.shape[1]),
            math.nan,
            dtype=samples.dtype,
            device=samples.device,
        )
    return (centred * weights[:, None]).T @ centred / denom


def weighted_quantile(
    samples: Tensor, weights: Tensor, q: float | Sequence[float] | Tensor
) -> Tensor:
    r"""Per-parameter quantiles of draws :math:`(n, p)` with normalised weights :math:`(n,)`.

    For each parameter, :math:`Q(q)` is the smallest draw whose cumulative weight (draws
    sorted) reaches :math:`q`; draws with zero weight are ignored. With uniform weights this is
    ``numpy.quantile(..., method="inverted_cdf")``.

    Arguments:
        samples: The draws, shape :math:`(n, p)`.
        weights: Their normalised weights, shape :math:`(n,)`.
        q: Probability or probabilities in :math:`[0, 1]`, scalar or shape :math:`(k,)`.

    Returns:
        Shape :math:`(p,)` for a scalar ``q``, :math:`(k, p)` otherwise, on the draws' device.
    """
    q_t = torch.as_tensor(q, dtype=torch.float64)
    scalar = q_t.ndim == 0
    q_t = q_t.reshape(-1)
    if not bool(((q_t >= 0) & (q_t <= 1)).all()):
        raise ValueError(f"quantile probabilities must lie in [0, 1], got {q_t.tolist()}")
    w = weights.double().cpu()
    x = samples.cpu()
    keep = w > 0
    w, x = w[keep], x[keep]
    order = torch.argsort(x, dim=0)
    cum_w = torch.cumsum(w[order], dim=0)  # (n, p)
    # relative slack so that q = k/n hits the k-th draw despite rounding in the cumsum
    target = q_t * (1.0 - 1e-12)
    idx = torch.searchsorted(cum_w.T.contiguous(), target.expand(x.shape[1], -1).contiguous())
    idx = idx.clamp_(max=x.shape[0] - 1)  # (p, k)
    sorted_x = torch.gather(x, 0, order)
    out = torch.gather(sorted_x.T, 1, idx).T  # (k, p)
    out = out.to(samples.device)
    return out[0] if scalar else out


def kish_ess(weights: Tensor) -> float:
    r"""Kish's effective sample size :math:`1 / \sum_i w_i^2` of normalised weights."""
    return float(1.0 / (weights.double() ** 2).sum())
