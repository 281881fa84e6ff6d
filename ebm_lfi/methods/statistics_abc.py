r"""ABC on a statistics function: the second stage shared by every ``*-abc`` method.

Given statistics :math:`s(x)` (learned, regression-based or hand-made), the ABC posterior keeps
the parameters whose simulated statistics fall near :math:`s(x_o)` in the distance

.. math:: d(x, x_o) = \big\| (s(x) - s(x_o)) / \hat\sigma \big\|_2 ,

with :math:`\hat\sigma` the per-statistic standard deviation over prior-predictive simulations
(learned statistics are identified only up to an affine map, so their scale is arbitrary).

Two samplers: amortised rejection ABC on one reference table of simulations (the table is built
once at fit time and serves every observation), or SMC-ABC per observation (needs the simulator;
its simulation budget is counted and reported).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..samplers.abc import StatisticScaler, rejection_abc, smc_abc
from ..simulation import Simulator, simulate
from .common import batched

__all__ = ["ABCConfig", "StatisticsABC"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ABCConfig:
    r"""How the ABC posterior is drawn.

    Arguments:
        sampler: ``"rejection"`` (amortised reference table) or ``"smc"`` (per observation).
        num_reference: Simulations in the rejection reference table. When no simulator is given,
            the training pairs serve as the table.
        num_particles: SMC-ABC population size.
        max_simulations: SMC-ABC simulation budget per observation.
        min_acceptance_rate: SMC-ABC stops when a round accepts fewer proposals than this.
        alpha: SMC-ABC tolerance quantile of the current distances.
    """

    sampler: str = "rejection"
    num_reference: int = 100_000
    num_particles: int = 1000
    max_simulations: int = 100_000
    min_acceptance_rate: float = 0.01
    alpha: float = 0.5

    def __post_init__(self):
        if self.sampler not in ("rejection", "smc"):
            raise ValueError(f"sampler must be 'rejection' or 'smc', got {self.sampler!r}")
        if self.num_reference < 0 or self.num_particles < 1 or self.max_simulations < 1:
            raise ValueError("num_reference, num_particles and max_simulations must be positive")


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
    ) -> StatisticsABC:
        """Fit the statistic scales on prior-predictive pairs and build the reference table.

        Arguments:
            theta, x: Prior-predictive pairs (the training set): they set the scales.
            seed: Seed of the reference-table simulations.
            reference: A ready ``(theta, x)`` reference table (no simulation then).
            progress: Show a progress bar while simulating the table.
        """
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

    def sample(
        self, x_o: Tensor, num_samples: int, *, seed: int | None = None, progress=False
    ) -> tuple[Tensor, Tensor | None, dict]:
        """ABC samples for one observation: ``(samples (num, p), weights or None, diagnostics)``."""
        start = time.perf_counter()
        s_o = batched(self.statistics, x_o[None])[0]
        if self.config.sampler == "rejection":
            theta_ref, stats_ref = self.table
            if num_samples > theta_ref.shape[0]:
                raise ValueError(
                    f"num_samples={num_samples} exceeds the reference table "
                    f"({theta_ref.shape[0]} simulations)"
                )
            result = rejection_abc(
                theta_ref, stats_ref, s_o, num_samples=num_samples, scale=self.scaler.scale
            )
            samples = result.samples[0]
            diagnostics = {
                "sampler": "rejection",
                "simulations": self.table_simulations,
                "table_size": int(theta_ref.shape[0]),
                "acceptance_rate": num_samples / theta_ref.shape[0],
                "epsilon": float(result.epsilon.reshape(-1)[0]),
            }
            weights = None
        else:
            if self.simulator is None:
                raise ValueError("SMC-ABC needs the simulator: pass simulator=... to the method")
            simulator = self.simulator
            if not isinstance(simulator, Simulator):
                simulator = Simulator(simulator)
            seeds = torch.Generator().manual_seed(0 if seed is None else seed)

            def simulate_stats(theta: Tensor) -> Tensor:
                s = int(torch.randint(0, 2**62, (1,), generator=seeds))
                x = simulator(theta.cpu(), seed=s).to(dtype=theta.dtype, device=theta.device)
                return batched(self.statistics, x)

            result = smc_abc(
                simulate_stats,
                self.prior,
                s_o,
                num_particles=max(num_samples, self.config.num_particles),
                alpha=self.config.alpha,
                scale=self.scaler.scale,
                max_simulations=self.config.max_simulations,
                min_acceptance_rate=self.config.min_acceptance_rate,
                seed=seed,
                progress=progress,
            )
            samples, weights = result.particles, result.weights
            diagnostics = {
                "sampler": "smc",
                "simulations": int(result.simulations),
                "rounds": len(result.epsilon),
                "epsilon": float(result.epsilon[-1]),
                "acceptance_rate": float(result.acceptance_rate[-1]),
            }
        diagnostics["seconds"] = time.perf_counter() - start
        return samples, weights, diagnostics
