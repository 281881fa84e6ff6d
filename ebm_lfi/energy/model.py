r"""The conditional energy-based exponential family :class:`ExpFamEBM`.

The model is an exponential family in the transformed data :math:`y = t(x)`
(see :mod:`ebm_lfi.energy.transforms`) with learned statistics and natural parameters,

.. math:: \log \tilde p_w(y \mid \theta) = \eta_w(\theta)^\top s_w(y) + b_w(y),

whose normaliser :math:`Z_w(\theta)` is never computed. In raw space the change of variables
adds the log-Jacobian of :math:`t`, which does not depend on :math:`\theta`:

.. math:: \log \tilde p_w(x \mid \theta) = \eta_w(\theta)^\top s_w(t(x)) + b_w(t(x))
    + \log |\det \partial t(x) / \partial x|.

The natural-parameter network sees the standardised :math:`\theta` (fitted by
:meth:`ExpFamEBM.prepare`), but every method takes the raw :math:`\theta`.

Networks: the *statistics network* maps :math:`(n, *x_{shape}) \to (n, k + 1)`, the first
:math:`k` columns being :math:`s(y)` and the last one the base measure :math:`b(y)`; if a separate
``base_net`` is given, the statistics network outputs :math:`(n, k)` and ``base_net`` outputs
:math:`(n,)` or :math:`(n, 1)`. The *natural-parameter network* maps :math:`(n, p) \to (n, k)`.
:meth:`ExpFamEBM.default` builds both from a named family
(:func:`~ebm_lfi.energy.nets.statistics_network` and an MLP).

Two optional extensions serve the other training families:

* **Ratio model** (NCE, ``normalizer=True``): the natural-parameter network has one more output,
  a scalar head :math:`c(\theta)`, and a small ``marginal_net`` :math:`g` maps the statistics to
  a scalar, so that

  .. math:: r(y, \theta) = \eta(\theta)^\top s(y) + c(\theta) + d(y), \qquad
      d(y) = b(y) + g(s(y)),

  can equal :math:`\log p(y \mid \theta) - \log p(y)` (:meth:`ExpFamEBM.log_ratio_y`). For an
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
  :meth:`ExpFamEBM.at_noise` gives the model at one :math:`\sigma`.

Persistence: a model file (:meth:`ExpFamEBM.save`, :meth:`ExpFamEBM.load`) is a
``torch.save``'d dict of strings and tensors (no pickled code), readable with
``torch.load(weights_only=True)``: the tag :data:`FORMAT`, the version :data:`FORMAT_VERSION`,
a JSON description of the architecture (:meth:`ExpFamEBM.config`) and the weights and
transform buffers. Only models made of built-in networks
(:func:`~ebm_lfi.energy.nets.net_config`) can be saved this way.

References:
    Pacchiardi & Dutta, "Score Matched Neural Exponential Families for Likelihood-Free
    Inference", JMLR 23 (2022), https://arxiv.org/abs/2012.10903
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .gaussian_nets import GaussianNatural, GaussianStatistics, gaussian_num_statistics
from .mlp import MLP
from .nets import build_net, net_config, statistics_network
from .transforms import Bound, DataTransform, Standardize

__all__ = ["ExpFamEBM", "FORMAT", "FORMAT_VERSION"]

FORMAT = "ebm_lfi.ExpFamEBM"
"""Format tag of a saved model file."""
FORMAT_VERSION = 2  # 2: heavy-tail stage in the data transform, pooled-feature nets
GAUSSIAN_MAX_DIM = 64
"""Above this many numbers per data point, ``structure="gaussian"`` warns of its cost."""
"""Version of the saved-model format that :meth:`ExpFamEBM.load` reads."""


class ExpFamEBM(nn.Module):
    r"""Energy-based exponential family :math:`\eta(\theta)^\top s(y) + b(y)`, :math:`y = t(x)`.

    Arguments:
        statistics_net: Module :math:`(n, *x_{shape}) \to (n, k + 1)` (last column :math:`b`),
            or :math:`(n, k)` when ``base_net`` is given.
        natural_net: Module :math:`(n, p) \to (n, k)`.
        x_shape: Shape of one data point.
        theta_dim: Number of parameters :math:`p`.
        num_statistics: Number of statistics :math:`k`.
        x_support: ``(lower, upper)`` bounds of :math:`x` (floats, arrays broadcasting to
            ``x_shape``, or ``None`` entries); ``None`` for unbounded data.
        shared_dims: Event axes over which the standardisation of :math:`y` is pooled
            (``(0,)`` for iid draws or time steps, so that it commutes with permutations).
        base_net: Optional separate base-measure module :math:`(n, *x_{shape}) \to (n,)`.
        tails: Heavy-tail stage of the data transform (``"auto"``: decided from the training
            data by :meth:`prepare`; ``"none"``; ``"asinh"``), see
            :class:`~ebm_lfi.energy.transforms.DataTransform`.
        normalizer: The natural-parameter network has a last extra output :math:`c(\theta)`
            (ratio models, see the module docstring).
        marginal_net: Module :math:`(n, k) \to (n,)` or :math:`(n, 1)`, the term
            :math:`g(s(y))` of a ratio model (needs ``normalizer``).
        noise_conditional: The natural-parameter network reads :math:`(\theta, \log\sigma)`,
            shape :math:`(n, p + 1)`.
        noise_range: ``(lowest, highest)`` trained noise scale of a noise-conditional model.
        normalizer_net: Module :math:`(n, p) \to (n,)` or :math:`(n, 1)` on the standardised
            :math:`\theta` that, when given, is :math:`c(\theta)` instead of the
            natural-parameter network's extra output (needs ``normalizer``; maximum likelihood
            fits one after training, see
            :meth:`~ebm_lfi.losses.maximum_likelihood.MaximumLikelihood.fit_normalizer`).

    Example:
        >>> model = ExpFamEBM.default((3,), theta_dim=2, hidden=(16,))
        >>> theta, x = torch.rand(100, 2), torch.randn(100, 3)
        >>> model = model.prepare(theta, x)
        >>> model.log_unnormalized(x, theta).shape, model.score(x, theta).shape
        (torch.Size([100]), torch.Size([100, 3]))
    """

    def __init__(
        self,
        statistics_net: nn.Module,
        natural_net: nn.Module,
        *,
        x_shape: Sequence[int],
        theta_dim: int,
        num_statistics: int,
        x_support: tuple[Bound, Bound] | None = None,
        shared_dims: Sequence[int] = (),
        base_net: nn.Module | None = None,
        tails: str = "auto",
        normalizer: bool = False,
        marginal_net: nn.Module | None = None,
        noise_conditional: bool = False,
        noise_range: tuple[float, float] = (0.05, 1.0),
        normalizer_net: nn.Module | None = None,
    ):
        super().__init__()
        self.x_shape = tuple(int(s) for s in x_shape)
        self.theta_dim = int(theta_dim)
        self.num_statistics = int(num_statistics)
        if self.num_statistics < 1 or self.theta_dim < 1:
            raise ValueError(
                f"num_statistics and theta_dim must be >= 1, got {num_statistics}, {theta_dim}"
            )
        self.shared_dims = tuple(int(d) for d in shared_dims)
        self.statistics_net = statistics_net
        self.natural_net = natural_net
        self.base_net = base_net
        self.x_transform = DataTransform(self.x_shape, x_support, self.shared_dims, tails=tails)
        self.theta_transform = Standardize((self.theta_dim,))
        if marginal_net is not None and not normalizer:
            raise ValueError("a marginal_net belongs to a ratio model: pass normalizer=True")
        if normalizer_net is not None and not normalizer:
            raise ValueError("a normalizer_net belongs to a ratio model: pass normalizer=True")
        self.has_normalizer = bool(normalizer)
        self.marginal_net = marginal_net
        self.normalizer_net = normalizer_net
        self.noise_conditional = bool(noise_conditional)
        if self.noise_conditional:
            low, high = (float(v) for v in noise_range)
            if not 0 < low <= high < math.inf:
                raise ValueError(f"noise_range must be 0 < low <= high, got {noise_range}")
            self.register_buffer("noise_range", torch.tensor([low, high]))

    # ------------------------------------------------------------------ construction
    @classmethod
    def default(
        cls,
        x_shape: int | Sequence[int],
        theta_dim: int,
        num_statistics: int | None = None,
        structure: str = "mlp",
        x_support: tuple[Bound, Bound] | None = None,
        *,
        hidden: Sequence[int] | None = None,
        natural_hidden: Sequence[int] | None = None,
        activation: str = "silu",
        embedding: int | None = None,
        order: int = 1,
        pool: str = "sum",
        quadratic: bool = True,
        window_hidden: Sequence[int] = (16,),
        radius: int = 2,
        shared_dims: Sequence[int] | None = None,
        tails: str = "auto",
        normalizer: bool = False,
        noise_conditional: bool = False,
        noise_range: tuple[float, float] = (0.05, 1.0),
        marginal_hidden: Sequence[int] = (32, 32),
    ) -> ExpFamEBM:
        r"""A model with built-in networks (saveable with :meth:`save`).

        The statistics network of a named family
        (:func:`~ebm_lfi.energy.nets.statistics_network`), an
        :class:`~ebm_lfi.energy.mlp.MLP` for the natural parameters (with the extra head or
        input of ratio and noise-conditional models) and, for ratio models, the small MLP
        :math:`g` on the statistics; every piece can be rebuilt from its config.

        Arguments:
            x_shape: Shape of one data point (an int means ``(x_shape,)``).
            theta_dim: Number of parameters :math:`p`.
            num_statistics: Number of statistics :math:`k` (default :math:`p`).
            structure: ``"mlp"`` (any :math:`x`, flattened), ``"iid"`` (:math:`x` of shape
                :math:`(m,)` or :math:`(m, d)`: :math:`m` exchangeable draws,
                :class:`~ebm_lfi.energy.pooled_nets.ExchangeableNet`) or ``"markov"`` (a
                series of shape :math:`(T,)` or :math:`(T, d)`,
                :class:`~ebm_lfi.energy.pooled_nets.MarkovNet`) or ``"ring"`` (series of states
                of :math:`K` sites on a ring, :math:`(T, K)`,
                :class:`~ebm_lfi.energy.ring_nets.RingMarkovNet`) or ``"gaussian"`` (any
                :math:`x`, flattened: the Gaussian member of the family, a ratio model with
                its exact normaliser, :mod:`~ebm_lfi.energy.gaussian_nets`; ``num_statistics``,
                ``hidden`` and the structured networks' options are then unused, ``normalizer``
                is implied).
            x_support: ``(lower, upper)`` bounds of :math:`x`, or ``None``.
            hidden: Hidden widths of the statistics network (default: see
                :func:`~ebm_lfi.energy.nets.statistics_network`; ``(64, 64)`` except a
                linear read-out for ``"markov"``).
            natural_hidden: Hidden widths of :math:`\eta(\theta)` (default ``hidden`` when
                given, else ``(64, 64)``).
            activation: Smooth activation name (see :data:`ebm_lfi.energy.mlp.ACTIVATIONS`).
                SiLU by default: with softplus, sliced score matching stalled on a plateau for
                some seeds (Gaussian recovery test; MA(2): median W2 0.70 against 0.26 with
                SiLU).
            embedding: Size of the learned draw / window features (default 8 for the
                exchangeable network, 0 for the Markov network, see
                :func:`~ebm_lfi.energy.nets.statistics_network`).
            order: Markov order :math:`r` (``structure="markov"``).
            pool: ``"sum"`` (default) or ``"mean"`` pooling (``"iid"`` / ``"markov"``); sum
                pooling keeps the score of each coordinate of order one.
            quadratic, window_hidden: Draw / window features of the structured networks (see
                :class:`~ebm_lfi.energy.pooled_nets.PooledFeatures`).
            radius: Neighbourhood radius on the ring (``structure="ring"``).
            tails: Heavy-tail stage of the data transform, ``"auto"``, ``"none"`` or
                ``"asinh"`` (see :class:`~ebm_lfi.energy.transforms.DataTransform`).
            shared_dims: Event axes over which the standardisation pools (default: the time
                or draw axis for ``"iid"`` / ``"markov"``, none for ``"mlp"``). Models
                compared by their score-matching loss must share the same data transform.
            normalizer: Build a ratio model (for NCE): a head :math:`c(\theta)` and a
                ``marginal_net`` MLP with hidden widths ``marginal_hidden`` on the statistics.
            noise_conditional, noise_range: Build :math:`\eta(\theta, \sigma)` (for denoising
                score matching over ``noise_range``).
        """
        x_shape = (int(x_shape),) if isinstance(x_shape, int) else tuple(int(s) for s in x_shape)
        if structure == "gaussian":
            if noise_conditional:
                raise ValueError("the Gaussian family is not noise-conditional")
            d = math.prod(x_shape)
            if d > GAUSSIAN_MAX_DIM:
                warnings.warn(
                    f"structure='gaussian' on data of {d} numbers: "
                    f"{gaussian_num_statistics(d)} natural parameters and a {d} x {d} precision "
                    "factor per theta, slow to fit and needing many simulations (on series of "
                    "100 numbers a fit at 10^4 simulations ran past 15 minutes); reduce x to "
                    "fewer numbers first",
                    stacklevel=2,
                )
            return cls(
                GaussianStatistics(x_shape),
                GaussianNatural(theta_dim, d, natural_hidden or (128, 128, 128), activation),
                x_shape=x_shape,
                theta_dim=theta_dim,
                num_statistics=gaussian_num_statistics(d),
                x_support=x_support,
                shared_dims=() if shared_dims is None else shared_dims,
                tails=tails,
                normalizer=True,
            )
        k = int(theta_dim) if num_statistics is None else int(num_statistics)
        stats, shared = statistics_network(
            x_shape,
            k + 1,
            structure,
            hidden=hidden,
            activation=activation,
            embedding=embedding,
            order=order,
            pool=pool,
            quadratic=quadratic,
            window_hidden=window_hidden,
            radius=radius,
        )
        if shared_dims is not None:
            shared = tuple(int(d) for d in shared_dims)
        nat_hidden = natural_hidden
        if nat_hidden is None:
            nat_hidden = (64, 64) if hidden is None else hidden
        p = int(theta_dim)
        natural = MLP(p + int(noise_conditional), k + int(normalizer), nat_hidden, activation)
        marginal = MLP(k, 1, marginal_hidden, activation) if normalizer else None
        return cls(
            stats,
            natural,
            x_shape=x_shape,
            theta_dim=theta_dim,
            num_statistics=k,
            x_support=x_support,
            shared_dims=shared,
            tails=tails,
            normalizer=normalizer,
            marginal_net=marginal,
            noise_conditional=noise_conditional,
            noise_range=noise_range,
        )

    # ------------------------------------------------------------------ declared structure
    @property
    def hessian_colors(self) -> int | None:
        r"""Probes that give the Hessian diagonal of :math:`f(y) = \eta^\top s(y) + b(y)` in
        :math:`y` (declared by the statistics network, see
        :func:`~ebm_lfi.losses.batched_score_and_hessian_diagonal`), or ``None``."""
        if self.base_net is not None:
            return None
        return getattr(self.statistics_net, "hessian_colors", None)

    @property
    def gaussian_in_y(self) -> bool:
        r"""Whether :math:`\eta^\top s(y) + b(y)` is quadratic in :math:`y` (statistics network
        of window / draw monomials with a linear read-out), so that the model at each
        :math:`\theta` is a Gaussian in :math:`y` where it is normalisable."""
        if self.base_net is not None:
            return False
        return bool(getattr(self.statistics_net, "quadratic_in_input", False))

    @property
    def exact_normalizer(self) -> bool:
        r"""Whether :math:`c(\theta)` is the model's exact :math:`-\log Z(\theta)` (the Gaussian
        family, :mod:`~ebm_lfi.energy.gaussian_nets`), rather than a fitted head."""
        return (
            self.has_normalizer
            and self.normalizer_net is None
            and self.base_net is None
            and bool(getattr(self.natural_net, "exact_normalizer", False))
        )

    # ------------------------------------------------------------------ helpers
    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model (of its transform buffers)."""
        return self.theta_transform.mean.dtype

    @property
    def device(self) -> torch.device:
        """Device of the model."""
        return self.theta_transform.mean.device

    def _tensor(self, a: Any) -> Tensor:
        if isinstance(a, Tensor) and a.dtype == self.dtype and a.device == self.device:
            return a
        return torch.as_tensor(a, dtype=self.dtype, device=self.device)

    def _check_x(self, x: Tensor, name: str = "x") -> Tensor:
        x = self._tensor(x)
        if x.ndim != len(self.x_shape) + 1 or tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(
                f"{name} must have shape (n, *x_shape) with x_shape={self.x_shape}, "
                f"got {tuple(x.shape)}"
            )
        return x

    def _check_theta(self, theta: Tensor) -> Tensor:
        theta = self._tensor(theta)
        if theta.ndim == 1:
            theta = theta.unsqueeze(0)
        if theta.ndim != 2 or theta.shape[1] != self.theta_dim:
            raise ValueError(
                f"theta must have shape (n, {self.theta_dim}) or ({self.theta_dim},), "
                f"got {tuple(theta.shape)}"
            )
        return theta

    def _broadcast(self, y: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        ny, nt = y.shape[0], theta.shape[0]
        if ny != nt:
            if ny == 1:
                y = y.expand(nt, *y.shape[1:])
            elif nt == 1:
                theta = theta.expand(ny, -1)
            else:
                raise ValueError(
                    f"batch sizes of x/y ({ny}) and theta ({nt}) differ and neither is 1"
                )
        return y, theta

    # ------------------------------------------------------------------ fitting the transforms
    @torch.no_grad()
    def prepare(self, theta: Tensor, x: Tensor) -> ExpFamEBM:
        r"""Fit the data and parameter transforms on training data.

        Arguments:
            theta: Parameters, shape :math:`(n, p)`.
            x: Data, shape :math:`(n, *x_{shape})`, inside the declared support.

        Returns:
            The model itself.
        """
        x, theta = self._check_x(x), self._check_theta(theta)
        if x.shape[0] != theta.shape[0]:
            raise ValueError(f"theta {tuple(theta.shape)} and x {tuple(x.shape)} differ in n")
        if not bool(torch.isfinite(theta).all()):
            raise ValueError("theta contains non-finite values")
        self.x_transform.fit(x)
        self.theta_transform.fit(theta)
        return self

    # ------------------------------------------------------------------ transformed space
    def transform_x(self, x: Tensor) -> Tensor:
        r"""Map raw data to the space the model is fitted in, :math:`(n, *x_{shape})`."""
        x = self._check_x(x)
        self.x_transform.check(x)
        return self.x_transform(x)

    def inverse_transform_x(self, y: Tensor) -> Tensor:
        r"""Map transformed data back to raw data, :math:`(n, *x_{shape})`."""
        return self.x_transform.inverse(self._check_x(y, "y"))

    def _stats_and_base_y(self, y: Tensor) -> tuple[Tensor, Tensor]:
        out = self.statistics_net(y)
        k = self.num_statistics
        if self.base_net is None:
            if out.ndim != 2 or out.shape[1] != k + 1:
                raise ValueError(
                    f"statistics_net must output (n, k + 1) = (n, {k + 1}) (last column: the "
                    f"base measure), got {tuple(out.shape)}"
                )
            return out[:, :k], out[:, k]
        if out.ndim != 2 or out.shape[1] != k:
            raise ValueError(f"statistics_net must output (n, {k}), got {tuple(out.shape)}")
        base = self.base_net(y)
        return out, base.reshape(base.shape[0])

    def statistics_y(self, y: Tensor) -> Tensor:
        r"""Statistics :math:`s(y)`, shape :math:`(n, *x_{shape}) \to (n, k)`."""
        return self._stats_and_base_y(self._check_x(y, "y"))[0]

    def log_unnormalized_y(
        self, y: Tensor, theta: Tensor, sigma: float | Tensor | None = None
    ) -> Tensor:
        r""":math:`\eta(\theta)^\top s(y) + b(y)` (no Jacobian term).

        Arguments:
            y: Transformed data, shape :math:`(n, *x_{shape})`.
            theta: Raw parameters, shape :math:`(n, p)`; either batch size may be 1 and is
                then broadcast.
            sigma: Noise scale(s) of a noise-conditional model (see
                :meth:`natural_parameters`).

        Returns:
            The unnormalised log-densities, shape :math:`(n,)`.
        """
        y, theta = self._broadcast(self._check_x(y, "y"), self._check_theta(theta))
        s, b = self._stats_and_base_y(y)
        return (self.natural_parameters(theta, sigma) * s).sum(-1) + b

    def log_unnormalized_y_at(
        self, theta: Tensor, sigma: float | Tensor | None = None
    ) -> Callable[[Tensor], Tensor]:
        r"""The function :math:`y \mapsto \eta(\theta)^\top s(y) + b(y)` at fixed parameters,
        with :math:`\eta(\theta)` computed once and held fixed (no gradient reaches
        :math:`\theta` or the weights through it): a chain over :math:`y` at fixed
        :math:`\theta`, such as the exchange sampler's auxiliary draw, evaluates it at every
        step. Its values are those of :meth:`log_unnormalized_y` to the bit.

        Arguments:
            theta: Raw parameters, shape :math:`(n, p)`.
            sigma: Noise scale(s) of a noise-conditional model (see :meth:`natural_parameters`).

        Returns:
            A function of transformed data :math:`(n, *x_{shape})` (the same :math:`n`) to the
            unnormalised log-densities :math:`(n,)`.
        """
        with torch.no_grad():
            eta = self.natural_parameters(self._check_theta(theta), sigma)

        def log_density(y: Tensor) -> Tensor:
            y = self._check_x(y, "y")
            if y.shape[0] != eta.shape[0]:
                raise ValueError(
                    f"y must have {eta.shape[0]} rows, one per theta; got {y.shape[0]}"
                )
            s, b = self._stats_and_base_y(y)
            return (eta * s).sum(-1) + b

        return log_density

    def score_y(self, y: Tensor, theta: Tensor, create_graph: bool = False) -> Tensor:
        r""":math:`\nabla_y \log \tilde p(y \mid \theta)`, shape :math:`(n, *x_{shape})`.

        Arguments:
            y: Transformed data, shape :math:`(n, *x_{shape})`.
            theta: Raw parameters, shape :math:`(n, p)` (or broadcastable batch of 1).
            create_graph: Keep the graph (to differentiate the score w.r.t. the weights).
        """
        y, theta = self._broadcast(self._check_x(y, "y"), self._check_theta(theta))
        with torch.enable_grad():
            y = y if (create_graph and y.requires_grad) else y.detach().requires_grad_(True)
            f = self.log_unnormalized_y(y, theta)
            (g,) = torch.autograd.grad(f.sum(), y, create_graph=create_graph)
        return g

    # ------------------------------------------------------------------ raw space
    def statistics(self, x: Tensor) -> Tensor:
        r"""Statistics :math:`s(t(x))`, shape :math:`(n, *x_{shape}) \to (n, k)`."""
        return self.statistics_y(self.transform_x(x))

    def log_unnormalized(self, x: Tensor, theta: Tensor) -> Tensor:
        r""":math:`\log \tilde p(x \mid \theta)` including :math:`\log|\det \partial t/\partial x|`.

        Arguments:
            x: Raw data, shape :math:`(n, *x_{shape})`.
            theta: Raw parameters, shape :math:`(n, p)` (or broadcastable batch of 1).

        Returns:
            Shape :math:`(n,)`.
        """
        x = self._check_x(x)
        self.x_transform.check(x)
        y = self.x_transform(x)
        ladj = self.x_transform.log_abs_det_jacobian(x)
        f = self.log_unnormalized_y(y, theta)
        return f + ladj if f.shape == ladj.shape else f + ladj.expand(f.shape)

    def score(self, x: Tensor, theta: Tensor) -> Tensor:
        r""":math:`\nabla_x \log \tilde p(x \mid \theta)` in raw space (Jacobian included).

        Arguments:
            x: Raw data, shape :math:`(n, *x_{shape})`.
            theta: Raw parameters, shape :math:`(n, p)` (or broadcastable batch of 1).

        Returns:
            Shape :math:`(n, *x_{shape})`.
        """
        x, theta = self._broadcast(self._check_x(x), self._check_theta(theta))
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.log_unnormalized(x, theta).sum(), x)
        return g

    # ------------------------------------------------------------------ natural parameters
    def _noise_scales(self, sigma: float | Tensor | None, n: int) -> Tensor:
        r"""Per-row noise scales of a noise-conditional model, shape :math:`(n,)`.

        Arguments:
            sigma: A positive scalar, :math:`n` positive values, or ``None`` for the lowest
                trained noise scale.
            n: Number of rows.
        """
        if not self.noise_conditional:
            raise ValueError("sigma is only accepted by a noise-conditional model")
        if sigma is None:
            return self.noise_range[0].expand(n)
        sigma = self._tensor(sigma).reshape(-1)
        if sigma.numel() not in (1, n) or not bool((sigma > 0).all()):
            raise ValueError(f"sigma must be positive, a scalar or one per row ({n}), got {sigma}")
        return sigma.expand(n)

    def _natural_outputs(self, theta: Tensor, sigma: float | Tensor | None) -> Tensor:
        theta = self._check_theta(theta)
        inputs = self.theta_transform(theta)
        if self.noise_conditional:
            log_sigma = self._noise_scales(sigma, theta.shape[0]).log()
            inputs = torch.cat([inputs, log_sigma[:, None]], dim=1)
        elif sigma is not None:
            raise ValueError("sigma is only accepted by a noise-conditional model")
        out = self.natural_net(inputs)
        width = self.num_statistics + int(self.has_normalizer)
        if out.ndim != 2 or out.shape[1] != width:
            raise ValueError(f"natural_net must output (n, {width}), got {tuple(out.shape)}")
        return out

    def natural_parameters(self, theta: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        r"""Natural parameters :math:`\eta(\theta)`, shape :math:`(n, p) \to (n, k)`.

        The network sees the standardised :math:`\theta` (see :meth:`prepare`).

        Arguments:
            theta: Raw parameters, shape :math:`(n, p)`.
            sigma: Noise scale(s) of a noise-conditional model, a scalar or shape :math:`(n,)`
                (default: the lowest trained one); refused by other models.
        """
        return self._natural_outputs(theta, sigma)[:, : self.num_statistics]

    # ------------------------------------------------------------------ ratio model
    def natural_and_normalizer(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`\eta(\theta)` and the head :math:`c(\theta)` of a ratio model in one pass,
        shapes :math:`(n, k)` and :math:`(n,)`."""
        if not self.has_normalizer:
            raise ValueError("this model has no normalizer head (build it with normalizer=True)")
        out = self._natural_outputs(theta, None)
        if self.normalizer_net is None:
            return out[:, :-1], out[:, -1]
        c = self.normalizer_net(self.theta_transform(self._check_theta(theta)))
        return out[:, :-1], c.reshape(out.shape[0])

    def normalizer(self, theta: Tensor) -> Tensor:
        r"""The head :math:`c(\theta)` of a ratio model, shape :math:`(n, p) \to (n,)`."""
        return self.natural_and_normalizer(theta)[1]

    def log_ratio_y(self, y: Tensor, theta: Tensor, index: Tensor | None = None) -> Tensor:
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
        if not self.has_normalizer:
            raise ValueError("log_ratio_y needs a ratio model (build it with normalizer=True)")
        y, theta = self._check_x(y, "y"), self._check_theta(theta)
        if index is None:
            y, theta = self._broadcast(y, theta)
        s, b = self._stats_and_base_y(y)
        if self.marginal_net is not None:
            b = b + self.marginal_net(s).reshape(s.shape[0])
        eta, c = self.natural_and_normalizer(theta)
        if index is None:
            return (eta * s).sum(-1) + c + b
        return (eta[index] * s).sum(-1) + c[index] + b

    # ------------------------------------------------------------------ noise-conditional model
    def at_noise(self, sigma: float) -> _AtNoise:
        r"""The noise-conditional model at one noise scale :math:`\sigma` (a view with
        ``natural_parameters``, ``statistics_y`` and ``log_unnormalized_y``, as the exchange
        sampler needs)."""
        if not self.noise_conditional:
            raise ValueError("at_noise needs a noise-conditional model (trained by DSM)")
        return _AtNoise(self, float(sigma))

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict:
        r"""JSON-able description of the architecture (raises ``TypeError`` for user modules)."""
        marginal, normalizer = self.marginal_net, self.normalizer_net
        return {
            "x_shape": list(self.x_shape),
            "theta_dim": self.theta_dim,
            "num_statistics": self.num_statistics,
            "shared_dims": list(self.shared_dims),
            "statistics_net": net_config(self.statistics_net),
            "natural_net": net_config(self.natural_net),
            "base_net": None if self.base_net is None else net_config(self.base_net),
            "normalizer": self.has_normalizer,
            "marginal_net": None if marginal is None else net_config(marginal),
            "normalizer_net": None if normalizer is None else net_config(normalizer),
            "noise_conditional": self.noise_conditional,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def save(self, path: str | os.PathLike) -> None:
        r"""Save weights, transforms and a JSON config to a single file.

        The file is a ``torch.save``'d dict of strings and tensors (no pickled code), loadable
        with ``torch.load(weights_only=True)``; see :meth:`load` and the module docstring.

        Raises:
            TypeError: If a network is a user module (not rebuildable from a config).
        """
        config = json.dumps(self.config())
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save(
            {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config, "state": state},
            os.fspath(path),
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> ExpFamEBM:
        r"""Load a model written by :meth:`save` (``device``: where to put it, default CPU).

        Raises:
            ValueError: If the file is unreadable, corrupt, of another format or version, or
                its weights do not match its config.
        """
        path = os.fspath(path)
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:  # corrupt archives raise many different types
            raise ValueError(f"cannot read an ExpFamEBM from {path!r} (corrupt file?): {e}") from e
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ValueError(f"{path!r} is not an ebm_lfi ExpFamEBM file")
        version = blob.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path!r} has format version {version!r}; this version of ebm_lfi reads "
                f"version {FORMAT_VERSION}"
            )
        try:
            config = json.loads(blob["config"])
            base_cfg, marginal_cfg = config["base_net"], config.get("marginal_net")
            normalizer_cfg = config.get("normalizer_net")
            model = cls(
                build_net(config["statistics_net"]),
                build_net(config["natural_net"]),
                x_shape=config["x_shape"],
                theta_dim=config["theta_dim"],
                num_statistics=config["num_statistics"],
                shared_dims=config["shared_dims"],
                base_net=None if base_cfg is None else build_net(base_cfg),
                normalizer=bool(config.get("normalizer", False)),
                marginal_net=None if marginal_cfg is None else build_net(marginal_cfg),
                noise_conditional=bool(config.get("noise_conditional", False)),
                normalizer_net=None if normalizer_cfg is None else build_net(normalizer_cfg),
            )
            model = model.to(getattr(torch, config["dtype"]))
            model.load_state_dict(blob["state"], strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise ValueError(f"{path!r} holds an invalid or mismatched model: {e}") from e
        return model if device is None else model.to(device)


class _AtNoise:
    r"""A noise-conditional :class:`ExpFamEBM` at a fixed noise scale :math:`\sigma`
    (:meth:`ExpFamEBM.at_noise`): the family the exchange sampler reads."""

    def __init__(self, model: ExpFamEBM, sigma: float):
        self.model, self.sigma = model, sigma

    def natural_parameters(self, theta: Tensor) -> Tensor:
        r""":math:`\eta(\theta, \sigma)`, shape :math:`(n, p) \to (n, k)`."""
        return self.model.natural_parameters(theta, self.sigma)

    def statistics_y(self, y: Tensor) -> Tensor:
        r"""Statistics :math:`s(y)`, shape :math:`(n, *x_{shape}) \to (n, k)`."""
        return self.model.statistics_y(y)

    def log_unnormalized_y(self, y: Tensor, theta: Tensor) -> Tensor:
        r""":math:`\eta(\theta, \sigma)^\top s(y) + b(y)`, shape :math:`(n,)`."""
        return self.model.log_unnormalized_y(y, theta, self.sigma)

    def log_unnormalized_y_at(self, theta: Tensor) -> Callable[[Tensor], Tensor]:
        r"""The model's :meth:`ExpFamEBM.log_unnormalized_y_at` at this noise scale."""
        return self.model.log_unnormalized_y_at(theta, self.sigma)
