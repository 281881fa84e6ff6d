r"""Time-series benchmark tasks: AR(2) and MA(2) of length :math:`T = 100`.

Both have standard normal innovations :math:`e_t \sim \mathcal{N}(0, 1)`.

**AR(2)**, :math:`\theta_1 \in [-1, 1]`, :math:`\theta_2 \in [-1, 0]`:

.. math:: x_t = \theta_1 x_{t-1} + \theta_2 x_{t-2} + e_t, \quad t = 1, \dots, T,

started at :math:`x_0 = x_{-1} = 0`. The likelihood is the exact product of the Gaussian
conditionals, :math:`-\frac{T}{2}\log 2\pi - \frac12 \sum_t (x_t - \theta_1 x_{t-1} -
\theta_2 x_{t-2})^2`, a quadratic form in :math:`(1, -\theta_1, -\theta_2)` whose coefficients
are the lagged products :math:`S_{ij} = \sum_t x_{t-i} x_{t-j}`.

**MA(2)**, :math:`\theta_1 \in [-1, 1]`, :math:`\theta_2 \in [0, 1]`:

.. math:: x_t = e_t + \theta_1 e_{t-1} + \theta_2 e_{t-2}, \quad t = 1, \dots, T,

with :math:`e_0, e_{-1} \sim \mathcal{N}(0, 1)` drawn too, so :math:`x` is the stationary
Gaussian vector with banded Toeplitz covariance :math:`\gamma_0 = 1 + \theta_1^2 + \theta_2^2`,
:math:`\gamma_1 = \theta_1 (1 + \theta_2)`, :math:`\gamma_2 = \theta_2`. The likelihood uses
the banded Cholesky factor :math:`\Sigma = L L^\top` (:math:`L` lower triangular with two
sub-diagonals :math:`a_t, b_t` and diagonal :math:`d_t`):

.. math::
    b_t = \gamma_2 / d_{t-2}, \quad a_t = (\gamma_1 - b_t a_{t-1}) / d_{t-1}, \quad
    d_t^2 = \gamma_0 - a_t^2 - b_t^2,

then :math:`z_t = (x_t - a_t z_{t-1} - b_t z_{t-2}) / d_t` and
:math:`\log p(x \mid \theta) = -\frac{T}{2}\log 2\pi - \sum_t \log d_t - \frac12 \sum_t z_t^2`,
a :math:`O(T)` recursion vectorised over many :math:`\theta` at once. (This is the innovations
algorithm: :math:`d_t^2` is the one-step prediction variance.) The covariance is positive
definite for every real :math:`\theta`, so the likelihood is finite everywhere.

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

from .iid import check_batch
from .task import Task

__all__ = [
    "simulate_ar2",
    "simulate_ma2",
    "ar2_log_likelihood",
    "ar2_sufficient_statistics",
    "ma2_log_likelihood",
    "ar2_task",
    "ma2_task",
    "LENGTH",
]

LENGTH = 100
_HALF_LOG_2PI = 0.5 * float(np.log(2 * np.pi))


def simulate_ar2(
    theta: np.ndarray, rng: Sequence[np.random.Generator], length: int = LENGTH
) -> np.ndarray:
    r"""Simulate AR(2) series started at :math:`x_0 = x_{-1} = 0`.

    Arguments:
        theta: :math:`(\theta_1, \theta_2)`, shape :math:`(b, 2)`.
        rng: One :class:`numpy.random.Generator` per row (its :math:`T` innovations).
        length: Series length :math:`T`.

    Returns:
        Series, shape :math:`(b, T)`.
    """
    theta = check_batch(theta, rng, 2)
    e = np.stack([r.standard_normal(length) for r in rng]).reshape(-1, length)
    x = np.zeros((e.shape[0], length + 2))
    t1, t2 = theta[:, 0], theta[:, 1]
    for t in range(length):
        x[:, t + 2] = t1 * x[:, t + 1] + t2 * x[:, t] + e[:, t]
    return x[:, 2:]


def simulate_ma2(
    theta: np.ndarray, rng: Sequence[np.random.Generator], length: int = LENGTH
) -> np.ndarray:
    r"""Simulate stationary MA(2) series (the pre-sample innovations :math:`e_{-1}, e_0` drawn).

    Arguments:
        theta: :math:`(\theta_1, \theta_2)`, shape :math:`(b, 2)`.
        rng: One :class:`numpy.random.Generator` per row (its :math:`T + 2` innovations, in
            time order :math:`e_{-1}, e_0, e_1, \dots`).
        length: Series length :math:`T`.

    Returns:
        Series, shape :math:`(b, T)`.
    """
    theta = check_batch(theta, rng, 2)
    e = np.stack([r.standard_normal(length + 2) for r in rng]).reshape(-1, length + 2)
    return e[:, 2:] + theta[:, 0:1] * e[:, 1:-1] + theta[:, 1:2] * e[:, :-2]


def ar2_log_likelihood(theta: Tensor, x: Tensor) -> Tensor:
    r"""Exact AR(2) log-likelihood for series started at :math:`x_0 = x_{-1} = 0`.

    Arguments:
        theta: :math:`(\theta_1, \theta_2)`, shape :math:`(n, 2)`.
        x: Series, shape :math:`(n \text{ or } 1, T)`, any :math:`T \geq 1`.

    Returns:
        Shape :math:`(\max(n, n_x),)`.
    """
    T = x.shape[-1]
    xp = torch.nn.functional.pad(x, (2, 0))
    lag = [xp[:, 2 - i : xp.shape[-1] - i] for i in range(3)]  # x_t, x_{t-1}, x_{t-2}
    S = [[(lag[i] * lag[j]).sum(-1) for j in range(3)] for i in range(3)]
    t1, t2 = theta[:, 0], theta[:, 1]
    quad = (
        S[0][0]
        + t1.square() * S[1][1]
        + t2.square() * S[2][2]
        - 2 * t1 * S[0][1]
        - 2 * t2 * S[0][2]
        + 2 * t1 * t2 * S[1][2]
    )
    ll = -T * _HALF_LOG_2PI - 0.5 * quad
    return torch.where(torch.isfinite(ll), ll, torch.full_like(ll, -torch.inf))


def ma2_log_likelihood(theta: Tensor, x: Tensor) -> Tensor:
    r"""Exact log-likelihood of the stationary MA(2) vector (banded Cholesky recursion).

    Arguments:
        theta: :math:`(\theta_1, \theta_2)`, shape :math:`(n, 2)`.
        x: Series, shape :math:`(n \text{ or } 1, T)`, any :math:`T \geq 1`.

    Returns:
        Shape :math:`(\max(n, n_x),)`.
    """
    T = x.shape[-1]
    t1, t2 = theta[:, 0], theta[:, 1]
    g0, g1, g2 = 1 + t1.square() + t2.square(), t1 * (1 + t2), t2
    n = max(theta.shape[0], x.shape[0])
    zeros = torch.zeros(n, dtype=theta.dtype, device=theta.device)
    # State: (d, a, z) at t-1 and (d, z) at t-2; d at t <= 0 is unused because b_1 = a_1 = b_2 = 0.
    d1 = torch.sqrt(g0).expand(n)
    z1 = x[:, 0] / d1
    logdet, sq = torch.log(d1), z1.square()
    a1, d2, z2 = zeros, torch.ones_like(d1), zeros
    for t in range(1, T):
        b = g2 / d2 if t >= 2 else zeros
        a = (g1 - b * a1) / d1
        d = torch.sqrt(g0 - a.square() - b.square())
        z = (x[:, t] - a * z1 - b * z2) / d
        logdet, sq = logdet + torch.log(d), sq + z.square()
        a1, d2, d1, z2, z1 = a, d1, d, z1, z
    ll = -T * _HALF_LOG_2PI - logdet - 0.5 * sq
    return torch.where(torch.isfinite(ll), ll, torch.full_like(ll, -torch.inf))


def ar2_sufficient_statistics(x: Tensor) -> Tensor:
    r"""The five lagged products of AR(2) that pair with :math:`\theta`.

    With :math:`x_0 = x_{-1} = 0`, :math:`\log p(x \mid \theta) = -\frac T2 \log 2\pi
    - \frac12 S_{00} + \theta_1 S_{01} + \theta_2 S_{02} - \frac12 \theta_1^2 S_{11}
    - \theta_1 \theta_2 S_{12} - \frac12 \theta_2^2 S_{22}` with
    :math:`S_{ij} = \sum_{t=1}^T x_{t-i} x_{t-j}`: an exponential family with statistics
    :math:`(S_{01}, S_{02}, S_{11}, S_{12}, S_{22})` and base measure :math:`-\frac12 S_{00}`.

    Arguments:
        x: Series, shape :math:`(n, T)`.

    Returns:
        Shape :math:`(n, 5)`.
    """
    xp = torch.nn.functional.pad(torch.as_tensor(x), (2, 0))
    lag = [xp[:, 2 - i : xp.shape[1] - i] for i in range(3)]  # x_{t-i}, t = 1..T
    pairs = ((0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    return torch.stack([(lag[i] * lag[j]).sum(-1) for i, j in pairs], dim=-1)


def ar2_task() -> Task:
    r"""AR(2) task: :math:`T = 100`, :math:`\theta_1 \in [-1, 1]`, :math:`\theta_2 \in [-1, 0]`."""
    return Task(
        name="ar2",
        low=(-1.0, -1.0),
        high=(1.0, 0.0),
        parameter_names=("theta1", "theta2"),
        x_shape=(LENGTH,),
        x_support=(None, None),
        structure="markov",
        simulate_fn=simulate_ar2,
        log_likelihood_fn=ar2_log_likelihood,
        statistics_fn=ar2_sufficient_statistics,
        seed=1004,
        description="AR(2), length 100, N(0,1) innovations, x_0 = x_-1 = 0",
    )


def ma2_task() -> Task:
    r"""MA(2) task: :math:`T = 100`, :math:`\theta_1 \in [-1, 1]`, :math:`\theta_2 \in [0, 1]`."""
    return Task(
        name="ma2",
        low=(-1.0, 0.0),
        high=(1.0, 1.0),
        parameter_names=("theta1", "theta2"),
        x_shape=(LENGTH,),
        x_support=(None, None),
        structure="markov",
        simulate_fn=simulate_ma2,
        log_likelihood_fn=ma2_log_likelihood,
        statistics_fn=None,
        seed=1005,
        description="stationary MA(2), length 100, N(0,1) innovations (e_-1, e_0 drawn)",
    )
