r"""The NCE ratio posterior (``nce``): a tractable posterior potential, sampled by MCMC.

NCE (:class:`~ebm_lfi.losses.NCE`) fits the ratio model
:math:`r(y, \theta) = \eta(\theta)^\top s(y) + c(\theta) + d(y) \approx \log p(y \mid \theta) -
\log p(y)`. For an observation :math:`y_o`, the posterior is then known up to a constant,

.. math:: \log p(\theta \mid y_o) = \log \pi(\theta) + \eta(\theta)^\top s(y_o) + c(\theta)
    + \text{const},

so it is sampled by vectorised MCMC over :math:`\theta` alone
(:func:`~ebm_lfi.samplers.sample_potential`: MALA in an unconstrained parametrisation of the
prior's support, chains started at the training parameters whose statistics are closest to the
observation's). No simulation at posterior time, a few milliseconds per step for all chains.

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

from ..posterior.posterior import Posterior
from ..priors import prior_log_prob
from ..samplers.mcmc.potential import sample_potential
from .common import as_config, check_observation
from .energy_methods import EnergyMethod, frozen

__all__ = ["PotentialConfig", "RatioPosterior"]


@dataclass(frozen=True)
class PotentialConfig:
    r"""Settings of the MCMC on the posterior potential (see
    :func:`~ebm_lfi.samplers.sample_potential`).

    Arguments:
        num_chains: Chains run as one batch.
        burn_in: Tuning steps per chain (discarded).
        kernel: ``"mala"`` (gradient of the potential by autograd) or ``"rw"``.
        thin: Keep every ``thin``-th draw.
    """

    num_chains: int = 20
    burn_in: int = 500
    kernel: str = "mala"
    thin: int = 2

    def __post_init__(self):
        if self.num_chains < 1 or self.burn_in < 0 or self.thin < 1:
            raise ValueError(
                "num_chains and thin must be >= 1 and burn_in >= 0, got "
                f"{self.num_chains}, {self.thin}, {self.burn_in}"
            )
        if self.kernel not in ("mala", "rw"):
            raise ValueError(f"kernel must be 'mala' or 'rw', got {self.kernel!r}")


class RatioPosterior(EnergyMethod):
    r"""The posterior from an NCE-fitted ratio model, sampled on its potential (``nce``).

    Takes the arguments of the energy fit (see :class:`~ebm_lfi.methods.EnergyMethod`; the loss
    is NCE, the model a ratio model) plus ``mcmc``: a :class:`PotentialConfig` or a dict of its
    fields. The simulator is not needed.
    """

    name = "nce"

    def __init__(self, prior, *, mcmc: PotentialConfig | dict | None = None, **kw):
        kw.setdefault("loss", "nce")
        super().__init__(prior, **kw)
        self.mcmc_config = as_config(mcmc, PotentialConfig, "mcmc")

    def log_potential(self, x_o) -> Callable[[Tensor], Tensor]:
        r"""The unnormalised log posterior :math:`\theta \mapsto \log \pi(\theta) +
        \eta(\theta)^\top s(y_o) + c(\theta)` for one observation, mapping :math:`(c, p)` to
        :math:`(c,)` (``-inf`` outside the prior's support)."""
        self._check_fitted()
        model = self.model
        if not model.has_normalizer:
            raise ValueError("the nce posterior needs a ratio model (ExpFamEBM normalizer=True)")
        x_o = check_observation(x_o, model.x_shape, model.dtype).to(self.device)
        with torch.no_grad():
            s_o = model.statistics(x_o[None])
        prior = self.prior

        def potential(theta: Tensor) -> Tensor:
            eta, c = model.natural_and_normalizer(theta)  # one pass of the network per step
            value = (eta * s_o).sum(-1) + c
            return prior_log_prob(prior, theta.cpu()).to(theta.device) + value

        return potential

    def posterior(self, x_o, num_samples: int = 1000, *, seed: int | None = None) -> Posterior:
        r"""Posterior of :math:`\theta` given ``x_o`` by MCMC on the potential; chains kept."""
        self._check_fitted()
        cfg = self.mcmc_config
        start = time.perf_counter()
        x_o = check_observation(x_o, self.model.x_shape, self.model.dtype).to(self.device)
        draws = math.ceil(num_samples / cfg.num_chains) * cfg.thin
        with frozen(self.model):
            theta0 = self._starting_points(x_o, cfg.num_chains)
            result = sample_potential(
                self.log_potential(x_o),
                self.prior,
                theta0,
                num_samples=draws,
                burn_in=cfg.burn_in,
                kernel=cfg.kernel,
                seed=seed,
                progress=self.progress,
            )
        chains = result.chains[:, cfg.thin - 1 :: cfg.thin]
        diagnostics = {
            "sampler": f"potential-{cfg.kernel}",
            "simulations": 0,
            "acceptance": float(result.acceptance_rate.mean()),
            "ess": torch.as_tensor(result.ess).tolist(),
            "rhat": torch.as_tensor(result.rhat).tolist(),
            "num_chains": cfg.num_chains,
            "seconds": time.perf_counter() - start,
        }
        return self._posterior(None, chains=chains, diagnostics=diagnostics)
