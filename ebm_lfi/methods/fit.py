r"""The fit stage of the energy methods: an exponential family fitted to simulations.

:class:`EnergyFit` fits the energy model

.. math:: \log \tilde p(x \mid \theta) = \eta(\theta)^\top s(x) + b(x)

to pairs :math:`(\theta_i, x_i)` drawn from the prior predictive, by score matching (exact,
sliced or denoising) or noise-contrastive estimation (Pacchiardi & Dutta 2022), after choosing
the architecture of the statistics network :math:`s` by held-out loss when asked
(:func:`~ebm_lfi.training.selection.select_model`). It is one half of a method: a posterior
stage (:mod:`~ebm_lfi.methods.abc_stage`, :mod:`~ebm_lfi.methods.exchange_stage`,
:mod:`~ebm_lfi.methods.potential_stage`) then draws :math:`\theta` given an observation from
the fit (:class:`~ebm_lfi.methods.method.Method`).

The fit provides what the stages use: the prior, the learned statistics
:math:`s(x)` (:meth:`EnergyFit.statistics`, for ABC), the model itself (:attr:`EnergyFit.model`,
for the exchange and potential stages) and the checked training pairs
(:attr:`EnergyFit.training_data`).

**Discrete data.** Score matching (exact, sliced, denoising) and conditional NCE need a
differentiable density of :math:`x`; integer-valued simulations have none, and their losses
reward spikes at the integers that say nothing about :math:`\theta`. When every training value
is an integer, the fit therefore *dequantises* by default (``dequantize="auto"``): it trains
on :math:`\tilde x = x + u`, :math:`u \sim U(-\tfrac12, \tfrac12)^d` drawn from the fit's
seed. The density of :math:`\tilde x` given :math:`\theta` is a proper continuous model whose
integral over the cell :math:`x + [-\tfrac12, \tfrac12)^d` is the probability of the counts
:math:`x` (Uria, Murray & Larochelle 2013; Theis, van den Oord & Bethge 2016), so an
exponential family fitted to :math:`\tilde x` is an exponential family model of the counts.
The cells are centred on the integers, so every later use of the model evaluates it at the
counts themselves, the centre of their cell: the ABC statistics :math:`s(x)` of the
observation and of the reference table (one deterministic map applied to both sides, as ABC
requires; it is the midpoint rule for the cell average :math:`\int s(x + u)\, du`), the
exchange likelihood :math:`\tilde p(x_o \mid \theta)` (the midpoint rule for the cell
probability :math:`\int \tilde p(x_o + u \mid \theta)\, du`, exact when the model is
constant over a cell) and the chains' starting points. The exchange sampler's auxiliary draws
are dequantised values; its check against simulations compares them with counts, whose
spread is smaller by the uniform's variance :math:`1/12` per coordinate (negligible unless
the counts are small). A declared support ``x_support`` is widened by :math:`\tfrac12` at
each finite bound so that the dequantised values stay inside it. NCE needs no change (its
classifier compares simulations with simulations) and is never dequantised;
``dequantize=False`` turns the default off, ``True`` insists (and refuses non-integer data).
:attr:`EnergyFit.diagnostics` reports ``dequantized``.

**Point masses.** Continuous data with atoms (rainfall that is exactly 0 on dry days,
concentrations reported at a detection limit, counts returned beside continuous measurements)
have no density at the atoms either, but are not integer-valued, so nothing is dequantised.
The ABC routes are not affected (the statistics of an atom are one value, compared like any
other) and NCE compares simulations with simulations; the exchange sampler, which reads the
fitted density of :math:`x` at the observation and draws auxiliary data from it, is (C2ST
0.76–0.90 against 0.54–0.63 for ABC on the same fits; ``docs/benchmarks.md``, "Point masses,
censoring, mixed counts, many iid draws"). The fit records the atoms it finds
(:func:`point_masses`, ``diagnostics["point_masses"]``), and every exchange posterior of such
a fit warns (:mod:`~ebm_lfi.methods.checks`).

**Positive data over several orders of magnitude.** Concentrations, population sizes,
lifetimes and decays are positive and often multiplicative: the noise grows with the value and
the information sits in ratios. A network fed the raw values sees the largest ones and little
of the small ones' relative differences (the heavy-tail map of the data transform,
:mod:`~ebm_lfi.energy.tails`, compresses the large values but leaves the small ones squeezed
near the median). With ``x_support="auto"`` (default), when every training value is positive
and the 99.5 % quantile of all values is at least :data:`POSITIVE_SPAN` (100) times the 0.5 %
quantile, a fit by a density loss (score matching, conditional NCE, maximum likelihood)
declares the support :math:`(0, \infty)`, which the model maps to :math:`\mathbb{R}` by
:math:`\log x` (:class:`~ebm_lfi.energy.transforms.SupportTransform`; the density keeps its
Jacobian). Score matching is where it matters: its loss weighs each region by the squared
score, which for positive multiplicative data is largest at the smallest values, so on the
raw scale the fit serves them and misses the rest (ten log-normal draws, location
:math:`\mu \sim U(0, 4)`: the statistics of the default structure search explained 4 % of
:math:`\sum_j \log x_j` on the raw scale, all of it on the log scale; ``tests/test_auto.py``).
NCE is left as it is: its classifier's optimum, the ratio :math:`p(x \mid \theta) / p(x)`,
does not depend on how :math:`x` is parametrised, and measured, the log scale helped its
posterior on one simulator and hurt it on another (``docs/benchmarks.md``, "Positive data on
the log scale"). On an exponential decay :math:`A e^{-kt}` with log-normal noise
(``scripts/check_fresh.py --problem decay``, 10⁴ simulations) the default posterior went from
C2ST 0.884 to 0.733 (mean of two observations; sbi's NPE 0.925). Data that can be zero or
negative, or span less, keep the unbounded support; an observation outside the support is
refused by name. ``x_support=None`` turns the default off; a declared
``(lower, upper)`` is used as given. :attr:`EnergyFit.diagnostics` reports ``x_support``.

References:
    | Score Matched Neural Exponential Families for Likelihood-Free Inference
      (Pacchiardi & Dutta, JMLR 2022) https://arxiv.org/abs/2012.10903

    | RNADE: The real-valued neural autoregressive density-estimator (Uria, Murray &
      Larochelle, 2013) https://arxiv.org/abs/1306.0186

    | A note on the evaluation of generative models (Theis, van den Oord & Bethge, 2016)
      https://arxiv.org/abs/1511.01844

Example:
    >>> import torch
    >>> import ebm_lfi as el
    >>> from ebm_lfi.methods.fit import EnergyFit
    >>> prior = el.BoxUniform(torch.zeros(2), torch.ones(2))
    >>> theta = prior.sample((200,))
    >>> x = theta.repeat(1, 3) + 0.1 * torch.randn(200, 6)
    >>> fit = EnergyFit(prior, structure="mlp", num_statistics=None, training={"epochs": 1})
    >>> fit.fit(theta, x, seed=0).statistics(x[:4]).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pandas as pd
import torch
from torch import Tensor
from torch.distributions import Distribution

from ..energy.model import ExpFamEBM
from ..losses.maximum_likelihood import ExactLikelihood, MaximumLikelihood
from ..losses.nce import NCE, ConditionalNCE
from ..losses.score_matching import DenoisingScoreMatching, ScoreMatching, SlicedScoreMatching
from ..priors import parameter_names, prior_dim, validate_prior
from ..samplers.mcmc.model_chains import ModelChains
from ..training.config import TrainConfig
from ..training.loop import train
from ..training.selection import Candidate, SelectionConfig, select_model
from .common import NotFittedError, as_config, batched, check_training_data

__all__ = [
    "DSM_RANGE",
    "NCE_MIN_STEPS",
    "EnergyFit",
    "POINT_MASS_SHARE",
    "POSITIVE_SPAN",
    "dequantize",
    "is_integer_valued",
    "point_masses",
    "positive_support",
    "make_loss",
]


DSM_RANGE = (0.05, 1.0)  # default trained tolerances of DSM, in the standardised data space


def make_loss(
    loss: str | Callable,
    sigma: float | tuple | list | str | None = None,
    chains: dict | None = None,
) -> Callable:
    """The training loss named ``"sm"``, ``"ssm"``, ``"dsm"``, ``"nce"``, ``"cnce"``, ``"ml"`` or
    ``"exact-ml"`` (or a callable, kept).

    ``sigma``: for ``"dsm"``, a pair ``(lowest, highest)`` trains a noise-conditional model over
    that range (default :data:`DSM_RANGE`), a float one noise scale; for ``"cnce"``, the noise
    scale (default ``"auto"``, see :func:`~ebm_lfi.losses.cnce_noise_scale`). ``chains``: for
    ``"ml"``, keywords of :class:`~ebm_lfi.samplers.mcmc.model_chains.ModelChains` (the MCMC
    negatives of maximum likelihood, :mod:`ebm_lfi.losses.maximum_likelihood`).
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
    if loss == "ml":
        chains = ModelChains(**dict(chains or {}))
        return MaximumLikelihood(chains, warm_start=SlicedScoreMatching())
    if loss == "exact-ml":
        return ExactLikelihood()
    raise ValueError(
        "loss must be 'sm', 'ssm', 'dsm', 'nce', 'cnce', 'ml', 'exact-ml' or a callable, got "
        f"{loss!r}"
    )


# The losses that need a differentiable density of x (dequantised on integer data).
_DENSITY_LOSSES = ("sm", "ssm", "dsm", "cnce", "ml", "exact-ml")

NCE_MIN_STEPS = 18_000
"""The fewest optimiser steps of an ``nce`` fit whose training settings do not say
(``TrainConfig.min_steps``, 6,000 for the other losses; see
:meth:`~ebm_lfi.training.config.TrainConfig.resolved`). Its validation loss, a classification
loss on noise pairs drawn afresh, is noisy, and 20 epochs without improvement stopped fits at
10⁴ simulations after 54–198 epochs. At 18,000 steps, two fit seeds each, two observations, the
C2ST of ``nce`` went 0.741 → 0.682 on integer counts, 0.689 → 0.659 on flattened iid draws and
0.765 → 0.699 on two_moons, of ``nce-abc`` 0.686 → 0.655 and 0.649 → 0.634 on the first two
(every seed and problem better); the fit takes 2–3 times longer (13 s → 35 s at most). Sliced
score matching did not gain from the same on two_moons (its exchange posterior 0.530 → 0.565),
so it keeps 6,000. ``docs/benchmarks.md``, "Training long enough on small budgets"."""


def _default_training(loss: str | Callable, training: TrainConfig | dict | None) -> TrainConfig:
    """The training settings of a fit by ``loss``: a :class:`TrainConfig` as given; ``None`` or
    a dict of its fields with ``min_steps`` set to :data:`NCE_MIN_STEPS` for NCE (``"nce"`` or
    an :class:`~ebm_lfi.losses.nce.NCE` instance) unless the dict sets it."""
    is_nce = loss == "nce" or type(loss) is NCE
    if is_nce and (training is None or isinstance(training, dict)):
        training = {"min_steps": NCE_MIN_STEPS, **(training or {})}
    return as_config(training, TrainConfig, "training")


def is_integer_valued(x: Tensor) -> bool:
    """Whether every value of ``x`` is a (finite) integer."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        return True
    return bool(x.numel() > 0 and torch.isfinite(x).all() and torch.equal(x, torch.round(x)))


def dequantize(x: Tensor, *, seed: int | None = None) -> Tensor:
    r"""Integer-valued data plus uniform noise on the cell centred at each value:
    :math:`x + u`, :math:`u \sim U(-\tfrac12, \tfrac12)^d`, drawn from ``seed``.

    Example:
        >>> x = torch.tensor([[0.0, 3.0]])
        >>> y = dequantize(x, seed=0)
        >>> bool(((y - x).abs() <= 0.5).all()), bool(torch.equal(torch.round(y), x))
        (True, True)
    """
    generator = torch.Generator(device=x.device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed) + 1_000_003)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + (u - 0.5)


POINT_MASS_SHARE = 0.05
"""A value held by at least this share of a coordinate's training values is a point mass
(:func:`point_masses`); a continuous coordinate repeats no value."""


def point_masses(x: Tensor, *, share: float = POINT_MASS_SHARE, rows: int = 2000) -> dict | None:
    r"""The atoms of data that are not integer-valued: the coordinates where one value holds
    at least ``share`` of the values (counted on the first ``rows`` rows of ``x``, shape
    :math:`(n, *x_{shape})`), or ``None`` where there is none or every value is an integer
    (such data are dequantised, see the module docstring).

    Returns:
        ``{"coordinates": c, "value": v, "share": s}``: how many coordinates have an atom, and
        the value and share of the largest one.

    Example:
        >>> x = torch.rand(1000, 3, generator=torch.Generator().manual_seed(0))
        >>> x[:400, 1] = 0.0  # dry days
        >>> point_masses(x)
        {'coordinates': 1, 'value': 0.0, 'share': 0.4}
        >>> point_masses(torch.rand(1000, 3)) is None
        True
    """
    x = torch.as_tensor(x)
    if x.shape[0] == 0 or not x.is_floating_point() or is_integer_valued(x):
        return None
    flat = x[:rows].reshape(min(rows, x.shape[0]), -1)
    n, least = flat.shape[0], math.ceil(share * flat.shape[0])
    ordered = flat.sort(dim=0).values
    repeats = (ordered[1:] == ordered[:-1]).sum(dim=0)  # at least the largest run, less one
    found, largest = 0, (math.nan, 0.0)
    for j in torch.nonzero(repeats + 1 >= least).flatten().tolist():
        values, counts = torch.unique(flat[:, j], return_counts=True)
        top = int(counts.argmax())
        if int(counts[top]) >= least:
            found += 1
            if counts[top] / n > largest[1]:
                largest = (float(values[top]), float(counts[top]) / n)
    if not found:
        return None
    return {"coordinates": found, "value": largest[0], "share": round(largest[1], 3)}


POSITIVE_SPAN = 100.0
"""``x_support="auto"`` maps positive data to log x when the 99.5 % quantile of all the
training values is at least this many times the 0.5 % quantile (two orders of magnitude; see
:func:`positive_support`)."""


def positive_support(x: Tensor) -> tuple[float, None] | None:
    r"""The support ``x_support="auto"`` declares for the data ``x``: :math:`(0, \infty)` when
    every value is positive and they span at least :data:`POSITIVE_SPAN` (the ratio of the
    99.5 % to the 0.5 % quantile of all values, every coordinate pooled), else ``None``.

    Example:
        >>> positive_support(torch.logspace(-3, 3, 100)), positive_support(torch.ones(5) + 1)
        ((0.0, None), None)
    """
    values = torch.as_tensor(x).detach().flatten()
    if not values.is_floating_point() or values.numel() == 0:
        return None
    if not bool(torch.isfinite(values).all()) or float(values.min()) <= 0.0:
        return None
    values = values[:: max(1, values.numel() // 1_000_000)].double()  # torch.quantile's limit
    low, high = torch.quantile(values, torch.tensor([0.005, 0.995], dtype=torch.float64))
    return (0.0, None) if float(high) >= POSITIVE_SPAN * float(low) else None


class EnergyFit:
    r"""Fits the energy model (the fit stage of every energy method).

    Arguments:
        prior: The prior over :math:`\theta` (a torch distribution over :math:`(p,)`).
        loss: ``"sm"``, ``"ssm"``, ``"dsm"``, ``"nce"``, ``"cnce"``, ``"ml"``, ``"exact-ml"``
            (with ``structure="gaussian"``) or a callable ``loss(model, y, theta)`` (see
            :func:`make_loss`).
        model: An :class:`~ebm_lfi.ExpFamEBM` to train instead of the default one (an already
            prepared one counts as fitted).
        structure: Network family: ``"auto"`` (default: chosen by held-out score-matching
            loss among ``"mlp"``, ``"iid"`` and ``"markov"`` of orders 1, 2, 3, 4 and 6, see
            :mod:`ebm_lfi.training.selection`, and ``"ring"`` on :math:`(T, K \ge 5)` data),
            ``"mlp"``, ``"iid"`` (exchangeable draws), ``"markov"`` (time series), ``"ring"``
            (a series of states of :math:`K` sites on a ring, :math:`(T, K)`: Markov in time,
            equivariant around the ring) or ``"gaussian"`` (the Gaussian member of the family
            with its exact normaliser, :mod:`~ebm_lfi.energy.gaussian_nets`, for
            ``loss="exact-ml"``; ``num_statistics`` is then unused). Give :math:`x` its natural
            shape (:math:`(m, d)` for
            :math:`m` exchangeable draws, :math:`(T,)` or :math:`(T, d)` for a series): an
            MLP on flattened structured data can learn statistics that miss part of
            :math:`\theta` while its held-out loss is close to the best, at every :math:`k`
            (``scripts/check_statistics_structure.py``), and the search may then pick it.
        num_statistics: Number :math:`k` of statistics: ``"auto"`` (default: chosen among
            :math:`2p, 3p` by held-out loss, ``SelectionConfig.k_factors``), an int, or
            ``None`` for :math:`p`.
        selection: A :class:`~ebm_lfi.training.selection.SelectionConfig` or a dict of its
            fields (the budget of the ``"auto"`` search); the table of candidates is kept in
            :attr:`selection_table` and in :attr:`diagnostics`.
        x_support: ``(lower, upper)`` bounds of :math:`x` (mapped to :math:`\mathbb{R}`),
            ``None`` (unbounded), or ``"auto"`` (default): for the density losses (not NCE)
            :math:`(0, \infty)`, i.e. :math:`\log x`, on positive data spanning two orders of
            magnitude or more, else unbounded (:func:`positive_support`, see the module
            docstring).
        network: Further keywords of :meth:`ExpFamEBM.default` (``hidden``, ``order``, ...).
        training: A :class:`~ebm_lfi.training.config.TrainConfig` or a dict of its fields
            (for NCE, ``min_steps`` defaults to :data:`NCE_MIN_STEPS`).
        sigma: Noise of denoising score matching or conditional NCE, in the standardised
            space (see :func:`make_loss`): for DSM a range ``(lowest, highest)`` (default
            ``(0.05, 1.0)``) trains the tolerance-conditional model, a float one scale.
        dequantize: On integer-valued data, train the score-matching losses (and conditional
            NCE) on the counts plus uniform noise (see the module docstring): ``"auto"``
            (default: whenever every training value is an integer), ``True`` (refuse
            non-integer data) or ``False``. NCE is never dequantised.
        chains: For ``loss="ml"``: keywords of the MCMC negatives
            (:class:`~ebm_lfi.samplers.mcmc.model_chains.ModelChains`: ``steps``,
            ``persistent``, ``step_size``, ...).
        device: ``"cpu"`` (default) or ``"cuda"``.
        progress: Show progress bars.
    """

    def __init__(
        self,
        prior: Distribution,
        *,
        loss: str | Callable = "ssm",
        model: ExpFamEBM | None = None,
        structure: str = "auto",
        num_statistics: int | str | None = "auto",
        x_support: tuple | str | None = "auto",
        network: dict | None = None,
        training: TrainConfig | dict | None = None,
        selection: SelectionConfig | dict | None = None,
        sigma: float | tuple[float, float] | str | None = None,
        dequantize: bool | str = "auto",
        chains: dict | None = None,
        device: str | torch.device = "cpu",
        progress: bool = False,
    ):
        self.prior = validate_prior(prior)
        if dequantize not in ("auto", True, False):
            raise ValueError(f"dequantize must be 'auto', True or False, got {dequantize!r}")
        if isinstance(x_support, str) and x_support != "auto":
            raise ValueError(f"x_support must be 'auto', None or (lower, upper), got {x_support!r}")
        self.dequantize = dequantize
        self.dequantized = False
        self.point_masses: dict | None = None
        self._continuous_loss = loss in _DENSITY_LOSSES
        self.num_parameters = prior_dim(prior)
        self.parameter_names = parameter_names(prior, self.num_parameters)
        self.loss = make_loss(loss, sigma, chains)
        self.model = model
        self.structure = structure
        self.num_statistics = num_statistics
        self.x_support = x_support
        self.support: tuple | None = None  # what its model maps to R (see _resolve_support)
        self.network = dict(network or {})
        self.training = _default_training(loss, training)
        self.selection = as_config(selection, SelectionConfig, "selection")
        if structure not in ("auto", "mlp", "iid", "markov", "ring", "gaussian"):
            raise ValueError(
                "structure must be 'auto', 'mlp', 'iid', 'markov', 'ring' or 'gaussian', got "
                f"{structure!r}"
            )
        if structure == "gaussian":  # its statistics are the monomials: nothing to choose
            self.num_statistics = num_statistics = None
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
        self.history: pd.DataFrame | None = None
        self.warm_start_history: pd.DataFrame | None = None
        self.fitted = model is not None and getattr(model, "_prepared", False)
        self.training_data: tuple[Tensor, Tensor] | None = None

    def fit(self, theta, x, *, seed: int | None = None) -> EnergyFit:
        r"""Fit the energy model on simulated pairs.

        Arguments:
            theta: Parameters, shape :math:`(n, p)`, drawn from the prior.
            x: Simulations, shape :math:`(n, *x_{shape})`.
            seed: Seed of the initialisation, the validation split and the training noise.

        Returns:
            The fit stage itself (fitted); the checked pairs are kept in
            :attr:`training_data`.
        """
        theta, x = check_training_data(theta, x, self.num_parameters)
        theta, x = theta.to(self.device), x.to(self.device)
        x_shape = tuple(x.shape[1:])
        self.dequantized = self._dequantizes(x)
        self.point_masses = point_masses(x)
        if self.model is None:  # decided with the model it builds, and kept with it (rounds)
            self.support = self._resolve_support(x)
        x_fit = dequantize(x, seed=seed) if self.dequantized else x
        if self.model is None and "auto" in (self.structure, self.num_statistics):
            self.model, self.selection_table = select_model(
                theta,
                x_fit,
                lambda candidate, shared: self._build(x_shape, candidate, shared),
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
                self.model = self._build(x_shape, Candidate(self.structure, int(k), order), None)
        model = self.model.to(device=self.device, dtype=theta.dtype)
        model.prepare(theta, x_fit)
        y = model.transform_x(x_fit)
        fit_normalizer = getattr(self.loss, "fit_normalizer", None)
        if callable(fit_normalizer) and getattr(model, "normalizer_net", None) is not None:
            model.normalizer_net = None  # a refit (rounds): the head is the training normaliser
        warm_start = getattr(self.loss, "warm_start", None)
        if warm_start is not None:  # e.g. maximum likelihood from a score-matching fit
            self.warm_start_history = train(
                model,
                warm_start,
                y,
                theta,
                config=self.training,
                seed=seed,
                device=self.device,
                progress=self.progress,
            )
        data = (y, theta)
        if getattr(self.loss, "indexed", False):  # e.g. persistent chains of maximum likelihood
            reset = getattr(self.loss, "reset", None)
            if callable(reset):
                reset()
            data += (torch.arange(y.shape[0], device=y.device),)
        self.history = train(
            model,
            self.loss,
            *data,
            config=self.training,
            seed=seed,
            device=self.device,
            progress=self.progress,
        )
        if callable(fit_normalizer):  # maximum likelihood: c(theta) from the model's own chains
            with torch.random.fork_rng(devices=[]):
                if seed is not None:
                    torch.manual_seed(int(seed) + 1)
                fit_normalizer(model, y, theta, seed=seed)
        model.eval()
        self.fitted = True
        self.training_data = (theta, x)
        return self

    def _dequantizes(self, x: Tensor) -> bool:
        """Whether this fit trains on dequantised data (see the module docstring)."""
        if self.dequantize is False:
            return False
        integer = is_integer_valued(x)
        if self.dequantize is True:
            if not integer:
                raise ValueError("dequantize=True needs integer-valued simulations x")
            return True
        return integer and self._continuous_loss

    @property
    def support_inferred(self) -> bool:
        """Whether the fit took its support from the data (``x_support="auto"``)."""
        return isinstance(self.x_support, str) and self.support is not None

    def check_support(self, x_o: Tensor, name: str = "x_o") -> None:
        """Refuse data outside the support the fit inferred from its training data
        (``x_support="auto"``), saying how to fit without it (``name``: the data's name in the
        message)."""
        if not self.support_inferred:
            return
        lower = float(self.support[0])
        outside = torch.as_tensor(x_o) <= lower
        if bool(outside.any()):
            index = tuple(int(i) for i in torch.nonzero(outside)[0])
            raise ValueError(
                f"{name}{list(index)} = {float(torch.as_tensor(x_o)[index]):g} is outside the "
                f"support ({lower:g}, inf) that the fit inferred from its training data (every "
                "training value was positive, over two orders of magnitude or more, so the "
                "model reads log x); fit with x_support=None to model x unbounded"
            )

    def _support_label(self) -> str | None:
        """What :attr:`diagnostics` says of the support: inferred, declared or none."""
        if self.support_inferred:
            return "inferred: (0, inf), log x"
        if self.support is None or all(bound is None for bound in self.support):
            return None
        return "declared"

    def _resolve_support(self, x: Tensor) -> tuple | None:
        """The support of x the model maps to R: the declared one, or with ``"auto"`` that of
        :func:`positive_support` for the losses of a density (none for NCE); widened by one
        half at each finite bound when the fit dequantises (the cells around the extreme
        integers)."""
        if isinstance(self.x_support, str):  # "auto": the density losses only
            support = positive_support(x) if self._continuous_loss else None
        else:
            support = self.x_support
        if support is None or not self.dequantized:
            return support
        lower, upper = support
        return (
            None if lower is None else torch.as_tensor(lower, dtype=torch.float64) - 0.5,
            None if upper is None else torch.as_tensor(upper, dtype=torch.float64) + 0.5,
        )

    def _build(
        self, x_shape: tuple[int, ...], candidate: Candidate, shared_dims: tuple[int, ...] | None
    ) -> ExpFamEBM:
        """An untrained default model for one candidate architecture."""
        network = dict(self.network)
        network.update(getattr(self.loss, "model_options", {}))
        if candidate.structure == "markov":
            network["order"] = candidate.order
        if candidate.structure in ("markov", "ring") and candidate.learned:
            network.setdefault("embedding", 8)
        return ExpFamEBM.default(
            x_shape,
            self.num_parameters,
            num_statistics=candidate.num_statistics,
            structure=candidate.structure,
            x_support=self.support,
            shared_dims=shared_dims,
            **network,
        )

    def check_fitted(self) -> None:
        """Raise :class:`~ebm_lfi.methods.NotFittedError` unless the model is fitted."""
        if not self.fitted or self.model is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call .fit(theta, x)")

    @property
    def x_shape(self) -> tuple[int, ...]:
        """The shape of one simulation."""
        return tuple(self.model.x_shape)

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the model (that of the training data)."""
        return self.model.dtype

    def statistics(self, x) -> Tensor:
        r"""The learned statistics :math:`s(x)`, shape :math:`(n, k)`."""
        self.check_fitted()
        x = torch.as_tensor(x, dtype=self.model.dtype, device=self.model.device)
        self.check_support(x, name="x")
        return batched(self.model.statistics, x)

    @property
    def diagnostics(self) -> dict:
        """What the fit chose and measured: the selected architecture and the search table."""
        out: dict = {}
        if self.model is not None:
            net = self.model.statistics_net
            out["structure"] = {
                "MarkovNet": "markov",
                "ExchangeableNet": "iid",
                "RingMarkovNet": "ring",
            }.get(type(net).__name__, "mlp")
            if out["structure"] == "markov":
                out["order"] = int(net.order)
            out["num_statistics"] = int(self.model.num_statistics)
        if self.fitted:
            out["dequantized"] = self.dequantized
            if self.point_masses is not None:
                out["point_masses"] = dict(self.point_masses)
            out["x_support"] = self._support_label()
        if self.selection_table is not None:
            out["selection"] = self.selection_table
        chains = getattr(self.loss, "diagnostics", None)
        if self.fitted and chains:
            out["chains"] = chains
        return out

    def summary(self) -> dict:
        """What every posterior of this fit reports about it: the loss, the chosen
        architecture (not the search table), the training epochs and seconds."""
        out: dict = {"loss": type(self.loss).__name__}
        out.update((k, v) for k, v in self.diagnostics.items() if k != "selection")
        if self.history is not None and len(self.history):
            out["training_epochs"] = int(len(self.history))
            out["training_seconds"] = float(self.history["seconds"].sum())
        return out
