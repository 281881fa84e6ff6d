r"""sbi interoperability: our learned networks as sbi embedding nets, our posteriors as sbi's.

Priors and simulators written for sbi need nothing from here: sbi's ``BoxUniform``,
``MultipleIndependent`` and other torch distributions are priors as they are
(:mod:`ebm_lfi.priors`), and a batched simulator ``simulator(theta (n, p)) -> x (n, d)`` is
detected by :class:`~ebm_lfi.Simulator`. This module goes the other way.

**Embedding nets.** A fitted exponential family :math:`\eta(\theta)^\top s(y) + b(y)` carries a
statistics network :math:`s` of the data; for an exponential family :math:`s` is sufficient, so
:math:`p(\theta \mid x) = p(\theta \mid s(x))`, and it is a natural embedding of :math:`x` for
neural posterior estimation. :func:`embedding` wraps :math:`x \mapsto (s(t(x)) - m) / d` (the
data transform :math:`t` included; :math:`m, d` the mean and standard deviation of the
statistics over the training simulations) as a float32 module, frozen or trainable (then NPE
fine-tunes it). For NLE, whose embedding net reads :math:`\theta`, :func:`parameter_embedding`
wraps the natural parameters :math:`\eta(\theta)`, through which alone the likelihood depends
on :math:`\theta`. Both must see the raw inputs, so sbi's z-scoring of the embedded side must
be off (``z_score_x="none"`` for NPE, ``z_score_theta="none"`` for NLE):
:func:`posterior_estimator` and :func:`likelihood_estimator` build sbi's density estimators so.

**Posteriors.** :class:`SBIPosterior` gives any of our methods sbi's posterior interface
(``sample``, ``sample_batched``, ``set_default_x``, ``log_prob``, ``potential``), so that
``sbi.analysis.pairplot`` and ``sbi.diagnostics.run_sbc`` run on it.

References:
    | sbi: A toolkit for simulation-based inference (Tejero-Cantero et al., 2020)
    | https://doi.org/10.21105/joss.02505

    | Simulation-based calibration (Talts et al., 2018) https://arxiv.org/abs/1804.06788
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ...energy.model import ExpFamEBM
from ...methods.common import NotFittedError, batched

__all__ = [
    "StatisticsEmbedding",
    "ParameterEmbedding",
    "embedding",
    "parameter_embedding",
    "posterior_estimator",
    "likelihood_estimator",
]


def _fitted_model(method_or_model: Any) -> tuple[nn.Module, Any]:
    """The fitted network module of a method (or the module itself) and the method."""
    if isinstance(method_or_model, nn.Module):
        return method_or_model, None
    if not (hasattr(method_or_model, "model") and hasattr(method_or_model, "fit")):
        raise TypeError(
            "expected a fitted energy method (e.g. el.methods.get('ssm-abc', ...).fit(...)), "
            f"a fitted fp-abc method or an ExpFamEBM, got {type(method_or_model).__name__}"
        )
    model = method_or_model.model
    fit = getattr(method_or_model, "fit_stage", method_or_model)
    if model is None or not getattr(fit, "fitted", True):
        raise NotFittedError(f"{type(method_or_model).__name__} is not fitted: call .fit first")
    if not isinstance(model, nn.Module):
        raise TypeError(f"the method's model is a {type(model).__name__}, not a torch module")
    return model, method_or_model


def _prepared_copy(model: nn.Module, dtype: torch.dtype, trainable: bool, parts: Sequence[str]):
    """A copy of ``model`` in ``dtype`` whose ``parts`` train if ``trainable``, all else frozen."""
    model = copy.deepcopy(model).to(dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if trainable:
        for name in parts:
            part = getattr(model, name, None)
            if part is not None:
                for p in part.parameters():
                    p.requires_grad_(True)
    return model


class _Embedding(nn.Module):
    r"""A copied network and an affine standardisation of its output, float32 by default."""

    def __init__(self, model: nn.Module, trainable: bool, num_features: int, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.trainable = bool(trainable)
        self.num_features = int(num_features)
        self.register_buffer("loc", torch.zeros(num_features, dtype=dtype))
        self.register_buffer("scale", torch.ones(num_features, dtype=dtype))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the network computes in."""
        return self.loc.dtype

    def _features(self, inputs: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def _standardize_on(self, inputs: Tensor) -> None:
        features = batched(self._features, inputs.to(self.loc.device))
        if features.shape[0] < 2:
            raise ValueError("need at least 2 inputs to standardise the embedding on")
        std = features.std(0)
        self.loc.copy_(features.mean(0))
        self.scale.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))

    def train(self, mode: bool = True) -> _Embedding:
        """Set the training mode; a frozen embedding's network stays in evaluation mode."""
        super().train(mode)
        if not self.trainable:
            self.model.eval()
        return self

    def forward(self, inputs: Tensor) -> Tensor:
        r"""The standardised features, shape :math:`(n, k)`, in the dtype of ``inputs`` (float32
        for other inputs)."""
        inputs = torch.as_tensor(inputs)
        out_dtype = inputs.dtype if inputs.is_floating_point() else torch.float32
        features = self._features(inputs.to(dtype=self.dtype, device=self.loc.device))
        return ((features - self.loc) / self.scale).to(out_dtype)


class StatisticsEmbedding(_Embedding):
    r"""The learned statistics :math:`x \mapsto (s(t(x)) - m) / d` as an embedding net.

    Built by :func:`embedding`. Takes :math:`x` of shape :math:`(n, *x_{shape})` or flattened
    :math:`(n, \prod x_{shape})`, raw (not z-scored), and returns :math:`(n, k)`.
    """

    def __init__(
        self, model: nn.Module, trainable: bool, x_shape: Sequence[int], k: int, dtype: torch.dtype
    ):
        super().__init__(model, trainable, k, dtype)
        self.x_shape = tuple(int(s) for s in x_shape)

    def _features(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.x_shape:
            if x.ndim != 2 or x.shape[1] != math.prod(self.x_shape):
                raise ValueError(
                    f"x must have shape (n, *x_shape) with x_shape={self.x_shape}, or be "
                    f"flattened to (n, {math.prod(self.x_shape)}); got {tuple(x.shape)}"
                )
            x = x.reshape(x.shape[0], *self.x_shape)
        if isinstance(self.model, ExpFamEBM):
            return self.model.statistics(x)
        return self.model.predict(x)  # fp-abc: the regression E[theta | x]


class ParameterEmbedding(_Embedding):
    r"""The natural parameters :math:`\theta \mapsto (\eta(\theta) - m) / d` as an embedding
    net for NLE; built by :func:`parameter_embedding`. Maps :math:`(n, p)` to :math:`(n, k)`."""

    def _features(self, theta: Tensor) -> Tensor:
        return self.model.natural_parameters(theta)


def embedding(
    method_or_model: Any,
    *,
    trainable: bool = False,
    standardize: bool = True,
    x: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> StatisticsEmbedding:
    r"""Our learned statistics as an embedding net of :math:`x` for sbi's NPE (or NRE).

    The network is copied (fine-tuning never changes the fitted method) and cast to ``dtype``;
    with ``trainable=True`` the statistics network (and base-measure network) train with the
    density estimator, the data transform stays fixed. Use it with sbi's z-scoring of
    :math:`x` off, since it expects raw data: :func:`posterior_estimator` does so for NPE; for
    NRE pass ``classifier_nn(..., embedding_net_x=net, z_score_x="none")``.

    Arguments:
        method_or_model: A fitted energy method (``ssm-abc``, ``sm-exchange``, ``nce``, ...),
            its :class:`~ebm_lfi.ExpFamEBM`, or a fitted ``fp-abc`` method (statistics
            :math:`\hat E[\theta \mid x]`).
        trainable: Let the density estimator's optimiser fine-tune the statistics network.
        standardize: Centre and scale each statistic by its mean and standard deviation over
            ``x`` (default: the method's training simulations).
        x: Simulations, shape :math:`(n, *x_{shape})`, to standardise on; needed with
            ``standardize=True`` unless a method with stored training data is given.
        dtype: The dtype the copied network computes in (sbi trains in float32).

    Returns:
        A picklable :class:`StatisticsEmbedding`, :math:`(n, *x_{shape})` or
        :math:`(n, \prod x_{shape}) \to (n, k)`.

    Example:
        >>> net = embedding(method, trainable=True)  # doctest: +SKIP
        >>> NPE(prior, density_estimator=posterior_nn("nsf", embedding_net=net,
        ...                                           z_score_x="none"))  # doctest: +SKIP
    """
    model, method = _fitted_model(method_or_model)
    if isinstance(model, ExpFamEBM):
        x_shape, k = model.x_shape, model.num_statistics
    elif callable(getattr(model, "predict", None)) and hasattr(model, "x_transform"):
        x_shape, k = model.x_transform.event_shape, int(model.theta_transform.mean.numel())
    else:
        raise TypeError(f"cannot take statistics from a {type(model).__name__}")
    copied = _prepared_copy(model, dtype, trainable, ("statistics_net", "base_net", "net"))
    net = StatisticsEmbedding(copied, trainable, x_shape, k, dtype)
    if standardize:
        if x is None:
            x = _training_data(method, 1)
        net._standardize_on(torch.as_tensor(x))
    return net


def parameter_embedding(
    method_or_model: Any,
    *,
    trainable: bool = False,
    standardize: bool = True,
    theta: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> ParameterEmbedding:
    r"""Our natural parameters :math:`\eta(\theta)` as an embedding net of :math:`\theta` for
    sbi's NLE.

    The likelihood of the fitted family depends on :math:`\theta` only through
    :math:`\eta(\theta)`, so it is a natural condition for NLE's flow over :math:`x`. As for
    :func:`embedding`: a copy in ``dtype``, frozen unless ``trainable`` (then the
    natural-parameter network trains), standardised on ``theta`` (default: the method's
    training parameters); sbi must not z-score :math:`\theta` (see
    :func:`likelihood_estimator`).

    Arguments:
        method_or_model: A fitted energy method or its :class:`~ebm_lfi.ExpFamEBM`.
        trainable: Let the density estimator's optimiser fine-tune :math:`\eta`.
        standardize: Centre and scale each natural parameter over ``theta``.
        theta: Parameters, shape :math:`(n, p)`, to standardise on.
        dtype: The dtype the copied network computes in.

    Returns:
        A picklable :class:`ParameterEmbedding`, :math:`(n, p) \to (n, k)`.
    """
    model, method = _fitted_model(method_or_model)
    if not isinstance(model, ExpFamEBM):
        raise TypeError(f"parameter_embedding needs an ExpFamEBM, got {type(model).__name__}")
    copied = _prepared_copy(model, dtype, trainable, ("natural_net",))
    net = ParameterEmbedding(copied, trainable, model.num_statistics, dtype)
    if standardize:
        if theta is None:
            theta = _training_data(method, 0)
        net._standardize_on(torch.as_tensor(theta))
    return net


def _training_data(method: Any, index: int) -> Tensor:
    data = getattr(getattr(method, "fit_stage", None), "training_data", None)
    if data is None:
        what = "x" if index else "theta"
        raise ValueError(
            f"standardize=True needs the training data: pass {what}=... (or standardize=False)"
        )
    return data[index]


def _sbi_factory(name: str, model: str, embedding_net: nn.Module, off: str, kwargs: dict):
    from sbi.neural_nets import likelihood_nn, posterior_nn

    if kwargs.get(off, "none") not in ("none", None):
        raise ValueError(
            f"{off}={kwargs[off]!r} would z-score the input of the embedding net, which "
            "expects raw values; leave it out"
        )
    kwargs[off] = "none"
    factory = posterior_nn if name == "posterior" else likelihood_nn
    return factory(model, embedding_net=embedding_net, **kwargs)


def posterior_estimator(
    method_or_model: Any,
    model: str = "maf",
    *,
    trainable: bool = False,
    standardize: bool = True,
    x: Tensor | None = None,
    **posterior_nn_kwargs: Any,
) -> Callable:
    r"""sbi's ``posterior_nn(model, embedding_net=embedding(...), z_score_x="none")``.

    Pass the result as ``sbi.inference.NPE(prior, density_estimator=...)``.

    Arguments:
        method_or_model: See :func:`embedding`.
        model: sbi's density estimator (``"maf"``, ``"nsf"``, ``"mdn"``, ...).
        trainable, standardize, x: See :func:`embedding`.
        posterior_nn_kwargs: Further keywords of ``sbi.neural_nets.posterior_nn``
            (``hidden_features``, ``num_transforms``, ...).

    Returns:
        sbi's build function of the density estimator.
    """
    net = embedding(method_or_model, trainable=trainable, standardize=standardize, x=x)
    return _sbi_factory("posterior", model, net, "z_score_x", posterior_nn_kwargs)


def likelihood_estimator(
    method_or_model: Any,
    model: str = "maf",
    *,
    trainable: bool = False,
    standardize: bool = True,
    theta: Tensor | None = None,
    **likelihood_nn_kwargs: Any,
) -> Callable:
    r"""sbi's ``likelihood_nn(model, embedding_net=parameter_embedding(...),
    z_score_theta="none")``, for ``sbi.inference.NLE(prior, density_estimator=...)``.

    Arguments are those of :func:`parameter_embedding` and ``sbi.neural_nets.likelihood_nn``.
    """
    net = parameter_embedding(
        method_or_model, trainable=trainable, standardize=standardize, theta=theta
    )
    return _sbi_factory("likelihood", model, net, "z_score_theta", likelihood_nn_kwargs)
