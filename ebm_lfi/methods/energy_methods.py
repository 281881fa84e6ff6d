r"""Methods built on a score-matched exponential family.

A method composes a loss that fits the energy model
:math:`\log \tilde p(x \mid \theta) = \eta(\theta)^\top s(x) + b(x)` and a way to draw the
posterior from the fit (Pacchiardi & Dutta 2022, arXiv:2012.10903):

* ``*-abc``: ABC on the learned statistics :math:`s(x)` (:class:`EnergyABC`). With denoising
  score matching at noise :math:`\sigma` (``dsm-abc``), the model is the ABC likelihood with a
  Gaussian kernel of bandwidth :math:`\sigma` on the transformed data, and its statistics
  summarise that likelihood.
* ``*-exchange``: exchange MCMC with the model as the likelihood
  (:class:`~ebm_lfi.methods.exchange_method.EnergyExchange`, which shares :class:`EnergyMethod`,
  the fit). With the noise-conditional DSM fit (``dsm-exchange``), the ABC posterior at any
  tolerance :math:`\sigma` of the trained range, sampled without rejection.
* ``nce-abc`` / ``cnce-abc``: the same ABC on statistics fitted by noise-contrastive estimation
  (:mod:`ebm_lfi.losses.nce`); ``nce`` samples the ratio posterior directly
  (:class:`~ebm_lfi.methods.ratio_method.RatioPosterior`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import replace

import pandas as pd
import torch
from torch import Tensor
from torch.distributions import Distribution

from ..energy.model import ExpFamEBM
from ..losses.nce import NCE, ConditionalNCE
from ..losses.score_matching import DenoisingScoreMatching, ScoreMatching, SlicedScoreMatching
from ..posterior.posterior import Posterior
from ..priors import parameter_names, prior_dim, validate_prior
from ..samplers.abc.rejection import rejection_abc
from ..samplers.abc.scaler import StatisticScaler
from ..simulation.simulator import Simulator
from ..training.config import TrainConfig
from ..training.loop import train
from ..training.selection import Candidate, SelectionConfig, select_model
from .common import NotFittedError, as_config, batched, check_observation, check_training_data
from .statistics_abc import ABCConfig, StatisticsABC, check_executor

__all__ = ["EnergyABC", "EnergyMethod", "frozen", "make_loss"]


DSM_RANGE = (0.05, 1.0)  # default trained tolerances of DSM, in the standardised data space


def make_loss(loss: str | Callable, sigma: float | tuple | list | str | None = None) -> Callable:
    """The training loss named ``"sm"``, ``"ssm"``, ``"dsm"``, ``"nce"`` or ``"cnce"`` (or a
    callable, kept).

    ``sigma``: for ``"dsm"``, a pair ``(lowest, highest)`` trains a noise-conditional model over
    that range (default :data:`DSM_RANGE`), a float one noise scale; for ``"cnce"``, the noise
    scale (default ``"auto"``, see :func:`~ebm_lfi.losses.cnce_noise_scale`).
    """
    if callable(loss):
        return loss
    if loss == "sm":
        return ScoreMatching()
    if loss == "ssm":
        return SlicedScoreMatching()
    if loss == "dsm":
        sigma = DSM_RANGE if sigma is None else sigma
        return DenoisingScoreMatching(sigma, conditional=isinstance(sigma, tuple))
    if loss == "nce":
        return NCE()
    if loss == "cnce":
        return ConditionalNCE("auto" if sigma is None else sigma)
    raise ValueError(f"loss must be 'sm', 'ssm', 'dsm', 'nce', 'cnce' or a callable, got {loss!r}")


@contextmanager
def frozen(model: torch.nn.Module):
    """Temporarily stop tracking gradients of the model's parameters (sampling only)."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


class EnergyMethod:
    r"""Fits the energy model; subclasses say how the posterior is drawn.

    Arguments:
        prior: The prior over :math:`\theta` (a torch distribution over :math:`(p,)`).
        loss: ``"sm"``, ``"ssm"``, ``"dsm"``, ``"nce"``, ``"cnce"`` or a callable
            ``loss(model, y, theta)`` (see :func:`make_loss`).
        simulator: The simulator (used by ABC for its reference table or SMC-ABC).
        model: An :class:`~ebm_lfi.ExpFamEBM` to train instead of the default one.
        structure: Network family: ``"auto"`` (default: chosen by held-out score-matching
            loss among ``"mlp"``, ``"iid"`` and ``"markov"`` of orders 1, 2, 3, 4 and 6, see
            :mod:`ebm_lfi.training.selection`), ``"mlp"``, ``"iid"`` (exchangeable draws) or
            ``"markov"`` (time series). Give :math:`x` its natural shape (:math:`(m, d)` for
            :math:`m` exchangeable draws, :math:`(T,)` or :math:`(T, d)` for a series): an
            MLP on flattened structured data can learn statistics that miss part of
            :math:`\theta` while its held-out loss is close to the best, at every :math:`k`
            (``scripts/check_statistics_structure.py``), and the search may then pick it.
        num_statistics: Number :math:`k` of statistics: ``"auto"`` (default: chosen among
            :math:`p, 2p, 3p` by held-out loss), an int, or ``None`` for :math:`p`.
        selection: A :class:`~ebm_lfi.training.selection.SelectionConfig` or a dict of its fields (the
            budget of the ``"auto"`` search); the table of candidates is kept in
            :attr:`selection_table` and in ``diagnostics``.
        x_support: ``(lower, upper)`` bounds of :math:`x` (mapped to :math:`\mathbb{R}`).
        network: Further keywords of :meth:`ExpFamEBM.default` (``hidden``, ``order``, ...).
        training: A :class:`~ebm_lfi.training.loop.TrainConfig` or a dict of its fields.
        sigma: Noise of denoising score matching or conditional NCE, in the standardised
            space (see :func:`make_loss`): for DSM a range ``(lowest, highest)`` (default
            ``(0.05, 1.0)``) trains the tolerance-conditional model, a float one scale.
        device: ``"cpu"`` (default) or ``"cuda"``.
        progress: Show progress bars.
    """

    name = "energy"

    def __init__(
        self,
        prior: Distribution,
        *,
        loss: str | Callable = "ssm",
        simulator: Simulator | Callable | None = None,
        model: ExpFamEBM | None = None,
        structure: str = "auto",
        num_statistics: int | str | None = "auto",
        x_support: tuple | None = None,
        network: dict | None = None,
        training: TrainConfig | dict | None = None,
        selection: SelectionConfig | dict | None = None,
        sigma: float | tuple[float, float] | str | None = None,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ):
        self.prior = validate_prior(prior)
        self.num_parameters = prior_dim(prior)
        self.parameter_names = parameter_names(prior, self.num_parameters)
        self.loss = make_loss(loss, sigma)
        self.simulator = simulator
        self.model = model
        self.structure = structure
        self.num_statistics = num_statistics
        self.x_support = x_support
        self.network = dict(network or {})
        self.training = as_config(training, TrainConfig, "training")
        self.selection = as_config(selection, SelectionConfig, "selection")
        if structure not in ("auto", "mlp", "iid", "markov"):
            raise ValueError(
                f"structure must be 'auto', 'mlp', 'iid' or 'markov', got {structure!r}"
            )
        if not (num_statistics in ("auto", None) or int(num_statistics) >= 1):
            raise ValueError(f"num_statistics must be 'auto', None or >= 1, got {num_statistics}")
        if "order" in self.network:
            order = int(self.network.pop("order"))
            self.selection = replace(self.selection, orders=(order,))
        if "embedding" in self.network:
            self.selection = replace(self.selection, learned_features=False)
        self.selection_table: pd.DataFrame | None = None
        self.device = torch.device(device)
        self.progress = progress
        self.history = None
        self._fitted = model is not None and getattr(model, "_prepared", False)
        self._train_data: tuple[Tensor, Tensor] | None = None
        self._start_table: tuple[Tensor, Tensor, StatisticScaler] | None = None

    # ---------------------------------------------------------------- fitting
    def fit(self, theta, x, *, seed: int | None = None) -> EnergyMethod:
        r"""Fit the energy model on simulated pairs.

        Arguments:
            theta: Parameters, shape :math:`(n, p)`, drawn from the prior.
            x: Simulations, shape :math:`(n, *x_{shape})`.
            seed: Seed of the initialisation, the validation split and the training noise.

        Returns:
            The method itself (fitted).
        """
        theta, x = check_training_data(theta, x, self.num_parameters)
        theta, x = theta.to(self.device), x.to(self.device)
        self._x_shape = tuple(x.shape[1:])
        if self.model is None and "auto" in (self.structure, self.num_statistics):
            self.model, self.selection_table = select_model(
                theta,
                x,
                self._build,
                structure=self.structure,
                num_statistics=self.num_statistics,
                loss=self.loss,
                config=self.selection,
                training=self.training,
                seed=seed,
                progress=self.progress,
            )
        elif self.model is None:
            k = self.num_parameters if self.num_statistics is None else self.num_statistics
            order = self.selection.orders[0] if len(self.selection.orders) == 1 else 1
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(seed)
                self.model = self._build(Candidate(self.structure, int(k), order), None)
        model = self.model.to(device=self.device, dtype=theta.dtype)
        model.prepare(theta, x)
        y = model.transform_x(x)
        self.history = train(
            model,
            self.loss,
            y,
            theta,
            **self.training.as_kwargs(),
            seed=seed,
            device=self.device,
            progress=self.progress,
        )
        model.eval()
        self._fitted = True
        self._train_data, self._start_table = (theta, x), None
        self._after_fit(theta, x, seed)
        return self

    def _build(self, candidate: Candidate, shared_dims: tuple[int, ...] | None) -> ExpFamEBM:
        """An untrained default model for one candidate architecture."""
        network = dict(self.network)
        network.update(getattr(self.loss, "model_options", {}))
        if candidate.structure == "markov":
            network["order"] = candidate.order
            if candidate.learned:
                network.setdefault("embedding", 8)
        return ExpFamEBM.default(
            tuple(self._x_shape),
            self.num_parameters,
            num_statistics=candidate.num_statistics,
            structure=candidate.structure,
            x_support=self.x_support,
            shared_dims=shared_dims,
            **network,
        )

    @property
    def diagnostics(self) -> dict:
        """What the fit chose and measured: the selected architecture and the search table."""
        out: dict = {}
        if self.model is not None:
            net = self.model.statistics_net
            out["structure"] = {"MarkovNet": "markov", "ExchangeableNet": "iid"}.get(
                type(net).__name__, "mlp"
            )
            if out["structure"] == "markov":
                out["order"] = int(net.order)
            out["num_statistics"] = int(self.model.num_statistics)
        if self.selection_table is not None:
            out["selection"] = self.selection_table
        return out

    def _after_fit(self, theta: Tensor, x: Tensor, seed: int | None) -> None:
        """Hook for the posterior stage (reference tables, initial points)."""

    def _starting_points(self, x_o: Tensor, num: int) -> Tensor:
        r"""``num`` training parameters whose learned statistics are closest to ``x_o``'s
        (starting points of MCMC chains), shape :math:`(num, p)`."""
        if self._start_table is None:
            theta, x = self._train_data
            stats = batched(self.model.statistics, x)
            self._start_table = (theta, stats, StatisticScaler().fit(stats))
        theta, stats, scaler = self._start_table
        with torch.no_grad():
            s_o = self.model.statistics(x_o[None])
        kept = min(num, theta.shape[0])
        start = rejection_abc(theta, stats, s_o, num_samples=kept, scale=scaler).samples[0]
        return start[torch.arange(num, device=start.device) % kept]

    def _check_fitted(self) -> None:
        if not self._fitted or self.model is None:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call .fit(theta, x) before .posterior()"
            )

    def statistics(self, x) -> Tensor:
        r"""The learned statistics :math:`s(x)`, shape :math:`(n, k)` (e.g. for pyabc)."""
        self._check_fitted()
        x = torch.as_tensor(x, dtype=self.model.dtype, device=self.model.device)
        return batched(self.model.statistics, x)

    def _posterior(self, samples, *, chains=None, weights=None, diagnostics) -> Posterior:
        diagnostics.setdefault("loss", type(self.loss).__name__)
        for key, value in self.diagnostics.items():
            if key != "selection":
                diagnostics.setdefault(key, value)
        if self.history is not None and len(self.history):
            diagnostics.setdefault("training_epochs", int(len(self.history)))
            diagnostics.setdefault("training_seconds", float(self.history["seconds"].sum()))
        return Posterior(
            samples,
            weights=weights,
            parameter_names=self.parameter_names,
            chains=chains,
            diagnostics=diagnostics,
            method=self.name,
        )


class EnergyABC(EnergyMethod):
    r"""ABC on the statistics of a score-matched exponential family (``sm-abc``, ``ssm-abc``,
    ``dsm-abc``).

    Takes the arguments of the energy fit (see :class:`EnergyMethod`) plus ``abc``: an
    :class:`~ebm_lfi.methods.ABCConfig` or a dict of its fields, ``reference``: an optional
    ``(theta, x)`` table of prior-predictive simulations to use instead of simulating one, and
    ``executor``: a :class:`concurrent.futures.Executor` (e.g. a Dask ``client.get_executor()``)
    that runs the ABC stage's simulations (reference table, SMC-ABC rounds) with the same
    results as without it. The executor is not pickled with the method (it is reset to
    ``None``); set :attr:`executor` again after unpickling.
    """

    name = "energy-abc"

    def __init__(
        self,
        prior,
        *,
        abc: ABCConfig | dict | None = None,
        reference=None,
        executor: Executor | None = None,
        **kw,
    ):
        super().__init__(prior, **kw)
        self.abc_config = as_config(abc, ABCConfig, "abc")
        self.reference = reference
        self.executor = check_executor(executor)
        self._abc: StatisticsABC | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "executor": None}  # a live executor does not travel

    def _after_fit(self, theta, x, seed):
        self._abc = StatisticsABC(
            self.prior, self.model.statistics, self.simulator, self.abc_config
        ).prepare(
            theta,
            x,
            seed=seed,
            reference=self.reference,
            progress=self.progress,
            executor=self.executor,
        )

    def posterior(self, x_o, num_samples: int = 1000, *, seed: int | None = None) -> Posterior:
        r"""ABC posterior of :math:`\theta` given ``x_o`` (shaped like one simulation)."""
        self._check_fitted()
        x_o = check_observation(x_o, self.model.x_shape, self.model.dtype).to(self.device)
        samples, weights, diag = self._abc.sample(
            x_o, num_samples, seed=seed, progress=self.progress, executor=self.executor
        )
        return self._posterior(samples, weights=weights, diagnostics=diag)
