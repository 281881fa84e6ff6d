r"""Where the MCMC posterior stages start their chains: near the observation in statistics.

The chains of the exchange and potential stages start at the training parameters
:math:`\theta_i` whose learned statistics are nearest to the observation's, in the scaled
distance :math:`\| (s(x_i) - s(x_o)) / \hat\sigma \|_2` of ABC
(:func:`~ebm_lfi.samplers.abc.rejection.rejection_abc`, :math:`\hat\sigma` the per-statistic
standard deviation over the training set): a rejection-ABC draw that puts every chain in the
bulk of the posterior rather than in the tails of the prior.

Example:
    >>> import torch
    >>> theta = torch.linspace(0, 1, 101)[:, None]
    >>> starts = StartingPoints(lambda x: x, theta, theta.clone())
    >>> sorted(round(t, 2) for t in starts(torch.tensor([0.5]), 3).flatten().tolist())
    [0.49, 0.5, 0.51]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..samplers.abc.rejection import rejection_abc
from ..samplers.abc.scaler import StatisticScaler
from .common import batched

__all__ = ["StartingPoints"]


class StartingPoints:
    r"""The table of training parameters and their statistics that chains start from.

    Arguments:
        statistics: Batched statistics ``(n, *x_shape) -> (n, k)`` (the model's).
        theta: Training parameters :math:`(n, p)`.
        x: Training simulations :math:`(n, *x_{shape})`.
    """

    def __init__(self, statistics: Callable[[Tensor], Tensor], theta: Tensor, x: Tensor):
        self.statistics = statistics
        self.theta = theta
        self.stats = batched(statistics, x)
        self.scaler = StatisticScaler().fit(self.stats)

    def __call__(self, x_o: Tensor, num: int) -> Tensor:
        r"""``num`` training parameters whose statistics are closest to ``x_o``'s, shape
        :math:`(num, p)`; nearest first, repeated cyclically when ``num`` exceeds the table."""
        with torch.no_grad():
            s_o = self.statistics(x_o[None])
        kept = min(num, self.theta.shape[0])
        start = rejection_abc(
            self.theta, self.stats, s_o, num_samples=kept, scale=self.scaler
        ).samples[0]
        return start[torch.arange(num, device=start.device) % kept]
