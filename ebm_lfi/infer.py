r"""One call from simulator to posterior: simulate, fit, sample, within one budget.

``num_simulations`` is the total number of simulator calls. The method says how it shares that
budget between its training set and its posterior stage
(:meth:`~ebm_lfi.methods.Method.split_budget`); :func:`count_simulations` then reports what
was spent, so that methods can be compared at the budget the user gave.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from torch.distributions import Distribution

from .methods.registry import get as get_method
from .methods.rounds import default_rounds, run_rounds
from .posterior.posterior import Posterior
from .priors import validate_prior
from .simulation.simulate import simulate
from .simulation.simulator import Simulator

__all__ = ["infer", "count_simulations"]


def infer(
    simulator: Simulator | Callable,
    prior: Distribution,
    x_o: Any,
    method: str | Any = "auto",
    *,
    num_simulations: int = 20_000,
    num_samples: int = 1_000,
    seed: int | None = None,
    progress: bool = False,
    simulation_options: dict | None = None,
    rounds: int | str = 1,
    **method_options: Any,
) -> Posterior:
    r"""Simulate, fit a method and draw its posterior for ``x_o``.

    Arguments:
        simulator: An :class:`~ebm_lfi.Simulator` or a callable of one :math:`\theta`.
        prior: The prior, a ``torch.distributions.Distribution`` over :math:`(p,)`.
        x_o: The observation, shaped like one simulation.
        method: A method name (see :func:`ebm_lfi.methods.available`) or an unfitted method;
            default ``"auto"``, the best of several routes by held-out posterior score
            (:class:`~ebm_lfi.methods.AutoMethod`).
        num_simulations: The total number of simulator calls: the training set and whatever
            the method's posterior stage simulates (a reference table asked for with
            ``abc={"num_reference": N}``, SMC-ABC rounds, the check of the exchange sampler's
            inner chain) share it (:meth:`~ebm_lfi.methods.Method.split_budget`). By default
            ABC uses the training pairs as its reference table, so all of it trains. Failed
            simulations dropped under ``on_error="drop"`` are replaced, and counted on top.
        num_samples: Posterior samples.
        seed: Root seed; the simulation, fit and sampling seeds derive from it.
        progress: Show progress bars.
        simulation_options: Extra keywords for :func:`~ebm_lfi.simulate`
            (``executor``, ``batch_size``, ``on_error``, ``max_failure_rate``). An ``executor``
            and an ``on_error`` policy also apply to the simulations of the method's posterior
            stage (reference table, SMC-ABC, inner-chain check), unless the method already has
            its own.
        rounds: Sequential rounds (:mod:`~ebm_lfi.methods.rounds`): 1 (default) fits once on
            prior draws; :math:`R > 1` splits the training budget into :math:`R` rounds, each
            drawn from a defensive mixture of the last posterior and the prior, for the
            methods valid in rounds (``ml``, ``nce``, the exchange methods); ``"auto"``
            chooses by :func:`~ebm_lfi.methods.rounds.default_rounds`. The posterior's
            ``diagnostics["rounds"]`` gives each round's simulations and posterior width.
        method_options: Keywords for the method's constructor when ``method`` is a name.

    Returns:
        The :class:`~ebm_lfi.Posterior`. Its diagnostics count the simulator calls:
        ``total_simulations`` (every call: at most ``num_simulations`` plus the failed ones
        replaced), ``training_simulations``, ``failed_simulations`` and ``simulations``
        (training plus the posterior stage's, failures of the training set aside).

    Example:
        >>> import ebm_lfi as el
        >>> task = el.benchmarks.get("gaussian")
        >>> post = el.infer(task.simulator, task.prior, task.observation(0),  # doctest: +SKIP
        ...                 method="ssm-abc", num_simulations=5_000, seed=0)
    """
    prior = validate_prior(prior)
    start = time.perf_counter()
    seeds = np.random.SeedSequence(seed).generate_state(3, dtype=np.uint32)
    sim_seed, fit_seed, post_seed = (int(s) for s in seeds)
    if isinstance(method, str):
        method_options.setdefault("simulator", simulator)
        method_options.setdefault("progress", progress)
        method = get_method(method, prior=prior, **method_options)
    elif method_options:
        raise TypeError("method options are only accepted with a method name")
    options = dict(simulation_options or {})
    for key in ("executor", "on_error"):  # the posterior stage's simulations too
        if options.get(key) is not None and getattr(method, key, False) is None:
            setattr(method, key, options[key])
    num_training = num_simulations
    split = getattr(method, "split_budget", None)
    if callable(split):
        num_training, _ = split(num_simulations, num_samples)
    if rounds == "auto":
        rounds = default_rounds(getattr(method, "name", ""), num_training)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1 or 'auto', got {rounds!r}")
    if rounds > 1:
        post = run_rounds(
            method,
            simulator,
            prior,
            x_o,
            num_simulations=num_training,
            rounds=rounds,
            num_samples=num_samples,
            seed=sim_seed,
            progress=progress,
            simulation_options=options,
        )
        post.diagnostics["total_seconds"] = time.perf_counter() - start
        return post
    theta, x, info = simulate(
        simulator,
        prior,
        num_training,
        seed=sim_seed,
        progress=progress,
        return_info=True,
        **options,
    )
    method.fit(theta, x, seed=fit_seed)
    post = method.posterior(x_o, num_samples=num_samples, seed=post_seed)
    count_simulations(post.diagnostics, num_training, info.num_failed)
    post.diagnostics["total_seconds"] = time.perf_counter() - start
    return post


def count_simulations(diagnostics: dict, num_training: int, failed_training: int = 0) -> dict:
    r"""Complete a posterior's simulation counts with those of its training set (in place).

    Arguments:
        diagnostics: The posterior's diagnostics, whose ``simulations`` and
            ``failed_simulations`` (if any) count the posterior stage's simulator calls.
        num_training: Valid training simulations.
        failed_training: Failed training simulations that were dropped and replaced.

    Returns:
        ``diagnostics``, with ``training_simulations``, ``simulations`` (training plus the
        stage's), ``failed_simulations`` (of both) and ``total_simulations`` (every call).

    Example:
        >>> counts = count_simulations({"simulations": 300, "failed_simulations": 2}, 9_700, 5)
        >>> counts["total_simulations"], counts["failed_simulations"]
        (10005, 7)
    """
    stage = int(diagnostics.get("simulations", 0) or 0)
    failed = int(diagnostics.get("failed_simulations", 0) or 0)
    diagnostics["simulations"] = stage + num_training
    diagnostics["failed_simulations"] = failed + failed_training
    diagnostics["training_simulations"] = num_training
    diagnostics["total_simulations"] = stage + num_training + failed_training
    return diagnostics
