r"""ABC on a statistics function: the second stage shared by every ``*-abc`` method.

Given statistics :math:`s(x)` (learned, regression-based or hand-made), the ABC posterior keeps
the parameters whose simulated statistics fall near :math:`s(x_o)` in the distance

.. math:: d(x, x_o) = \big\| (s(x) - s(x_o)) / \hat\sigma \big\|_2 ,

with :math:`\hat\sigma` the per-statistic standard deviation over prior-predictive simulations
(learned statistics are identified only up to an affine map, so their scale is arbitrary).

Two samplers: amortised rejection ABC on one reference table of simulations (the table is built
once at fit time and serves every observation), or SMC-ABC per observation (needs the simulator;
its simulation budget is counted and reported).

**Rejection.** The :math:`m` nearest table entries are kept, :math:`m` set by
:func:`~ebm_lfi.samplers.auto_num_accepted` (a nonparametric rate in the table size :math:`N`
and the parameter dimension :math:`p`, at least the requested number of samples) or by the
user. By default they are weighted with the Epanechnikov kernel, whose bandwidth is the
distance of the first entry left out, and moved by the local-linear regression adjustment
(:func:`~ebm_lfi.samplers.regression_adjustment`), which removes the first-order effect of the
tolerance and so allows a wider one (more kept entries, less Monte Carlo noise) for the same
bias. **SMC-ABC** may apply the same adjustment to its final population (importance weights
times kernel weights, bandwidth the last tolerance).

**Output.** A posterior of exactly ``num_samples`` draws: the kept samples with their weights
when there are that many, otherwise ``num_samples`` equally weighted draws resampled from them
(systematic resampling, then shuffled); ``ABCConfig(resample=False)`` returns every kept
sample with its weight instead. Diagnostics report ``num_accepted``, ``acceptance_rate``,
``epsilon`` (the kernel bandwidth, or the largest kept distance for plain rejection),
``regression_adjustment`` (whether it was applied), ``num_samples`` and the ``seed`` used.

**Parallel simulation.** :meth:`StatisticsABC.prepare` and :meth:`StatisticsABC.sample` take an
optional ``executor`` (a :class:`concurrent.futures.Executor`, e.g. a Dask
``client.get_executor()``) that runs the simulations; the statistics are computed here. Every
simulation has its own seed (simulation :math:`i` of a table or of an SMC batch is seeded by
``SeedSequence(s, spawn_key=(1, i))`` for the table's or the batch's root seed :math:`s`, see
:mod:`ebm_lfi.simulation.simulate`), so the results are the same bit for bit with or without an
executor, whatever its number of workers. The executor is an argument, not configuration:
:class:`ABCConfig` stays a frozen, picklable dataclass.
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
from torch.distributions import Distribution

from ..samplers.abc.adjustment import regression_adjustment
from ..samplers.abc.rejection import auto_num_accepted, rejection_abc, systematic_resample
from ..samplers.abc.scaler import StatisticScaler
from ..samplers.abc.smc import smc_abc
from ..simulation.simulate import simulate, simulate_at
from ..simulation.simulator import Simulator
from .common import batched

__all__ = ["ABCConfig", "StatisticsABC", "check_executor"]

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
        num_reference: Simulations in the rejection reference table. When no simulator is given,
            the training pairs serve as the table.
        num_accepted: Table entries kept per observation (rejection): an integer, or ``"auto"``
            for :func:`~ebm_lfi.samplers.auto_num_accepted` of the table size and the number
            of parameters, raised to at least the requested ``num_samples``.
        regression_adjustment: Weight the kept samples with the Epanechnikov kernel and apply
            the local-linear regression adjustment
            (:func:`~ebm_lfi.samplers.regression_adjustment`); to the final population too
            with SMC-ABC (weights multiplied). ``False``: plain rejection (uniform kernel).
        heteroscedastic: Also correct the spread of the residuals (Blum & François, 2010).
        resample: When the kept (weighted) samples are not exactly ``num_samples``, return
            ``num_samples`` equally weighted draws from them by systematic resampling; ``False``
            returns every kept sample with its weight.
        num_particles: SMC-ABC population size (at least ``num_samples`` is used).
        max_simulations: SMC-ABC simulation budget per observation (never exceeded).
        min_acceptance_rate: SMC-ABC stops after a round whose acceptance rate is below this.
        max_rounds: SMC-ABC stops after this many rounds, round 0 included (``None``: no
            limit); the tolerance shrinks every round until one of the three rules stops it.
        alpha: SMC-ABC tolerance quantile of the current distances.

    With ``regression_adjustment=False``, ``num_accepted=n`` and ``num_samples=n`` the
    rejection sampler returns the ``n`` nearest table entries unweighted, as before these
    options existed.
    """

    sampler: str = "rejection"
    num_reference: int = 100_000
    num_accepted: int | str = "auto"
    regression_adjustment: bool = True
    heteroscedastic: bool = False
    resample: bool = True
    num_particles: int = 1000
    max_simulations: int = 100_000
    min_acceptance_rate: float = 0.01
    max_rounds: int | None = None
    alpha: float = 0.5

    def __post_init__(self):
        if self.sampler not in ("rejection", "smc"):
            raise ValueError(f"sampler must be 'rejection' or 'smc', got {self.sampler!r}")
        if self.num_reference < 0 or self.num_particles < 1 or self.max_simulations < 1:
            raise ValueError("num_reference, num_particles and max_simulations must be positive")
        auto = isinstance(self.num_accepted, str) and self.num_accepted == "auto"
        integer = isinstance(self.num_accepted, int) and not isinstance(self.num_accepted, bool)
        if not auto and not (integer and self.num_accepted >= 1):
            raise ValueError(
                f"num_accepted must be 'auto' or a positive integer, got {self.num_accepted!r}"
            )
        if self.max_rounds is not None and self.max_rounds < 1:
            raise ValueError(f"max_rounds must be None or at least 1, got {self.max_rounds}")
        if not 0 <= self.min_acceptance_rate < 1 or not 0 < self.alpha < 1:
            raise ValueError(
                f"need 0 <= min_acceptance_rate < 1 and 0 < alpha < 1, got "
                f"{self.min_acceptance_rate} and {self.alpha}"
            )


class StatisticsABC:
    r"""ABC with a fixed statistics function.

    Arguments:
        prior: The prior over :math:`\theta`.
        statistics: Batched map ``x (n, *x_shape) -> (n, k)``.
        simulator: The simulator; needed for a simulated reference table and for SMC-ABC.
        config: An :class:`ABCConfig`.
    """

    def __init__(
        self,
        prior: Distribution,
        statistics: Callable[[Tensor], Tensor],
        simulator: Simulator | Callable | None = None,
        config: ABCConfig | None = None,
    ):
        self.prior = prior
        self.statistics = statistics
        self.simulator = simulator
        self.config = config or ABCConfig()
        self.scaler: StatisticScaler | None = None
        self.table: tuple[Tensor, Tensor] | None = None
        self.table_simulations = 0

    def prepare(
        self,
        theta: Tensor,
        x: Tensor,
        *,
        seed: int | None = None,
        reference: tuple[Tensor, Tensor] | None = None,
        progress: bool = False,
        executor: Any = None,
    ) -> StatisticsABC:
        """Fit the statistic scales on prior-predictive pairs and build the reference table.

        Arguments:
            theta, x: Prior-predictive pairs (the training set): they set the scales.
            seed: Seed of the reference-table simulations.
            reference: A ready ``(theta, x)`` reference table (no simulation then).
            progress: Show a progress bar while simulating the table.
            executor: Runs the table's simulations (see :func:`~ebm_lfi.simulate`); ``None``:
                in this process. The table is the same with or without it.
        """
        check_executor(executor)
        stats = batched(self.statistics, x)
        self.scaler = StatisticScaler().fit(stats)
        if self.config.sampler != "rejection":
            return self
        if reference is not None:
            theta_ref, x_ref = reference
            theta_ref = torch.as_tensor(theta_ref, dtype=theta.dtype, device=theta.device)
            x_ref = torch.as_tensor(x_ref, dtype=x.dtype, device=x.device)
            if x_ref.shape[1:] != x.shape[1:] or theta_ref.shape[0] != x_ref.shape[0]:
                raise ValueError(
                    f"reference table shapes {tuple(theta_ref.shape)}, {tuple(x_ref.shape)} do "
                    f"not match the training data {tuple(theta.shape)}, {tuple(x.shape)}"
                )
            self.table = (theta_ref, batched(self.statistics, x_ref))
            self.table_simulations = int(theta_ref.shape[0])
        elif self.simulator is not None and self.config.num_reference > 0:
            ref_seed = None if seed is None else seed + 7_919
            theta_ref, x_ref = simulate(
                self.simulator,
                self.prior,
                self.config.num_reference,
                seed=ref_seed,
                executor=executor,
                progress=progress,
            )
            theta_ref = theta_ref.to(theta.dtype)
            x_ref = x_ref.to(dtype=x.dtype, device=x.device)
            self.table = (theta_ref.to(theta.device), batched(self.statistics, x_ref))
            self.table_simulations = self.config.num_reference
        else:
            logger.warning(
                "no simulator given: the %d training pairs serve as the ABC reference table",
                theta.shape[0],
            )
            self.table = (theta, stats)
            self.table_simulations = 0
        return self

    def _num_accepted(self, num_samples: int, table_size: int, dim: int) -> int:
        if self.config.num_accepted == "auto":
            return min(table_size, max(num_samples, auto_num_accepted(table_size, dim)))
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
    ) -> tuple[Tensor, Tensor | None]:
        """The kept samples as they are, or ``num_samples`` systematic resamples of them."""
        if not self.config.resample or samples.shape[0] == num_samples:
            return samples, weights
        if weights is None:
            weights = samples.new_ones(samples.shape[0])
        idx = systematic_resample(weights.cpu(), num_samples, generator=generator)
        idx = idx[torch.randperm(num_samples, generator=generator)]  # no order by distance
        return samples[idx.to(samples.device)], None

    def sample(
        self,
        x_o: Tensor,
        num_samples: int,
        *,
        seed: int | None = None,
        progress: bool = False,
        executor: Any = None,
    ) -> tuple[Tensor, Tensor | None, dict]:
        """ABC samples for one observation: ``(samples (n, p), weights (n,) or None, diagnostics)``.

        ``n`` is ``num_samples`` unless ``config.resample`` is ``False`` (then all kept
        samples, weighted). With ``seed=None`` every call draws fresh randomness; the seed used
        is reported as ``diagnostics["seed"]``, so any call can be repeated. ``executor`` runs
        the SMC-ABC simulations (each batch of proposals split into tasks); the result is the
        same with or without it. The rejection sampler simulates nothing here.
        """
        start = time.perf_counter()
        check_executor(executor)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % 2**62)
        seed = int(seed)
        generator = torch.Generator().manual_seed(seed + 1)  # resampling only (CPU)
        cfg = self.config
        s_o = batched(self.statistics, x_o[None])[0]
        if cfg.sampler == "rejection":
            theta_ref, stats_ref = self.table
            n_table, dim = theta_ref.shape
            if num_samples > n_table:
                raise ValueError(
                    f"num_samples={num_samples} exceeds the reference table ({n_table} simulations)"
                )
            m = self._num_accepted(num_samples, n_table, dim)
            # With the kernel, one entry beyond the kept ones: its distance is the bandwidth.
            nearest = min(m + 1, n_table) if cfg.regression_adjustment else m
            result = rejection_abc(
                theta_ref, stats_ref, s_o, num_samples=nearest, scale=self.scaler
            )
            dist, idx = result.distances[0], result.indices[0]
            kept, kept_d = theta_ref[idx[:m]], dist[:m]
            eps = float(kept_d[-1])
            diagnostics = {
                "sampler": "rejection",
                "simulations": self.table_simulations,
                "table_size": int(n_table),
                "num_accepted": m,
                "acceptance_rate": m / n_table,
                "epsilon": eps,
                "regression_adjustment": False,
            }
            if cfg.regression_adjustment:
                # Bandwidth: the first rejected distance, nudged above the largest kept one
                # so that every kept entry has positive weight.
                eps = max(float(dist[-1]) if dist.numel() > m else 0.0, eps * (1 + 1e-6))
                samples, weights, extra = self._adjust(kept, stats_ref[idx[:m]], s_o, kept_d, eps)
                diagnostics.update(extra, epsilon=eps)
            else:
                samples, weights = kept, None
        else:
            if self.simulator is None:
                raise ValueError("SMC-ABC needs the simulator: pass simulator=... to the method")
            simulator = self.simulator
            if not isinstance(simulator, Simulator):
                simulator = Simulator(simulator)
            sim_seeds = torch.Generator().manual_seed(seed)

            def simulate_stats(theta: Tensor) -> Tensor:
                # One root seed per batch, drawn in the batch order; row i of the batch is
                # simulation i of that root, wherever it runs.
                s = int(torch.randint(0, 2**62, (1,), generator=sim_seeds))
                if executor is None:
                    x = simulator(theta.cpu(), seed=s)
                else:  # the same numbers as simulator(theta, seed=s), computed elsewhere
                    x = simulate_at(simulator, theta.cpu(), seed=s, executor=executor)
                return batched(self.statistics, x.to(dtype=theta.dtype, device=theta.device))

            result = smc_abc(
                simulate_stats,
                self.prior,
                s_o,
                num_particles=max(num_samples, cfg.num_particles),
                alpha=cfg.alpha,
                scale=self.scaler,
                max_simulations=cfg.max_simulations,
                min_acceptance_rate=cfg.min_acceptance_rate,
                max_rounds=cfg.max_rounds,
                seed=seed,
                progress=progress,
            )
            samples, weights = result.particles, result.weights
            eps = float(result.epsilon[-1])
            diagnostics = {
                "sampler": "smc",
                "simulations": int(result.simulations),
                "rounds": len(result.epsilon),
                "stop_reason": result.stop_reason,
                "num_accepted": int(samples.shape[0]),
                "acceptance_rate": float(result.acceptance_rate[-1]),
                "epsilon": eps,
                "ess": result.ess,
                "regression_adjustment": False,
            }
            if cfg.regression_adjustment:
                if not math.isfinite(eps):  # round 0 only: the largest distance sets the kernel
                    eps = float(result.distances.max())
                eps = eps * (1 + 1e-6)
                samples, weights, extra = self._adjust(
                    samples, result.statistics, s_o, result.distances, eps, weights
                )
                diagnostics.update(extra, epsilon=eps)
        diagnostics["num_samples"] = num_samples
        samples, weights = self._output(samples, weights, num_samples, generator)
        diagnostics["seed"] = seed
        diagnostics["seconds"] = time.perf_counter() - start
        return samples, weights, diagnostics
