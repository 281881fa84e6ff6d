r"""The ABC distance: summary statistics scaled by their prior-predictive spread.

Statistics are identified only up to an affine map, so each one is divided by its standard
deviation over prior-predictive simulations (:class:`StatisticScaler`), and the ABC samplers
(:func:`~ebm_lfi.samplers.abc.rejection.rejection_abc`,
:func:`~ebm_lfi.samplers.abc.smc.smc_abc`) measure the Euclidean distance between scaled
statistics. :func:`as_scaler` turns their ``scale`` argument (a scaler, known scales, or ``None``
to fit on prior-predictive statistics) into a :class:`StatisticScaler`.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

__all__ = ["StatisticScaler", "as_scaler"]

logger = logging.getLogger(__name__)


class StatisticScaler:
    r"""Divides each summary statistic by its standard deviation.

    Arguments:
        scale: Optional known scales, shape :math:`(k,)`; otherwise call :meth:`fit`.

    Example:
        >>> stats = torch.randn(1000, 3) * torch.tensor([1.0, 10.0, 100.0])
        >>> scaler = StatisticScaler().fit(stats)
        >>> scaler(stats).std(dim=0).allclose(torch.ones(3))
        True
    """

    def __init__(self, scale: Tensor | None = None):
        self.scale = None if scale is None else self._checked(torch.as_tensor(scale))

    @staticmethod
    def _checked(scale: Tensor) -> Tensor:
        if scale.ndim != 1 or not bool((scale > 0).all()) or not bool(scale.isfinite().all()):
            raise ValueError(
                f"scale must be a 1-D tensor of positive finite values, got shape "
                f"{tuple(scale.shape)}"
            )
        return scale

    def fit(self, stats: Tensor) -> StatisticScaler:
        r"""Sets the scales to the standard deviations of prior-predictive statistics.

        Arguments:
            stats: Statistics of prior-predictive simulations, shape :math:`(n, k)`,
                :math:`n \geq 2`. Constant statistics get scale 1.

        Returns:
            The scaler itself.
        """
        stats = torch.as_tensor(stats)
        if stats.ndim != 2 or stats.shape[0] < 2:
            raise ValueError(f"stats must have shape (n >= 2, k), got {tuple(stats.shape)}")
        std = stats.detach().std(dim=0)
        if not bool(std.isfinite().all()):
            raise ValueError("stats contain NaN or inf values")
        constant = std <= 0
        if bool(constant.any()):
            logger.warning("%d constant statistics get scale 1", int(constant.sum()))
        self.scale = torch.where(constant, torch.ones_like(std), std)
        return self

    def __call__(self, stats: Tensor) -> Tensor:
        r"""Scales statistics of shape :math:`(*, k)`."""
        if self.scale is None:
            raise RuntimeError("StatisticScaler is not fitted; call fit(stats) first")
        stats = torch.as_tensor(stats)
        if stats.shape[-1:] != self.scale.shape:
            raise ValueError(
                f"stats must have shape (*, {self.scale.shape[0]}), got {tuple(stats.shape)}"
            )
        return stats / self.scale.to(dtype=stats.dtype, device=stats.device)

    def __repr__(self) -> str:
        return f"StatisticScaler(scale={None if self.scale is None else self.scale.tolist()})"


def as_scaler(scale: StatisticScaler | Tensor | None, reference: Tensor) -> StatisticScaler:
    r"""``scale`` as a :class:`StatisticScaler`; ``None`` fits one to ``reference``."""
    if scale is None:
        return StatisticScaler().fit(reference)
    if isinstance(scale, StatisticScaler):
        return scale
    return StatisticScaler(torch.as_tensor(scale))
