r"""Registry of the benchmark tasks: :func:`get` a :class:`~ebm_lfi.benchmarks.task.Task` by name.

=========  =========================================  ==========  ============
name       model                                      :math:`x`   structure
=========  =========================================  ==========  ============
beta       10 i.i.d. Beta(α, β), α, β ∈ [1, 3]         (10,)       iid
gamma      10 i.i.d. Gamma(k, scale ϑ), k, ϑ ∈ [1, 3]  (10,)       iid
gaussian   10 i.i.d. N(μ, σ²), μ ∈ [−10, 10], σ ∈ [1, 10]  (10,)   iid
ar2        AR(2), T = 100, θ₁ ∈ [−1, 1], θ₂ ∈ [−1, 0]  (100,)      markov
ma2        MA(2), T = 100, θ₁ ∈ [−1, 1], θ₂ ∈ [0, 1]   (100,)      markov
lorenz96   stochastic Lorenz96, K = 40, 4 time units   (120, 40)   markov
lorenz96-  the same, K = 8, 1.5 time units             (45, 8)     markov
small
=========  =========================================  ==========  ============

The Lorenz96 tasks (:mod:`ebm_lfi.benchmarks.lorenz96`) have no tractable likelihood and no
reference posterior (``task.has_reference_posterior`` is ``False``).

Example:
    >>> from ebm_lfi import benchmarks
    >>> benchmarks.available()
    ['beta', 'gamma', 'gaussian', 'ar2', 'ma2', 'lorenz96', 'lorenz96-small']
    >>> task = benchmarks.get("ma2")
    >>> task.prior.parameter_names, task.x_shape
    (['theta1', 'theta2'], (100,))
"""

from __future__ import annotations

from collections.abc import Callable

from .iid import beta_task, gamma_task, gaussian_task
from .lorenz96 import lorenz96_small_task, lorenz96_task
from .task import Task
from .timeseries import ar2_task, ma2_task

__all__ = ["get", "available"]

_REGISTRY: dict[str, Callable[[], Task]] = {
    "beta": beta_task,
    "gamma": gamma_task,
    "gaussian": gaussian_task,
    "ar2": ar2_task,
    "ma2": ma2_task,
    "lorenz96": lorenz96_task,
    "lorenz96-small": lorenz96_small_task,
}


def available() -> list[str]:
    r"""Names of the benchmark tasks, in a fixed order."""
    return list(_REGISTRY)


def get(name: str) -> Task:
    r"""The benchmark task called ``name``.

    Arguments:
        name: One of :func:`available` (case-insensitive).

    Returns:
        A fresh :class:`~ebm_lfi.benchmarks.task.Task`.
    """
    if not isinstance(name, str):
        raise TypeError(f"task name must be a str, got {type(name).__name__}")
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown benchmark task {name!r}; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[key]()
