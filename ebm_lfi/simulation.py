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
batch it is in.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import pickle
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Uniform
from tqdm.auto import tqdm

from .priors import prior_dim, validate_prior

__all__ = ["Simulator", "simulate", "SimulationError", "SimulationInfo"]

logger = logging.getLogger(__name__)

_THETA_KEY = 0  # SeedSequence child seeding the prior draws
_SIMULATION_KEY = 1  # SeedSequence child whose i-th child seeds simulation i
_MAX_REPORTED = 5  # failing parameters named in an error message
_GLOBAL_RNG_LOCK = threading.RLock()  # threads may not seed the global RNGs concurrently


class SimulationError(RuntimeError):
    r"""A simulation raised, returned non-finite values or an output of the wrong shape.

    The original exception, if any, is chained as ``__cause__``. A wrong output shape raises a
    :class:`SimulationError` that is also a :class:`ValueError`.

    Arguments:
        message: What failed and for which parameters.
        theta: The failing parameters, shape :math:`(k, p)`, if known.
    """

    def __init__(self, message: str, theta: Tensor | None = None):
        super().__init__(message)
        self.theta = theta


class _SimulationShapeError(SimulationError, ValueError):
    """The simulator's output shape changed between calls."""


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in another process, as text."""

    def __str__(self) -> str:
        return "\n" + self.args[0]


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


class _Outcome(NamedTuple):
    """One simulation's raw result: an array, or the exception it raised."""

    value: np.ndarray | None
    error: BaseException | None = None
    traceback: str | None = None


class Simulator:
    r"""A user simulator, wrapped so that it can be run seeded, in batches and in parallel.

    ``fn`` receives the parameters as a tensor of the prior's dtype on the CPU (a numpy array if
    ``as_numpy=True``): one :math:`\theta` of shape :math:`(p,)`, or a batch of shape
    :math:`(b, p)` if ``batched=True``. It returns :math:`x` (a numpy array, tensor, scalar or
    nested list) of shape ``x_shape``, or :math:`(b, *x\_shape)` if batched; outputs become
    tensors of the prior's dtype.

    Randomness. If ``fn`` has a parameter named ``rng``, it is passed a
    :class:`numpy.random.Generator` seeded from the simulation's own seed (batched: a list of
    :math:`b` Generators, one per row, and row :math:`i` must draw from ``rng[i]`` only). If it
    has no ``rng`` parameter, each simulation runs with the global numpy, :mod:`random` and torch
    RNGs seeded from its own seed inside a fork: their states are saved before and restored after
    (``torch.random.fork_rng``), so the caller's global RNG state is unchanged. A batched ``fn``
    without ``rng`` is then called once per row, as a batch of one, so that each row gets its own
    seed; give it an ``rng`` parameter to vectorise. Threads take a lock around such calls.

    A ``Simulator`` pickles if ``fn`` does (a module-level function for process pools).

    Arguments:
        fn: The simulator callable.
        batched: Whether ``fn`` takes a batch :math:`(b, p)` instead of one :math:`(p,)`.
        name: A name for messages; defaults to the callable's name.
        as_numpy: Pass :math:`\theta` as a numpy array instead of a tensor.

    Example:
        >>> def gaussian(theta, rng):
        ...     return theta.numpy() + rng.standard_normal(theta.shape)
        >>> simulator = Simulator(gaussian)
        >>> simulator(torch.zeros(4, 2), seed=0).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        batched: bool = False,
        name: str | None = None,
        *,
        as_numpy: bool = False,
    ):
        if isinstance(fn, Simulator) or not callable(fn):
            raise TypeError(f"fn must be a plain callable, got {type(fn).__name__}")
        self.fn = fn
        self.batched = bool(batched)
        self.as_numpy = bool(as_numpy)
        self.name = name if name is not None else getattr(fn, "__name__", type(fn).__name__)
        try:
            self.accepts_rng = "rng" in inspect.signature(fn).parameters
        except (TypeError, ValueError):  # builtins without a signature
            self.accepts_rng = False

    def __repr__(self) -> str:
        return f"Simulator({self.name}, batched={self.batched}, rng={self.accepts_rng})"

    def __call__(self, theta: Tensor | np.ndarray, *, seed: int | None = None) -> Tensor:
        r"""Simulate once for each row of ``theta``, raising on any failure.

        Row :math:`i` is seeded exactly as simulation :math:`i` of :func:`simulate` with the
        same ``seed``, so ``simulator(theta, seed=s)`` reproduces ``simulate(..., seed=s)``.

        Arguments:
            theta: Parameters, shape :math:`(p,)` or :math:`(n, p)`.
            seed: Root seed; ``None`` draws a fresh one.

        Returns:
            :math:`x`, shape ``x_shape`` or :math:`(n, *x\_shape)`, in ``theta``'s floating
            dtype (the default dtype for other inputs).
        """
        theta_t = torch.as_tensor(theta)
        if not theta_t.is_floating_point():
            theta_t = theta_t.to(torch.get_default_dtype())
        if theta_t.ndim not in (1, 2):
            raise ValueError(f"theta must have shape (p,) or (n, p), got {tuple(theta_t.shape)}")
        rows = theta_t.reshape(-1, theta_t.shape[-1])
        outcomes = self._simulate_rows(_to_transport(rows), _root_entropy(seed), 0, False)
        collector = _Collector(theta_t.dtype)
        failures = collector.add(rows, outcomes)
        if failures:
            raise _failure_error(failures, len(rows), self.name)
        x = torch.stack(collector.xs).to(theta_t.device)
        return x[0] if theta_t.ndim == 1 else x

    def _call(self, theta: np.ndarray, seeds: list[np.random.SeedSequence]) -> np.ndarray:
        arg = theta if self.as_numpy else torch.from_numpy(theta)
        if self.accepts_rng:
            rngs = [np.random.default_rng(s) for s in seeds]
            return _to_numpy(self.fn(arg, rng=rngs if self.batched else rngs[0]))
        with _seeded_global_rngs(seeds[0]):
            return _to_numpy(self.fn(arg))

    def _simulate_rows(
        self, theta: np.ndarray, entropy: int, start: int, portable: bool
    ) -> list[_Outcome]:
        r"""Run simulations ``start, ..., start + b - 1`` on ``theta`` of shape :math:`(b, p)`."""
        b = len(theta)
        seeds = [_simulation_seed(entropy, start + j) for j in range(b)]
        if self.batched and self.accepts_rng and b > 1:
            try:
                out = self._call(theta.copy(), seeds)
                if out.ndim >= 1 and out.shape[0] == b:
                    return [_Outcome(out[j]) for j in range(b)]
            except Exception:  # isolated row by row below
                pass
        outcomes = []
        for j in range(b):
            try:
                if self.batched:
                    out = self._call(theta[j : j + 1].copy(), seeds[j : j + 1])
                    if out.ndim == 0 or out.shape[0] != 1:
                        raise ValueError(
                            f"batched simulator returned shape {tuple(out.shape)} for a batch "
                            "of 1 parameter; expected (1, *x_shape)"
                        )
                    out = out[0]
                else:
                    out = self._call(theta[j].copy(), seeds[j : j + 1])
                outcomes.append(_Outcome(out))
            except Exception as exc:
                outcomes.append(_failed(exc, portable))
        return outcomes


def _simulate_chunk(
    simulator: Simulator, theta: np.ndarray, entropy: int, start: int
) -> list[_Outcome]:
    """Executor entry point (module level, so that it pickles)."""
    return simulator._simulate_rows(theta, entropy, start, True)


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
    validate_prior(prior)
    p = prior_dim(prior)
    n = _positive_int(num_simulations, "num_simulations")
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
    if on_error not in ("raise", "drop"):
        raise ValueError(f"on_error must be 'raise' or 'drop', got {on_error!r}")
    if (
        isinstance(max_failure_rate, bool)
        or not isinstance(max_failure_rate, numbers.Real)
        or not 0.0 <= max_failure_rate < 1.0
    ):
        raise ValueError(f"max_failure_rate must be in [0, 1), got {max_failure_rate!r}")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (with a submit method), "
            f"got {type(executor).__name__}"
        )
    entropy = _root_entropy(seed)
    generator = torch.Generator().manual_seed(_theta_seed(entropy))

    thetas: list[Tensor] = []
    collector: _Collector | None = None
    num_run = num_failed = 0
    first_failure: _Failure | None = None
    first_error: BaseException | None = None
    kinds: Counter[str] = Counter()
    with tqdm(total=n, disable=not progress, desc="Simulating", unit="sim") as bar:
        while (need := n - len(collector.xs if collector else ())) > 0:
            theta = _draw_theta(prior, need, p, generator)
            if collector is None:
                collector = _Collector(theta.dtype)
            chunk = batch_size or _default_batch_size(need, simulator.batched, executor)
            stream = _outcome_stream(
                simulator, _to_transport(theta), entropy, num_run, chunk, executor
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
                        raise _failure_error(failures, len(outcomes), simulator.name)
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


class _Failure(NamedTuple):
    row: int  # index within the batch
    theta: Tensor
    kind: str  # "raised", "non-finite" or "wrong-shape"
    message: str
    error: BaseException | None


class _Collector:
    """Checks raw outcomes in order, converting valid ones and fixing ``x_shape`` on the first."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.x_shape: tuple[int, ...] | None = None
        self.xs: list[Tensor] = []

    def add(self, theta: Tensor, outcomes: list[_Outcome]) -> list[_Failure]:
        failures = []
        for j, outcome in enumerate(outcomes):
            if outcome.error is not None:
                error = outcome.error
                if outcome.traceback is not None and error.__cause__ is None:
                    error.__cause__ = _RemoteTraceback(outcome.traceback)
                message = f"raised {type(error).__name__}: {error}"
                failures.append(_Failure(j, theta[j], "raised", message, error))
                continue
            value = outcome.value
            if self.x_shape is not None and tuple(value.shape) != self.x_shape:
                message = (
                    f"returned an output of shape {tuple(value.shape)}, expected shape "
                    f"{self.x_shape} (that of the first valid output)"
                )
                failures.append(_Failure(j, theta[j], "wrong-shape", message, None))
                continue
            x = torch.from_numpy(np.array(value)).to(self.dtype)
            if not bool(torch.isfinite(x).all()):
                message = f"returned non-finite values (NaN or inf in {self.dtype})"
                failures.append(_Failure(j, theta[j], "non-finite", message, None))
                continue
            self.x_shape = tuple(value.shape)
            self.xs.append(x)
        return failures


def _failure_error(failures: list[_Failure], batch: int, name: str) -> SimulationError:
    cls = _SimulationShapeError if failures[0].kind == "wrong-shape" else SimulationError
    lines = [f"theta={_format(f.theta)} {f.message}" for f in failures[:_MAX_REPORTED]]
    if len(failures) > _MAX_REPORTED:
        lines.append(f"... and {len(failures) - _MAX_REPORTED} more")
    error = cls(
        f"simulator {name!r} failed for {len(failures)} of {batch} parameters in a batch:\n  "
        + "\n  ".join(lines)
        + "\nPass on_error='drop' to simulate() to drop failed simulations.",
        theta=torch.stack([f.theta for f in failures]),
    )
    error.__cause__ = next((f.error for f in failures if f.error is not None), None)
    return error


def _rate_error(
    num_failed: int, num_run: int, num_total: int, max_rate: float, first: _Failure
) -> SimulationError:
    return SimulationError(
        f"{num_failed} of {num_run} simulations run failed: the failure rate exceeds "
        f"max_failure_rate={max_rate} (at most {math.floor(max_rate * num_total)} failures are "
        f"tolerated among {num_total} simulations); first failure: theta={_format(first.theta)} "
        f"{first.message}",
        theta=first.theta[None],
    )


def _outcome_stream(
    simulator: Simulator,
    theta: np.ndarray,
    entropy: int,
    first_index: int,
    chunk: int,
    executor: Any,
) -> Iterator[tuple[int, list[_Outcome]]]:
    """Yield ``(offset, outcomes)`` per chunk, in order; pending tasks are cancelled on close."""
    spans = range(0, len(theta), chunk)
    if executor is None:
        for a in spans:
            yield a, simulator._simulate_rows(theta[a : a + chunk], entropy, first_index + a, False)
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
        with _forked_torch_rng(seed):
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


def _root_entropy(seed: int | None) -> int:
    if seed is None:
        entropy = int(np.random.SeedSequence().entropy)
        logger.debug("simulate: drew the fresh root seed %d", entropy)
        return entropy
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(seed)


def _theta_seed(entropy: int) -> int:
    seq = np.random.SeedSequence(entropy, spawn_key=(_THETA_KEY,))
    return int(seq.generate_state(1, np.uint64)[0])


def _simulation_seed(entropy: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy, spawn_key=(_SIMULATION_KEY, index))


@contextmanager
def _forked_torch_rng(seed: int) -> Iterator[None]:
    """Seed torch's global RNG inside a fork that restores its state on exit."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        if cuda:
            torch.manual_seed(seed)
        else:  # leave the lazy CUDA seeding queue alone
            torch.default_generator.manual_seed(seed)
        yield


@contextmanager
def _seeded_global_rngs(seq: np.random.SeedSequence) -> Iterator[None]:
    """Seed the global numpy, :mod:`random` and torch RNGs from ``seq``, then restore them."""
    words = seq.generate_state(4, np.uint64)
    with _GLOBAL_RNG_LOCK:
        numpy_state = np.random.get_state()  # noqa: NPY002
        python_state = random.getstate()
        try:
            with _forked_torch_rng(int(words[0])):
                np.random.seed(words[1:].view(np.uint32))  # noqa: NPY002
                random.seed(int(words[3]))
                yield
        finally:
            np.random.set_state(numpy_state)  # noqa: NPY002
            random.setstate(python_state)


def _to_transport(theta: Tensor) -> np.ndarray:
    return theta.detach().cpu().numpy().copy()


def _to_numpy(out: Any) -> np.ndarray:
    if isinstance(out, Tensor):
        out = out.detach().cpu()
        if out.dtype == torch.bfloat16:
            out = out.float()
        array = out.numpy()
    else:
        array = np.asarray(out)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"simulator returned values of dtype {array.dtype}; expected real numbers")
    return array


def _failed(error: Exception, portable: bool) -> _Outcome:
    """An outcome for ``error``; made safe to send back from another process if ``portable``."""
    if not portable:
        return _Outcome(None, error)
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        error = RuntimeError(f"{type(error).__name__}: {error}")
    return _Outcome(None, error, text)


def _format(theta: Tensor) -> str:
    return np.array2string(theta.detach().cpu().double().numpy(), precision=4, separator=", ")
