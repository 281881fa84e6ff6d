r"""The energy methods: the energy fit (:class:`~ebm_lfi.methods.fit.EnergyFit`) plus one
posterior stage each (Pacchiardi & Dutta 2022, arXiv:2012.10903).

* ``*-abc`` (:class:`EnergyABC`): ABC on the learned statistics :math:`s(x)`
  (:class:`~ebm_lfi.methods.abc_stage.ABCStage`). With denoising score matching at noise
  :math:`\sigma` (``dsm-abc``), the model is the ABC likelihood with a Gaussian kernel of
  bandwidth :math:`\sigma` on the transformed data, and its statistics summarise that
  likelihood. ``nce-abc`` / ``cnce-abc``: the same ABC on statistics fitted by
  noise-contrastive estimation (:mod:`ebm_lfi.losses.nce`).
* ``*-exchange`` (:class:`EnergyExchange`): exchange MCMC with the model as the likelihood
  (:class:`~ebm_lfi.methods.exchange_stage.ExchangeStage`). With the noise-conditional DSM fit
  (``dsm-exchange``), the ABC posterior at any tolerance :math:`\sigma` of the trained range,
  sampled without rejection.
* ``nce`` (:class:`RatioPosterior`): MCMC on the tractable posterior potential of the NCE
  ratio model (:class:`~ebm_lfi.methods.potential_stage.PotentialStage`); ``ml`` the same on a
  maximum-likelihood fit with its normaliser head (:mod:`ebm_lfi.losses.maximum_likelihood`),
  ``ml-abc`` / ``ml-exchange`` the other stages on that fit. ``gaussian``
  (:class:`GaussianPosterior`) the same stage, by tempered SMC, on the Gaussian member of the
  family fitted by its exact likelihood (:mod:`ebm_lfi.energy.gaussian_nets`).
* ``*-mdn`` (:class:`EnergyDensity`): a mixture density of :math:`\theta` given the learned
  statistics, fitted on the training pairs
  (:class:`~ebm_lfi.methods.density_stage.DensityStage`): the posterior without an ABC
  tolerance and without chains.

Each class only names its options: the fit's keywords (see
:class:`~ebm_lfi.methods.fit.EnergyFit`) go to the fit, the rest to the stage.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from torch import Tensor

from ..posterior.posterior import Posterior
from ..simulation.simulator import Simulator
from .abc_stage import ABCConfig, ABCStage
from .common import check_observation
from .density_stage import DensityConfig, DensityStage
from .exchange_stage import ExchangeConfig, ExchangeStage
from .fit import EnergyFit
from .method import Method
from .potential_stage import PotentialConfig, PotentialStage

__all__ = ["EnergyABC", "EnergyDensity", "EnergyExchange", "GaussianPosterior", "RatioPosterior"]


class EnergyABC(Method):
    r"""ABC on the statistics of a fitted exponential family (``sm-abc``, ``ssm-abc``,
    ``dsm-abc``, ``nce-abc``, ``cnce-abc``).

    Arguments:
        prior: The prior over :math:`\theta`.
        abc: An :class:`~ebm_lfi.methods.ABCConfig` or a dict of its fields.
        simulator: The simulator (a reference table when ``abc.num_reference`` asks for one,
            SMC-ABC); by default the training pairs serve as the reference table.
        reference: An optional ``(theta, x)`` table of prior-predictive simulations to use
            instead of the training pairs.
        executor: A :class:`concurrent.futures.Executor` (e.g. a Dask
            ``client.get_executor()``) that runs the ABC stage's simulations (reference table,
            SMC-ABC rounds) with the same results as without it. It is not pickled with the
            method (reset to ``None``); set :attr:`executor` again after unpickling.
        on_error: ``"raise"`` or ``"drop"``: the policy for failed simulations of the ABC
            stage (reference table, SMC-ABC; see :class:`~ebm_lfi.methods.ABCStage`);
            ``None``: raise, unless :func:`~ebm_lfi.infer` passes its own.
        progress: Show progress bars.
        fit_options: The keywords of the energy fit (``loss``, ``structure``,
            ``num_statistics``, ``training``, ``selection``, ``network``, ``sigma``, ...; see
            :class:`~ebm_lfi.methods.fit.EnergyFit`).
    """

    name = "energy-abc"

    def __init__(
        self,
        prior,
        *,
        abc: ABCConfig | dict | None = None,
        simulator: Simulator | Callable | None = None,
        reference: tuple[Any, Any] | None = None,
        executor: Executor | None = None,
        on_error: str | None = None,
        progress: bool = False,
        **fit_options: Any,
    ):
        fit = EnergyFit(prior, progress=progress, **fit_options)
        stage = ABCStage(
            abc,
            simulator=simulator,
            reference=reference,
            executor=executor,
            on_error=on_error,
            progress=progress,
        )
        super().__init__(fit, stage)


class EnergyDensity(Method):
    r"""A mixture density of :math:`\theta` given the statistics of a fitted exponential
    family (``ssm-mdn``, ``nce-mdn``).

    Arguments:
        prior: The prior over :math:`\theta`.
        density: A :class:`~ebm_lfi.methods.density_stage.DensityConfig` or a dict of its
            fields.
        simulator: Accepted for a uniform interface and not used: nothing is simulated at
            posterior time.
        progress: Show progress bars.
        fit_options: The keywords of the energy fit (see
            :class:`~ebm_lfi.methods.fit.EnergyFit`).
    """

    name = "energy-mdn"

    def __init__(
        self,
        prior,
        *,
        density: DensityConfig | dict | None = None,
        simulator: Simulator | Callable | None = None,
        progress: bool = False,
        **fit_options: Any,
    ):
        fit = EnergyFit(prior, progress=progress, **fit_options)
        super().__init__(fit, DensityStage(density, progress=progress))


class EnergyExchange(Method):
    r"""Exchange MCMC with the fitted exponential family as the likelihood (``sm-exchange``,
    ``ssm-exchange``, ``dsm-exchange``).

    Arguments:
        prior: The prior over :math:`\theta`.
        exchange: An :class:`~ebm_lfi.methods.ExchangeConfig` or a dict of its fields.
        simulator: The simulator, to check the inner chain at posterior draws (optional).
        on_error: ``"raise"`` or ``"drop"``: the policy for failed simulations of that check
            (``None``: raise, unless :func:`~ebm_lfi.infer` passes its own).
        progress: Show progress bars.
        fit_options: The keywords of the energy fit (see
            :class:`~ebm_lfi.methods.fit.EnergyFit`).
    """

    name = "energy-exchange"

    def __init__(
        self,
        prior,
        *,
        exchange: ExchangeConfig | dict | None = None,
        simulator: Simulator | Callable | None = None,
        on_error: str | None = None,
        progress: bool = False,
        **fit_options: Any,
    ):
        fit = EnergyFit(prior, progress=progress, **fit_options)
        stage = ExchangeStage(exchange, simulator=simulator, on_error=on_error, progress=progress)
        super().__init__(fit, stage)

    @classmethod
    def from_fitted(
        cls,
        method: Method,
        *,
        exchange: ExchangeConfig | dict | None = None,
        progress: bool | None = None,
    ) -> EnergyExchange:
        """An exchange sampler on the fit of another energy method (shared, not refitted).

        Arguments:
            method: A fitted method with an energy fit (e.g. ``ssm-abc``); its simulator, if
                any, checks the inner chain.
            exchange: An :class:`~ebm_lfi.methods.ExchangeConfig` or a dict of its fields.
            progress: Show progress bars (default: as the fit).

        Returns:
            A fitted :class:`EnergyExchange` named like ``method`` with ``-exchange`` for
            ``-abc`` (``ssm-abc`` gives ``ssm-exchange``).
        """
        fit = method.fit_stage
        fit.check_fitted()
        progress = fit.progress if progress is None else progress
        new = cls(
            fit.prior,
            exchange=exchange,
            simulator=method.simulator,
            on_error=getattr(method.posterior_stage, "on_error", None),
            progress=progress,
        )
        new.fit_stage = fit
        if method.name.endswith("-abc"):
            new.name = method.name[: -len("-abc")] + "-exchange"
        return new.prepare()

    def tolerances(self, tolerance: float | None = None) -> list[float]:
        r"""The noise scales the sampler visits for ``tolerance`` (noise-conditional fits only):
        ``anneal`` levels spaced geometrically from the highest trained scale down to the
        tolerance (default: the lowest trained one); the last is the target (see
        :func:`~ebm_lfi.methods.exchange_stage.tolerance_levels`)."""
        self._check_fitted()
        return self.posterior_stage.tolerances(tolerance)

    def posterior(
        self,
        x_o,
        num_samples: int = 1000,
        *,
        seed: int | None = None,
        tolerance: float | None = None,
    ) -> Posterior:
        r"""Exchange-MCMC posterior of :math:`\theta` given ``x_o``; chains are kept.

        Arguments:
            x_o: The observation, shaped like one simulation.
            num_samples: Draws kept over all chains (rounded up to a multiple of the chains).
            seed: Seed of the chains.
            tolerance: Noise-conditional (DSM) fits only: the ABC tolerance :math:`\sigma`, the
                bandwidth of the Gaussian kernel on the standardised transformed data, inside
                the trained range; the sampler targets
                :math:`\pi(\theta)\, p_\sigma(y_o \mid \theta)`. Default: the lowest
                trained tolerance, approached by annealing from the highest (see
                :meth:`tolerances`).
        """
        return super().posterior(x_o, num_samples, seed=seed, tolerance=tolerance)


class RatioPosterior(Method):
    r"""The posterior from an NCE-fitted ratio model, sampled on its potential (``nce``).

    Arguments:
        prior: The prior over :math:`\theta`.
        mcmc: A :class:`~ebm_lfi.methods.PotentialConfig` or a dict of its fields.
        simulator: Accepted for a uniform interface and not used: nothing is simulated at
            posterior time.
        progress: Show progress bars.
        fit_options: The keywords of the energy fit (see
            :class:`~ebm_lfi.methods.fit.EnergyFit`); the loss is NCE unless given, the model
            a ratio model.
    """

    name = "nce"

    def __init__(
        self,
        prior,
        *,
        mcmc: PotentialConfig | dict | None = None,
        simulator: Simulator | Callable | None = None,
        progress: bool = False,
        **fit_options: Any,
    ):
        fit_options.setdefault("loss", "nce")
        fit = EnergyFit(prior, progress=progress, **fit_options)
        super().__init__(fit, PotentialStage(mcmc, progress=progress))

    def log_potential(self, x_o) -> Callable[[Tensor], Tensor]:
        r"""The unnormalised log posterior :math:`\theta \mapsto \log \pi(\theta) +
        \eta(\theta)^\top s(y_o) + c(\theta)` for one observation, mapping :math:`(c, p)` to
        :math:`(c,)` (``-inf`` outside the prior's support)."""
        self._check_fitted()
        fit = self.fit_stage
        x_o = check_observation(x_o, fit.x_shape, fit.dtype).to(fit.device)
        return self.posterior_stage.log_potential(x_o)


class GaussianPosterior(RatioPosterior):
    r"""A learned Gaussian likelihood (``gaussian``): the Gaussian member of the family,
    :math:`y \mid \theta \sim \mathcal N(\mu(\theta), P(\theta)^{-1})` on the transformed and
    flattened data, with its mean and precision factor from one network and its exact
    normaliser (:mod:`ebm_lfi.energy.gaussian_nets`), fitted by its exact likelihood
    (:class:`~ebm_lfi.losses.maximum_likelihood.ExactLikelihood`, no sampler); the posterior
    potential :math:`\log \pi(\theta) + \log \mathcal N(y_o; \mu(\theta), P(\theta)^{-1})` is
    sampled by tempered SMC (``PotentialConfig(sampler="smc")`` unless ``mcmc`` says
    otherwise), which weights separated modes against each other.

    Right where the data given :math:`\theta` are close to Gaussian after the data transform
    (sums, averages, counts away from zero; sbibm's SLCP exactly, C2ST 0.65 at 10⁴
    simulations); elsewhere a Gaussian approximation of the likelihood, which can still be
    right where the shape of the posterior comes from the mean (two_moons, 0.54) and is poor
    where the data are many numbers for the budget (40 flat iid draws at 10³: 0.93). Its cost
    grows as :math:`d^2` parameters (a warning above
    :data:`~ebm_lfi.energy.model.GAUSSIAN_MAX_DIM` numbers). ``docs/benchmarks.md``, "A
    learned Gaussian likelihood".

    Arguments:
        prior: The prior over :math:`\theta`.
        mcmc: A :class:`~ebm_lfi.methods.PotentialConfig` or a dict of its fields (the sampler
            is ``"smc"`` unless the dict sets it).
        simulator: Accepted for a uniform interface and not used.
        progress: Show progress bars.
        fit_options: The keywords of the energy fit (see
            :class:`~ebm_lfi.methods.fit.EnergyFit`) but ``loss``, ``structure`` and
            ``num_statistics``, which this method fixes (``network={"natural_hidden": ...}``
            sets the network's widths, 128-128-128 by default).
    """

    name = "gaussian"

    def __init__(
        self,
        prior,
        *,
        mcmc: PotentialConfig | dict | None = None,
        simulator: Simulator | Callable | None = None,
        progress: bool = False,
        **fit_options: Any,
    ):
        for key in ("loss", "structure", "num_statistics"):
            if key in fit_options:
                raise TypeError(f"method 'gaussian' fixes {key}; do not pass it")
        if mcmc is None or isinstance(mcmc, dict):
            mcmc = {"sampler": "smc", **(mcmc or {})}
        super().__init__(
            prior,
            mcmc=mcmc,
            simulator=simulator,
            progress=progress,
            loss="exact-ml",
            structure="gaussian",
            **fit_options,
        )
