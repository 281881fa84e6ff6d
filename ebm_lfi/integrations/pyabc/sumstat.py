r"""pyabc plug-in: learned exponential-family statistics as a pyabc ``Sumstat``, and helpers
to run ebm_lfi problems in pyabc.

**Statistics.** :class:`EBMSumstat` maps pyabc's data to the statistics :math:`s_w(x)` of an
:class:`~ebm_lfi.ExpFamEBM`, each divided by its standard deviation over prior-predictive
simulations (statistics are identified only up to an affine map, so their scale is arbitrary;
this is the distance of our own ABC). Use it as
``pyabc.PNormDistance(p=2, sumstat=EBMSumstat(...))`` (the Euclidean distance of
:mod:`ebm_lfi.samplers.abc.rejection`) or inside ``pyabc.AdaptivePNormDistance``. The model is
either

* fitted offline: ``EBMSumstat(method)`` with a fitted ebm_lfi method (its scales are reused),
  or ``EBMSumstat(model, scale=..., reference=...)`` with an :class:`~ebm_lfi.ExpFamEBM`; or
* trained inside pyabc, ``EBMSumstat("ssm", prior=prior, fit_ixs={0, 4})``, at the generations
  chosen by a ``pyabc.EventIxs`` (as pyabc's ``PredictorSumstat`` does for regression), on the
  particles pyabc simulated: the calibration sample (prior predictive) at :math:`t = 0`, then
  the last generation's particles (rejected ones included by default). Fitting the conditional
  model :math:`\tilde p_w(x \mid \theta)` is sound for any distribution of :math:`\theta`, so
  the proposal's particles are valid training pairs (they focus the fit where the posterior
  lies); the scales are then the standard deviations over those training particles. With
  ``"auto"`` each fit chooses its statistics as :class:`~ebm_lfi.methods.AutoMethod` does,
  among those it would use for ABC (``ssm-abc``, ``nce-abc`` and, on flat data, the
  exchangeable statistics of a layout), by the held-out energy score of their ABC posteriors
  on a tenth of the particles; ``fits[i]["route"]`` names the choice.

**Data mapping.** pyabc passes dicts of arrays or scalars. The values of ``keys`` (default: the
single key of the data) are flattened in C order, concatenated in the order of ``keys`` and
reshaped to the model's ``x_shape``; a mismatch raises a ``ValueError`` naming the shapes.

**Running our problems in pyabc** (:mod:`~ebm_lfi.integrations.pyabc.problem` and
:mod:`~ebm_lfi.integrations.pyabc.history`, re-exported here): :class:`TorchPrior` wraps any
torch prior as a pyabc distribution keyed by parameter names, :class:`SimulatorModel` wraps an
ebm_lfi simulator as a pyabc model returning ``{key: x}``, both seeded from numpy's global RNG
as pyabc is; :func:`history_to_posterior` converts a run's database to a weighted
:class:`~ebm_lfi.Posterior`.

Everything here pickles (pyabc's multiprocessing samplers send it to worker processes).

References:
    | Score Matched Neural Exponential Families for Likelihood-Free Inference
    | (Pacchiardi & Dutta, JMLR 2022) https://arxiv.org/abs/2012.10903

    | pyABC: Efficient and robust easy-to-use approximate Bayesian computation
    | (Schälte et al., JOSS 2022) https://doi.org/10.21105/joss.04304
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pyabc.sumstat import Sumstat
from pyabc.util import EventIxs
from torch import Tensor
from torch.distributions import Distribution

from ...energy.model import ExpFamEBM
from ...methods.common import batched
from ...methods.method import Method
from ...methods.registry import get as get_method
from ...priors import parameter_names as prior_parameter_names
from ...priors import prior_dim, validate_prior
from ...samplers.abc.scaler import StatisticScaler
from .problem import TorchPrior, data_to_x

__all__ = [
    "EBMSumstat",
]

logger = logging.getLogger(__name__)

LOSSES = ("sm", "ssm", "dsm", "nce", "cnce")
_MIN_TRAIN = 10  # fewer usable particles than this cannot train a model


class EBMSumstat(Sumstat):
    r"""Learned exponential-family statistics, standardised, as a pyabc summary statistic.

    Arguments:
        source: What gives the statistics: a fitted ebm_lfi method (e.g. ``ssm-abc``, its
            model and scales are copied), an :class:`~ebm_lfi.ExpFamEBM`, or the name of a loss
            (``"sm"``, ``"ssm"``, ``"dsm"``, ``"nce"``, ``"cnce"``, or a method name such as
            ``"ssm-abc"``) to train inside pyabc, or ``"auto"`` to choose among them there
            (see the module docstring).
        prior: The torch prior over :math:`\theta` (or a :class:`TorchPrior`); needed to train
            inside pyabc.
        fit_ixs: When to train inside pyabc: a ``pyabc.EventIxs`` or generation indices
            (default ``{0}``: once, on the prior-predictive calibration sample). Generation
            :math:`t > 0` trains on generation :math:`t - 1`'s particles before sampling
            :math:`t`. Only with a loss name.
        keys: Data keys forming :math:`x` (see :func:`data_to_x`); default: the single key.
        x_shape: Shape of :math:`x` to train on (a loss name only; default: the shape of the
            single key's value, or the flat concatenation of ``keys``).
        scale: Known statistic scales, shape :math:`(k,)` or a
            :class:`~ebm_lfi.samplers.abc.scaler.StatisticScaler` (overrides the method's).
        reference: Prior-predictive simulations, shape :math:`(n, *x_{shape})`, to fit the
            scales of an :class:`~ebm_lfi.ExpFamEBM`. With neither ``scale`` nor ``reference``
            a model gets its scales from pyabc's calibration sample (prior predictive).
        parameter_names: Parameter order of :math:`\theta` for training (default: the names
            of a :class:`TorchPrior`, else the prior's own, as :class:`TorchPrior` uses them).
        epochs: Training epochs of each fit inside pyabc (early stopping applies). Unless
            ``method_options["training"]`` sets it, the batch size is a tenth of the training
            particles, between 16 and 256 (populations are small).
        method_options: Further keywords of the method (``structure``, ``num_statistics``,
            ``training``, ``network``, ``sigma``, ...), see :class:`~ebm_lfi.methods.EnergyABC`.
        all_particles: Train on all particles of a generation (rejected ones included, recorded
            for this) rather than the accepted ones only.
        max_train: Train on at most this many particles (a seeded random subset).
        seed: Seed of the fits: the fit at generation :math:`t` uses a seed derived from
            ``(seed, t)``; ``None`` draws fresh ones.
        progress: Show the training progress bars.

    Example:
        >>> method = el.methods.get("ssm-abc", prior=prior).fit(theta, x, seed=0)  # doctest: +SKIP
        >>> distance = pyabc.PNormDistance(p=2, sumstat=EBMSumstat(method))  # doctest: +SKIP
    """

    def __init__(
        self,
        source: Method | ExpFamEBM | str,
        *,
        prior: Distribution | TorchPrior | None = None,
        fit_ixs: EventIxs | Collection[int] | int | None = None,
        keys: Sequence[str] | str | None = None,
        x_shape: Sequence[int] | None = None,
        scale: StatisticScaler | Tensor | Sequence[float] | None = None,
        reference: Any = None,
        parameter_names: Sequence[str] | None = None,
        epochs: int = 30,
        method_options: dict | None = None,
        all_particles: bool = True,
        max_train: int | None = None,
        seed: int | None = 0,
        progress: bool = False,
    ):
        super().__init__(pre=None)
        self.keys = [keys] if isinstance(keys, str) else (None if keys is None else list(keys))
        self.model: ExpFamEBM | None = None
        self.scale: Tensor | None = None
        self.method_name: str | None = None
        self.fit_ixs: EventIxs | None = None
        self.fits: list[dict] = []  # one record per fit inside pyabc
        self._s0: np.ndarray | None = None  # statistics of the observed data (cached)
        if isinstance(prior, TorchPrior):
            if parameter_names is None:
                parameter_names = prior.parameter_names
            prior = prior.prior
        self.prior = prior
        self.all_particles, self.seed, self.progress = bool(all_particles), seed, bool(progress)
        if max_train is not None and int(max_train) < _MIN_TRAIN:
            raise ValueError(f"max_train must be at least {_MIN_TRAIN}, got {max_train}")
        if int(epochs) < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        self.max_train = None if max_train is None else int(max_train)
        self.x_shape = None if x_shape is None else tuple(int(s) for s in x_shape)
        if isinstance(source, str):
            self._init_training(source, prior, fit_ixs, epochs, method_options, parameter_names)
        else:
            if fit_ixs is not None:
                raise ValueError(
                    "fit_ixs trains inside pyabc: pass a loss name (e.g. 'ssm') with prior=..."
                )
            self._init_fitted(source)
        if self.training_inside and (scale is not None or reference is not None):
            raise ValueError(
                "scale and reference belong to a fitted model; inside pyabc the scales are the "
                "standard deviations over each fit's training particles"
            )
        if scale is not None:
            scale = scale.scale if isinstance(scale, StatisticScaler) else scale
            self.scale = StatisticScaler(torch.as_tensor(scale, dtype=torch.float64)).scale
        elif reference is not None:
            self.scale = self._fit_scale(torch.as_tensor(np.asarray(reference)))
        if self.model is not None and self.scale is not None:
            self._check_scale()

    # ------------------------------------------------------------------ construction
    def _init_fitted(self, source: Any) -> None:
        if isinstance(source, ExpFamEBM):
            model, data = source, None
        elif hasattr(source, "model"):  # a method (e.g. a Method with an energy fit)
            fit = getattr(source, "fit_stage", source)
            if not isinstance(source.model, ExpFamEBM) or not getattr(fit, "fitted", True):
                raise ValueError(
                    f"{type(source).__name__} is not fitted: call .fit(theta, x) first, or pass "
                    "a loss name (e.g. 'ssm') to train inside pyabc"
                )
            model, data = source.model, getattr(fit, "training_data", None)
            scaler = getattr(getattr(source, "posterior_stage", None), "scaler", None)
            if scaler is not None and scaler.scale is not None:
                self.scale = scaler.scale.detach().to("cpu", torch.float64).clone()
            elif data is not None:
                self.scale = self._fit_scale(data[1], model)
            self.method_name = getattr(source, "name", None)
        else:
            raise TypeError(
                "source must be a fitted ebm_lfi method, an ExpFamEBM or a loss name "
                f"{LOSSES}, got {type(source).__name__}"
            )
        self.model = copy.deepcopy(model).eval()  # later changes of the user's model stay out
        if self.x_shape is not None and self.x_shape != self.model.x_shape:
            raise ValueError(f"x_shape {self.x_shape} differs from the model's {model.x_shape}")
        self.x_shape = self.model.x_shape

    def _init_training(self, name, prior, fit_ixs, epochs, options, names) -> None:
        loss = name.lower().removesuffix("-abc")
        if loss not in (*LOSSES, "auto"):
            raise ValueError(
                f"unknown loss {name!r}; choose 'auto' or one of {LOSSES} (or '<loss>-abc')"
            )
        if prior is None:
            raise ValueError("training inside pyabc needs the torch prior: pass prior=...")
        prior = validate_prior(prior)
        self.method_name = "auto" if loss == "auto" else f"{loss}-abc"
        self.fit_ixs = EventIxs.to_instance({0} if fit_ixs is None else fit_ixs)
        options = dict(options or {})
        for fixed in ("prior", "loss", "abc", "simulator"):
            if fixed in options:
                raise ValueError(f"method_options may not set {fixed!r} (EBMSumstat sets it)")
        training = options.pop("training", None)
        if training is None or isinstance(training, dict):
            training = {"epochs": int(epochs), **(training or {})}
        self.training = training
        self.method_options = options
        p = prior_dim(prior)
        self.parameter_names = list(names) if names is not None else prior_parameter_names(prior)
        if len(self.parameter_names) != p:
            raise ValueError(f"{len(self.parameter_names)} parameter names for {p} parameters")

    def _fit_scale(self, x: Tensor, model: ExpFamEBM | None = None) -> Tensor:
        """Scales: the standard deviations of the statistics of prior-predictive ``x``."""
        model = model if model is not None else self.model
        x = torch.as_tensor(x, dtype=model.dtype, device=model.device)
        if tuple(x.shape[1:]) != model.x_shape:
            raise ValueError(
                f"reference must have shape (n, *x_shape) = (n, *{model.x_shape}), "
                f"got {tuple(x.shape)}"
            )
        stats = batched(model.statistics, x)
        return StatisticScaler().fit(stats).scale.detach().to("cpu", torch.float64)

    def _check_scale(self) -> None:
        if self.scale.shape != (self.model.num_statistics,):
            raise ValueError(
                f"scale has shape {tuple(self.scale.shape)} but the model has "
                f"{self.model.num_statistics} statistics"
            )

    # ------------------------------------------------------------------ data
    @property
    def training_inside(self) -> bool:
        """Whether the model is trained inside pyabc (built from a loss name)."""
        return self.fit_ixs is not None

    @property
    def num_fits(self) -> int:
        """Number of fits done inside pyabc so far."""
        return len(self.fits)

    def to_x(self, data: Any) -> np.ndarray:
        r"""pyabc data as one :math:`x` of shape ``x_shape`` (see :func:`data_to_x`)."""
        if self.x_shape is None:
            self.x_shape = self._infer_x_shape(data)
        return data_to_x(data, self.keys, self.x_shape)

    def _infer_x_shape(self, data: Any) -> tuple[int, ...]:
        if isinstance(data, Mapping) and self.keys is None and len(data) == 1:
            shape = np.shape(next(iter(data.values())))
            return tuple(shape) if shape else (1,)
        if isinstance(data, Mapping):
            keys = self.keys if self.keys is not None else list(data)
            if self.keys is None and len(data) != 1:
                raise ValueError(f"the data has keys {list(data)}; pass keys=[...]")
            return (int(sum(np.size(data[k]) for k in keys)),)
        return (int(np.size(data)),)

    def __call__(self, data: Any) -> np.ndarray:
        r"""The standardised statistics :math:`s(x) / \hat\sigma`, shape :math:`(k,)`
        (float64). Before the first fit inside pyabc: :math:`x` itself, flattened."""
        if data is self.x_0 and self._s0 is not None:
            return self._s0.copy()
        x = self.to_x(data)
        if self.model is None:
            out = x.reshape(-1)
        else:
            if self.scale is None:
                raise RuntimeError(
                    "the statistic scales are not set: pass scale= or reference=, or let pyabc "
                    "calibrate them (initialize) on prior-predictive simulations"
                )
            model = self.model
            x_t = torch.as_tensor(x, dtype=model.dtype, device=model.device)
            x_t = x_t.reshape(1, *model.x_shape)  # flat data read as draws (``auto``)
            with torch.no_grad():
                stats = model.statistics(x_t)[0].to("cpu", torch.float64)
            out = (stats / self.scale).numpy()
        if data is self.x_0:
            self._s0 = out.copy()
        return out

    # ------------------------------------------------------------------ pyabc lifecycle
    def initialize(self, t: int, get_sample: Callable, x_0: dict, total_sims: int) -> None:
        """Called by pyabc before the first generation: check the observed data, then train
        (if ``fit_ixs`` says so at ``t``) or fit missing scales on the calibration sample."""
        super().initialize(t=t, get_sample=get_sample, x_0=x_0, total_sims=total_sims)
        self._s0 = None
        self.to_x(x_0)  # check the observed data's shape now, with a clear message
        if self.training_inside and self.fit_ixs.act(t=t, total_sims=total_sims):
            self._fit(get_sample(), t, total_sims)
        elif self.model is not None and self.scale is None:
            sample = get_sample()  # pyabc's calibration sample: prior predictive
            x = np.stack([self.to_x(p.sum_stat) for p in sample.all_particles])
            self.scale = self._fit_scale(torch.as_tensor(x))
            logger.info("EBMSumstat: scales from %d calibration simulations", x.shape[0])

    def update(self, t: int, get_sample: Callable, total_sims: int) -> bool:
        """Called by pyabc before generation ``t``: retrain on generation ``t - 1``'s particles
        if ``fit_ixs`` says so; returns whether the statistics changed."""
        if not self.training_inside or not self.fit_ixs.act(t=t, total_sims=total_sims):
            return False
        self._fit(get_sample(), t, total_sims)
        return True

    def configure_sampler(self, sampler) -> None:
        """Ask the sampler to record rejected particles when later fits train on them."""
        if self.training_inside and self.all_particles:
            if self.fit_ixs.probably_has_late_events():
                sampler.sample_factory.record_rejected()

    def requires_calibration(self) -> bool:
        """Whether a prior-predictive calibration sample is needed (fit at ``t = 0``, or
        scales to set)."""
        if self.training_inside:
            return self.fit_ixs.requires_calibration()
        return self.scale is None

    def is_adaptive(self) -> bool:
        """Whether the statistics change after the first generation."""
        return self.training_inside and self.fit_ixs.probably_has_late_events()

    def get_ids(self) -> list[str]:
        """Labels of the statistics, ``ebm_s0, ebm_s1, ...`` (of the data before a fit)."""
        if self.model is None:
            return super().get_ids()
        return [f"ebm_s{i}" for i in range(self.model.num_statistics)]

    # ------------------------------------------------------------------ training
    def _training_pairs(self, sample, seed: int | None) -> tuple[Tensor, Tensor]:
        particles = sample.all_particles if self.all_particles else sample.accepted_particles
        names = self.parameter_names
        theta, x = [], []
        for particle in particles:
            par = particle.parameter
            if set(par) != set(names):
                raise ValueError(
                    f"pyabc's parameters {sorted(par)} differ from the prior's names {names}; "
                    "pass parameter_names=... (or use TorchPrior with the same names)"
                )
            theta.append([float(par[name]) for name in names])
            x.append(self.to_x(particle.sum_stat))
        theta_t = torch.as_tensor(np.asarray(theta, dtype=np.float64))
        x_t = torch.as_tensor(np.stack(x)) if x else torch.empty(0, *self.x_shape)
        finite = theta_t.isfinite().all(1) & x_t.reshape(len(x), -1).isfinite().all(1)
        if not bool(finite.all()):
            logger.warning("EBMSumstat: dropped %d non-finite particles", int((~finite).sum()))
            theta_t, x_t = theta_t[finite], x_t[finite]
        if self.max_train is not None and theta_t.shape[0] > self.max_train:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
            keep = torch.randperm(theta_t.shape[0], generator=generator)[: self.max_train]
            theta_t, x_t = theta_t[keep], x_t[keep]
        if theta_t.shape[0] < _MIN_TRAIN:
            raise ValueError(
                f"only {theta_t.shape[0]} usable particles to train on (need {_MIN_TRAIN})"
            )
        dtype = torch.get_default_dtype()
        return theta_t.to(dtype), x_t.to(dtype)

    def _fit(self, sample, t: int, total_sims: int) -> None:
        """Train a fresh method on the sample's particles; keep its model and scales."""
        seed = None
        if self.seed is not None:
            seed = int(np.random.SeedSequence([int(self.seed), int(t)]).generate_state(1)[0])
        theta, x = self._training_pairs(sample, seed)
        start = time.perf_counter()
        training = self.training
        if isinstance(training, dict) and "batch_size" not in training:
            # populations are small: keep about ten optimiser steps per epoch at least
            training = training | {"batch_size": max(16, min(256, theta.shape[0] // 10))}
        if self.method_name == "auto":  # the statistics of the ABC routes only
            options = {"config": {"routes": ("ssm-abc", "nce-abc")}, **self.method_options}
        else:  # the ABC stage is pyabc's: no reference table
            options = {"abc": {"sampler": "smc"}, **self.method_options}
        method = get_method(
            self.method_name,
            prior=self.prior,
            training=training,
            progress=self.progress,
            **options,
        )
        method.fit(theta, x, seed=seed)
        fit = method.fit_stage
        fit = getattr(fit, "inner", fit)  # a reshaped fit (``auto``) reads flat data
        self.model, history = fit.model.eval(), fit.history
        self.scale = method.posterior_stage.scaler.scale.detach().to("cpu", torch.float64).clone()
        self._s0 = None
        record = {
            "t": int(t),
            "total_sims": int(total_sims),
            "num_train": int(theta.shape[0]),
            "epochs": 0 if history is None else len(history),
            "seconds": time.perf_counter() - start,
            "seed": seed,
            "route": getattr(method, "chosen", None) or self.method_name,
            "s_obs": None if self.x_0 is None else self(self.x_0),
        }
        self.fits.append(record)
        logger.info("EBMSumstat: fit %d at t=%d on %d particles", self.num_fits, t, len(theta))

    def __str__(self) -> str:
        k = None if self.model is None else self.model.num_statistics
        return f"<EBMSumstat method={self.method_name} k={k} fits={self.num_fits}>"
