r"""Bijections applied to the data before fitting: support map, tail map, standardisation.

An energy model is fitted on :math:`y = t(x)` rather than on the raw data :math:`x`. The map
:math:`t = t_3 \circ t_2 \circ t_1` is elementwise up to the final affine step; every stage is
fitted on the training data and saved with the model (its constants are buffers, so
``.to(device)`` moves them and ``state_dict`` holds them):

1. :class:`SupportTransform` sends a bounded support to :math:`\mathbb{R}`, per coordinate:

   .. math:: u = \begin{cases}
        \log(x - l) & \text{lower bound } l \text{ only}, \\
        \log(h - x) & \text{upper bound } h \text{ only}, \\
        \operatorname{logit}\big((x - l) / (h - l)\big) & \text{both bounds}, \\
        x & \text{unbounded.}
      \end{cases}

2. :class:`~ebm_lfi.energy.tails.TailTransform` compresses heavy tails where the training data have
   them: :math:`v = \operatorname{asinh}((u - c) / a)` on coordinates flagged heavy-tailed, the
   identity elsewhere (see :mod:`ebm_lfi.energy.tails` for the map and the rule).

3. :class:`Standardize` maps :math:`v` to :math:`y = (v - m) / s` with the per-coordinate
   mean :math:`m` and standard deviation :math:`s` of the training data.

Stages 2 and 3 can pool their constants over "exchangeable" axes such as the draws of an iid
sample or the time axis of a series, so that the map commutes with permuting / shifting them.

:class:`DataTransform` composes the three and gives
:math:`\log |\det \partial t / \partial x| = \sum_i \big(\log |\partial u_i / \partial x_i|
+ \log |\partial v_i / \partial u_i| - \log s_i\big)`, the term that turns a density of
:math:`y` into a density of :math:`x`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .tails import TailTransform, normalise_dims, pooled_shape

__all__ = [
    "SupportTransform",
    "Standardize",
    "DataTransform",
]

logger = logging.getLogger(__name__)

Bound = float | Sequence[float] | Tensor | None


def _bound_tensor(bound: Bound, shape: tuple[int, ...], fill: float) -> Tensor:
    if bound is None:
        return torch.full(shape, fill)
    t = torch.as_tensor(bound, dtype=torch.get_default_dtype()).clone()
    t = torch.where(torch.isnan(t), torch.full_like(t, fill), t)
    try:
        return torch.broadcast_to(t, shape).clone()
    except RuntimeError as e:
        raise ValueError(
            f"support bound of shape {tuple(t.shape)} does not broadcast to x_shape {shape}"
        ) from e


class SupportTransform(nn.Module):
    r"""Per-coordinate bijection from the support of :math:`x` to :math:`\mathbb{R}`.

    The parameters have the same map (:class:`~ebm_lfi.priors.SupportBijection`, for the
    samplers); this one is kept apart because it serves the data: it is a module whose bounds
    are buffers saved with the model, :meth:`check` refuses values outside the open support
    where the samplers' map moves them inside, and its Jacobian is that of :math:`x \mapsto u`.
    The two also compute the logit differently (:math:`\log(x - l) - \log(h - x)` here), so
    sharing one would change the numbers of every fitted model.

    Arguments:
        event_shape: The shape of one data point, :math:`x_{shape}`.
        lower: Lower bound(s): ``None``, a float, or an array broadcasting to ``event_shape``;
            ``-inf`` or ``nan`` entries mean "unbounded".
        upper: Upper bound(s), likewise (``+inf`` / ``nan`` mean unbounded).

    Example:
        >>> t = SupportTransform((2,), lower=0.0, upper=[1.0, float("inf")])
        >>> y = t(torch.tensor([[0.5, 1.0]]))
        >>> y
        tensor([[0., 0.]])
        >>> t.inverse(y)
        tensor([[0.5000, 1.0000]])
    """

    def __init__(self, event_shape: Sequence[int], lower: Bound = None, upper: Bound = None):
        super().__init__()
        self.event_shape = tuple(int(s) for s in event_shape)
        low = _bound_tensor(lower, self.event_shape, -torch.inf)
        high = _bound_tensor(upper, self.event_shape, torch.inf)
        if bool((low >= high).any()):
            bad = torch.nonzero(low >= high)[0].tolist()
            raise ValueError(f"support lower bound must be below upper bound; fails at {bad}")
        self.register_buffer("lower", low)
        self.register_buffer("upper", high)

    @property
    def is_identity(self) -> bool:
        """Whether no coordinate is bounded."""
        return not bool(torch.isfinite(self.lower).any() or torch.isfinite(self.upper).any())

    def _masks(self) -> tuple[Tensor, Tensor, Tensor]:
        lo, hi = torch.isfinite(self.lower), torch.isfinite(self.upper)
        return lo & hi, lo & ~hi, ~lo & hi

    def check(self, x: Tensor) -> None:
        r"""Raise a :class:`ValueError` naming the first value of ``x`` outside the open support.

        Arguments:
            x: Data, shape :math:`(n, *x_{shape})`.
        """
        bad = ~((x > self.lower) & (x < self.upper))
        if bool(bad.any()):
            idx = torch.nonzero(bad)[0].tolist()
            value = float(x[tuple(idx)])
            coord = tuple(idx[1:])
            lo, hi = float(self.lower[coord]), float(self.upper[coord])
            raise ValueError(
                f"x[{', '.join(map(str, idx))}] = {value!r} (sample {idx[0]}, coordinate "
                f"{coord}) is outside the declared open support ({lo}, {hi}); "
                f"{int(bad.sum())} value(s) out of support in total"
            )

    def forward(self, x: Tensor) -> Tensor:
        r"""Map :math:`x \mapsto u`, shape :math:`(n, *x_{shape})` to the same shape."""
        if self.is_identity:
            return x
        two, low_only, high_only = self._masks()
        lo = torch.where(torch.isfinite(self.lower), self.lower, torch.zeros_like(self.lower))
        hi = torch.where(torch.isfinite(self.upper), self.upper, torch.ones_like(self.upper))
        # Safe arguments so that masked-out branches produce no nan/inf (and no nan gradients).
        a = torch.where(two | low_only, x - lo, torch.ones_like(x))
        b = torch.where(two | high_only, hi - x, torch.ones_like(x))
        u_two = torch.log(a) - torch.log(b)
        return torch.where(
            two, u_two, torch.where(low_only, torch.log(a), torch.where(high_only, torch.log(b), x))
        )

    def inverse(self, u: Tensor) -> Tensor:
        r"""Map :math:`u \mapsto x`, shape :math:`(n, *x_{shape})` to the same shape."""
        if self.is_identity:
            return u
        two, low_only, high_only = self._masks()
        lo = torch.where(torch.isfinite(self.lower), self.lower, torch.zeros_like(self.lower))
        hi = torch.where(torch.isfinite(self.upper), self.upper, torch.zeros_like(self.upper))
        e = torch.exp(torch.where(two | ~(low_only | high_only), torch.zeros_like(u), u))
        x_two = lo + (hi - lo) * torch.sigmoid(u)
        return torch.where(
            two, x_two, torch.where(low_only, lo + e, torch.where(high_only, hi - e, u))
        )

    def log_abs_det_jacobian(self, u: Tensor) -> Tensor:
        r"""Elementwise :math:`\log |\partial u / \partial x|`, as a function of :math:`u`.

        Arguments:
            u: Transformed values, shape :math:`(n, *x_{shape})`.

        Returns:
            The elementwise log-derivatives, shape :math:`(n, *x_{shape})`.
        """
        if self.is_identity:
            return torch.zeros_like(u)
        two, low_only, high_only = self._masks()
        width = torch.where(two, self.upper - self.lower, torch.ones_like(self.lower))
        # logit: du/dx = 1 / (w z (1 - z)) with log z = -softplus(-u), log(1 - z) = -softplus(u)
        ladj_two = F.softplus(-u) + F.softplus(u) - torch.log(width)
        return torch.where(
            two, ladj_two, torch.where(low_only | high_only, -u, torch.zeros_like(u))
        )


class Standardize(nn.Module):
    r"""Affine standardisation :math:`y = (u - m) / s`, fitted on training data.

    Before :meth:`fit` it is the identity (:math:`m = 0`, :math:`s = 1`).

    Arguments:
        event_shape: The shape of one data point.
        shared_dims: Axes of the event (0-based, not counting the batch axis) over which the
            mean and standard deviation are pooled, e.g. ``(0,)`` for the draws of an iid
            sample of shape :math:`(m, d)`.
        eps: Floor on the standard deviation; a constant coordinate gets :math:`s = 1`.
    """

    def __init__(self, event_shape: Sequence[int], shared_dims: Sequence[int] = (), eps=1e-8):
        super().__init__()
        self.event_shape = tuple(int(s) for s in event_shape)
        self.shared_dims = normalise_dims(self.event_shape, shared_dims)
        self.eps = float(eps)
        stat_shape = pooled_shape(self.event_shape, self.shared_dims)
        self.register_buffer("mean", torch.zeros(stat_shape))
        self.register_buffer("std", torch.ones(stat_shape))

    @torch.no_grad()
    def fit(self, u: Tensor) -> Standardize:
        r"""Set the mean and standard deviation from data ``u`` of shape :math:`(n, *event)`."""
        dims = (0,) + tuple(d + 1 for d in self.shared_dims)
        u = u.to(self.mean)
        if u.shape[0] < 2:
            raise ValueError(f"need at least 2 samples to standardise, got shape {tuple(u.shape)}")
        mean = u.mean(dim=dims, keepdim=True)[0]
        std = u.std(dim=dims, keepdim=True)[0]
        std = torch.where(std > self.eps, std, torch.ones_like(std))
        self.mean.copy_(mean)
        self.std.copy_(std)
        return self

    def forward(self, u: Tensor) -> Tensor:
        """Map :math:`u \\mapsto y`, any shape :math:`(*, *event)`."""
        return (u - self.mean) / self.std

    def inverse(self, y: Tensor) -> Tensor:
        """Map :math:`y \\mapsto u`, any shape :math:`(*, *event)`."""
        return y * self.std + self.mean

    def log_abs_det_jacobian(self) -> Tensor:
        r"""The constant :math:`-\sum \log s` over one event (a scalar)."""
        full = torch.broadcast_to(self.std, self.event_shape) if self.event_shape else self.std
        return -torch.log(full).sum()


class DataTransform(nn.Module):
    r"""The full data map :math:`y = t(x)`: support map, tail map, then standardisation.

    Arguments:
        event_shape: The shape :math:`x_{shape}` of one data point.
        support: ``(lower, upper)`` bounds of :math:`x` (see :class:`SupportTransform`) or
            ``None`` for :math:`\mathbb{R}^{x_{shape}}`.
        shared_dims: Event axes pooled by the tail map and the standardisation (see
            :class:`Standardize`).
        tails: The tail stage (:class:`TailTransform`): ``"auto"`` decides per pooled
            coordinate from the training data whether to compress it by
            :math:`\operatorname{asinh}`, ``"asinh"`` always does, ``"none"`` never does.
            The decision is stored in a buffer, so a loaded ``state_dict`` carries it.

    Example:
        >>> x = torch.tan(torch.pi * (torch.rand(500, 10) - 0.5))  # 10 iid Cauchy draws
        >>> t = DataTransform((10,), shared_dims=(0,)).fit(x)
        >>> bool(t.tails.active), t.tails.center.shape
        (True, torch.Size([1]))
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        support: tuple[Bound, Bound] | None = None,
        shared_dims: Sequence[int] = (),
        tails: str = "auto",
    ):
        super().__init__()
        self.event_shape = tuple(int(s) for s in event_shape)
        if support is None:
            support = (None, None)
        if not isinstance(support, tuple | list) or len(support) != 2:
            raise ValueError(f"support must be a pair (lower, upper), got {support!r}")
        self.support = SupportTransform(self.event_shape, *support)
        self.tails = TailTransform(self.event_shape, shared_dims, tails)
        self.standardize = Standardize(self.event_shape, shared_dims)

    def check(self, x: Tensor) -> None:
        r"""Validate shape :math:`(n, *x_{shape})`, finiteness and support of ``x``."""
        if tuple(x.shape[1:]) != self.event_shape or x.ndim != len(self.event_shape) + 1:
            raise ValueError(
                f"x must have shape (n, *x_shape) = (n, {', '.join(map(str, self.event_shape))}"
                f"{',' if len(self.event_shape) == 1 else ''}), got {tuple(x.shape)}"
            )
        if not bool(torch.isfinite(x).all()):
            idx = torch.nonzero(~torch.isfinite(x))[0].tolist()
            raise ValueError(
                f"x[{', '.join(map(str, idx))}] = {float(x[tuple(idx)])} is not finite"
            )
        self.support.check(x)

    @torch.no_grad()
    def fit(self, x: Tensor) -> DataTransform:
        r"""Fit the tail map and the standardisation on training data :math:`(n, *x_{shape})`."""
        self.check(x)
        u = self.support(x)
        self.standardize.fit(self.tails.fit(u)(u))
        return self

    def forward(self, x: Tensor) -> Tensor:
        r"""Map :math:`x \mapsto y`, shape :math:`(n, *x_{shape})` to the same shape."""
        return self.standardize(self.tails(self.support(x)))

    def inverse(self, y: Tensor) -> Tensor:
        r"""Map :math:`y \mapsto x`, shape :math:`(n, *x_{shape})` to the same shape."""
        return self.support.inverse(self.tails.inverse(self.standardize.inverse(y)))

    def describe(self) -> dict:
        r"""What the fitted map does, stage by stage, as plain numbers (for diagnostics).

        Returns:
            ``{"support_map": {"logit": a, "log": b, "identity": c}`` (coordinates of
            :math:`x` bounded on both sides, on one side, unbounded), ``"tail_map": {"mode":
            ..., "asinh": k, "coordinates": m}`` (pooled coordinates compressed by asinh, out
            of ``m``), ``"standardisation": {"pooled_over_axes": [...], "coordinates": m}``
            (event axes whose mean and sd are shared, and the pooled coordinates)``}``.

        Example:
            >>> t = DataTransform((4, 2), support=(0.0, None), shared_dims=(0,))
            >>> t.describe()["support_map"], t.describe()["standardisation"]
            ({'logit': 0, 'log': 8, 'identity': 0}, {'pooled_over_axes': [0], 'coordinates': 2})
        """
        two, low_only, high_only = self.support._masks()
        one_sided = int(low_only.sum() + high_only.sum())
        total = int(two.numel())
        return {
            "support_map": {
                "logit": int(two.sum()),
                "log": one_sided,
                "identity": total - int(two.sum()) - one_sided,
            },
            "tail_map": {
                "mode": self.tails.mode,
                "asinh": int(self.tails.mask.sum()),
                "coordinates": int(self.tails.mask.numel()),
            },
            "standardisation": {
                "pooled_over_axes": list(self.standardize.shared_dims),
                "coordinates": int(self.standardize.std.numel()),
            },
        }

    def log_abs_det_jacobian(self, x: Tensor) -> Tensor:
        r""":math:`\log |\det \partial t(x) / \partial x|` per sample.

        Arguments:
            x: Data, shape :math:`(n, *x_{shape})`.

        Returns:
            The log-determinants, shape :math:`(n,)`.
        """
        u = self.support(x)
        v = self.tails(u)
        ladj = self.support.log_abs_det_jacobian(u) + self.tails.log_abs_det_jacobian(v)
        return ladj.reshape(x.shape[0], -1).sum(-1) + self.standardize.log_abs_det_jacobian()
