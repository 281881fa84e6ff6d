r"""Baselines: rejection ABC on raw or hand-made statistics, and regression statistics.

* ``rejection-abc`` (:class:`RejectionABC`): ABC with the statistics the user gives (default:
  the raw data, flattened); its fit stage, :class:`FixedStatistics`, learns nothing.
* ``fp-abc`` (:class:`RegressionABC`; Fearnhead & Prangle 2012, "Constructing summary
  statistics for approximate Bayesian computation: semi-automatic ABC", JRSS B 74:419): a
  network regresses :math:`\theta` on :math:`x` by least squares (:class:`RegressionFit`); its
  output, an estimate of the posterior mean :math:`\mathbb{E}[\theta \mid x]`, is the statistic.

Both put the ABC stage of the energy methods (:class:`~ebm_lfi.methods.abc_stage.ABCStage`)
on their fit.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..energy.nets import statistics_network
from ..energy.transforms import DataTransform, Standardize
from ..priors import parameter_names, prior_dim, validate_prior
from ..simulation.simulator import Simulator
from ..training.config import TrainConfig
from ..training.loop import train
from .abc_stage import ABCConfig, ABCStage
from .common import NotFittedError, as_config, batched, check_training_data
from .method import Method

__all__ = [
    "FixedStatistics",
    "RegressionFit",
    "PosteriorMeanRegressor",
    "RejectionABC",
    "RegressionABC",
]


class FixedStatistics:
    r"""A fit stage with nothing to learn: user statistics, or the flattened data.

    Arguments:
        prior: The prior over :math:`\theta`.
        statistics: Batched statistics function ``x (n, *x_shape) -> (n, k)``, or ``None``
            for the raw data.
        device: ``"cpu"`` (default) or ``"cuda"``.

    :meth:`fit` only checks the training pairs and keeps them (:attr:`training_data`).
    """

    def __init__(
        self,
        prior: Distribution,
        statistics: Callable[[Tensor], Tensor] | None = None,
        *,
        device: str | torch.device = "cpu",
    ):
        if statistics is not None and not callable(statistics):
            raise TypeError(f"statistics must be callable, got {type(statistics).__name__}")
        self.prior = validate_prior(prior)
        self.num_parameters = prior_dim(prior)
        self.parameter_names = parameter_names(prior, self.num_parameters)
        self.user_statistics = statistics
        self.device = torch.device(device)
        self.fitted = False
        self.training_data: tuple[Tensor, Tensor] | None = None
        self._x_shape: tuple[int, ...] | None = None
        self._dtype: torch.dtype | None = None

    def fit(self, theta, x, *, seed: int | None = None) -> FixedStatistics:
        r"""Check and keep the training pairs ``theta (n, p)``, ``x (n, *x_shape)``; then
        :meth:`_learn` (nothing here)."""
        theta, x = check_training_data(theta, x, self.num_parameters)
        theta, x = theta.to(self.device), x.to(self.device)
        self._x_shape, self._dtype = tuple(x.shape[1:]), theta.dtype
        self._learn(theta, x, seed)
        self.training_data = (theta, x)
        self.fitted = True
        return self

    def _learn(self, theta: Tensor, x: Tensor, seed: int | None) -> None:
        """Learn the statistics (nothing to learn here)."""

    def _statistics(self, x: Tensor) -> Tensor:
        if self.user_statistics is None:
            return x.reshape(x.shape[0], -1)
        s = torch.as_tensor(self.user_statistics(x))
        return s.reshape(s.shape[0], -1).to(x.dtype)

    def check_fitted(self) -> None:
        """Raise :class:`~ebm_lfi.methods.NotFittedError` unless fitted."""
        if not self.fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call .fit(theta, x)")

    @property
    def x_shape(self) -> tuple[int, ...]:
        """The shape of one simulation (known after :meth:`fit`)."""
        return self._x_shape

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype of the training parameters (known after :meth:`fit`)."""
        return self._dtype

    def statistics(self, x) -> Tensor:
        """The statistics used by the ABC distance, shape ``(n, k)``."""
        self.check_fitted()
        return batched(self._statistics, torch.as_tensor(x, device=self.device))

    @property
    def diagnostics(self) -> dict:
        """Nothing was chosen or measured."""
        return {}

    def summary(self) -> dict:
        """Nothing to add to the diagnostics of a posterior."""
        return {}


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


class RegressionFit(FixedStatistics):
    r"""The fit stage of semi-automatic ABC: statistics :math:`\hat\theta(x)`, a least-squares
    regression of :math:`\theta` on :math:`x` (:class:`PosteriorMeanRegressor`).

    Arguments:
        prior: The prior over :math:`\theta`.
        structure: ``"mlp"``, ``"iid"`` or ``"markov"`` network.
        x_support: ``(lower, upper)`` bounds of :math:`x`.
        network: Further keywords of the network (``hidden``, ``order``, ...).
        training: A :class:`~ebm_lfi.training.config.TrainConfig` or a dict of its fields.
        device: ``"cpu"`` (default) or ``"cuda"``.
        progress: Show the training progress bar.
    """

    def __init__(
        self,
        prior: Distribution,
        *,
        structure: str = "mlp",
        x_support=None,
        network: dict | None = None,
        training: TrainConfig | dict | None = None,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ):
        super().__init__(prior, device=device)
        self.structure, self.x_support = structure, x_support
        self.network = dict(network or {})
        self.training = as_config(training, TrainConfig, "training")
        self.progress = progress
        self.model: PosteriorMeanRegressor | None = None
        self.history: pd.DataFrame | None = None

    def _learn(self, theta: Tensor, x: Tensor, seed: int | None) -> None:
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
            config=self.training,
            seed=seed,
            device=self.device,
            progress=self.progress,
        )
        self.model = model.eval()

    @torch.no_grad()
    def _statistics(self, x: Tensor) -> Tensor:
        return self.model.predict(x.to(self.model.theta_transform.mean.dtype))


class RejectionABC(Method):
    r"""ABC on user statistics ``statistics(x) -> (n, k)`` (default: the flattened data).

    Arguments:
        prior: The prior over :math:`\theta`.
        statistics: Batched statistics function, or ``None`` for the raw data.
        simulator, abc, reference, executor, on_error, progress: Those of the ABC stage, as
            for every ABC method (see :class:`~ebm_lfi.methods.EnergyABC`).
        device: ``"cpu"`` (default) or ``"cuda"``.
    """

    name = "rejection-abc"

    def __init__(
        self,
        prior,
        *,
        statistics: Callable[[Tensor], Tensor] | None = None,
        simulator: Simulator | Callable | None = None,
        abc: ABCConfig | dict | None = None,
        reference: tuple[Any, Any] | None = None,
        executor: Executor | None = None,
        on_error: str | None = None,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ):
        fit = FixedStatistics(prior, statistics, device=device)
        stage = ABCStage(
            abc,
            simulator=simulator,
            reference=reference,
            executor=executor,
            on_error=on_error,
            progress=progress,
        )
        super().__init__(fit, stage)


class RegressionABC(Method):
    r"""Semi-automatic ABC (Fearnhead & Prangle 2012): statistics are a regression of
    :math:`\theta` on :math:`x`.

    Arguments:
        prior: The prior over :math:`\theta`.
        structure, x_support, network, training, device: Those of the regression
            (:class:`RegressionFit`).
        simulator, abc, reference, executor, on_error, progress: Those of the ABC stage, as
            for every ABC method (see :class:`~ebm_lfi.methods.EnergyABC`).
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
        simulator: Simulator | Callable | None = None,
        abc: ABCConfig | dict | None = None,
        reference: tuple[Any, Any] | None = None,
        executor: Executor | None = None,
        on_error: str | None = None,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ):
        fit = RegressionFit(
            prior,
            structure=structure,
            x_support=x_support,
            network=network,
            training=training,
            device=device,
            progress=progress,
        )
        stage = ABCStage(
            abc,
            simulator=simulator,
            reference=reference,
            executor=executor,
            on_error=on_error,
            progress=progress,
        )
        super().__init__(fit, stage)
