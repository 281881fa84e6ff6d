r"""The ratio and noise-conditional extensions of :class:`~ebm_lfi.energy.model.ExpFamEBM`.

Two optional extensions of :math:`\eta(\theta)^\top s(y) + b(y)` serve the other training
families:

* **Ratio model** (NCE, ``normalizer=True``): the natural-parameter network has one more output,
  a scalar head :math:`c(\theta)`, and a small ``marginal_net`` :math:`g` maps the statistics to
  a scalar, so that

  .. math:: r(y, \theta) = \eta(\theta)^\top s(y) + c(\theta) + d(y), \qquad
      d(y) = b(y) + g(s(y)),

  can equal :math:`\log p(y \mid \theta) - \log p(y)` (:func:`log_ratio_y`). For an
  exponential family :math:`p(y \mid \theta) = h(y) e^{\eta^\top T(y) - A(\theta)}`, the
  evidence is :math:`p(y) = h(y) \int e^{\eta^\top T(y) - A} \pi\, d\theta`, a function of
  :math:`T(y)` times :math:`h(y)`, so :math:`d` depends on :math:`y` through the statistics only:
  that is why :math:`g` reads :math:`s(y)`. Then :math:`c(\theta) = -A(\theta)` up to a constant
  (with :math:`s` measured from a point where :math:`T = 0`; statistics are identified only up
  to an affine map, which moves :math:`\eta^\top u` between the two terms).
* **Noise-conditional model** (denoising score matching over a range of noise scales,
  ``noise_conditional=True``): :math:`\eta(\theta, \sigma)` also reads :math:`\log \sigma`,
  so that :math:`\eta(\theta, \sigma)^\top s(y) + b(y)` models the smoothed density
  :math:`p_\sigma(y \mid \theta) = \int \mathcal N(y; y', \sigma^2 I) p(y' \mid \theta)\,
  dy'` for every :math:`\sigma` of the trained range ``noise_range``, i.e. the ABC likelihood
  with a Gaussian kernel of bandwidth :math:`\sigma` on the transformed data.
  :func:`at_noise` gives the model at one :math:`\sigma`.

The functions take the model as first argument and are bound as methods of
:class:`~ebm_lfi.energy.model.ExpFamEBM` (``model.log_ratio_y(y, theta)``, ``model.at_noise(sigma)``,
...); call them through the model.

References:
    Pacchiardi & Dutta, "Score Matched Neural Exponential Families for Likelihood-Free
    Inference", JMLR 23 (2022), https://arxiv.org/abs/2012.10903
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .model import ExpFamEBM

__all__ = ["noise_scales", "natural_and_normalizer", "normalizer", "log_ratio_y", "at_noise"]


def noise_scales(model: ExpFamEBM, sigma: float | Tensor | None, n: int) -> Tensor:
    r"""Per-row noise scales of a noise-conditional model, shape :math:`(n,)`.

    Arguments:
        model: A noise-conditional model.
        sigma: A positive scalar, :math:`n` positive values, or ``None`` for the lowest trained
            noise scale.
        n: Number of rows.
    """
    if not model.noise_conditional:
        raise ValueError("sigma is only accepted by a noise-conditional model")
    if sigma is None:
        return model.noise_range[0].expand(n)
    sigma = model._tensor(sigma).reshape(-1)
    if sigma.numel() not in (1, n) or not bool((sigma > 0).all()):
        raise ValueError(f"sigma must be positive, a scalar or one per row ({n}), got {sigma}")
    return sigma.expand(n)


def natural_and_normalizer(model: ExpFamEBM, theta: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`\eta(\theta)` and the head :math:`c(\theta)` of a ratio model in one pass,
    shapes :math:`(n, k)` and :math:`(n,)`."""
    if not model.has_normalizer:
        raise ValueError("this model has no normalizer head (build it with normalizer=True)")
    out = model._natural_outputs(theta, None)
    return out[:, :-1], out[:, -1]


def normalizer(model: ExpFamEBM, theta: Tensor) -> Tensor:
    r"""The head :math:`c(\theta)` of a ratio model, shape :math:`(n, p) \to (n,)`."""
    return model.natural_and_normalizer(theta)[1]


def log_ratio_y(model: ExpFamEBM, y: Tensor, theta: Tensor, index: Tensor | None = None) -> Tensor:
    r"""The ratio model's logit :math:`\eta(\theta)^\top s(y) + c(\theta) + d(y)`.

    Arguments:
        y: Transformed data, shape :math:`(n, *x_{shape})`.
        theta: Raw parameters, shape :math:`(n, p)` (or a broadcastable batch of 1), or
            :math:`(m, p)` with ``index``.
        index: Optional integer pairing of shape :math:`(r, n)`: entry ``(j, i)`` pairs
            ``y[i]`` with ``theta[index[j, i]]``; the statistics are computed once.

    Returns:
        Shape :math:`(n,)`, or :math:`(r, n)` with ``index``.
    """
    if not model.has_normalizer:
        raise ValueError("log_ratio_y needs a ratio model (build it with normalizer=True)")
    y, theta = model._check_x(y, "y"), model._check_theta(theta)
    if index is None:
        y, theta = model._broadcast(y, theta)
    s, b = model._stats_and_base_y(y)
    if model.marginal_net is not None:
        b = b + model.marginal_net(s).reshape(s.shape[0])
    eta, c = model.natural_and_normalizer(theta)
    if index is None:
        return (eta * s).sum(-1) + c + b
    return (eta[index] * s).sum(-1) + c[index] + b


def at_noise(model: ExpFamEBM, sigma: float) -> _AtNoise:
    r"""The noise-conditional model at one noise scale :math:`\sigma` (a view with
    ``natural_parameters``, ``statistics_y`` and ``log_unnormalized_y``, as the exchange
    sampler needs)."""
    if not model.noise_conditional:
        raise ValueError("at_noise needs a noise-conditional model (trained by DSM)")
    return _AtNoise(model, float(sigma))


class _AtNoise:
    r"""A noise-conditional :class:`~ebm_lfi.energy.model.ExpFamEBM` at a fixed noise scale
    :math:`\sigma`."""

    def __init__(self, model: ExpFamEBM, sigma: float):
        self.model, self.sigma = model, sigma

    def natural_parameters(self, theta: Tensor) -> Tensor:
        return self.model.natural_parameters(theta, self.sigma)

    def statistics_y(self, y: Tensor) -> Tensor:
        return self.model.statistics_y(y)

    def log_unnormalized_y(self, y: Tensor, theta: Tensor) -> Tensor:
        return self.model.log_unnormalized_y(y, theta, self.sigma)
