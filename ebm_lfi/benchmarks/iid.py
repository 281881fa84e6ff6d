r"""Exponential-family benchmark tasks with i.i.d. data (Pacchiardi & Dutta, 2022, Sec. 6.1).

Each simulation is :math:`m = 10` i.i.d. draws; the prior is uniform on a box.

- ``beta``: :math:`x_j \sim \mathrm{Beta}(\alpha, \beta)`, :math:`\alpha, \beta \in [1, 3]`;
- ``gamma``: :math:`x_j \sim \mathrm{Gamma}(k, \text{scale}=\vartheta)`,
  :math:`k, \vartheta \in [1, 3]`;
- ``gaussian``: :math:`x_j \sim \mathcal{N}(\mu, \sigma^2)`, :math:`\mu \in [-10, 10]`,
  :math:`\sigma \in [1, 10]` (a standard deviation).

The log-likelihoods are the closed forms

.. math::
    \log p(x \mid \alpha, \beta) &= (\alpha - 1) \textstyle\sum_j \log x_j
        + (\beta - 1) \sum_j \log(1 - x_j) - m \log B(\alpha, \beta), \\
    \log p(x \mid k, \vartheta) &= (k - 1) \textstyle\sum_j \log x_j - \sum_j x_j / \vartheta
        - m \log\Gamma(k) - m k \log \vartheta, \\
    \log p(x \mid \mu, \sigma) &= -\tfrac{m}{2} \log(2\pi) - m \log\sigma
        - \textstyle\sum_j (x_j - \mu)^2 / (2 \sigma^2),

so the sufficient statistics are :math:`(\sum \log x, \sum \log(1 - x))`,
:math:`(\sum \log x, \sum x)` and :math:`(\sum x, \sum x^2)`.

References:
    | Score Matched Neural Exponential Families for Likelihood-Free Inference
    | (Pacchiardi & Dutta, JMLR 2022)
    | https://arxiv.org/abs/2012.10903
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .task import Task

__all__ = [
    "simulate_beta",
    "simulate_gamma",
    "simulate_gaussian",
    "beta_log_likelihood",
    "gamma_log_likelihood",
    "gaussian_log_likelihood",
    "beta_statistics",
    "gamma_statistics",
    "gaussian_statistics",
    "beta_task",
    "gamma_task",
    "gaussian_task",
    "NUM_IID",
]

NUM_IID = 10


def check_batch(theta, rng: Sequence[np.random.Generator], dim: int) -> np.ndarray:
    r"""Validate a batched simulator call and return ``theta`` as float64 ``(b, dim)``."""
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[1] != dim:
        raise ValueError(f"theta must have shape (b, {dim}), got {theta.shape}")
    if len(rng) != theta.shape[0]:
        raise ValueError(f"need one Generator per row: {len(rng)} for {theta.shape[0]} rows")
    return theta


def simulate_beta(theta: np.ndarray, rng: Sequence[np.random.Generator]) -> np.ndarray:
    r"""Draw :math:`m = 10` i.i.d. :math:`\mathrm{Beta}(\alpha, \beta)` per row.

    Uses :math:`x = g_1 / (g_1 + g_2)` with :math:`g_1 \sim \Gamma(\alpha)`,
    :math:`g_2 \sim \Gamma(\beta)` drawn from ``rng[i]`` only.

    Arguments:
        theta: Parameters :math:`(\alpha, \beta)`, shape :math:`(b, 2)`.
        rng: One :class:`numpy.random.Generator` per row.

    Returns:
        Simulations, shape :math:`(b, 10)`.
    """
    theta = check_batch(theta, rng, 2)
    g1 = np.stack([r.standard_gamma(a, NUM_IID) for r, a in zip(rng, theta[:, 0])])
    g2 = np.stack([r.standard_gamma(b, NUM_IID) for r, b in zip(rng, theta[:, 1])])
    return (g1 / (g1 + g2)).reshape(-1, NUM_IID)


def simulate_gamma(theta: np.ndarray, rng: Sequence[np.random.Generator]) -> np.ndarray:
    r"""Draw :math:`m = 10` i.i.d. :math:`\mathrm{Gamma}(k, \text{scale}=\vartheta)` per row.

    Arguments:
        theta: Parameters :math:`(k, \vartheta)`, shape :math:`(b, 2)`.
        rng: One :class:`numpy.random.Generator` per row.

    Returns:
        Simulations, shape :math:`(b, 10)`.
    """
    theta = check_batch(theta, rng, 2)
    g = np.stack([r.standard_gamma(k, NUM_IID) for r, k in zip(rng, theta[:, 0])])
    return g.reshape(-1, NUM_IID) * theta[:, 1:2]


def simulate_gaussian(theta: np.ndarray, rng: Sequence[np.random.Generator]) -> np.ndarray:
    r"""Draw :math:`m = 10` i.i.d. :math:`\mathcal{N}(\mu, \sigma^2)` per row (σ a std. dev.).

    Arguments:
        theta: Parameters :math:`(\mu, \sigma)`, shape :math:`(b, 2)`.
        rng: One :class:`numpy.random.Generator` per row.

    Returns:
        Simulations, shape :math:`(b, 10)`.
    """
    theta = check_batch(theta, rng, 2)
    z = np.stack([r.standard_normal(NUM_IID) for r in rng]).reshape(-1, NUM_IID)
    return theta[:, 0:1] + theta[:, 1:2] * z


def _neg_inf(like: Tensor) -> Tensor:
    return torch.full_like(like, -torch.inf)


def beta_statistics(x: Tensor) -> Tensor:
    r""":math:`(\sum_j \log x_j, \sum_j \log(1 - x_j))`, shape :math:`(n, 2)`."""
    return torch.stack([torch.log(x).sum(-1), torch.log1p(-x).sum(-1)], dim=-1)


def gamma_statistics(x: Tensor) -> Tensor:
    r""":math:`(\sum_j \log x_j, \sum_j x_j)`, shape :math:`(n, 2)`."""
    return torch.stack([torch.log(x).sum(-1), x.sum(-1)], dim=-1)


def gaussian_statistics(x: Tensor) -> Tensor:
    r""":math:`(\sum_j x_j, \sum_j x_j^2)`, shape :math:`(n, 2)`."""
    return torch.stack([x.sum(-1), x.square().sum(-1)], dim=-1)


def beta_log_likelihood(theta: Tensor, x: Tensor) -> Tensor:
    r"""Beta log-likelihood; ``-inf`` unless :math:`0 < x < 1` and :math:`\alpha, \beta > 0`.

    Arguments:
        theta: :math:`(\alpha, \beta)`, shape :math:`(n, 2)`.
        x: Data, shape :math:`(n \text{ or } 1, m)`.

    Returns:
        Shape :math:`(\max(n, n_x),)`.
    """
    a, b = theta[:, 0], theta[:, 1]
    inside = ((x > 0) & (x < 1)).all(-1)
    xc = torch.where(inside.unsqueeze(-1), x, torch.full_like(x, 0.5))
    s = beta_statistics(xc)
    m = x.shape[-1]
    a_ok, b_ok = torch.where(a > 0, a, 1.0), torch.where(b > 0, b, 1.0)
    log_beta = torch.lgamma(a_ok) + torch.lgamma(b_ok) - torch.lgamma(a_ok + b_ok)
    ll = (a - 1) * s[:, 0] + (b - 1) * s[:, 1] - m * log_beta
    return torch.where(inside & (a > 0) & (b > 0), ll, _neg_inf(ll))


def gamma_log_likelihood(theta: Tensor, x: Tensor) -> Tensor:
    r"""Gamma (shape, scale) log-likelihood; ``-inf`` unless :math:`x, k, \vartheta > 0`.

    Arguments:
        theta: :math:`(k, \vartheta)`, shape :math:`(n, 2)`.
        x: Data, shape :math:`(n \text{ or } 1, m)`.

    Returns:
        Shape :math:`(\max(n, n_x),)`.
    """
    k, scale = theta[:, 0], theta[:, 1]
    inside = (x > 0).all(-1)
    xc = torch.where(inside.unsqueeze(-1), x, torch.ones_like(x))
    s = gamma_statistics(xc)
    m = x.shape[-1]
    k_ok, scale_ok = torch.where(k > 0, k, 1.0), torch.where(scale > 0, scale, 1.0)
    ll = (
        (k - 1) * s[:, 0]
        - s[:, 1] / scale_ok
        - m * torch.lgamma(k_ok)
        - m * k * torch.log(scale_ok)
    )
    return torch.where(inside & (k > 0) & (scale > 0), ll, _neg_inf(ll))


def gaussian_log_likelihood(theta: Tensor, x: Tensor) -> Tensor:
    r"""Gaussian log-likelihood (σ a standard deviation); ``-inf`` unless :math:`\sigma > 0`.

    Arguments:
        theta: :math:`(\mu, \sigma)`, shape :math:`(n, 2)`.
        x: Data, shape :math:`(n \text{ or } 1, m)`.

    Returns:
        Shape :math:`(\max(n, n_x),)`.
    """
    mu, sigma = theta[:, 0:1], theta[:, 1]
    sigma_ok = torch.where(sigma > 0, sigma, 1.0)
    m = x.shape[-1]
    sq = (x - mu).square().sum(-1)
    ll = -0.5 * m * np.log(2 * np.pi) - m * torch.log(sigma_ok) - sq / (2 * sigma_ok**2)
    ll = torch.where(torch.isfinite(x).all(-1), ll, _neg_inf(ll))
    return torch.where(sigma > 0, ll, _neg_inf(ll))


def beta_task() -> Task:
    r"""Beta task: 10 i.i.d. :math:`\mathrm{Beta}(\alpha, \beta)` on :math:`[1, 3]^2`."""
    return Task(
        name="beta",
        low=(1.0, 1.0),
        high=(3.0, 3.0),
        parameter_names=("alpha", "beta"),
        x_shape=(NUM_IID,),
        x_support=(0.0, 1.0),
        structure="iid",
        simulate_fn=simulate_beta,
        log_likelihood_fn=beta_log_likelihood,
        statistics_fn=beta_statistics,
        seed=1001,
        description="10 iid Beta(alpha, beta)",
    )


def gamma_task() -> Task:
    r"""Gamma task: 10 i.i.d. :math:`\Gamma(k, \text{scale}=\vartheta)` on :math:`[1, 3]^2`."""
    return Task(
        name="gamma",
        low=(1.0, 1.0),
        high=(3.0, 3.0),
        parameter_names=("shape", "scale"),
        x_shape=(NUM_IID,),
        x_support=(0.0, None),
        structure="iid",
        simulate_fn=simulate_gamma,
        log_likelihood_fn=gamma_log_likelihood,
        statistics_fn=gamma_statistics,
        seed=1002,
        description="10 iid Gamma(shape k, scale theta)",
    )


def gaussian_task() -> Task:
    r"""Gaussian task: 10 i.i.d. :math:`\mathcal{N}(\mu, \sigma^2)`, :math:`\mu \in [-10, 10]`,
    :math:`\sigma \in [1, 10]`."""
    return Task(
        name="gaussian",
        low=(-10.0, 1.0),
        high=(10.0, 10.0),
        parameter_names=("mu", "sigma"),
        x_shape=(NUM_IID,),
        x_support=(None, None),
        structure="iid",
        simulate_fn=simulate_gaussian,
        log_likelihood_fn=gaussian_log_likelihood,
        statistics_fn=gaussian_statistics,
        seed=1003,
        description="10 iid Normal(mu, sigma), sigma a standard deviation",
    )
