r"""The simulator wrapper: a user callable, run seeded and in batches, one outcome per run.

:class:`Simulator` wraps a stochastic map :math:`\theta \mapsto x \sim p(x \mid \theta)` given
as a plain callable (of one :math:`\theta` or of a batch) so that each simulation runs with its
own seed and fails on its own: :meth:`Simulator.run` returns one raw
:class:`~ebm_lfi.simulation.outcomes.Outcome` per row (the output, or the exception raised),
and calling the simulator checks those (:mod:`ebm_lfi.simulation.outcomes`) and raises on any
failure.

Seeding. A root seed :math:`s` defines ``numpy.random.SeedSequence(s)``. Its child 0 seeds the
prior draws of :func:`ebm_lfi.simulation.simulate.simulate` (:func:`theta_seed`), and the
:math:`i`-th child of its child 1 (``SeedSequence(s, spawn_key=(1, i))``) seeds simulation
:math:`i`, through an ``rng`` argument or, for a callable without one, the global numpy,
:mod:`random` and torch RNGs inside a fork that restores them. The randomness of simulation
:math:`i` thus depends on :math:`i` only, whichever batch or process runs it.
"""

from __future__ import annotations

import inspect
import logging
import numbers
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .outcomes import Collector, Outcome, failure_error

__all__ = [
    "Simulator",
    "root_entropy",
    "theta_seed",
    "forked_torch_rng",
    "to_transport",
]

# The seeding log keeps the logger of ebm_lfi.simulation.simulate, where simulate() reports it.
logger = logging.getLogger("ebm_lfi.simulation.simulate")

_THETA_KEY = 0  # SeedSequence child seeding the prior draws
_SIMULATION_KEY = 1  # SeedSequence child whose i-th child seeds simulation i
_GLOBAL_RNG_LOCK = threading.RLock()  # threads may not seed the global RNGs concurrently


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

    Batching by default. Left unset (``batched=None``), ``fn`` is called with one :math:`\theta`;
    if that call raises and the same simulation (same seed) run as a batch of one,
    :math:`(1, p)`, returns an output of shape :math:`(1, *x\_shape)`, ``fn`` is taken to be
    batched from then on (``batched`` becomes ``True``). Simulators written for sbi, which
    always receive a batch :math:`(n, p)`, thus work unchanged; a simulator that accepts both
    shapes is run one :math:`\theta` at a time, which is correct either way. The detection ends
    at the first call with one :math:`\theta` that succeeds (later failures are not retried).
    Pass ``batched`` explicitly to skip it.

    A ``Simulator`` pickles if ``fn`` does (a module-level function for process pools).

    Arguments:
        fn: The simulator callable.
        batched: Whether ``fn`` takes a batch :math:`(b, p)` instead of one :math:`(p,)`;
            ``None`` (default) detects it as described above.
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
        batched: bool | None = None,
        name: str | None = None,
        *,
        as_numpy: bool = False,
    ):
        if isinstance(fn, Simulator) or not callable(fn):
            raise TypeError(f"fn must be a plain callable, got {type(fn).__name__}")
        self.fn = fn
        self.batched = bool(batched)
        self._detect_batches = batched is None  # see "Batching by default"
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
        outcomes = self.run(to_transport(rows), root_entropy(seed))
        collector = Collector(theta_t.dtype)
        failures = collector.add(rows, outcomes)
        if failures:
            raise failure_error(failures, len(rows), self.name)
        x = torch.stack(collector.xs).to(theta_t.device)
        return x[0] if theta_t.ndim == 1 else x

    def _call(
        self, theta: np.ndarray, seeds: list[np.random.SeedSequence], batched: bool | None = None
    ) -> np.ndarray:
        batched = self.batched if batched is None else batched
        arg = theta if self.as_numpy else torch.from_numpy(theta)
        if self.accepts_rng:
            rngs = [np.random.default_rng(s) for s in seeds]
            return _to_numpy(self.fn(arg, rng=rngs if batched else rngs[0]))
        with _seeded_global_rngs(seeds[0]):
            return _to_numpy(self.fn(arg))

    def _call_batch_of_one(self, theta: np.ndarray, seed: np.random.SeedSequence) -> np.ndarray:
        """Run one simulation, ``theta`` of shape ``(p,)``, as a batch of one."""
        out = self._call(theta[None].copy(), [seed], batched=True)
        if out.ndim == 0 or out.shape[0] != 1:
            raise ValueError(
                f"batched simulator returned shape {tuple(out.shape)} for a batch "
                "of 1 parameter; expected (1, *x_shape)"
            )
        return out[0]

    def _call_one(self, theta: np.ndarray, seed: np.random.SeedSequence) -> np.ndarray:
        """Run one simulation, ``theta`` of shape ``(p,)``, detecting a batched ``fn``."""
        if self.batched:
            return self._call_batch_of_one(theta, seed)
        try:
            out = self._call(theta.copy(), [seed])
            self._detect_batches = False  # it takes one theta: failures from now on are its own
            return out
        except Exception:
            if not self._detect_batches:
                raise
            out = None
            with suppress(Exception):  # the first error is the one to report
                out = self._call_batch_of_one(theta, seed)
            if out is None:
                raise
            self.batched = True
            logger.debug("simulator %r takes batches (n, p): calling it batched", self.name)
            return out

    def run(
        self, theta: np.ndarray, entropy: int, start: int = 0, *, portable: bool = False
    ) -> list[Outcome]:
        r"""Run simulations ``start, ..., start + b - 1`` of the root seed, one per row.

        A failing run does not raise: its exception is its outcome.

        Simulation ``start + j`` runs at ``theta[j]`` with its own seed (see the module's
        docstring), so that the outcome of a row depends on its index only, not on the batch.
        A batched simulator with an ``rng`` parameter is called once for the whole batch; if
        that call raises or returns a wrong first dimension, the rows are run one by one, so
        that each fails on its own.

        Arguments:
            theta: Parameters, shape :math:`(b, p)`, as :func:`to_transport` makes them.
            entropy: The root seed (:func:`root_entropy`).
            start: The index of the first simulation.
            portable: Make the outcomes of failed runs safe to send back from another process
                (:meth:`Outcome.failed <ebm_lfi.simulation.outcomes.Outcome.failed>`).

        Returns:
            The :math:`b` raw outcomes, in row order.
        """
        b = len(theta)
        seeds = [_simulation_seed(entropy, start + j) for j in range(b)]
        if self.batched and self.accepts_rng and b > 1:
            try:
                out = self._call(theta.copy(), seeds)
                if out.ndim >= 1 and out.shape[0] == b:
                    return [Outcome(out[j]) for j in range(b)]
            except Exception:  # isolated row by row below
                pass
        outcomes = []
        for j in range(b):
            try:
                outcomes.append(Outcome(self._call_one(theta[j], seeds[j])))
            except Exception as exc:
                outcomes.append(Outcome.failed(exc, portable))
        return outcomes


def root_entropy(seed: int | None) -> int:
    """The root seed: ``seed`` checked, or a fresh one (logged at debug level) if ``None``."""
    if seed is None:
        entropy = int(np.random.SeedSequence().entropy)
        logger.debug("simulate: drew the fresh root seed %d", entropy)
        return entropy
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(seed)


def theta_seed(entropy: int) -> int:
    """The seed of the prior draws: child 0 of the root ``SeedSequence``."""
    seq = np.random.SeedSequence(entropy, spawn_key=(_THETA_KEY,))
    return int(seq.generate_state(1, np.uint64)[0])


def _simulation_seed(entropy: int, index: int) -> np.random.SeedSequence:
    """The seed of simulation ``index``: child ``index`` of child 1 of the root."""
    return np.random.SeedSequence(entropy, spawn_key=(_SIMULATION_KEY, index))


@contextmanager
def forked_torch_rng(seed: int) -> Iterator[None]:
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
            with forked_torch_rng(int(words[0])):
                np.random.seed(words[1:].view(np.uint32))  # noqa: NPY002
                random.seed(int(words[3]))
                yield
        finally:
            np.random.set_state(numpy_state)  # noqa: NPY002
            random.setstate(python_state)


def to_transport(theta: Tensor) -> np.ndarray:
    """A CPU numpy copy of ``theta``, as handed to the simulator and to other processes."""
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
