r"""The potential posterior stage (``nce``): a tractable posterior potential, sampled by MCMC.

NCE (:class:`~ebm_lfi.losses.NCE`) fits the ratio model
:math:`r(y, \theta) = \eta(\theta)^\top s(y) + c(\theta) + d(y) \approx \log p(y \mid \theta) -
\log p(y)`. For an observation :math:`y_o`, the posterior is then known up to a constant,

.. math:: \log p(\theta \mid y_o) = \log \pi(\theta) + \eta(\theta)^\top s(y_o) + c(\theta)
    + \text{const},

so it is sampled by vectorised MCMC over :math:`\theta` alone
(:func:`~ebm_lfi.samplers.mcmc.potential.sample_potential`: MALA in an unconstrained
parametrisation of the prior's support, chains started at the training parameters whose
statistics are closest to the observation's). No simulation at posterior time, a few
milliseconds per step for all chains.

References:
    | Noise-contrastive estimation (Gutmann & Hyvärinen, 2010)
    | https://proceedings.mlr.press/v9/gutmann10a.html

    | Likelihood-free MCMC with amortized approximate ratio estimators (Hermans, Begy &
      Louppe, 2020) https://arxiv.org/abs/1903.04057
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..energy.model import ExpFamEBM
from ..energy.nets import frozen
from ..priors import prior_log_prob
from ..samplers.mcmc.diagnostics import EXTENSION_SEED, run_longer
from ..samplers.mcmc.potential import sample_potential
from ..samplers.mcmc.tempering import sample_tempered
from .common import NotFittedError, as_config
from .method import Draws, FitStage
from .starting_points import StartingPoints

__all__ = ["PotentialConfig", "PotentialStage"]


@dataclass(frozen=True)
class PotentialConfig:
    r"""Settings of the MCMC on the posterior potential (see
    :func:`~ebm_lfi.samplers.mcmc.potential.sample_potential`).

    Arguments:
        sampler: ``"mcmc"`` (chains started near the observation, below) or ``"smc"``
            (tempered sequential Monte Carlo from the prior,
            :func:`~ebm_lfi.samplers.mcmc.tempering.sample_tempered`, which weights separated
            modes by the potential; the MCMC settings below are then unused). Not the default:
            on SLCP's true likelihood it gives C2ST 0.49–0.56 where the chains give
            0.86–0.96, but on the learned NCE potentials of two_moons it reproduces the
            potential's wrong weighting of the crescents (mean C2ST 0.771 against 0.716 for the
            chains, which keep their starting points' shares) and on SLCP's it gains 0.02
            (``docs/benchmarks.md``, "Tempered SMC on a tractable posterior").
        particles: Particles of ``"smc"`` (at least the number of draws asked for).
        num_chains: Chains run as one batch.
        burn_in: Tuning steps per chain (discarded).
        kernel: ``"mala"`` (gradient of the potential by autograd) or ``"rw"``.
        thin: Keep every ``thin``-th draw.
        jump_rate: Probability that a step is followed by differential-evolution jumps of
            half of the chains (``sample_mcmc``'s ``jump_rate``; 0: none; off with fewer
            than 4 chains): they move chains between the modes of the posterior.
        min_ess, max_extension: As for the exchange stage
            (:class:`~ebm_lfi.methods.ExchangeConfig`): where the smallest effective sample
            size is below ``min_ess`` times the draws asked for, the chains run again from
            where they ended (after the planned burn-in), with a thinning ``f`` times longer
            (:func:`~ebm_lfi.samplers.mcmc.diagnostics.extension_factor`), at most
            ``max_extension``; not for runs that keep fewer than 100 steps per chain.

    Jumps are off by default here, unlike in the exchange stage: on two_moons at 10⁴
    simulations (``nce``, sbibm's observations 1–5) rate 0.2 brought split :math:`\hat R`
    from 4–18 down to 2.0–3.9 but C2ST from 0.751 to 0.766 and W2 from 0.276 to 0.498: once
    the chains move between the crescents they weight them as the NCE potential does, which
    is further from the truth than the starting points (training parameters with the
    nearest statistics) were.

    Longer runs (``min_ess``), on the same fits as the exchange stage's measurement
    (:class:`~ebm_lfi.methods.ExchangeConfig`, ``scripts/check_chain_length.py``, 10⁴
    simulations, observations 1 and 2): ``gaussian_linear_uniform`` effective size 127 and 123
    → 402 and 364 (2 and 3 times longer), C2ST 0.722 / 0.804 → 0.646 / 0.730; two_moons C2ST
    0.708 / 0.762 → 0.626 / 0.739, 4 times longer, with split :math:`\hat R` still 18–20 (each
    chain stays in the crescent it started in, so the effective size stays at the number of
    chains).
    """

    sampler: str = "mcmc"
    particles: int = 2000
    num_chains: int = 20
    burn_in: int = 500
    kernel: str = "mala"
    thin: int = 2
    jump_rate: float = 0.0
    min_ess: float = 0.25
    max_extension: int = 4

    def __post_init__(self):
        if self.num_chains < 1 or self.burn_in < 0 or self.thin < 1:
            raise ValueError(
                "num_chains and thin must be >= 1 and burn_in >= 0, got "
                f"{self.num_chains}, {self.thin}, {self.burn_in}"
            )
        if self.sampler not in ("mcmc", "smc") or self.particles < 2:
            raise ValueError(
                f"sampler must be 'mcmc' or 'smc' and particles >= 2, got {self.sampler!r} "
                f"and {self.particles}"
            )
        if self.kernel not in ("mala", "rw"):
            raise ValueError(f"kernel must be 'mala' or 'rw', got {self.kernel!r}")
        if not 0 <= self.jump_rate <= 1:
            raise ValueError(f"jump_rate must be in [0, 1], got {self.jump_rate}")
        if not 0 <= self.min_ess <= 1 or self.max_extension < 1:
            raise ValueError(
                "min_ess must be in [0, 1] and max_extension >= 1, got "
                f"{self.min_ess} and {self.max_extension}"
            )


class PotentialStage:
    r"""MCMC on the posterior potential of a ratio model (the posterior stage of ``nce``).

    Arguments:
        config: A :class:`PotentialConfig` or a dict of its fields (default: its defaults).
        progress: Show a progress bar while sampling.

    The stage reads ``prior`` and ``model`` of the fit it is prepared on: an
    :class:`~ebm_lfi.ExpFamEBM` with a normaliser head (``normalizer=True``, as NCE fits it).
    No simulator is needed.
    """

    def __init__(self, config: PotentialConfig | dict | None = None, *, progress: bool = False):
        self.config = as_config(config, PotentialConfig, "mcmc")
        self.progress = progress
        self.prior = None
        self.model: ExpFamEBM | None = None
        self.starts: StartingPoints | None = None

    def prepare(
        self, fit: FitStage, theta: Tensor, x: Tensor, *, seed: int | None = None
    ) -> PotentialStage:
        """Take the fit's ratio model and build the table of chain starting points from the
        training pairs ``theta, x`` (``seed`` is unused: nothing random here)."""
        if getattr(fit, "model_x_shape", None) is not None:
            raise TypeError(
                f"the potential stage reads x in the shape of its fit; {type(fit).__name__} "
                "models x in another shape (model_x_shape)"
            )
        model = getattr(fit, "model", None)
        if not isinstance(model, ExpFamEBM) or not model.has_normalizer:
            raise ValueError(
                "the potential stage needs a ratio model (ExpFamEBM normalizer=True, as fitted "
                f"by loss='nce'); {type(fit).__name__} has none"
            )
        self.prior, self.model = fit.prior, model
        self.starts = StartingPoints(model.statistics, theta, x)
        return self

    def log_potential(self, x_o: Tensor) -> Callable[[Tensor], Tensor]:
        r"""The unnormalised log posterior :math:`\theta \mapsto \log \pi(\theta) +
        \eta(\theta)^\top s(y_o) + c(\theta)` for one checked observation, mapping
        :math:`(c, p)` to :math:`(c,)` (``-inf`` outside the prior's support)."""
        likelihood, prior = self.log_likelihood(x_o), self.prior

        def potential(theta: Tensor) -> Tensor:
            return prior_log_prob(prior, theta.cpu()).to(theta.device) + likelihood(theta)

        return potential

    def log_likelihood(self, x_o: Tensor) -> Callable[[Tensor], Tensor]:
        r"""The potential without the prior, :math:`\theta \mapsto \eta(\theta)^\top s(y_o) +
        c(\theta)` (the log-likelihood up to a constant in :math:`\theta`), for one checked
        observation, mapping :math:`(c, p)` to :math:`(c,)`."""
        if self.model is None:
            raise NotFittedError("the potential stage is not prepared: call .prepare(fit, ...)")
        model = self.model
        with torch.no_grad():
            s_o = model.statistics(x_o[None])

        def likelihood(theta: Tensor) -> Tensor:
            eta, c = model.natural_and_normalizer(theta)  # one pass of the network per step
            return (eta * s_o).sum(-1) + c

        return likelihood

    def sample(self, x_o: Tensor, num_samples: int, *, seed: int | None = None) -> Draws:
        r"""MCMC chains on the potential for one observation (no samples or weights: the
        chains hold the draws); ``num_samples`` is rounded up to a multiple of the chains. With
        ``sampler="smc"``: ``num_samples`` equally weighted particles of tempered SMC."""
        cfg = self.config
        if cfg.sampler == "smc":
            return self._sample_tempered(x_o, num_samples, seed)
        start = time.perf_counter()
        draws = math.ceil(num_samples / cfg.num_chains) * cfg.thin
        with frozen(self.model):
            potential = self.log_potential(x_o)

            def run(theta0: Tensor, factor: int, seed: int | None):
                return sample_potential(
                    potential,
                    self.prior,
                    theta0,
                    num_samples=draws * factor,
                    burn_in=cfg.burn_in,
                    kernel=cfg.kernel,
                    jump_rate=cfg.jump_rate if cfg.num_chains >= 4 else 0.0,
                    seed=seed,
                    progress=self.progress,
                )

            def again(result, factor: int):  # from where the chains ended, a seed of its own
                return run(
                    result.chains[:, -1],
                    factor,
                    None if seed is None else seed + EXTENSION_SEED * factor,
                )

            result, factor = run_longer(
                run(self.starts(x_o, cfg.num_chains), 1, seed),
                again,
                num_samples,
                cfg.min_ess,
                cfg.max_extension,
                steps=draws,
            )
        thin = cfg.thin * factor
        chains = result.chains[:, thin - 1 :: thin]
        diagnostics = {
            "sampler": f"potential-{cfg.kernel}",
            "simulations": 0,
            "acceptance": float(result.acceptance_rate.mean()),
            "ess": torch.as_tensor(result.ess).tolist(),
            "rhat": torch.as_tensor(result.rhat).tolist(),
            "num_chains": cfg.num_chains,
            "extension": factor,
            "seconds": time.perf_counter() - start,
        }
        if not math.isnan(result.jump_acceptance):
            diagnostics["jump_acceptance"] = result.jump_acceptance
        return Draws(None, None, chains, diagnostics)

    def _sample_tempered(self, x_o: Tensor, num_samples: int, seed: int | None) -> Draws:
        """``sampler="smc"``: the particles of tempered SMC, the first ``num_samples`` kept."""
        cfg = self.config
        device = self.model.device
        likelihood = self.log_likelihood(x_o)

        def on_model(theta: Tensor) -> Tensor:  # the particles live on the CPU
            return likelihood(theta.to(device)).cpu()

        with frozen(self.model):
            result = sample_tempered(
                on_model,
                self.prior,
                max(cfg.particles, num_samples),
                dtype=self.model.dtype,
                seed=seed,
                progress=self.progress,
            )
        diagnostics = {
            "sampler": "potential-smc",
            "simulations": 0,
            "stages": len(result.temperatures),
            "acceptance": float(result.acceptance.mean()),
            "unique": result.unique,
            "log_evidence": result.log_evidence,
            "seconds": result.seconds,
        }
        return Draws(result.samples[:num_samples].to(device), None, None, diagnostics)
