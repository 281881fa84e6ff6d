r"""The stochastic one-level Lorenz96 model (Wilks, 2005), the paper's large experiment.

:math:`K` slow variables on a ring (indices modulo :math:`K`) follow

.. math:: \frac{d x_k}{dt} = -x_{k-1}(x_{k-2} - x_{k+1}) - x_k + F - g(x_k) + e_k,
    \qquad g(x) = b_0 + b_1 x, \quad F = 10,

where the closure :math:`g` stands for the unresolved fast variables and :math:`e_k` is a
stochastic forcing, an AR(1) process per site held constant within each integration step:

.. math:: e_k^{(j)} = \phi\, e_k^{(j-1)} + \sigma_e \sqrt{1 - \phi^2}\, z_k^{(j)},
    \qquad z_k^{(j)} \sim \mathcal N(0, 1) \text{ iid}, \quad e_k^{(0)} = 0,

so its stationary sd is :math:`\sigma_e` and its lag-one autocorrelation :math:`\phi`. Step
:math:`j` first updates :math:`e^{(j)}`, then advances :math:`x` by one classical fourth-order
Runge–Kutta step of size :math:`\Delta t = 1/30` time units with :math:`e^{(j)}` fixed in the
four stages. The parameters are :math:`\theta = (b_0, b_1, \sigma_e, \phi)`.

Every simulation starts from one fixed state :math:`x(0)` (the first :math:`K` entries of
:data:`INITIAL_STATE`, the 40-site start of the paper's experiments, taken in its public code
from a run of the two-level model) and records the :math:`T` states after it,
:math:`x(j \Delta t)`, :math:`j = 1, \dots, T`, as an array of shape :math:`(T, K)`.

Conventions checked against the paper (Pacchiardi & Dutta, 2022) and its public code: the same
equations, :math:`F = 10`, 30 RK4 steps per time unit with one observation per step, the same
fixed start and no burn-in, the forcing held constant over an RK4 step and started at
:math:`\sigma_e \sqrt{1 - \phi^2} z` (our :math:`e^{(1)}`). Two deliberate differences: (i) the
public code records the fixed start as the first of its 120 points, spaced 4/119 apart; a
coordinate equal to a constant has no density, which score matching needs, so we record the
120 points after the start, spaced exactly 1/30 apart; (ii) after the first step the public
code adds one innovation :math:`z^{(j)}` shared by all sites, where Wilks (2005) draws one per
site, as here.

Sizes: ``lorenz96`` has :math:`K = 40`, :math:`T = 120` (4 time units, :math:`d = 4800`);
``lorenz96-small`` has :math:`K = 8`, :math:`T = 45` (1.5 time units, :math:`d = 360`). The prior
is uniform on :math:`[1.4, 2.2] \times [0, 1] \times [1.5, 2.5] \times [0, 1]`. There is no
tractable likelihood and no reference posterior: the paper scores posteriors by the energy and
kernel scores of their posterior predictive (:func:`ebm_lfi.metrics.energy_score`,
:func:`ebm_lfi.metrics.kernel_score`, with the kernel bandwidths :data:`KERNEL_BANDWIDTH`).

References:
    | Effects of stochastic parametrizations in the Lorenz '96 system (Wilks, 2005)
    | https://doi.org/10.1256/qj.04.03

    | Score Matched Neural Exponential Families for Likelihood-Free Inference
    | (Pacchiardi & Dutta, JMLR 2022) https://arxiv.org/abs/2012.10903
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .iid import check_batch
from .task import Task

__all__ = [
    "INITIAL_STATE",
    "FORCING",
    "STEPS_PER_TIME_UNIT",
    "KERNEL_BANDWIDTH",
    "lorenz96_drift",
    "lorenz96_integrate",
    "simulate_lorenz96",
    "Lorenz96Simulator",
    "lorenz96_task",
    "lorenz96_small_task",
]

INITIAL_STATE = np.array(
    [
        6.4558, 1.1054, -1.4502, -0.1985, 1.1905, 2.3887, 5.6689, 6.7284, 0.9301, 4.4170,
        4.0959, 2.6830, 4.7102, 2.5614, -2.9621, 2.1459, 3.5761, 8.1188, 3.7343, 3.2147,
        6.3542, 4.5297, -0.4911, 2.0779, 5.4642, 1.7152, -1.2533, 4.6262, 8.5042, 0.7487,
        -1.3709, -0.0520, 1.3196, 10.0623, -2.4885, -2.1007, 3.0754, 3.4831, 3.5744, 6.5790,
    ]
)  # fmt: skip
"""The fixed start :math:`x(0)` of 40 sites; a ring of :math:`K < 40` sites starts at the
first :math:`K` entries."""

FORCING = 10.0
"""The constant forcing :math:`F`."""

STEPS_PER_TIME_UNIT = 30
"""RK4 steps (and observations) per model time unit, :math:`1 / \\Delta t`."""

KERNEL_BANDWIDTH = {"lorenz96": 6.385, "lorenz96-small": 1.535}
"""The Gaussian-kernel bandwidths the paper uses for the kernel score of each size."""

LOW = (1.4, 0.0, 1.5, 0.0)
HIGH = (2.2, 1.0, 2.5, 1.0)
NAMES = ("b0", "b1", "sigma_e", "phi")


def lorenz96_drift(x: np.ndarray, theta: np.ndarray, e: np.ndarray) -> np.ndarray:
    r"""The right-hand side :math:`dx/dt` of the one-level model at fixed forcing :math:`e`.

    Arguments:
        x: States, shape :math:`(b, K)`.
        theta: Parameters :math:`(b_0, b_1, \dots)`, shape :math:`(b, \ge 2)`.
        e: Stochastic forcing, shape :math:`(b, K)`.

    Returns:
        Shape :math:`(b, K)`.
    """
    advection = np.roll(x, 1, axis=-1) * (np.roll(x, -1, axis=-1) - np.roll(x, 2, axis=-1))
    closure = theta[:, 0:1] + theta[:, 1:2] * x
    return advection - x + FORCING - closure + e


def lorenz96_integrate(
    theta: np.ndarray,
    noise: np.ndarray,
    initial: np.ndarray | None = None,
    dt: float = 1.0 / STEPS_PER_TIME_UNIT,
) -> np.ndarray:
    r"""Integrate the model for a batch of parameters, given the innovations :math:`z`.

    Deterministic given ``noise``: step :math:`j` sets
    :math:`e^{(j)} = \phi e^{(j-1)} + \sigma_e \sqrt{1 - \phi^2} z^{(j)}` (with
    :math:`e^{(0)} = 0`), then takes one RK4 step of size ``dt`` with :math:`e^{(j)}` fixed.

    Arguments:
        theta: Parameters :math:`(b_0, b_1, \sigma_e, \phi)`, shape :math:`(b, 4)`.
        noise: Standard normal innovations :math:`z`, shape :math:`(b, T, K)`.
        initial: Start :math:`x(0)`, shape :math:`(K,)` or :math:`(b, K)` (default: the first
            :math:`K` entries of :data:`INITIAL_STATE`).
        dt: Step size :math:`\Delta t`.

    Returns:
        The states after each step, :math:`x(\Delta t), \dots, x(T \Delta t)`, shape
        :math:`(b, T, K)`, float64.
    """
    theta = np.asarray(theta, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[1] != 4:
        raise ValueError(f"theta must have shape (b, 4), got {theta.shape}")
    if noise.ndim != 3 or noise.shape[0] != theta.shape[0]:
        raise ValueError(f"noise must have shape ({theta.shape[0]}, T, K), got {noise.shape}")
    b, T, K = noise.shape
    if K < 4:
        raise ValueError(f"the ring needs at least 4 sites, got K = {K}")
    if initial is None:
        if K > len(INITIAL_STATE):
            raise ValueError(f"no default start for K = {K} > {len(INITIAL_STATE)} sites")
        initial = INITIAL_STATE[:K]
    x = np.broadcast_to(np.asarray(initial, dtype=np.float64), (b, K)).copy()
    sigma, phi = theta[:, 2:3], theta[:, 3:4]
    innovation_scale = sigma * np.sqrt(np.clip(1.0 - phi**2, 0.0, None))
    e = np.zeros((b, K))
    out = np.empty((b, T, K))
    for j in range(T):
        e = phi * e + innovation_scale * noise[:, j]
        k1 = lorenz96_drift(x, theta, e)
        k2 = lorenz96_drift(x + 0.5 * dt * k1, theta, e)
        k3 = lorenz96_drift(x + 0.5 * dt * k2, theta, e)
        k4 = lorenz96_drift(x + dt * k3, theta, e)
        x = x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        out[:, j] = x
    return out


def simulate_lorenz96(
    theta: np.ndarray,
    rng: Sequence[np.random.Generator],
    num_sites: int = 40,
    num_times: int = 120,
) -> np.ndarray:
    r"""Simulate the stochastic Lorenz96 model for a batch of parameters.

    Row :math:`i` draws its innovations :math:`z` (shape :math:`(T, K)`, time-major) from
    ``rng[i]`` only, so a simulation does not depend on the batch it is run in.

    Arguments:
        theta: Parameters :math:`(b_0, b_1, \sigma_e, \phi)`, shape :math:`(b, 4)`.
        rng: One :class:`numpy.random.Generator` per row.
        num_sites: :math:`K`.
        num_times: :math:`T`, the number of recorded steps of :math:`1/30` time units.

    Returns:
        Series, shape :math:`(b, T, K)`.
    """
    theta = check_batch(theta, rng, 4)
    shape = (int(num_times), int(num_sites))
    noise = np.stack([r.standard_normal(shape) for r in rng]).reshape(-1, *shape)
    return lorenz96_integrate(theta, noise)


class Lorenz96Simulator:
    r"""A picklable batched simulator of one size: ``fn(theta (b, 4), rng) -> (b, T, K)``.

    Arguments:
        num_sites: :math:`K`.
        num_times: :math:`T`.
    """

    def __init__(self, num_sites: int, num_times: int):
        self.num_sites, self.num_times = int(num_sites), int(num_times)

    def __call__(self, theta: np.ndarray, rng: Sequence[np.random.Generator]) -> np.ndarray:
        return simulate_lorenz96(theta, rng, self.num_sites, self.num_times)

    def __repr__(self) -> str:
        return f"Lorenz96Simulator(num_sites={self.num_sites}, num_times={self.num_times})"


def _task(name: str, num_sites: int, num_times: int, seed: int) -> Task:
    units = num_times / STEPS_PER_TIME_UNIT
    return Task(
        name=name,
        low=LOW,
        high=HIGH,
        parameter_names=NAMES,
        x_shape=(num_times, num_sites),
        x_support=(None, None),
        structure="markov",
        simulate_fn=Lorenz96Simulator(num_sites, num_times),
        log_likelihood_fn=None,
        statistics_fn=None,
        seed=seed,
        description=(
            f"stochastic Lorenz96, K = {num_sites} sites, {units:g} time units at "
            f"{num_times} times (dt = 1/30), F = 10; no reference posterior"
        ),
    )


def lorenz96_task() -> Task:
    r"""The large size: :math:`K = 40`, :math:`T = 120` (4 time units), :math:`d = 4800`."""
    return _task("lorenz96", 40, 120, seed=1006)


def lorenz96_small_task() -> Task:
    r"""The small size: :math:`K = 8`, :math:`T = 45` (1.5 time units), :math:`d = 360`."""
    return _task("lorenz96-small", 8, 45, seed=1007)
