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

Two optional extensions serve the other training families (see :mod:`ebm_lfi.energy.extensions`
for their math): a **ratio model** (``normalizer=True``) with a head :math:`c(\theta)` and a
marginal term, whose logit :meth:`ExpFamEBM.log_ratio_y` estimates
:math:`\log p(y \mid \theta) - \log p(y)` (NCE); and a **noise-conditional model**
(``noise_conditional=True``) whose :math:`\eta(\theta, \sigma)` also reads :math:`\log
\sigma`, the smoothed density at every trained noise scale (:meth:`ExpFamEBM.at_noise`).

References:
    Pacchiardi & Dutta, "Score Matched Neural Exponential Families for Likelihood-Free
    Inference", JMLR 23 (2022), https://arxiv.org/abs/2012.10903
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import extensions as _extensions
from .default import default_model
from .io import load_model, model_config, save_model
from .transforms import Bound, DataTransform, Standardize

__all__ = ["ExpFamEBM"]


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
        self.has_normalizer = bool(normalizer)
        self.marginal_net = marginal_net
        self.noise_conditional = bool(noise_conditional)
        if self.noise_conditional:
            low, high = (float(v) for v in noise_range)
            if not 0 < low <= high < math.inf:
                raise ValueError(f"noise_range must be 0 < low <= high, got {noise_range}")
            self.register_buffer("noise_range", torch.tensor([low, high]))

    # ------------------------------------------------------------------ construction
    default = classmethod(default_model)

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

    _noise = _extensions.noise_scales

    def _natural_outputs(self, theta: Tensor, sigma: float | Tensor | None) -> Tensor:
        theta = self._check_theta(theta)
        inputs = self.theta_transform(theta)
        if self.noise_conditional:
            log_sigma = self._noise(sigma, theta.shape[0]).log()
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

    # ------------------------------------------- ratio / noise models (energy_extensions.py)
    natural_and_normalizer = _extensions.natural_and_normalizer
    normalizer = _extensions.normalizer
    log_ratio_y = _extensions.log_ratio_y
    at_noise = _extensions.at_noise

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

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict:
        r"""JSON-able description of the architecture (raises ``TypeError`` for user modules)."""
        return model_config(self)

    def save(self, path: str | os.PathLike) -> None:
        r"""Save weights, transforms and a JSON config to a single file.

        The file is a ``torch.save``'d dict of strings and tensors (no pickled code), loadable
        with ``torch.load(weights_only=True)``; see :meth:`load` and :mod:`ebm_lfi.energy.io`.

        Raises:
            TypeError: If a network is a user module (not rebuildable from a config).
        """
        save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> ExpFamEBM:
        r"""Load a model written by :meth:`save` (``device``: where to put it, default CPU).

        Raises:
            ValueError: If the file is unreadable, corrupt, of another format or version, or
                its weights do not match its config.
        """
        return load_model(cls, path, device)
