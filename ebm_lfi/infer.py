r"""One call from simulator to posterior: simulate, fit, sample."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from torch.distributions import Distribution

from .methods.registry import get as get_method
from .posterior.posterior import Posterior
from .priors import validate_prior
from .simulation.simulate import simulate
from .simulation.simulator import Simulator

__all__ = ["infer"]


def infer(
    simulator: Simulator | Callable,
    prior: Distribution,
    x_o: Any,
    method: str | Any = "ssm-abc",
    *,
    num_simulations: int = 20_000,
    num_samples: int = 1_000,
    seed: int | None = None,
    progress: bool = False,
    simulation_options: dict | None = None,
    **method_options: Any,
) -> Posterior:
    r"""Simulate, fit a method and draw its posterior for ``x_o``.

    Arguments:
        simulator: An :class:`~ebm_lfi.Simulator` or a callable of one :math:`\theta`.
        prior: The prior, a ``torch.distributions.Distribution`` over :math:`(p,)`.
        x_o: The observation, shaped like one simulation.
        method: A method name (see :func:`ebm_lfi.methods.available`) or an unfitted method.
        num_simulations: Training simulations.
        num_samples: Posterior samples.
        seed: Root seed; the simulation, fit and sampling seeds derive from it.
        progress: Show progress bars.
        simulation_options: Extra keywords for :func:`~ebm_lfi.simulate`
            (``executor``, ``batch_size``, ``on_error``). An ``executor`` also runs the
            simulations of a method's ABC stage (reference table, SMC-ABC), unless the method
            already has one.
        method_options: Keywords for the method's constructor when ``method`` is a name.

    Returns:
        The :class:`~ebm_lfi.Posterior`; its ``diagnostics["simulations"]`` counts every
        simulation, training included.

    Example:
        >>> import ebm_lfi as el
        >>> task = el.benchmarks.get("gaussian")
        >>> post = el.infer(task.simulator, task.prior, task.observation(0),  # doctest: +SKIP
        ...                 method="ssm-abc", num_simulations=5_000, seed=0)
    """
    validate_prior(prior)
    start = time.perf_counter()
    seeds = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint32)
    sim_seed, fit_seed, post_seed = (int(s) for s in seeds)
    if isinstance(method, str):
        method_options.setdefault("simulator", simulator)
        method_options.setdefault("progress", progress)
        method = get_method(method, prior=prior, **method_options)
    elif method_options:
        raise TypeError("method options are only accepted with a method name")
    executor = (simulation_options or {}).get("executor")
    if executor is not None and getattr(method, "executor", False) is None:
        method.executor = executor  # the ABC stage's simulations too (table, SMC-ABC rounds)
    theta, x = simulate(
        simulator,
        prior,
        num_simulations,
        seed=sim_seed,
        progress=progress,
        **(simulation_options or {}),
    )
    method.fit(theta, x, seed=fit_seed)
    post = method.posterior(x_o, num_samples=num_samples, seed=post_seed)
    post.diagnostics["simulations"] = int(post.diagnostics.get("simulations", 0)) + num_simulations
    post.diagnostics["training_simulations"] = num_simulations
    post.diagnostics["total_seconds"] = time.perf_counter() - start
    return post
