r"""Score-matching losses for unnormalised conditional densities.

Let :math:`f(y) = \log \tilde p(y \mid \theta)` (the model's ``log_unnormalized_y``) with
:math:`y \in \mathbb{R}^d`. The Fisher divergence to the data density :math:`p(y \mid \theta)`,
:math:`\frac12 \mathbb{E}\|\nabla_y f - \nabla_y \log p\|^2`, equals up to a constant the
Hyvärinen (2005) objective

.. math:: J(f) = \mathbb{E}_{p(y, \theta)}\Big[\sum_{i=1}^d \tfrac12 (\partial_i f)^2
    + \partial_i^2 f\Big],

which does not involve :math:`p` nor the normaliser of :math:`\tilde p`.

* :class:`ScoreMatching` evaluates :math:`J` exactly. The Hessian diagonal of the *scalar*
  :math:`f` costs :math:`d` Hessian-vector products :math:`\nabla^2 f\, e_i`, computed with
  ``torch.func`` as ``jvp(grad f)`` ``vmap``-ed (in chunks) over the basis vectors, the model
  running at batch level (rows are independent, so the gradient of :math:`\sum_j f(y_j)` holds
  the per-row gradients).
* :class:`SlicedScoreMatching` (Song et al., 2019, https://arxiv.org/abs/1905.07088) replaces the
  trace by :math:`v^\top \nabla^2 f\, v` with :math:`\mathbb{E}[v v^\top] = I`:
  :math:`\frac12\|\nabla f\|^2 + v^\top \nabla^2 f\, v` (variance-reduced) or
  :math:`\frac12 (v^\top \nabla f)^2 + v^\top \nabla^2 f\, v`, both unbiased for :math:`J`,
  at the price of two backward passes whatever :math:`d`.
* :class:`DenoisingScoreMatching` (Vincent, 2011) fits the score of the smoothed density
  :math:`p_\sigma(\tilde y) = \int \mathcal N(\tilde y; y, \sigma^2 I)\, p(y)\, dy` by regressing
  :math:`\nabla f(\tilde y)` on :math:`-\varepsilon / \sigma` with :math:`\tilde y = y + \sigma
  \varepsilon`; weighted by :math:`\sigma^2`, the loss is
  :math:`\frac12 \mathbb{E}\|\sigma \nabla f(\tilde y) + \varepsilon\|^2`. In the likelihood-free
  setting, :math:`p_\sigma(\tilde y \mid \theta)` is the ABC likelihood with a Gaussian kernel
  of bandwidth :math:`\sigma` (Pacchiardi & Dutta, 2022, https://arxiv.org/abs/2012.10903).

Each loss is a module called as ``loss(model, y, theta) -> scalar``, where ``model`` only needs
``log_unnormalized_y(y, theta) -> (n,)`` with rows computed independently of each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from ..energy.mlp import piecewise_linear_modules

__all__ = [
    "ScoreMatching",
    "batched_score_and_hessian_diagonal",
    "SlicedScoreMatching",
    "DenoisingScoreMatching",
    "score_and_hessian_diagonal",
    "hessian_diagonal",
    "sample_projections",
    "check_batch",
]

_TANGENT_BUDGET = 2**19  # tangent entries per vmap chunk of Hessian-vector products


def batched_score_and_hessian_diagonal(
    f: Callable[[Tensor], Tensor],
    y: Tensor,
    chunk_size: int | None = None,
    colors: int | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Gradient and Hessian diagonal of a batched function whose rows are independent.

    With :math:`F(y) = \sum_j f(y)_j`, the gradient of :math:`F` holds the per-row gradients
    and :math:`\nabla^2 F\, e_i` the per-row Hessian columns. The :math:`d` Hessian-vector
    products are forward-over-reverse (``jvp`` of ``grad``), ``vmap``-ed over the basis vectors
    only: the network runs at batch level, and what does not depend on :math:`y` (e.g. the
    natural parameters :math:`\eta(\theta)`) is computed once. The result is differentiable
    w.r.t. tensors captured by ``f`` (e.g. network weights).

    Arguments:
        f: Batched function ``f(y) -> (n,)`` of shape :math:`(n, *event)`, row :math:`j` of the
            output depending on row :math:`j` of the input only; traceable by ``torch.func``.
        y: Points, shape :math:`(n, *event)`.
        chunk_size: Basis vectors per ``vmap`` chunk (fewer: less memory, more passes);
            ``None`` chooses about :math:`2^{19} / (n d)` to keep the tangents cache-sized.
        colors: If the Hessian of each row is banded, :math:`H_{ij} = 0` whenever
            :math:`0 < |i - j|` and :math:`i \equiv j \pmod K` (e.g. :math:`|i - j| \ge K`
            implies :math:`H_{ij} = 0`), pass :math:`K`: the diagonal is then read off
            :math:`K` products with the probes :math:`v_c = \sum_{i \equiv c} e_i`, since
            :math:`(H v_c)_i = H_{ii}` for :math:`i \equiv c` (a colouring of the coordinates
            such that no two of one colour interact). ``None``: :math:`d` basis vectors.

    Returns:
        :math:`\nabla f(y)` and :math:`\operatorname{diag} \nabla^2 f(y)`, both of shape
        :math:`(n, *event)`.

    Example:
        >>> f = lambda y: (y**3).sum(-1)
        >>> g, h = batched_score_and_hessian_diagonal(f, torch.tensor([[1.0, 2.0]]))
        >>> g, h
        (tensor([[ 3., 12.]]), tensor([[ 6., 12.]]))
    """
    n, d = y.shape[0], y[0].numel()
    if chunk_size is None:
        chunk_size = max(1, _TANGENT_BUDGET // max(1, n * d))
    num = d if colors is None else min(int(colors), d)
    coordinate = torch.arange(d, device=y.device)
    probes = (coordinate % num == torch.arange(num, device=y.device)[:, None]).to(y.dtype)
    basis = probes.reshape(num, 1, *y.shape[1:])  # the identity when num = d
    grad_sum = grad(lambda z: f(z).sum())

    def hvp(v: Tensor) -> tuple[Tensor, Tensor]:
        return jvp(grad_sum, (y,), (v.expand_as(y),))

    gs, hv = vmap(hvp, chunk_size=min(chunk_size, num))(basis)  # (num, n, *event) each
    # entry (j, i) = (H_j v_{i mod num})_i = H_j[i, i]
    diag = hv.reshape(num, n, d)[coordinate % num, :, coordinate].T
    return gs[0], diag.reshape(y.shape)


def score_and_hessian_diagonal(
    f: Callable[..., Tensor], y: Tensor, *args: Tensor, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    r"""Gradient and Hessian diagonal of a per-sample scalar function, for a batch.

    ``vmap``-s ``f`` over the batch and calls :func:`batched_score_and_hessian_diagonal`.

    Arguments:
        f: Function of one sample ``f(y_i, *args_i) -> ()``, shapes :math:`(*event)` and the
            per-sample slices of ``args``; it must be traceable by ``torch.func.vmap``.
        y: Points, shape :math:`(n, *event)`.
        args: Extra per-sample inputs, each of shape :math:`(n, *)` (not differentiated).
        chunk_size: See :func:`batched_score_and_hessian_diagonal`.

    Returns:
        :math:`\nabla f(y)` and :math:`\operatorname{diag} \nabla^2 f(y)`, both of shape
        :math:`(n, *event)`.

    Example:
        >>> f = lambda y: (y**3).sum()
        >>> g, h = score_and_hessian_diagonal(f, torch.tensor([[1.0, 2.0]]))
        >>> g, h
        (tensor([[ 3., 12.]]), tensor([[ 6., 12.]]))
    """
    return batched_score_and_hessian_diagonal(lambda z: vmap(f)(z, *args), y, chunk_size=chunk_size)


def hessian_diagonal(f: Callable[..., Tensor], y: Tensor, *args: Tensor) -> Tensor:
    r"""Hessian diagonal :math:`(\partial_i^2 f(y))_i` of a per-sample scalar function.

    See :func:`score_and_hessian_diagonal`.

    Returns:
        Shape :math:`(n, *event)`.
    """
    return score_and_hessian_diagonal(f, y, *args)[1]


def sample_projections(
    shape: Sequence[int],
    kind: str,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Random projection vectors with :math:`\mathbb{E}[v v^\top] = I`.

    Arguments:
        shape: Output shape.
        kind: ``"rademacher"`` (entries :math:`\pm 1`) or ``"gaussian"`` (standard normal).
        dtype, device: Of the output.
        generator: Random generator (default: the global one).
    """
    if kind == "rademacher":
        bits = torch.randint(0, 2, tuple(shape), generator=generator, device=device)
        return (2 * bits - 1).to(dtype or torch.get_default_dtype())
    if kind == "gaussian":
        return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    raise ValueError(f"projection must be 'rademacher' or 'gaussian', got {kind!r}")


def _require_smooth(model: nn.Module, loss: str) -> None:
    if isinstance(model, nn.Module):
        bad = piecewise_linear_modules(model)
        if bad:
            raise ValueError(
                f"{loss} needs second derivatives of the energy in y, but the model has "
                f"piecewise-linear activations (zero curvature) at {bad}; use a smooth "
                "activation such as 'softplus', 'tanh', 'silu' or 'elu'"
            )


def check_batch(y: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
    r"""The batch of a loss, checked: ``y`` detached, ``theta`` broadcast to its rows.

    Arguments:
        y: Transformed data, shape :math:`(n, *x_{shape})`.
        theta: Parameters, shape :math:`(n, p)`, :math:`(1, p)` or :math:`(p,)`.

    Returns:
        ``y`` and ``theta`` of shape :math:`(n, p)`.
    """
    if not isinstance(y, Tensor) or not isinstance(theta, Tensor):
        raise TypeError("y and theta must be tensors")
    if y.ndim < 2:
        raise ValueError(f"y must have shape (n, *x_shape), got {tuple(y.shape)}")
    if theta.ndim == 1:
        theta = theta.unsqueeze(0)
    if theta.ndim != 2 or theta.shape[0] not in (1, y.shape[0]):
        raise ValueError(
            f"theta must have shape (n, p) with n = {y.shape[0]} (the batch of y), "
            f"got {tuple(theta.shape)}"
        )
    return y.detach(), theta.expand(y.shape[0], -1)


class ScoreMatching(nn.Module):
    r"""Exact (Hyvärinen) score-matching loss
    :math:`\mathbb{E}\big[\sum_i \frac12 (\partial_i f)^2 + \partial_i^2 f\big]`.

    Costs :math:`d` batched Hessian-vector products per sample; see
    :func:`batched_score_and_hessian_diagonal`. When the model declares a banded Hessian
    (``model.hessian_colors``: a sum of local terms, as the exchangeable and Markov networks
    with a linear read-out are, where coordinate :math:`i` enters only the draw or the
    :math:`r + 1` windows that contain it), :math:`K` probe products replace the :math:`d` basis
    vectors: :math:`K = d_{step}` for iid draws, :math:`(r + 1) d_{step}` for a Markov network
    of order :math:`r`, whatever the length of the series. Refuses models with piecewise-linear
    activations.

    Arguments:
        chunk_size: Basis vectors per ``vmap`` chunk (``None``: automatic).
        structured: Use the model's Hessian structure when it declares one.

    Example:
        >>> from ebm_lfi.energy.model import ExpFamEBM
        >>> model = ExpFamEBM.default((3,), theta_dim=2, hidden=(8,))
        >>> ScoreMatching()(model, torch.randn(5, 3), torch.rand(5, 2)).shape
        torch.Size([])
    """

    def __init__(self, chunk_size: int | None = None, structured: bool = True):
        super().__init__()
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.structured = bool(structured)

    def forward(self, model: nn.Module, y: Tensor, theta: Tensor) -> Tensor:
        r"""
        Arguments:
            model: Provides ``log_unnormalized_y(y, theta) -> (n,)``.
            y: Transformed data, shape :math:`(n, *x_{shape})`.
            theta: Parameters, shape :math:`(n, p)`.

        Returns:
            The loss, a scalar.
        """
        _require_smooth(model, "ScoreMatching")
        y, theta = check_batch(y, theta)

        colors = getattr(model, "hessian_colors", None) if self.structured else None
        g, h = batched_score_and_hessian_diagonal(
            lambda z: model.log_unnormalized_y(z, theta), y, self.chunk_size, colors
        )
        return (0.5 * g.square() + h).reshape(y.shape[0], -1).sum(-1).mean()


class SlicedScoreMatching(nn.Module):
    r"""Sliced score-matching loss with random projections :math:`v`.

    .. math:: \tfrac12 \|\nabla f\|^2 + v^\top \nabla^2 f\, v \quad \text{(variance-reduced)},
        \qquad \tfrac12 (v^\top \nabla f)^2 + v^\top \nabla^2 f\, v \quad \text{(plain)}.

    Arguments:
        projection: ``"rademacher"`` or ``"gaussian"`` projections.
        variance_reduction: Use the exact :math:`\frac12\|\nabla f\|^2` term.
        num_projections: Projections per sample (averaged).

    Example:
        >>> from ebm_lfi.energy.model import ExpFamEBM
        >>> model = ExpFamEBM.default((3,), theta_dim=2, hidden=(8,))
        >>> loss = SlicedScoreMatching(num_projections=2)
        >>> g = torch.Generator().manual_seed(0)
        >>> loss(model, torch.randn(5, 3), torch.rand(5, 2), generator=g).shape
        torch.Size([])
    """

    def __init__(
        self,
        projection: str = "rademacher",
        variance_reduction: bool = True,
        num_projections: int = 1,
    ):
        super().__init__()
        if projection not in ("rademacher", "gaussian"):
            raise ValueError(f"projection must be 'rademacher' or 'gaussian', got {projection!r}")
        if int(num_projections) < 1:
            raise ValueError(f"num_projections must be >= 1, got {num_projections}")
        self.projection = projection
        self.variance_reduction = bool(variance_reduction)
        self.num_projections = int(num_projections)

    def forward(
        self,
        model: nn.Module,
        y: Tensor,
        theta: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""
        Arguments:
            model: Provides ``log_unnormalized_y(y, theta) -> (n,)``.
            y: Transformed data, shape :math:`(n, *x_{shape})`.
            theta: Parameters, shape :math:`(n, p)`.
            generator: Generator for the projections, on ``y``'s device (default: global).

        Returns:
            The loss, a scalar.
        """
        _require_smooth(model, "SlicedScoreMatching")
        y, theta = check_batch(y, theta)
        n, P = y.shape[0], self.num_projections
        with torch.enable_grad():
            y = y.requires_grad_(True)
            f = model.log_unnormalized_y(y, theta)
            (g,) = torch.autograd.grad(f.sum(), y, create_graph=True)
            v = sample_projections(
                (P, *y.shape), self.projection, dtype=y.dtype, device=y.device, generator=generator
            )
            if P == 1:
                (hv,) = torch.autograd.grad((g * v[0]).sum(), y, create_graph=True)
                hv = hv.unsqueeze(0)
            else:
                (hv,) = torch.autograd.grad(
                    g, y, grad_outputs=v, create_graph=True, is_grads_batched=True
                )
        vhv = (v * hv).reshape(P, n, -1).sum(-1)  # (P, n)
        if self.variance_reduction:
            first = 0.5 * g.reshape(n, -1).square().sum(-1)
        else:
            first = 0.5 * (v * g).reshape(P, n, -1).sum(-1).square().mean(0)
        return (first + vhv.mean(0)).mean()


class DenoisingScoreMatching(nn.Module):
    r"""Denoising score-matching loss :math:`\frac12 \mathbb{E}\|\sigma \nabla f(y + \sigma
    \varepsilon) + \varepsilon\|^2` (weight :math:`\sigma^2`).

    Arguments:
        sigma: Noise scale(s) :math:`\sigma > 0` in the transformed space; with a sequence, each
            sample draws one of them uniformly at random. With ``conditional``: the range
            ``(lowest, highest)``, from which each sample draws :math:`\log\sigma` uniformly.
        conditional: Train a noise-conditional model :math:`f(y; \theta, \sigma)` (an
            ``ExpFamEBM(noise_conditional=True)``, called with ``sigma=``), so that one fit
            gives the smoothed density at every :math:`\sigma` of the range (Song & Ermon,
            2019, https://arxiv.org/abs/1907.05600, with :math:`\theta` as a further input).

    Example:
        >>> from ebm_lfi.energy.model import ExpFamEBM
        >>> model = ExpFamEBM.default((3,), theta_dim=2, hidden=(8,))
        >>> loss = DenoisingScoreMatching([0.1, 0.5])
        >>> loss(model, torch.randn(5, 3), torch.rand(5, 2)).shape
        torch.Size([])
    """

    def __init__(self, sigma: float | Sequence[float], conditional: bool = False):
        super().__init__()
        sigmas = [float(sigma)] if isinstance(sigma, int | float) else [float(s) for s in sigma]
        if not sigmas or not all(s > 0 and math.isfinite(s) for s in sigmas):
            raise ValueError(f"sigma must be a positive float or a list of them, got {sigma!r}")
        self.conditional = bool(conditional)
        if self.conditional and (len(sigmas) != 2 or sigmas[0] > sigmas[1]):
            raise ValueError(f"a conditional DSM takes sigma=(lowest, highest), got {sigma!r}")
        self.sigmas = sigmas
        self.model_options = (
            {"noise_conditional": True, "noise_range": tuple(sigmas)} if self.conditional else {}
        )

    def forward(
        self,
        model: nn.Module,
        y: Tensor,
        theta: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""
        Arguments:
            model: Provides ``log_unnormalized_y(y, theta) -> (n,)``.
            y: Transformed data, shape :math:`(n, *x_{shape})`.
            theta: Parameters, shape :math:`(n, p)`.
            generator: Generator for the noise, on ``y``'s device (default: global).

        Returns:
            The loss, a scalar.
        """
        y, theta = check_batch(y, theta)
        n = y.shape[0]
        bshape = (n,) + (1,) * (y.ndim - 1)
        if self.conditional:
            low, high = math.log(self.sigmas[0]), math.log(self.sigmas[1])
            u = torch.rand((n,), generator=generator, dtype=y.dtype, device=y.device)
            sigma = (low + (high - low) * u).exp().reshape(bshape)
        elif len(self.sigmas) == 1:
            sigma = torch.full(bshape, self.sigmas[0], dtype=y.dtype, device=y.device)
        else:
            table = torch.tensor(self.sigmas, dtype=y.dtype, device=y.device)
            idx = torch.randint(len(self.sigmas), (n,), generator=generator, device=y.device)
            sigma = table[idx].reshape(bshape)
        eps = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
        with torch.enable_grad():
            noisy = (y + sigma * eps).requires_grad_(True)
            if self.conditional:
                f = model.log_unnormalized_y(noisy, theta, sigma=sigma.reshape(n))
            else:
                f = model.log_unnormalized_y(noisy, theta)
            (score,) = torch.autograd.grad(f.sum(), noisy, create_graph=True)
        return 0.5 * (sigma * score + eps).reshape(n, -1).square().sum(-1).mean()
