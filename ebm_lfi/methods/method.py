r"""A method is a fit stage plus a posterior stage.

In the spirit of sbi's trainers → potentials → posteriors, inference runs in two stages:

* the **fit stage** learns from simulated pairs :math:`(\theta_i, x_i)` what the posterior
  needs: an energy model (:class:`~ebm_lfi.methods.fit.EnergyFit`), regression statistics or
  fixed statistics (:mod:`~ebm_lfi.methods.baselines`);
* the **posterior stage** draws :math:`\theta \mid x_o` from that fit: ABC on the statistics
  (:class:`~ebm_lfi.methods.abc_stage.ABCStage`), exchange MCMC with the model as likelihood
  (:class:`~ebm_lfi.methods.exchange_stage.ExchangeStage`) or MCMC on a tractable posterior
  potential (:class:`~ebm_lfi.methods.potential_stage.PotentialStage`).

:class:`Method` composes one of each; any stage sits on any fit that provides what it reads
(:class:`FitStage`, plus ``model`` for the MCMC stages), so one fit can serve several stages::

    fit = EnergyFit(prior, loss="ssm").fit(theta, x, seed=0)
    abc = Method(fit, ABCStage(simulator=simulator)).prepare(seed=0)
    exchange = Method(fit, ExchangeStage()).prepare()

**The stage protocol** (:class:`PosteriorStage`): ``prepare(fit, theta, x, *, seed=None)`` is
called once after the fit, with the fit's checked training pairs (ABC fits its statistic
scales and builds its reference table there, the MCMC stages the table of chain starting
points); ``sample(x_o, num_samples, *, seed=None, **options)`` draws for one checked
observation and returns :class:`Draws` ``(samples, weights, chains, diagnostics)``: weighted or
unweighted samples, or chains :math:`(c, d, p)` (MCMC) from which the samples are read.
Optionally, a stage that simulates says how it shares a total budget of simulator calls with
the training set (``split_budget(num_simulations, num_samples) -> (training, stage)``, see
:meth:`Method.split_budget`) and takes a failure policy (``on_error``).

**Every posterior reports on itself** (:mod:`~ebm_lfi.methods.checks`): its contraction
against the prior (``diagnostics["contraction"]``), the data transform of the fit where there
is one (``diagnostics["data_transform"]``), the simulator calls it took with the training
pairs (``diagnostics["total_simulations"]``), and a
:class:`~ebm_lfi.methods.checks.PosteriorWarning` when the posterior is about the prior,
MCMC chains have not converged or the exchange sampler's inner chain has not mixed.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..posterior.posterior import Posterior
from ..priors import prior_sample
from .checks import (
    PRIOR_DRAWS,
    coverage_edges,
    posterior_problems,
    prior_coverage,
    prior_std,
    warn_problems,
)
from .common import NotFittedError, check_observation, spawn_seeds

__all__ = ["Draws", "FitStage", "PosteriorStage", "Method"]


class Draws(NamedTuple):
    r"""What a posterior stage draws for one observation.

    Attributes:
        samples: Draws :math:`(n, p)`, or ``None`` when ``chains`` hold them.
        weights: Normalised weights :math:`(n,)`, or ``None`` (equal weights).
        chains: MCMC chains :math:`(c, d, p)`, or ``None``.
        diagnostics: What the sampler measured (simulations, acceptance, ESS, seconds, ...).
    """

    samples: Tensor | None
    weights: Tensor | None
    chains: Tensor | None
    diagnostics: dict


@runtime_checkable
class FitStage(Protocol):
    r"""What a posterior stage reads from a fit (structural: any object with these members).

    Attributes:
        prior: The prior over :math:`\theta`.
        parameter_names: Names of the :math:`p` parameters.
        fitted: Whether :meth:`statistics` (and ``model``, where there is one) can be used.
        training_data: The checked training pairs ``(theta, x)`` of the last fit, or ``None``.
        x_shape, dtype, device: Shape of one simulation, dtype and device of the fit.
        diagnostics: What the fit chose and measured (for :attr:`Method.diagnostics`).
    """

    prior: Distribution
    parameter_names: list[str]
    fitted: bool
    training_data: tuple[Tensor, Tensor] | None
    device: torch.device

    @property
    def x_shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def diagnostics(self) -> dict: ...

    def fit(self, theta: Tensor, x: Tensor, *, seed: int | None = None) -> Any: ...

    def statistics(self, x: Tensor) -> Tensor:
        """Batched statistics ``(n, *x_shape) -> (n, k)`` (used by ABC)."""
        ...

    def summary(self) -> dict:
        """Entries added to the diagnostics of every posterior of the fit."""
        ...


@runtime_checkable
class PosteriorStage(Protocol):
    """A way to draw the posterior from a fit (see the module docstring)."""

    def prepare(
        self, fit: FitStage, theta: Tensor, x: Tensor, *, seed: int | None = None
    ) -> PosteriorStage: ...

    def sample(
        self, x_o: Tensor, num_samples: int, *, seed: int | None = None, **options: Any
    ) -> Draws: ...


class Method:
    r"""A fit stage and a posterior stage behind one interface: ``fit(theta, x, seed=...)``,
    then ``posterior(x_o, num_samples=..., seed=...)``.

    Arguments:
        fit_stage: The fit (e.g. :class:`~ebm_lfi.methods.fit.EnergyFit`), fitted or not.
        posterior_stage: The posterior stage (e.g. :class:`~ebm_lfi.methods.ABCStage`).
        name: The name the posteriors carry (default: the class's ``name``).

    The registered methods (:func:`~ebm_lfi.methods.get`) are such compositions, with their
    options as keywords (:class:`~ebm_lfi.methods.EnergyABC` and the others).
    """

    name = "method"

    def __init__(
        self, fit_stage: FitStage, posterior_stage: PosteriorStage, *, name: str | None = None
    ):
        self.fit_stage = fit_stage
        self.posterior_stage = posterior_stage
        if name is not None:
            self.name = name
        self._prepared = False
        self._prior_sd: Tensor | None = None
        self._coverage_edges: Tensor | None = None

    # ------------------------------------------------------------------ the two stages
    def fit(self, theta, x, *, seed: int | None = None) -> Method:
        r"""Run the fit stage on simulated pairs, then prepare the posterior stage on them.

        Arguments:
            theta: Parameters, shape :math:`(n, p)`, drawn from the prior.
            x: Simulations, shape :math:`(n, *x_{shape})`.
            seed: Seed of the fit and of the stage's preparation (e.g. an ABC table).

        Returns:
            The method itself (fitted).
        """
        self._prepared = False
        self._prior_sd = self._coverage_edges = None
        self.fit_stage.fit(theta, x, seed=seed)
        return self.prepare(seed=seed)

    def prepare(self, *, seed: int | None = None) -> Method:
        """Prepare the posterior stage on the fitted fit stage and its training pairs (done
        by :meth:`fit`; call it after putting a stage on a fit that is already fitted)."""
        data = getattr(self.fit_stage, "training_data", None)
        if not self.fit_stage.fitted or data is None:
            raise NotFittedError(
                f"{type(self).__name__}: the fit stage has no training data; call .fit(theta, x)"
            )
        self.posterior_stage.prepare(self.fit_stage, *data, seed=seed)
        self._prepared = True
        return self

    def posterior(
        self, x_o, num_samples: int = 1000, *, seed: int | None = None, **options: Any
    ) -> Posterior:
        r"""The posterior of :math:`\theta` given ``x_o`` (shaped like one simulation).

        Arguments:
            x_o: The observation; a leading axis of size 1 is accepted.
            num_samples: Draws wanted (see the stage for how they are counted).
            seed: Seed of the draw.
            options: Further keywords of the stage's ``sample`` (e.g. ``tolerance``).
        """
        self._check_fitted()
        draws = self.posterior_stage.sample(
            self._observation(x_o), num_samples, seed=seed, **options
        )
        return self._posterior(draws)

    def posteriors(
        self, x_os, num_samples: int = 1000, *, seed: int | None = None, **options: Any
    ) -> list[Posterior]:
        r"""The posteriors of several observations.

        A stage with ``sample_many`` draws them as one batch (the exchange stage runs one
        batch of chains, far cheaper than one call per observation for small models; see
        :meth:`~ebm_lfi.methods.exchange_stage.ExchangeStage.sample_many`); for the others,
        observation :math:`i` is drawn by :meth:`posterior` with the :math:`i`-th seed spawned
        from ``seed`` (``numpy.random.SeedSequence``).

        Arguments:
            x_os: The observations, shape :math:`(m, *x_{shape})`.
            num_samples, seed, options: As for :meth:`posterior` (``seed`` seeds the whole).
        """
        self._check_fitted()
        checked = [self._observation(x_o) for x_o in x_os]
        sample_many = getattr(self.posterior_stage, "sample_many", None)
        if sample_many is None:
            seeds = spawn_seeds(seed, len(checked))
            return [
                self.posterior(x_o, num_samples, seed=s, **options)
                for x_o, s in zip(checked, seeds, strict=True)
            ]
        batch = sample_many(torch.stack(checked), num_samples, seed=seed, **options)
        return [self._posterior(draws) for draws in batch]

    def _observation(self, x_o) -> Tensor:
        """One observation, checked against the fit's shape and, where the fit has one, the
        support it inferred from its training data."""
        fit = self.fit_stage
        x_o = check_observation(x_o, fit.x_shape, fit.dtype).to(fit.device)
        check_support = getattr(fit, "check_support", None)
        if check_support is not None:
            check_support(x_o)
        return x_o

    def _posterior(self, draws: Draws) -> Posterior:
        """The :class:`~ebm_lfi.Posterior` of one observation's draws, reported on."""
        fit = self.fit_stage
        diagnostics = draws.diagnostics
        for key, value in fit.summary().items():
            diagnostics.setdefault(key, value)
        transform = getattr(getattr(fit, "model", None), "x_transform", None)
        if callable(getattr(transform, "describe", None)):
            diagnostics.setdefault("data_transform", transform.describe())
        theta = fit.training_data[0]
        diagnostics.setdefault(
            "total_simulations",
            int(theta.shape[0]) + int(diagnostics.get("simulations", 0) or 0),
        )
        post = Posterior(
            draws.samples,
            weights=draws.weights,
            parameter_names=fit.parameter_names,
            chains=draws.chains,
            diagnostics=diagnostics,
            method=self.name,
        )
        self._report(post, theta)
        return post

    def _report(self, post: Posterior, theta: Tensor) -> None:
        """Add the contraction to the diagnostics of ``post`` and warn about what failed."""
        if self._prior_sd is None:
            self._prior_sd = prior_std(self.prior, theta)
        sd = post.std().detach().to("cpu", torch.float64)
        post.diagnostics["contraction"] = (sd / self._prior_sd).tolist()
        if self._coverage_edges is None:
            # fresh prior draws, not the training parameters (drawn from a proposal in rounds)
            draws = prior_sample(self.prior, PRIOR_DRAWS, torch.Generator().manual_seed(0))
            self._coverage_edges = coverage_edges(draws)
        edges = self._coverage_edges
        post.diagnostics["prior_coverage"] = prior_coverage(post.samples, post.weights, edges)
        problems = posterior_problems(post.diagnostics, post.parameter_names)
        post.diagnostics["warnings"] = problems
        warn_problems(problems, self.name)

    def _check_fitted(self) -> None:
        if not self.fit_stage.fitted or not self._prepared:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call .fit(theta, x) before .posterior()"
            )

    # ------------------------------------------------------------------ what the fit learned
    def statistics(self, x) -> Tensor:
        r"""The statistics of the fit :math:`s(x)`, shape :math:`(n, k)` (e.g. for pyabc)."""
        if not self.fit_stage.fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call .fit(theta, x)")
        return self.fit_stage.statistics(x)

    @property
    def prior(self) -> Distribution:
        r"""The prior over :math:`\theta`."""
        return self.fit_stage.prior

    @property
    def parameter_names(self) -> list[str]:
        """Names of the parameters."""
        return self.fit_stage.parameter_names

    @property
    def diagnostics(self) -> dict:
        """What the fit chose and measured (architecture, model-choice table)."""
        return self.fit_stage.diagnostics

    @property
    def model(self) -> Any:
        """The fitted network of the fit stage (an ``AttributeError`` where there is none)."""
        return self.fit_stage.model

    @property
    def history(self) -> Any:
        """The training history of the fit stage (an ``AttributeError`` where none trains)."""
        return self.fit_stage.history

    @property
    def loss(self) -> Any:
        """The training loss of the fit stage (an ``AttributeError`` where none trains)."""
        return self.fit_stage.loss

    @property
    def selection_table(self) -> Any:
        """The model-choice table of the fit stage, or ``None``."""
        return getattr(self.fit_stage, "selection_table", None)

    @property
    def simulator(self) -> Any:
        """The simulator of the posterior stage, or ``None``."""
        return getattr(self.posterior_stage, "simulator", None)

    @simulator.setter
    def simulator(self, value: Any) -> None:
        if not hasattr(self.posterior_stage, "simulator"):
            raise AttributeError(f"{type(self.posterior_stage).__name__} uses no simulator")
        self.posterior_stage.simulator = value

    @property
    def executor(self) -> Any:
        """The executor of the posterior stage's simulations (ABC stages only; an
        ``AttributeError`` otherwise). Not pickled: ``None`` after unpickling."""
        return self.posterior_stage.executor

    @executor.setter
    def executor(self, value: Any) -> None:
        if not hasattr(self.posterior_stage, "executor"):
            raise AttributeError(f"{type(self.posterior_stage).__name__} runs no simulations")
        self.posterior_stage.executor = value

    @property
    def on_error(self) -> Any:
        """The failure policy of the posterior stage's simulations (``"raise"``, ``"drop"``,
        or ``None``: raise, unless :func:`~ebm_lfi.infer` passes its own); an
        ``AttributeError`` for a stage that runs no simulations."""
        return self.posterior_stage.on_error

    @on_error.setter
    def on_error(self, value: Any) -> None:
        if not hasattr(self.posterior_stage, "on_error"):
            raise AttributeError(f"{type(self.posterior_stage).__name__} runs no simulations")
        self.posterior_stage.on_error = value

    def split_budget(self, num_simulations: int, num_samples: int = 1000) -> tuple[int, int]:
        r"""How a total budget of ``num_simulations`` simulator calls is shared between the
        training set and the posterior stage (reference table, SMC-ABC rounds, checks of the
        exchange sampler), for one posterior of ``num_samples`` draws.

        Returns:
            ``(training, stage)``: simulations to train on and the most the stage may run;
            their sum is at most ``num_simulations``. A stage that simulates nothing leaves
            the whole budget to training.

        Raises:
            ValueError: If the budget cannot cover what the stage was configured to simulate
                (e.g. an explicit ``num_reference`` larger than the budget).
        """
        split = getattr(self.posterior_stage, "split_budget", None)
        if split is None:
            return int(num_simulations), 0
        return split(int(num_simulations), int(num_samples))

    def __setstate__(self, state: dict) -> None:
        state.setdefault("_prior_sd", None)  # methods pickled before they existed
        state.setdefault("_coverage_edges", None)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, fit_stage="
            f"{type(self.fit_stage).__name__}, posterior_stage="
            f"{type(self.posterior_stage).__name__})"
        )
