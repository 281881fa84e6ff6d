r"""Flat data read as exchangeable draws: candidate layouts and the fit on one of them.

A simulator that returns :math:`m` iid draws of a :math:`d`-dimensional variable as one flat
vector of :math:`L = m d` numbers hides the structure the exchangeable statistics network
(:class:`~ebm_lfi.energy.pooled_nets.ExchangeableNet`, the form of the statistics of an iid
exponential family) needs. On such data a generic MLP trained by score matching can sit at a
saddle of the bilinear coupling :math:`\eta(\theta)^\top s(x)`, learning one block of
:math:`\theta` and not the other, while its held-out loss is close to the best: the
:math:`\theta`-dependent part of the loss is small next to that of the base measure
(``scripts/check_statistics_structure.py``). Reading the same numbers as :math:`(m, d)` draws
removes the saddle when the guess is right.

**Candidate layouts** (:func:`candidate_layouts`): for :math:`x` of shape :math:`(L,)`, every
:math:`(L/d, d)` with :math:`2 \le d \le 6` dividing :math:`L` and at least 4 draws. A reshape
keeps every number in its place (row-major order), so the models of the candidate layouts are
densities of the *same* data :math:`x` and their score-matching losses in the raw space of
:math:`x` (Jacobians of the data transforms included, so that the different pooled
standardisations of the layouts do not matter) estimate one Fisher divergence up to one
constant: :func:`choose_layout` pilot-trains an exchangeable model on each and keeps the
smallest :math:`d` within two paired standard errors of the best
(:func:`~ebm_lfi.training.selection.simplest_within`): a network over :math:`d` coordinates
per draw contains those over any divisor of :math:`d`, so on data of draws of dimension
:math:`d` a larger layout can at best tie with the right one (with pilot training it does
worse: on 8 draws of a 3-D Gaussian, 10 pilot epochs gave -133 for :math:`d = 3`, -71 for
:math:`d = 6`, -5 for :math:`d = 2` and 4), and the rule keeps the smaller where they tie.

Whether a layout beats the flat data is not decided here (the score-matching loss is what
fails to tell at the saddle): :class:`~ebm_lfi.methods.auto.AutoMethod` scores the posterior
on held-out pairs (:mod:`~ebm_lfi.methods.scoring`).

:class:`ReshapedFit` is a fit stage (:class:`~ebm_lfi.methods.method.FitStage`) that fits an
:class:`~ebm_lfi.methods.fit.EnergyFit` on the reshaped data and reads flat data: ABC on its
statistics works as on any fit, and the exchange stage reads its ``model`` with
``model_x_shape`` (the layout), reshaping the observation and the simulations it checks.

Example:
    >>> candidate_layouts((40,))
    [(20, 2), (10, 4), (8, 5)]
    >>> candidate_layouts((7,)), candidate_layouts((20, 2))
    ([], [])
"""

from __future__ import annotations

import time

import pandas as pd
import torch
from torch import Tensor

from ..training.config import TrainConfig
from ..training.selection import SelectionConfig, heldout_score_matching, simplest_within
from .common import check_training_data
from .fit import EnergyFit, dequantize

__all__ = ["ReshapedFit", "candidate_layouts", "choose_layout"]

_DIMS = range(2, 7)
_MIN_DRAWS = 4


def candidate_layouts(x_shape: tuple[int, ...]) -> list[tuple[int, int]]:
    r"""The :math:`(m, d)` layouts of flat data of shape ``x_shape`` (see the module
    docstring), from the smallest :math:`d`; ``[]`` unless ``x_shape`` is :math:`(L,)`."""
    if len(x_shape) != 1:
        return []
    length = int(x_shape[0])
    return [(length // d, d) for d in _DIMS if length % d == 0 and length // d >= _MIN_DRAWS]


class ReshapedFit:
    r"""An energy fit of flat data read as :math:`(m, d)` exchangeable draws.

    Arguments:
        fit: The :class:`~ebm_lfi.methods.fit.EnergyFit` to train on the reshaped data
            (e.g. ``structure="iid"``).
        layout: :math:`(m, d)`.

    It reads and reports the flat data: ``statistics(x)`` takes :math:`(n, m d)`,
    ``x_shape`` and ``training_data`` are flat; ``diagnostics`` and ``summary`` add
    ``layout``. ``model`` is the inner fit's model of the draws, which reads
    ``model_x_shape`` :math:`= (m, d)`.
    """

    def __init__(self, fit: EnergyFit, layout: tuple[int, int]):
        self.inner = fit
        self.layout = tuple(int(v) for v in layout)
        self.training_data: tuple[Tensor, Tensor] | None = None

    def fit(self, theta, x, *, seed: int | None = None) -> ReshapedFit:
        r"""Fit the inner fit on ``x`` of shape :math:`(n, m d)` read as :math:`(n, m, d)`."""
        theta, x = check_training_data(theta, x, self.inner.num_parameters)
        if tuple(x.shape[1:]) != (self.layout[0] * self.layout[1],):
            raise ValueError(
                f"x must have shape (n, {self.layout[0] * self.layout[1]}) for the layout "
                f"{self.layout}, got {tuple(x.shape)}"
            )
        self.inner.fit(theta, x.reshape(x.shape[0], *self.layout), seed=seed)
        self.training_data = self.inner.training_data[0], x.to(self.inner.device)
        return self

    def check_support(self, x_o: Tensor, name: str = "x_o") -> None:
        """Refuse data outside the inner fit's inferred support (values only)."""
        self.inner.check_support(x_o, name)

    @property
    def fitted(self) -> bool:
        """Whether the inner fit is fitted."""
        return self.inner.fitted and self.training_data is not None

    @property
    def prior(self):
        """The prior over :math:`\\theta`."""
        return self.inner.prior

    @property
    def parameter_names(self) -> list[str]:
        """Names of the parameters."""
        return self.inner.parameter_names

    @property
    def device(self) -> torch.device:
        """The device of the fit."""
        return self.inner.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the fit."""
        return self.inner.dtype

    @property
    def x_shape(self) -> tuple[int, ...]:
        """The flat shape :math:`(m d,)`."""
        return (self.layout[0] * self.layout[1],)

    @property
    def model(self):
        """The inner fit's energy model (of data shaped :attr:`model_x_shape`)."""
        return self.inner.model

    @property
    def model_x_shape(self) -> tuple[int, int]:
        """The shape :math:`(m, d)` in which :attr:`model` reads one simulation."""
        return self.layout

    def statistics(self, x) -> Tensor:
        r"""The learned statistics of flat data :math:`(n, m d)`, shape :math:`(n, k)`."""
        x = torch.as_tensor(x)
        return self.inner.statistics(x.reshape(x.shape[0], *self.layout))

    @property
    def diagnostics(self) -> dict:
        """The inner fit's diagnostics and the ``layout``."""
        return {**self.inner.diagnostics, "layout": list(self.layout)}

    def summary(self) -> dict:
        """The inner fit's summary and the ``layout``."""
        return {**self.inner.summary(), "layout": list(self.layout)}


class _RawDensity:
    """A model of reshaped data seen as a density of the flat data (Jacobian included), with
    the interface :func:`~ebm_lfi.training.selection.heldout_score_matching` reads."""

    def __init__(self, model, layout: tuple[int, int]):
        self.model, self.layout = model, layout

    def log_unnormalized_y(self, x: Tensor, theta: Tensor) -> Tensor:
        return self.model.log_unnormalized(x.reshape(x.shape[0], *self.layout), theta)


def choose_layout(
    prior,
    theta: Tensor,
    x: Tensor,
    layouts: list[tuple[int, int]],
    *,
    config: SelectionConfig | None = None,
    dequantized: bool = False,
    seed: int | None = None,
) -> tuple[tuple[int, int], pd.DataFrame]:
    r"""Pilot-train an exchangeable score-matching model on each layout and keep the smallest
    :math:`d` within ``config.tolerance`` paired standard errors of the lowest held-out loss
    in the raw space of :math:`x` (see the module docstring).

    Arguments:
        prior: The prior over :math:`\theta`.
        theta: Training parameters :math:`(n, p)`.
        x: Flat training data :math:`(n, L)`.
        layouts: Candidate layouts (e.g. :func:`candidate_layouts`), at least one.
        config: The pilot budget (epochs, batch and subset sizes, projections, tolerance) of
            :class:`~ebm_lfi.training.selection.SelectionConfig`.
        dequantized: Score (and train) on dequantised data, as the fit will.
        seed: Seed of the subsets, initialisations, training and projections.

    Returns:
        The chosen layout and the table: ``layout``, ``loss`` (mean held-out loss),
        ``seconds``, ``selected``.
    """
    if not layouts:
        raise ValueError("choose_layout needs at least one layout")
    config = config or SelectionConfig()
    base = 0 if seed is None else int(seed)
    if dequantized:
        x = dequantize(x, seed=base)
    n = theta.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(base + 211)).to(x.device)
    n_val = min(config.validation_size, max(2, n // 5))
    train_rows, validation_rows = perm[n_val:][: config.train_size], perm[:n_val]
    pilot = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, patience=None)
    k = max(config.k_factors) * theta.shape[1]
    scores: dict[tuple[int, int], Tensor] = {}
    seconds: dict[tuple[int, int], float] = {}
    for layout in layouts:
        start = time.perf_counter()
        fit = EnergyFit(
            prior,
            loss="ssm",
            structure="iid",
            num_statistics=k,
            training=pilot,
            dequantize=False,
        )
        xr = x.reshape(n, *layout)
        fit.fit(theta[train_rows], xr[train_rows], seed=base)
        score = heldout_score_matching(
            _RawDensity(fit.model, layout),
            x[validation_rows],
            theta[validation_rows],
            num_projections=config.num_projections,
            seed=base,
        )
        if not bool(torch.isfinite(score).all()):
            score = torch.full_like(score, torch.inf)
        scores[layout] = score
        seconds[layout] = time.perf_counter() - start
    lowest = min(layouts, key=lambda c: float(scores[c].mean()))
    chosen = simplest_within(layouts, lowest, scores, config.tolerance) or lowest
    table = pd.DataFrame(
        {
            "layout": [str(tuple(c)) for c in layouts],
            "loss": [float(scores[c].mean()) for c in layouts],
            "seconds": [seconds[c] for c in layouts],
            "selected": [c == chosen for c in layouts],
        }
    )
    return chosen, table
