r"""The ABC posterior stage: ABC on the statistics of a fit, shared by every ``*-abc`` method.

Given statistics :math:`s(x)` (learned, regression-based or hand-made), the ABC posterior keeps
the parameters whose simulated statistics fall near :math:`s(x_o)` in the distance

.. math:: d(x, x_o) = \big\| (s(x) - s(x_o)) / \hat\sigma \big\|_2 ,

with :math:`\hat\sigma` the per-statistic standard deviation over prior-predictive simulations
(learned statistics are identified only up to an affine map, so their scale is arbitrary).

Two samplers: amortised rejection ABC on one reference table of simulations (the table is built
once at fit time and serves every observation), or SMC-ABC per observation (needs the simulator;
its simulation budget is counted and reported).

**The budget.** By default the reference table is the training pairs themselves: all of them,
so that no simulation is spent beyond those the user asked for. The statistics were fitted on
these pairs, but on the ``gaussian`` and ``ma2`` tasks (10⁴ pairs, ``ssm-abc``) a table of as
many fresh simulations gave the same posteriors (C2ST to the reference within 0.02, and the
same widths; ``scripts/check_reference_table.py``): early stopping on held-out pairs keeps the
fit from memorising them. A separate table is simulated only when asked for
(``ABCConfig(num_reference=N)``), or a ready one is passed as ``reference=``. SMC-ABC may
spend, per observation, ``max_simulations`` (default: as many simulations as the fit was
trained on). :meth:`ABCStage.split_budget` shares a total budget
between training and these simulations, as :func:`~ebm_lfi.infer` does with its
``num_simulations``.

**Failures.** With ``on_error="drop"``, a failed simulation of the table is replaced by a fresh
prior draw (as in :func:`~ebm_lfi.simulate`), and a failed SMC-ABC proposal is rejected (its
distance is infinite); either raises a :class:`~ebm_lfi.SimulationError` once more than half
of the simulations failed. The failures are counted in ``diagnostics["failed_simulations"]``
and in ``diagnostics["simulations"]``, which counts every simulator call.

**Rejection.** The :math:`m` nearest table entries are kept, :math:`m` set by
:func:`~ebm_lfi.samplers.abc.rejection.auto_num_accepted` (a nonparametric rate in the table
size :math:`N` and the parameter dimension :math:`p`, raised to the number of draws asked for
but never beyond a tenth of the table: 1,000 draws from a table of 1,000 simulations kept the
whole table, a posterior that was the prior moved by the regression adjustment alone)
or by the user. By default they are weighted with the Epanechnikov kernel, whose bandwidth is the
distance of the first entry left out, and moved by the local-linear regression adjustment
(:func:`~ebm_lfi.samplers.abc.adjustment.regression_adjustment`), which removes the first-order
effect of the tolerance and so allows a wider one (more kept entries, less Monte Carlo noise)
for the same bias. **SMC-ABC** may apply the same adjustment to its final population
(importance weights times kernel weights, bandwidth the last tolerance).

**Output.** A posterior of exactly ``num_samples`` draws: the kept samples with their weights
when there are that many, otherwise ``num_samples`` equally weighted draws from them. By
default (``ABCConfig(resample="smooth")``) those are continuous draws from a local kernel
density of the kept samples, shrunk so that it keeps their shape and about their mean and
spread (:func:`~ebm_lfi.samplers.abc.smoothing.smoothed_resample`; its bandwidth in
``diagnostics["smoothing_bandwidth"]``), rather than each kept sample repeated about
``num_samples / m`` times (``resample=True``: systematic resampling, then shuffled, the rule
before); ``resample=False`` returns every kept sample with its weight. Diagnostics report
``num_accepted``, ``acceptance_rate``, ``epsilon`` (the kernel bandwidth, or the largest kept
distance for plain rejection), ``regression_adjustment`` (whether it was applied),
``num_samples`` and the ``seed`` used.

**Parallel simulation.** :class:`ABCStage` takes an optional ``executor`` (a
:class:`concurrent.futures.Executor`, e.g. a Dask ``client.get_executor()``) that runs the
simulations of :meth:`~ABCStage.prepare` and :meth:`~ABCStage.sample`; the statistics are
computed here. Every
simulation has its own seed (simulation :math:`i` of a table or of an SMC batch is seeded by
``SeedSequence(s, spawn_key=(1, i))`` for the table's or the batch's root seed :math:`s`, see
:mod:`ebm_lfi.simulation.simulate`), so the results are the same bit for bit with or without an
executor, whatever its number of workers. The executor is not configuration:
:class:`ABCConfig` stays a frozen, picklable dataclass, and a pickled stage leaves its
executor behind.

Example:
    >>> import torch
    >>> import ebm_lfi as el
    >>> from ebm_lfi.methods.baselines import FixedStatistics
    >>> prior = el.BoxUniform(torch.zeros(1), torch.ones(1))
    >>> theta = prior.sample((2000,))
    >>> x = theta + 0.05 * torch.randn(2000, 5)
    >>> fit = FixedStatistics(prior, lambda x: x.mean(1, keepdim=True)).fit(theta, x)
    >>> stage = ABCStage({"num_accepted": 100}).prepare(fit, *fit.training_data)
    >>> draws = stage.sample(torch.full((5,), 0.5), 100, seed=0)
    >>> draws.samples.shape, draws.diagnostics["sampler"]
    (torch.Size([100, 1]), 'rejection')
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..samplers.abc.adjustment import regression_adjustment
from ..samplers.abc.rejection import auto_num_accepted, rejection_abc, systematic_resample
from ..samplers.abc.scaler import StatisticScaler
from ..samplers.abc.smc import KERNELS, smc_abc
from ..samplers.abc.smoothing import smoothed_resample
from ..simulation.outcomes import SimulationError
from ..simulation.simulate import simulate, simulate_at
from ..simulation.simulator import Simulator
from .common import NotFittedError, as_config, batched
from .method import Draws, FitStage

__all__ = ["ABCConfig", "ABCStage", "check_executor"]

logger = logging.getLogger(__name__)


def check_executor(executor: Any) -> Any:
    """``executor`` if it is ``None`` or has a ``submit`` method, else a ``TypeError``."""
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (with a submit method, e.g. a Dask "
            f"client.get_executor()), got {type(executor).__name__}"
        )
    return executor


@dataclass(frozen=True)
class ABCConfig:
    r"""How the ABC posterior is drawn.

    Arguments:
        sampler: ``"rejection"`` (amortised reference table) or ``"smc"`` (per observation).
        num_reference: ``None`` (default): the training pairs serve as the rejection reference
            table (no simulation beyond them). An integer: simulate a separate table of that
            many prior-predictive simulations (needs the simulator; with none, the training
            pairs serve again, with a logged warning). 0 is the same as ``None``.
        num_accepted: Table entries kept per observation (rejection): an integer, or ``"auto"``
            for :func:`~ebm_lfi.samplers.abc.rejection.auto_num_accepted` of the table size and
            the number of parameters, raised to the requested ``num_samples`` up to a tenth
            of the table (fewer
            entries resampled to that many draws repeat each entry: at 10⁴ simulations and
            :math:`p = 2`, keeping the rate's 232 entries gave W2 0.108 against 0.122 on MA(2),
            but on a 5-parameter problem 1,000 draws of 100 entries were told from exact
            draws with C2ST 0.95; ``auto`` chooses the number by its held-out score).
        regression_adjustment: Weight the kept samples with the Epanechnikov kernel and apply
            the local-linear regression adjustment
            (:func:`~ebm_lfi.samplers.abc.adjustment.regression_adjustment`); to the final
            population too
            with SMC-ABC (weights multiplied). ``False``: plain rejection (uniform kernel).
        heteroscedastic: Also correct the spread of the residuals (Blum & François, 2010).
        resample: When the kept (weighted) samples are not exactly ``num_samples``, return
            ``num_samples`` equally weighted draws from them: ``"smooth"`` (default) from
            their shrunk local kernel density
            (:func:`~ebm_lfi.samplers.abc.smoothing.smoothed_resample`: continuous draws that
            follow the kept samples' shape), ``True`` by systematic resampling (each
            kept sample repeated); ``False`` returns every kept sample with its weight.
        num_particles: SMC-ABC population size (at least ``num_samples`` is used).
        max_simulations: SMC-ABC simulation budget per observation (never exceeded);
            ``None`` (default): as many as the training pairs of the fit.
        min_acceptance_rate: SMC-ABC stops after a round whose acceptance rate is below this.
        max_rounds: SMC-ABC stops after this many rounds, round 0 included (``None``: no
            limit); the tolerance shrinks every round until one of the three rules stops it.
        alpha: SMC-ABC tolerance quantile of the current distances.
        smc_kernel: SMC-ABC perturbation kernel, ``"olcm"`` (optimal local covariances) or
            ``"beaumont"`` (twice the population covariance); see
            :mod:`ebm_lfi.samplers.abc.smc`.

    With ``regression_adjustment=False``, ``num_accepted=n`` and ``num_samples=n`` the
    rejection sampler returns the ``n`` nearest table entries unweighted, as before these
    options existed.
    """

    sampler: str = "rejection"
    num_reference: int | None = None
    num_accepted: int | str = "auto"
    regression_adjustment: bool = True
    heteroscedastic: bool = False
    resample: bool | str = "smooth"
    num_particles: int = 1000
    max_simulations: int | None = None
    min_acceptance_rate: float = 0.01
    max_rounds: int | None = None
    alpha: float = 0.5
    smc_kernel: str = "olcm"

    def __post_init__(self):
        if self.sampler not in ("rejection", "smc"):
            raise ValueError(f"sampler must be 'rejection' or 'smc', got {self.sampler!r}")
        if (
            (self.num_reference is not None and self.num_reference < 0)
            or self.num_particles < 1
            or (self.max_simulations is not None and self.max_simulations < 1)
        ):
            raise ValueError(
                "num_reference must be None or >= 0, num_particles and max_simulations positive; "
                f"got {self.num_reference}, {self.num_particles}, {self.max_simulations}"
            )
        auto = isinstance(self.num_accepted, str) and self.num_accepted == "auto"
        integer = isinstance(self.num_accepted, int) and not isinstance(self.num_accepted, bool)
        if not auto and not (integer and self.num_accepted >= 1):
            raise ValueError(
                f"num_accepted must be 'auto' or a positive integer, got {self.num_accepted!r}"
            )
        if self.max_rounds is not None and self.max_rounds < 1:
            raise ValueError(f"max_rounds must be None or at least 1, got {self.max_rounds}")
        if self.resample not in (True, False, "smooth"):
            raise ValueError(f"resample must be 'smooth', True or False, got {self.resample!r}")
        if self.smc_kernel not in KERNELS:
            raise ValueError(f"smc_kernel must be one of {KERNELS}, got {self.smc_kernel!r}")
        if not 0 <= self.min_acceptance_rate < 1 or not 0 < self.alpha < 1:
            raise ValueError(
                f"need 0 <= min_acceptance_rate < 1 and 0 < alpha < 1, got "
                f"{self.min_acceptance_rate} and {self.alpha}"
            )


class ABCStage:
    r"""ABC on the statistics of a fit (the posterior stage of every ``*-abc`` method).

    Arguments:
        config: An :class:`ABCConfig` or a dict of its fields (default: its defaults).
        simulator: The simulator; needed for a simulated reference table and for SMC-ABC.
        reference: A ready ``(theta, x)`` reference table of prior-predictive simulations, to
            use instead of the training pairs.
        executor: Runs the simulations (reference table, SMC-ABC rounds; see
            :func:`~ebm_lfi.simulate`); ``None``: in this process. The results are the same
            with or without it. Not pickled (``None`` after unpickling).
        on_error: The policy for failed simulations of the table and of SMC-ABC:
            ``"raise"``, ``"drop"`` (see the module docstring), or ``None`` (default: raise,
            unless :func:`~ebm_lfi.infer` passes the policy of its ``simulation_options``).
        progress: Show progress bars while simulating.

    The stage reads ``prior`` and ``statistics`` of the fit it is prepared on (any
    :class:`~ebm_lfi.methods.method.FitStage`).

    Attributes:
        training_weights: Importance weights :math:`\pi(\theta_i) / r(\theta_i)` of the
            training pairs, shape :math:`(n,)`, when they were drawn from a proposal
            :math:`r` instead of the prior (set by sequential rounds,
            :mod:`~ebm_lfi.methods.rounds`, before the fit); they multiply the kernel weights
            when the training pairs are the reference table. ``None``: prior draws.
    """

    def __init__(
        self,
        config: ABCConfig | dict | None = None,
        *,
        simulator: Simulator | Callable | None = None,
        reference: tuple[Tensor, Tensor] | None = None,
        executor: Any = None,
        on_error: str | None = None,
        progress: bool = False,
    ):
        self.config = as_config(config, ABCConfig, "abc")
        self.simulator = simulator
        self.reference = reference
        self.executor = executor
        self.on_error = on_error
        self.progress = progress
        self.prior = None
        self.statistics: Callable[[Tensor], Tensor] | None = None
        self.scaler: StatisticScaler | None = None
        self.table: tuple[Tensor, Tensor] | None = None
        self.table_simulations = 0
        self.table_failures = 0
        self.num_training = 0
        self.training_weights: Tensor | None = None
        self.table_weights: Tensor | None = None

    @property
    def on_error(self) -> str | None:
        """The failure policy of the stage's simulations (``None``: raise)."""
        return self._on_error

    @on_error.setter
    def on_error(self, value: str | None) -> None:
        if value not in (None, "raise", "drop"):
            raise ValueError(f"on_error must be None, 'raise' or 'drop', got {value!r}")
        self._on_error = value

    @property
    def executor(self) -> Any:
        """The executor of the simulations, or ``None``."""
        return self._executor

    @executor.setter
    def executor(self, value: Any) -> None:
        self._executor = check_executor(value)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_executor": None}  # a live executor does not travel

    def __setstate__(self, state: dict) -> None:
        # stages pickled before these attributes existed
        state = {"_on_error": None, "table_failures": 0, "num_training": 0, **state}
        state.setdefault("training_weights", None)
        state.setdefault("table_weights", None)
        self.__dict__.update(state)

    # ------------------------------------------------------------------ the budget
    def _simulates_table(self) -> bool:
        return (
            self.config.sampler == "rejection"
            and self.reference is None
            and self.simulator is not None
            and bool(self.config.num_reference)
        )

    def split_budget(self, num_simulations: int, num_samples: int = 1000) -> tuple[int, int]:
        r"""Share a total budget of simulator calls between the training set and this stage.

        Rejection on the training pairs (the default) or on a given ``reference`` table: all
        of it to training. A simulated table (``num_reference``): that many to the table, the
        rest to training. SMC-ABC: ``max_simulations`` to its rounds, the rest to training;
        by default half and half (its budget per observation is then the number of training
        pairs).

        Arguments:
            num_simulations: The total budget.
            num_samples: Posterior draws wanted (SMC-ABC needs at least that many particles).

        Returns:
            ``(training, stage)`` simulations.

        Raises:
            ValueError: If the training set would get fewer than 2 simulations, or SMC-ABC a
                budget below its number of particles.
        """
        cfg = self.config
        if cfg.sampler == "rejection":
            stage = cfg.num_reference if self._simulates_table() else 0
            what = f"abc.num_reference={stage}"
        else:
            particles = max(num_samples, cfg.num_particles)
            if cfg.max_simulations is None:
                stage = num_simulations // 2
                if stage < particles:
                    raise ValueError(
                        f"SMC-ABC with {particles} particles needs num_simulations of at least "
                        f"{2 * particles} (half to train, half for its rounds), got "
                        f"{num_simulations}; or set abc.max_simulations and abc.num_particles"
                    )
                return num_simulations - stage, stage
            stage = cfg.max_simulations
            what = f"abc.max_simulations={stage}"
        training = num_simulations - stage
        if training < 2:
            raise ValueError(
                f"{what} leaves {training} of num_simulations={num_simulations} to train on: "
                "raise num_simulations (the total number of simulator calls) or lower it"
            )
        return training, stage

    # ------------------------------------------------------------------ preparation
    def prepare(
        self, fit: FitStage, theta: Tensor, x: Tensor, *, seed: int | None = None
    ) -> ABCStage:
        """Fit the statistic scales on prior-predictive pairs and build the reference table.

        Arguments:
            fit: The fitted fit stage: its ``prior`` and ``statistics`` are used.
            theta, x: Prior-predictive pairs (the training set): they set the scales.
            seed: Seed of the reference-table simulations.

        Returns:
            The stage itself, ready to sample.
        """
        self.prior, self.statistics = fit.prior, fit.statistics
        self.num_training = int(theta.shape[0])
        stats = batched(self.statistics, x)
        self.scaler = StatisticScaler().fit(stats)
        self.table, self.table_simulations, self.table_failures = None, 0, 0
        self.table_weights = None
        if self.config.sampler == "rejection":
            self.table, self.table_simulations = self._reference_table(theta, x, stats, seed)
            weights = self.training_weights
            if weights is not None and self.table[0] is theta:  # the training pairs
                if weights.shape != (theta.shape[0],):
                    raise ValueError(
                        f"training_weights has shape {tuple(weights.shape)}, the training "
                        f"pairs are {theta.shape[0]}"
                    )
                self.table_weights = weights.to(theta)
        return self

    def _reference_table(
        self, theta: Tensor, x: Tensor, stats: Tensor, seed: int | None
    ) -> tuple[tuple[Tensor, Tensor], int]:
        """The rejection table ``(theta, statistics)`` and the simulator calls it took: the
        given reference, else one simulated from the prior when ``num_reference`` asks for it,
        else the training pairs themselves."""
        if self.reference is not None:
            theta_ref, x_ref = self.reference
            theta_ref = torch.as_tensor(theta_ref, dtype=theta.dtype, device=theta.device)
            x_ref = torch.as_tensor(x_ref, dtype=x.dtype, device=x.device)
            if x_ref.shape[1:] != x.shape[1:] or theta_ref.shape[0] != x_ref.shape[0]:
                raise ValueError(
                    f"reference table shapes {tuple(theta_ref.shape)}, {tuple(x_ref.shape)} do "
                    f"not match the training data {tuple(theta.shape)}, {tuple(x.shape)}"
                )
            return (theta_ref, batched(self.statistics, x_ref)), int(theta_ref.shape[0])
        if self._simulates_table():
            theta_ref, x_ref, info = simulate(
                self.simulator,
                self.prior,
                self.config.num_reference,
                seed=None if seed is None else seed + 7_919,
                executor=self.executor,
                progress=self.progress,
                on_error=self.on_error or "raise",
                return_info=True,
            )
            theta_ref = theta_ref.to(theta.dtype)
            x_ref = x_ref.to(dtype=x.dtype, device=x.device)
            table = (theta_ref.to(theta.device), batched(self.statistics, x_ref))
            self.table_failures = info.num_failed
            return table, self.config.num_reference + info.num_failed
        if self.config.num_reference:
            logger.warning(
                "abc.num_reference=%d asks for a reference table, but no simulator was given: "
                "the %d training pairs serve as the ABC reference table",
                self.config.num_reference,
                theta.shape[0],
            )
        return (theta, stats), 0

    # ------------------------------------------------------------------ sampling
    def sample(self, x_o: Tensor, num_samples: int, *, seed: int | None = None) -> Draws:
        """ABC samples for one observation: :class:`~ebm_lfi.methods.method.Draws` with
        ``samples (n, p)``, ``weights (n,)`` or ``None``, no chains, and the diagnostics.

        ``n`` is ``num_samples`` unless ``config.resample`` is ``False`` (then all kept
        samples, weighted). With ``seed=None`` every call draws fresh randomness; the seed used
        is reported as ``diagnostics["seed"]``, so any call can be repeated. The executor runs
        the SMC-ABC simulations (each batch of proposals split into tasks); the result is the
        same with or without it. The rejection sampler simulates nothing here.
        """
        if self.scaler is None:
            raise NotFittedError("the ABC stage is not prepared: call .prepare(fit, theta, x)")
        start = time.perf_counter()
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % 2**62)
        seed = int(seed)
        generator = torch.Generator().manual_seed(seed + 1)  # resampling only (CPU)
        s_o = batched(self.statistics, x_o[None])[0]
        if self.config.sampler == "rejection":
            samples, weights, diagnostics = self._rejection(s_o, num_samples)
        else:
            samples, weights, diagnostics = self._smc(s_o, num_samples, seed)
        diagnostics["num_samples"] = num_samples
        samples, weights, bandwidth = self._output(samples, weights, num_samples, generator)
        if bandwidth is not None:
            diagnostics["smoothing_bandwidth"] = bandwidth
        diagnostics["seed"] = seed
        diagnostics["seconds"] = time.perf_counter() - start
        return Draws(samples, weights, None, diagnostics)

    def _rejection(self, s_o: Tensor, num_samples: int) -> tuple[Tensor, Tensor | None, dict]:
        """The nearest table entries, kernel-weighted and adjusted unless configured off."""
        theta_ref, stats_ref = self.table
        n_table, dim = theta_ref.shape
        if num_samples > n_table and not self.config.resample:
            raise ValueError(
                f"num_samples={num_samples} exceeds the reference table ({n_table} simulations); "
                "with resample=False every kept entry is returned once"
            )
        m = self._num_accepted(num_samples, n_table, dim)
        # With the kernel, one entry beyond the kept ones: its distance is the bandwidth.
        nearest = min(m + 1, n_table) if self.config.regression_adjustment else m
        result = rejection_abc(theta_ref, stats_ref, s_o, num_samples=nearest, scale=self.scaler)
        dist, idx = result.distances[0], result.indices[0]
        kept, kept_d = theta_ref[idx[:m]], dist[:m]
        importance = None if self.table_weights is None else self.table_weights[idx[:m]]
        eps = float(kept_d[-1])
        diagnostics = {
            "sampler": "rejection",
            "simulations": self.table_simulations,
            "failed_simulations": self.table_failures,
            "table_size": int(n_table),
            "num_accepted": m,
            "acceptance_rate": m / n_table,
            "epsilon": eps,
            "regression_adjustment": False,
        }
        if not self.config.regression_adjustment:
            if importance is not None:
                return kept, importance / importance.sum(), diagnostics
            return kept, None, diagnostics
        # Bandwidth: the first rejected distance, nudged above the largest kept one so that
        # every kept entry has positive weight.
        eps = max(float(dist[-1]) if dist.numel() > m else 0.0, eps * (1 + 1e-6))
        samples, weights, extra = self._adjust(
            kept, stats_ref[idx[:m]], s_o, kept_d, eps, importance
        )
        diagnostics.update(extra, epsilon=eps)
        return samples, weights, diagnostics

    def _smc(self, s_o: Tensor, num_samples: int, seed: int) -> tuple[Tensor, Tensor, dict]:
        """SMC-ABC for one observation, with its simulation budget; the final population is
        kernel-weighted and adjusted unless configured off."""
        if self.simulator is None:
            raise ValueError("SMC-ABC needs the simulator: pass simulator=... to the method")
        cfg, executor = self.config, self.executor
        particles = max(num_samples, cfg.num_particles)
        budget = cfg.max_simulations or self.num_training
        if budget < particles:
            raise ValueError(
                f"SMC-ABC's budget per observation ({budget}: abc.max_simulations, by default "
                f"the number of training pairs) is below its {particles} particles; raise "
                "abc.max_simulations or lower abc.num_particles"
            )
        simulator = self.simulator
        if not isinstance(simulator, Simulator):
            simulator = Simulator(simulator)
        sim_seeds = torch.Generator().manual_seed(seed)
        drop = self.on_error == "drop"
        calls = [0, 0]  # simulations run, failed

        def simulate_stats(theta: Tensor) -> Tensor:
            # One root seed per batch, drawn in the batch order; row i of the batch is
            # simulation i of that root, wherever it runs (the same numbers as
            # simulator(theta, seed=s)).
            s = int(torch.randint(0, 2**62, (1,), generator=sim_seeds))
            if not drop:
                if executor is None:
                    x = simulator(theta.cpu(), seed=s)
                else:
                    x = simulate_at(simulator, theta.cpu(), seed=s, executor=executor)
                return batched(self.statistics, x.to(dtype=theta.dtype, device=theta.device))
            x, valid = simulate_at(
                simulator,
                theta.cpu(),
                seed=s,
                executor=executor,
                on_error="drop",
                max_failure_rate=1.0,
            )
            calls[0] += theta.shape[0]
            calls[1] += int((~valid).sum())
            if calls[1] > 0.5 * calls[0]:
                raise SimulationError(
                    f"SMC-ABC: {calls[1]} of {calls[0]} simulations run failed, more than half"
                )
            out = torch.full(
                (theta.shape[0], s_o.shape[0]), math.nan, dtype=s_o.dtype, device=s_o.device
            )
            if bool(valid.any()):
                x = x.to(dtype=theta.dtype, device=theta.device)
                out[valid.to(out.device)] = batched(self.statistics, x).to(out)
            return out

        result = smc_abc(
            simulate_stats,
            self.prior,
            s_o,
            num_particles=particles,
            alpha=cfg.alpha,
            scale=self.scaler,
            max_simulations=budget,
            min_acceptance_rate=cfg.min_acceptance_rate,
            max_rounds=cfg.max_rounds,
            kernel=cfg.smc_kernel,
            seed=seed,
            progress=self.progress,
        )
        samples, weights = result.particles, result.weights
        distances, stats = result.distances, result.statistics
        ok = torch.isfinite(distances)  # all but failed prior draws, when round 0 was the last
        if not bool(ok.all()):
            samples, distances, stats = samples[ok], distances[ok], stats[ok]
            weights = weights[ok] / weights[ok].sum()
        eps = float(result.epsilon[-1])
        diagnostics = {
            "sampler": "smc",
            "simulations": int(result.simulations),
            "failed_simulations": calls[1],
            "rounds": len(result.epsilon),
            "stop_reason": result.stop_reason,
            "last_round": result.last_round,
            "kernel": result.kernel,
            "num_accepted": int(samples.shape[0]),
            "acceptance_rate": float(result.acceptance_rate[-1]),
            "epsilon": eps,
            "ess": result.ess,
            "regression_adjustment": False,
        }
        if not cfg.regression_adjustment:
            return samples, weights, diagnostics
        if not math.isfinite(eps):  # round 0 only: the largest distance sets the kernel
            eps = float(distances.max())
        eps = eps * (1 + 1e-6)
        samples, weights, extra = self._adjust(samples, stats, s_o, distances, eps, weights)
        diagnostics.update(extra, epsilon=eps)
        return samples, weights, diagnostics

    def _num_accepted(self, num_samples: int, table_size: int, dim: int) -> int:
        if self.config.num_accepted == "auto":
            rate = auto_num_accepted(table_size, dim)
            return min(max(num_samples, rate), max(rate, table_size // 10))
        if self.config.num_accepted > table_size:
            raise ValueError(
                f"num_accepted={self.config.num_accepted} exceeds the reference table "
                f"({table_size} simulations)"
            )
        return int(self.config.num_accepted)

    def _adjust(
        self, theta: Tensor, stats: Tensor, s_o: Tensor, dist: Tensor, eps: float, weights=None
    ) -> tuple[Tensor, Tensor, dict]:
        """Kernel weights and regression adjustment on scaled statistics."""
        out = regression_adjustment(
            theta,
            self.scaler(stats),
            self.scaler(s_o),
            dist,
            epsilon=eps,
            weights=weights,
            bounds=self.prior,
            heteroscedastic=self.config.heteroscedastic,
        )
        diagnostics = {
            "regression_adjustment": out.info["applied"],
            "adjustment_r2": out.info["r2"],
            "kernel_ess": out.info["ess"],
        }
        if out.info["reason"] is not None:
            diagnostics["adjustment_skipped"] = out.info["reason"]
        return out.samples, out.weights, diagnostics

    def _output(
        self, samples: Tensor, weights: Tensor | None, num_samples: int, generator
    ) -> tuple[Tensor, Tensor | None, float | None]:
        """The kept samples as they are, or ``num_samples`` smoothed or systematic resamples of
        them; with the smoothing bandwidth where it was used."""
        if not self.config.resample or samples.shape[0] == num_samples:
            return samples, weights, None
        if self.config.resample == "smooth":
            draws, bandwidth = smoothed_resample(
                samples, weights, num_samples, self.prior, generator=generator
            )
            return draws, None, bandwidth
        if weights is None:
            weights = samples.new_ones(samples.shape[0])
        idx = systematic_resample(weights.cpu(), num_samples, generator=generator)
        idx = idx[torch.randperm(num_samples, generator=generator)]  # no order by distance
        return samples[idx.to(samples.device)], None, None
