r"""Running simulators: seeded, batched, optionally parallel, with a policy for failures.

A simulator is a stochastic map :math:`\theta \mapsto x \sim p(x \mid \theta)`. :func:`simulate`
draws :math:`\theta_i \sim \pi(\theta)` and runs the simulator once per :math:`\theta_i`, giving
the training pairs :math:`(\theta_i, x_i)_{i=1}^n`.

Reproducibility. A root seed :math:`s` defines ``numpy.random.SeedSequence(s)``. Its child 0
seeds the :class:`torch.Generator` that draws :math:`\theta` from the prior, and the :math:`i`-th
child of its child 1 (``SeedSequence(s, spawn_key=(1, i))``) seeds simulation :math:`i`, counting
the replacement simulations drawn after failures on from :math:`n`. As the randomness of a
simulation depends on its index only, the same seed gives the same :math:`(\theta, x)` serially,
in batches of any size, or on any :class:`concurrent.futures.Executor` (a process pool, a Dask
client's ``get_executor()``), provided the simulator computes each row independently of the
batch it is in. :func:`simulate_at` runs given parameters the same way (row :math:`i` seeded by
``SeedSequence(s, spawn_key=(1, i))``, as ``simulator(theta, seed=s)``), for samplers that
choose their parameters themselves, such as SMC-ABC.

The wrapper and the seeding of each simulation live in :mod:`ebm_lfi.simulation.simulator`, the
checks of the outputs in :mod:`ebm_lfi.simulation.outcomes`; this module draws the parameters,
dispatches the simulations (in this process or on an executor) and applies the failure policy
(``on_error``, ``max_failure_rate``).
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Uniform

from ..priors import prior_dim, validate_prior
from ..progress import progress_bar
from .outcomes import Collector, Failure, Outcome, SimulationError, failure_error, format_theta
from .simulator import Simulator, forked_torch_rng, root_entropy, theta_seed, to_transport

__all__ = [
    "simulate",
    "simulate_at",
    "SimulationInfo",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationInfo:
    r"""What a call of :func:`simulate` did.

    Attributes:
        num_simulations: Valid simulations returned.
        num_failed: Simulations that failed (and were dropped); ``num_simulations + num_failed``
            simulations were run.
        seconds: Wall-clock duration of the call.
        seed: The root seed used (drawn afresh when ``seed=None`` was given).
    """

    num_simulations: int
    num_failed: int
    seconds: float
    seed: int


def _simulate_chunk(
    simulator: Simulator, theta: np.ndarray, entropy: int, start: int
) -> list[Outcome]:
    """Executor entry point (module level, so that it pickles)."""
    return simulator.run(theta, entropy, start, portable=True)


@overload
def simulate(
    simulator: Simulator | Callable[..., Any],
    prior: Distribution,
    num_simulations: int,
    *,
    seed: int | None = ...,
    executor: Any = ...,
    batch_size: int | None = ...,
    progress: bool = ...,
    on_error: Literal["raise", "drop"] = ...,
    max_failure_rate: float = ...,
    return_info: Literal[False] = ...,
) -> tuple[Tensor, Tensor]: ...


@overload
def simulate(
    simulator: Simulator | Callable[..., Any],
    prior: Distribution,
    num_simulations: int,
    *,
    seed: int | None = ...,
    executor: Any = ...,
    batch_size: int | None = ...,
    progress: bool = ...,
    on_error: Literal["raise", "drop"] = ...,
    max_failure_rate: float = ...,
    return_info: Literal[True],
) -> tuple[Tensor, Tensor, SimulationInfo]: ...


def simulate(
    simulator: Simulator | Callable[..., Any],
    prior: Distribution,
    num_simulations: int,
    *,
    seed: int | None = None,
    executor: Any = None,
    batch_size: int | None = None,
    progress: bool = False,
    on_error: Literal["raise", "drop"] = "raise",
    max_failure_rate: float = 0.5,
    return_info: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, SimulationInfo]:
    r"""Draw :math:`\theta_i \sim \pi` and simulate :math:`x_i \sim p(x \mid \theta_i)`.

    A simulation fails if the simulator raises, returns NaN or infinite values (after conversion
    to the prior's dtype), or returns a shape other than ``x_shape``, the shape of the first valid
    output. With ``on_error="raise"``, the first failing batch raises a :class:`SimulationError`
    naming the failing :math:`\theta` (chaining the original exception; for a wrong shape it is
    also a :class:`ValueError`). With ``on_error="drop"``, failures are dropped with a logged
    warning and fresh :math:`\theta` are drawn until exactly ``num_simulations`` valid pairs
    exist; a :class:`SimulationError` is raised once the failure rate (failures over simulations
    run) exceeds ``max_failure_rate``. Nothing non-finite is ever returned.

    Arguments:
        simulator: A :class:`Simulator`, or a callable of one :math:`\theta` (wrapped).
        prior: A torch distribution over :math:`\theta \in \mathbb{R}^p`.
        num_simulations: Number :math:`n` of valid simulations to return.
        seed: Root seed (a non-negative integer); ``None`` draws a fresh one, logged at debug
            level and reported in :class:`SimulationInfo`.
        executor: A :class:`concurrent.futures.Executor` (e.g. ``ProcessPoolExecutor`` or a Dask
            ``client.get_executor()``), or ``None`` to simulate in this process.
        batch_size: Simulations per task submitted to the executor (per call of a batched
            simulator). It does not change the results.
        progress: Show a progress bar over simulations.
        on_error: ``"raise"`` or ``"drop"``, the policy for failed simulations.
        max_failure_rate: With ``"drop"``, the largest tolerated failure rate, in :math:`[0, 1)`.
        return_info: Also return a :class:`SimulationInfo`.

    Returns:
        :math:`\theta` of shape :math:`(n, p)` and :math:`x` of shape :math:`(n, *x\_shape)`,
        both in the prior's dtype and on its device (and the :class:`SimulationInfo`).

    Example:
        >>> from ebm_lfi.priors import BoxUniform
        >>> prior = BoxUniform(low=[0.0, 0.0], high=[1.0, 1.0])
        >>> theta, x = simulate(lambda t, rng: t.numpy() + rng.normal(size=2), prior, 10, seed=0)
        >>> theta.shape, x.shape
        (torch.Size([10, 2]), torch.Size([10, 2]))
    """
    start_time = time.perf_counter()
    if not isinstance(simulator, Simulator):
        if not callable(simulator):
            raise TypeError(
                f"simulator must be a Simulator or a callable, got {type(simulator).__name__}"
            )
        simulator = Simulator(simulator)
    prior = validate_prior(prior)
    p = prior_dim(prior)
    n = _positive_int(num_simulations, "num_simulations")
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
    _check_policy(on_error, max_failure_rate)
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (with a submit method), "
            f"got {type(executor).__name__}"
        )
    entropy = root_entropy(seed)
    generator = torch.Generator().manual_seed(theta_seed(entropy))

    thetas: list[Tensor] = []
    collector: Collector | None = None
    num_run = num_failed = 0
    first_failure: Failure | None = None
    first_error: BaseException | None = None
    kinds: Counter[str] = Counter()
    with progress_bar(total=n, enabled=progress, desc="Simulating", unit="sim") as bar:
        while (need := n - len(collector.xs if collector else ())) > 0:
            theta = _draw_theta(prior, need, p, generator)
            if collector is None:
                collector = Collector(theta.dtype)
            chunk = batch_size or _default_batch_size(need, simulator.batched, executor)
            stream = _outcome_stream(
                simulator, to_transport(theta), entropy, num_run, chunk, executor
            )
            valid = torch.zeros(need, dtype=torch.bool)
            try:
                for offset, outcomes in stream:
                    rows = theta[offset : offset + len(outcomes)]
                    failures = collector.add(rows, outcomes)
                    valid[offset : offset + len(outcomes)] = True
                    bar.update(len(outcomes))
                    if not failures:
                        continue
                    if on_error == "raise":
                        raise failure_error(failures, len(outcomes), simulator.name)
                    for failure in failures:
                        valid[offset + failure.row] = False
                        kinds[failure.kind] += 1
                    first_failure = first_failure or failures[0]
                    first_error = first_error or next(
                        (f.error for f in failures if f.error is not None), None
                    )
                    num_failed += len(failures)
                    # The rate at the end of this round, num_failed / (num_run + need), can
                    # only grow from here: stop as soon as it exceeds the tolerance.
                    if num_failed > max_failure_rate * (num_run + need):
                        raise _rate_error(
                            num_failed,
                            num_run + offset + len(outcomes),
                            num_run + need,
                            max_failure_rate,
                            first_failure,
                        ) from first_error
            finally:
                stream.close()
            num_run += need
            thetas.append(theta[valid.to(theta.device)])
            bar.total = n + num_failed
            bar.refresh()
    assert collector is not None
    if num_failed:
        logger.warning(
            "Dropped %d of %d simulations that failed (%s); drew replacement parameters until "
            "%d valid simulations were obtained.",
            num_failed,
            num_run,
            ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())),
            n,
        )
    theta = torch.cat(thetas)
    x = torch.stack(collector.xs).to(theta.device)
    if not return_info:
        return theta, x
    info = SimulationInfo(n, num_failed, time.perf_counter() - start_time, entropy)
    return theta, x, info


@overload
def simulate_at(
    simulator: Simulator | Callable[..., Any],
    theta: Tensor,
    *,
    seed: int,
    executor: Any = ...,
    batch_size: int | None = ...,
    on_error: Literal["raise"] = ...,
    max_failure_rate: float = ...,
) -> Tensor: ...


@overload
def simulate_at(
    simulator: Simulator | Callable[..., Any],
    theta: Tensor,
    *,
    seed: int,
    executor: Any = ...,
    batch_size: int | None = ...,
    on_error: Literal["drop"],
    max_failure_rate: float = ...,
) -> tuple[Tensor, Tensor]: ...


def simulate_at(
    simulator: Simulator | Callable[..., Any],
    theta: Tensor,
    *,
    seed: int,
    executor: Any = None,
    batch_size: int | None = None,
    on_error: Literal["raise", "drop"] = "raise",
    max_failure_rate: float = 0.5,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Simulate once at each row of ``theta``, optionally on an executor.

    Row :math:`i` is seeded as simulation :math:`i` of the root ``seed`` whatever the batch or
    process that runs it, so the result equals ``simulator(theta, seed=seed)`` bit for bit,
    with or without ``executor``. The parameters are given, so a failed row is not replaced:
    with ``on_error="drop"`` it is left out and reported in the mask of valid rows.

    Arguments:
        simulator: A :class:`Simulator`, or a callable of one :math:`\theta` (wrapped).
        theta: Parameters, shape :math:`(n, p)`.
        seed: Root seed (a non-negative integer).
        executor: A :class:`concurrent.futures.Executor` (e.g. a Dask ``client.get_executor()``),
            or ``None`` to simulate in this process.
        batch_size: Simulations per task submitted to the executor; it does not change the
            results.
        on_error: ``"raise"`` (default): any failure raises. ``"drop"``: failed rows are left
            out (logged), unless their rate exceeds ``max_failure_rate``.
        max_failure_rate: With ``"drop"``, the largest tolerated failure rate, in
            :math:`[0, 1]` (1: never raise).

    Returns:
        With ``on_error="raise"``: :math:`x`, shape :math:`(n, *x\_shape)`. With ``"drop"``:
        ``(x, valid)``, the :math:`m` valid simulations :math:`(m, *x\_shape)` (shape
        :math:`(0,)` when none is) and the boolean mask :math:`(n,)` of the rows they belong
        to. In ``theta``'s dtype and on its device.

    Raises:
        SimulationError: With ``"raise"``, if any simulation raised, returned non-finite values
            or a wrong shape; with ``"drop"``, if more than ``max_failure_rate`` of them did.
    """
    if not isinstance(simulator, Simulator):
        simulator = Simulator(simulator)
    if not isinstance(theta, Tensor) or not theta.is_floating_point():
        raise TypeError(f"theta must be a floating-point tensor, got {type(theta).__name__}")
    if theta.ndim != 2 or theta.shape[0] == 0:
        raise ValueError(f"theta must have shape (n, p) with n >= 1, got {tuple(theta.shape)}")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must have a submit method, got {type(executor).__name__}")
    _check_policy(on_error, max_failure_rate, highest=1.5)
    n, entropy = theta.shape[0], root_entropy(seed)
    if batch_size is None:
        batch_size = _default_batch_size(n, simulator.batched, executor)
    chunk = _positive_int(batch_size, "batch_size")
    collector = Collector(theta.dtype)
    valid = torch.ones(n, dtype=torch.bool)
    failed: list[Failure] = []
    stream = _outcome_stream(simulator, to_transport(theta), entropy, 0, chunk, executor)
    try:
        for offset, outcomes in stream:
            failures = collector.add(theta[offset : offset + len(outcomes)].cpu(), outcomes)
            if failures and on_error == "raise":
                raise failure_error(failures, len(outcomes), simulator.name)
            for failure in failures:
                valid[offset + failure.row] = False
            failed += failures
            if failed and len(failed) > max_failure_rate * n:
                cause = next((f.error for f in failed if f.error is not None), None)
                raise _rate_error(
                    len(failed), offset + len(outcomes), n, max_failure_rate, failed[0]
                ) from cause
    finally:
        stream.close()
    if not collector.xs:  # every simulation failed (and max_failure_rate=1 allowed it)
        return theta.new_empty((0,)), valid.to(theta.device)
    x = torch.stack(collector.xs).to(theta.device)
    if on_error == "raise":
        return x
    if failed:
        kinds = Counter(f.kind for f in failed)
        logger.warning(
            "Dropped %d of %d simulations that failed (%s).",
            len(failed),
            n,
            ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())),
        )
    return x, valid.to(theta.device)


def _check_policy(on_error: Any, max_failure_rate: Any, highest: float = 1.0) -> None:
    """``ValueError`` unless ``on_error`` is ``"raise"``/``"drop"`` and the rate is in
    ``[0, highest)`` (``[0, 1]`` with ``highest`` above 1)."""
    if on_error not in ("raise", "drop"):
        raise ValueError(f"on_error must be 'raise' or 'drop', got {on_error!r}")
    if (
        isinstance(max_failure_rate, bool)
        or not isinstance(max_failure_rate, numbers.Real)
        or not 0.0 <= max_failure_rate < highest
    ):
        interval = "[0, 1)" if highest <= 1 else "[0, 1]"
        raise ValueError(f"max_failure_rate must be in {interval}, got {max_failure_rate!r}")


def _rate_error(
    num_failed: int, num_run: int, num_total: int, max_rate: float, first: Failure
) -> SimulationError:
    return SimulationError(
        f"{num_failed} of {num_run} simulations run failed: the failure rate exceeds "
        f"max_failure_rate={max_rate} (at most {math.floor(max_rate * num_total)} failures are "
        f"tolerated among {num_total} simulations); first failure: "
        f"theta={format_theta(first.theta)} {first.message}",
        theta=first.theta[None],
    )


def _outcome_stream(
    simulator: Simulator,
    theta: np.ndarray,
    entropy: int,
    first_index: int,
    chunk: int,
    executor: Any,
) -> Iterator[tuple[int, list[Outcome]]]:
    """Yield ``(offset, outcomes)`` per chunk, in order; pending tasks are cancelled on close."""
    spans = range(0, len(theta), chunk)
    if executor is None:
        for a in spans:
            yield a, simulator.run(theta[a : a + chunk], entropy, first_index + a)
        return
    futures = [
        executor.submit(_simulate_chunk, simulator, theta[a : a + chunk], entropy, first_index + a)
        for a in spans
    ]
    try:
        for a, future in zip(spans, futures):
            yield a, future.result()
    finally:
        for future in futures:
            future.cancel()


def _draw_theta(prior: Distribution, num: int, p: int, generator: torch.Generator) -> Tensor:
    """``num`` prior draws of shape ``(num, p)`` from ``generator``, for any prior."""
    base = prior
    while isinstance(base, Independent):
        base = base.base_dist
    if isinstance(base, Uniform) and base.low.numel() == p:  # BoxUniform, sbi's BoxUniform
        low, high = base.low.reshape(p), base.high.reshape(p)
        u = torch.rand((num, p), generator=generator, dtype=low.dtype).to(low.device)
        theta = low + u * (high - low)
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with forked_torch_rng(seed):
            theta = prior.sample((num,))
    if theta.shape != (num, p):
        raise ValueError(f"prior.sample(({num},)) returned shape {tuple(theta.shape)}")
    if theta.dtype not in (torch.float16, torch.float32, torch.float64):
        raise TypeError(f"prior samples must be float16, float32 or float64, got {theta.dtype}")
    return theta


def _default_batch_size(num: int, batched: bool, executor: Any) -> int:
    if executor is not None:  # about 32 tasks, so that workers share the load
        return max(1, min(1000, math.ceil(num / 32)))
    return min(num, 1000 if batched else 100)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
