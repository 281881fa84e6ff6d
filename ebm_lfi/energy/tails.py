r"""The heavy-tail stage of the data transform: an asinh map where the data need it.

The map compresses heavy tails where the training data have them:

.. math:: v = \begin{cases}
     \operatorname{asinh}\big((u - c) / a\big) & \text{coordinate flagged heavy-tailed}, \\
     u & \text{otherwise,}
   \end{cases}

with :math:`c` the median and :math:`a = \mathrm{IQR} / 1.349` (the standard deviation
of a Gaussian with the same interquartile range). The map is smooth (:math:`C^\infty`),
increasing, close to the identity up to scale on :math:`|u - c| \lesssim a` and
logarithmic beyond, :math:`v \approx \operatorname{sign}(u - c) \log(2 |u - c| / a)`, so a
Cauchy draw of size :math:`10^6` lands near :math:`\pm 14` instead of dominating the fit.
Its inverse is :math:`u = c + a \sinh v` and its log-derivative
:math:`\log |\partial v / \partial u| = -\log a - \log\cosh v`.

Which coordinates are flagged is decided by :meth:`TailTransform.fit` (see there) from
the tail-to-body ratio of quantile ranges,

.. math:: R = \frac{q_{1 - p} - q_{p}}{q_{3/4} - q_{1/4}}, \qquad p = 0.005,

switched on when :math:`R > 9`. Reference values of :math:`R`: uniform 1.98, Gaussian 3.82,
logistic (the logit of a uniform) and exponential (the limit of the log of a
:math:`\mathrm{Gamma}(k)` as :math:`k \to 0`) 4.82, Laplace 6.64, Student-:math:`t_3` 7.6,
Student-:math:`t_2` 12.2, Cauchy 63.7. The threshold 9 is the geometric mean of the
Laplace and :math:`t_2` values: Gaussian, uniform, logit-Beta and log-Gamma data (and
Laplace-like exponential tails) stay below it with a margin, while infinite-variance data
(tail index :math:`\le 2`), the case where a few draws dominate a score-matching fit, lie
above it. Prior-predictive mixtures matter too: the pooled AR(2) benchmark data (a scale
mixture of Gaussians over the prior) reach about 6.8, iid Cauchy noise around a
:math:`U(-5, 5)` location about 21.

The constants (centre, scale, which coordinates are flagged) can be pooled over "exchangeable"
axes such as the draws of an iid sample or the time axis of a series, like the standardisation
that follows (see :mod:`ebm_lfi.energy.transforms`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["TailTransform", "TAIL_MODES", "normalise_dims", "pooled_shape"]

logger = logging.getLogger(__name__)

TAIL_MODES = ("auto", "none", "asinh")
"""Accepted values of the ``tails`` / ``mode`` argument of the tail stage."""

_IQR_PER_STD = 2 * 0.6744897501960817  # interquartile range of a standard Gaussian


def normalise_dims(event_shape: tuple[int, ...], shared_dims: Sequence[int]) -> tuple[int, ...]:
    r"""Event axes as sorted non-negative indices.

    Each axis is taken modulo the event rank (``1`` for a scalar event), so negative axes count
    from the end; an axis out of range is wrapped rather than refused, and duplicates are kept.

    Arguments:
        event_shape: The shape of one data point.
        shared_dims: Event axes (not counting the batch axis).

    Returns:
        The axes in :math:`[0, \max(\text{rank}, 1))`, sorted.
    """
    return tuple(sorted(int(d) % max(len(event_shape), 1) for d in shared_dims))


def pooled_shape(event_shape: tuple[int, ...], shared_dims: tuple[int, ...]) -> tuple[int, ...]:
    r"""Shape of constants pooled over ``shared_dims``: ``event_shape`` with those axes set to 1.

    Arguments:
        event_shape: The shape of one data point.
        shared_dims: Non-negative event axes (see :func:`normalise_dims`).

    Returns:
        A shape of the same rank as ``event_shape`` that broadcasts against it.
    """
    return tuple(1 if i in shared_dims else s for i, s in enumerate(event_shape))


def _pooled_sorted(u: Tensor, shared_dims: tuple[int, ...]) -> Tensor:
    """Sorted pooled values as columns: ``(N, K)``, ``N`` pooled values per coordinate."""
    pooled = (0, *(d + 1 for d in shared_dims))
    rest = tuple(d for d in range(u.ndim) if d not in pooled)
    count = math.prod(u.shape[d] for d in pooled)
    return u.permute(*pooled, *rest).reshape(count, -1).sort(dim=0).values


def _quantiles(sorted_cols: Tensor, probs: Sequence[float]) -> Tensor:
    """Quantiles of sorted columns by linear interpolation: ``(len(probs), K)``."""
    n = sorted_cols.shape[0]
    out = []
    for p in probs:
        pos = p * (n - 1)
        lo = min(int(math.floor(pos)), n - 1)
        hi = min(lo + 1, n - 1)
        w = pos - lo
        out.append(sorted_cols[lo] * (1 - w) + sorted_cols[hi] * w)
    return torch.stack(out)


class TailTransform(nn.Module):
    r"""Elementwise compression of heavy tails, :math:`v = \operatorname{asinh}((u - c) / a)`.

    On the coordinates flagged in the buffer ``active`` (1.0 = flagged, 0.0 = not; a floating
    buffer so that it follows ``.to(dtype)`` like the others) the map is
    :math:`v = \operatorname{asinh}((u - c) / a)` with the median :math:`c` and the robust
    scale :math:`a = \mathrm{IQR} / 1.349` of the training data; elsewhere it is the identity.
    Before :meth:`fit` no coordinate is flagged. The map is defined by the buffers alone, so a
    ``state_dict`` loaded into a fresh instance reproduces it whatever that instance's
    ``mode``; the mode only governs :meth:`fit`.

    Arguments:
        event_shape: The shape of one data point.
        shared_dims: Event axes over which the constants and the decision are pooled (as in
            :class:`Standardize`).
        mode: ``"auto"`` (flag a pooled coordinate when its tail ratio exceeds
            :attr:`threshold`, see :meth:`fit`), ``"asinh"`` (flag every coordinate) or
            ``"none"`` (identity).

    Example:
        >>> u = torch.tan(torch.pi * (torch.rand(4000, 1) - 0.5))  # Cauchy draws
        >>> t = TailTransform((1,), mode="auto").fit(u)
        >>> bool(t.active), float(t.center.abs()) < 0.2, float(t.tail_ratio(u)) > 20
        (True, True, True)
    """

    level: float = 0.005
    """Tail level :math:`p` of the quantile range :math:`q_{1-p} - q_p` in the tail ratio."""
    threshold: float = 9.0
    """``"auto"`` flags a coordinate whose tail ratio exceeds this (see the module docstring)."""
    min_count: int = 400
    """``"auto"`` flags nothing with fewer pooled values than this (two per tail at ``level``)."""

    def __init__(
        self, event_shape: Sequence[int], shared_dims: Sequence[int] = (), mode: str = "auto"
    ):
        super().__init__()
        if mode not in TAIL_MODES:
            raise ValueError(
                f"tails must be one of {', '.join(map(repr, TAIL_MODES))}; got {mode!r}"
            )
        self.mode = mode
        self.event_shape = tuple(int(s) for s in event_shape)
        self.shared_dims = normalise_dims(self.event_shape, shared_dims)
        stat_shape = pooled_shape(self.event_shape, self.shared_dims)
        self.register_buffer("center", torch.zeros(stat_shape))
        self.register_buffer("scale", torch.ones(stat_shape))
        self.register_buffer("active", torch.zeros(stat_shape))

    @property
    def is_identity(self) -> bool:
        """Whether no coordinate is flagged."""
        return not bool(self.mask.any())

    @property
    def mask(self) -> Tensor:
        """The flags as a boolean tensor, the shape of :attr:`center`."""
        return self.active > 0.5

    def _summaries(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
        if u.shape[0] < 2:
            raise ValueError(f"need at least 2 samples to fit the tail map, got {tuple(u.shape)}")
        cols = _pooled_sorted(u.to(self.center), self.shared_dims)
        p = self.level
        q = _quantiles(cols, (p, 0.25, 0.5, 0.75, 1 - p))
        iqr = q[3] - q[1]
        ratio = (q[4] - q[0]) / torch.where(iqr > 0, iqr, torch.full_like(iqr, torch.nan))
        shape = self.center.shape
        return q[2].reshape(shape), iqr.reshape(shape), ratio.reshape(shape), cols.shape[0]

    @torch.no_grad()
    def tail_ratio(self, u: Tensor) -> Tensor:
        r"""The tail ratio :math:`R = (q_{1-p} - q_p) / (q_{3/4} - q_{1/4})` of data ``u``.

        Quantiles interpolate linearly between order statistics and are pooled over
        ``shared_dims``; :math:`p` is :attr:`level`.

        Arguments:
            u: Data, shape :math:`(n, *event)`.

        Returns:
            :math:`R` per pooled coordinate, the shape of :attr:`center` (``nan`` where the
            interquartile range is zero).
        """
        return self._summaries(u)[2]

    @torch.no_grad()
    def fit(self, u: Tensor) -> TailTransform:
        r"""Set the centre, the scale and (``mode="auto"``) which coordinates to compress.

        In ``"auto"`` mode a pooled coordinate is flagged when its :meth:`tail_ratio`
        exceeds :attr:`threshold` (9), it has at least :attr:`min_count` pooled values and its
        interquartile range is positive. :math:`R` is location- and scale-free and built from
        quantiles only, so it is itself robust to the outliers it looks for; :math:`p = 0.005`
        leaves ten values per tail at 2,000 samples. Gaussian (3.8), uniform (2.0), logistic
        and log-Gamma (at most 4.8) data stay well below 9; Cauchy (64) and Student-:math:`t_2`
        (12) data lie above it. A coordinate with a zero interquartile range gets
        :math:`a = 1` when forced by ``mode="asinh"``.

        Arguments:
            u: Data, shape :math:`(n, *event)` (after the support map).

        Returns:
            The module itself.
        """
        median, iqr, ratio, count = self._summaries(u)
        if self.mode == "asinh":
            active = torch.ones_like(self.mask)
        elif self.mode == "none":
            active = torch.zeros_like(self.mask)
        else:
            active = (ratio > self.threshold) & (count >= self.min_count)
            logger.info(
                "asinh tail map on %d of %d pooled coordinate(s) (tail ratio above %g)",
                int(active.sum()),
                active.numel(),
                self.threshold,
            )
        scale = torch.where(iqr > 0, iqr / _IQR_PER_STD, torch.ones_like(iqr))
        self.active.copy_(active)
        self.center.copy_(torch.where(active, median, torch.zeros_like(median)))
        self.scale.copy_(torch.where(active, scale, torch.ones_like(scale)))
        return self

    def forward(self, u: Tensor) -> Tensor:
        r"""Map :math:`u \mapsto v`, any shape :math:`(*, *event)`."""
        z = (u - self.center) / self.scale
        return torch.where(self.mask, torch.asinh(z), u)

    def inverse(self, v: Tensor) -> Tensor:
        r"""Map :math:`v \mapsto u`, any shape :math:`(*, *event)`."""
        # sinh only where flagged: a large identity coordinate would overflow (and give nan
        # gradients through the discarded branch).
        mask = self.mask
        safe = torch.where(mask, v, torch.zeros_like(v))
        return torch.where(mask, self.center + self.scale * torch.sinh(safe), v)

    def log_abs_det_jacobian(self, v: Tensor) -> Tensor:
        r"""Elementwise :math:`\log |\partial v / \partial u| = -\log a - \log\cosh v`.

        Arguments:
            v: Transformed values (the output of :meth:`forward`), shape :math:`(*, *event)`.

        Returns:
            The elementwise log-derivatives, the shape of ``v`` (zero where not flagged).
        """
        log_cosh = torch.logaddexp(v, -v) - math.log(2.0)
        return torch.where(self.mask, -torch.log(self.scale) - log_cosh, torch.zeros_like(v))
