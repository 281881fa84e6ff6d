r"""Baselines: rejection ABC on raw or hand-made statistics, and regression statistics.

* ``rejection-abc``: ABC with the statistics the user gives (default: the raw data, flattened).
* ``fp-abc`` (Fearnhead & Prangle 2012, "Constructing summary statistics for approximate
  Bayesian computation: semi-automatic ABC", JRSS B 74:419): a network regresses
  :math:`\theta` on :math:`x` by least squares; its output, an estimate of the posterior mean
  :math:`\mathbb{E}[\theta \mid x]`, is the statistic.

Both share the ABC stage with the energy methods (:class:`~.statistics_abc.StatisticsABC`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..energy.nets import statistics_network
from ..energy.transforms import DataTransform, Standardize
from ..posterior.posterior import Posterior
from ..priors import parameter_names, prior_dim, validate_prior
from ..simulation.simulator import Simulator
from ..training.config import TrainConfig
from ..training.loop import train
from .common import NotFittedError, as_config, batched, check_observation, check_training_data
from .statistics_abc import ABCConfig, StatisticsABC, check_executor

__all__ = ["RejectionABC", "RegressionABC", "PosteriorMeanRegressor"]


class _ABCMethod:
    """Shared fit/posterior of ABC with some statistics; subclasses set ``_statistics``."""

    name = "abc"

    def __init__(
        self,
        prior: Distribution,
        *,
        simulator: Simulator | Callable | None = None,
        abc: ABCConfig | dict | None = None,
        reference=None,
        executor: Executor | None = None,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ):
        self.prior = validate_prior(prior)
        self.num_parameters = prior_dim(prior)
        self.parameter_names = parameter_names(prior, self.num_parameters)
        self.simulator = simulator
        self.abc_config = as_config(abc, ABCConfig, "abc")
        self.reference = reference
        self.executor = check_executor(executor)
        self.device = torch.device(device)
        self.progress = progress
        self.x_shape: tuple[int, ...] | None = None
        self._abc: StatisticsABC | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "executor": None}  # a live executor does not travel

    def _statistics(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _learn(self, theta: Tensor, x: Tensor, seed: int | None) -> None:
        """Learn the statistics (nothing to learn by default)."""

    def fit(self, theta, x, *, seed: int | None = None):
        """Learn the statistics (if any) and build the ABC reference table."""
        theta, x = check_training_data(theta, x, self.num_parameters)
        theta, x = theta.to(self.device), x.to(self.device)
        self.x_shape = tuple(x.shape[1:])
        self._learn(theta, x, seed)
        self._abc = StatisticsABC(self.prior, self._statistics, self.simulator, self.abc_config)
        self._abc.prepare(
            theta,
            x,
            seed=seed,
            reference=self.reference,
            progress=self.progress,
            executor=self.executor,
        )
        return self

    def statistics(self, x) -> Tensor:
        """The statistics used by the ABC distance, shape ``(n, k)``."""
        if self._abc is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call .fit(theta, x)")
        return batched(self._statistics, torch.as_tensor(x, device=self.device))

    def posterior(self, x_o, num_samples: int = 1000, *, seed: int | None = None) -> Posterior:
        r"""ABC posterior of :math:`\theta` given ``x_o`` (shaped like one simulation)."""
        if self._abc is None:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call .fit(theta, x) before .posterior()"
            )
        dtype = self._abc.table[0].dtype if self._abc.table else torch.get_default_dtype()
        x_o = check_observation(x_o, self.x_shape, dtype).to(self.device)
        samples, weights, diag = self._abc.sample(
            x_o, num_samples, seed=seed, executor=self.executor
        )
        return Posterior(
            samples,
            weights=weights,
            parameter_names=self.parameter_names,
            diagnostics=diag,
            method=self.name,
        )


class RejectionABC(_ABCMethod):
    r"""ABC on user statistics ``statistics(x) -> (n, k)`` (default: the flattened data).

    Arguments:
        prior: The prior over :math:`\theta`.
        statistics: Batched statistics function, or ``None`` for the raw data.
        simulator, abc, reference, executor, device, progress: As for every ABC method (see
            :class:`~ebm_lfi.methods.EnergyABC`).
    """

    name = "rejection-abc"

    def __init__(self, prior, *, statistics: Callable[[Tensor], Tensor] | None = None, **kw):
        super().__init__(prior, **kw)
        if statistics is not None and not callable(statistics):
            raise TypeError(f"statistics must be callable, got {type(statistics).__name__}")
        self.user_statistics = statistics

    def _statistics(self, x: Tensor) -> Tensor:
        if self.user_statistics is None:
            return x.reshape(x.shape[0], -1)
        s = torch.as_tensor(self.user_statistics(x))
        return s.reshape(s.shape[0], -1).to(x.dtype)


class PosteriorMeanRegressor(nn.Module):
    r"""A network :math:`x \mapsto \hat\theta(x)` trained by least squares, with its transforms."""

    def __init__(self, x_shape, theta_dim, structure="mlp", x_support=None, **network):
        super().__init__()
        self.net, shared = statistics_network(tuple(x_shape), theta_dim, structure, **network)
        self.x_transform = DataTransform(tuple(x_shape), x_support, shared)
        self.theta_transform = Standardize((theta_dim,))

    def forward(self, y: Tensor) -> Tensor:
        """Standardised prediction from transformed data ``y``."""
        return self.net(y)

    def predict(self, x: Tensor) -> Tensor:
        r"""Estimated posterior mean :math:`\hat\theta(x)`, shape :math:`(n, p)`."""
        return self.theta_transform.inverse(self.net(self.x_transform(x)))


def _mse(model: PosteriorMeanRegressor, y: Tensor, u: Tensor) -> Tensor:
    return (model(y) - u).square().sum(-1).mean()


class RegressionABC(_ABCMethod):
    r"""Semi-automatic ABC (Fearnhead & Prangle 2012): statistics are a regression of
    :math:`\theta` on :math:`x`.

    Arguments:
        prior: The prior over :math:`\theta`.
        structure: ``"mlp"``, ``"iid"`` or ``"markov"`` network.
        x_support: ``(lower, upper)`` bounds of :math:`x`.
        network: Further keywords of the network (``hidden``, ``order``, ...).
        training: A :class:`~ebm_lfi.training.loop.TrainConfig` or a dict of its fields.
        simulator, abc, reference, executor, device, progress: As for every ABC method (see
            :class:`~ebm_lfi.methods.EnergyABC`).
    """

    name = "fp-abc"

    def __init__(
        self,
        prior,
        *,
        structure: str = "mlp",
        x_support=None,
        network: dict | None = None,
        training: TrainConfig | dict | None = None,
        **kw,
    ):
        super().__init__(prior, **kw)
        self.structure, self.x_support = structure, x_support
        self.network = dict(network or {})
        self.training = as_config(training, TrainConfig, "training")
        self.model: PosteriorMeanRegressor | None = None
        self.history = None

    def _learn(self, theta, x, seed):
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            model = PosteriorMeanRegressor(
                x.shape[1:], self.num_parameters, self.structure, self.x_support, **self.network
            )
        model = model.to(device=self.device, dtype=theta.dtype)
        model.x_transform.fit(x)
        model.theta_transform.fit(theta)
        y, u = model.x_transform(x), model.theta_transform(theta)
        self.history = train(
            model,
            _mse,
            y,
            u,
            **self.training.as_kwargs(),
            seed=seed,
            device=self.device,
            progress=self.progress,
        )
        self.model = model.eval()

    @torch.no_grad()
    def _statistics(self, x: Tensor) -> Tensor:
        return self.model.predict(x.to(self.model.theta_transform.mean.dtype))
