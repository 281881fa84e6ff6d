r"""The Gaussian member of the family: monomial statistics, natural parameters from a mean and a
precision factor, and the exact normaliser.

With :math:`y \in \mathbb{R}^d` (the transformed data, flattened), the statistics
:math:`s(y) = (y_a,\ y_a y_b\ (a \le b))` and the natural parameters

.. math:: \eta(\theta) = \big(P\mu,\ -\tfrac12 P_{aa},\ -P_{ab}\ (a < b)\big), \qquad
    P = L L^\top,

give :math:`\eta^\top s(y) = -\frac12 (y - \mu)^\top P (y - \mu) + \frac12 \mu^\top P \mu`:
the model at :math:`\theta` is :math:`\mathcal N(\mu(\theta), P(\theta)^{-1})`, and its
log-normaliser is known,

.. math:: -c(\theta) = \log Z(\theta) = \tfrac12 \mu^\top P \mu - \sum_a \log L_{aa}
    + \tfrac d2 \log 2\pi .

:class:`GaussianNatural` computes :math:`\eta` and :math:`c` from a network's outputs
:math:`\mu(\theta)` and the lower-triangular :math:`L(\theta)` (its diagonal through
:math:`\exp`), so that every :math:`\theta` has a normalisable model and the normaliser is exact:
the family can be fitted by its exact likelihood
(:class:`~ebm_lfi.losses.maximum_likelihood.ExactLikelihood`) and its posterior potential
:math:`\log\pi(\theta) + \eta(\theta)^\top s(y_o) + c(\theta)` is the true one of the model.

Why a mean and a precision factor rather than :math:`\eta` itself: where the mean of the data
moves with :math:`\theta`, the linear natural parameter :math:`P\mu` is a product of the two,
and a network that outputs :math:`\eta` directly did not learn the spread, by maximum
likelihood, on a one-parameter example or on sbibm's SLCP (fitted standard deviation about 4
at every :math:`\theta`, against 0.25 to 9; ``scripts/check_slcp_gaussian.py --toy moving``).
Its likelihood is the Gaussian "synthetic likelihood" of Wood (2010), here learned as a
function of :math:`\theta` from one simulation per parameter instead of estimated from many
simulations at each.

References:
    | Statistical inference for noisy nonlinear ecological dynamic systems (Wood, 2010)
      https://doi.org/10.1038/nature09319

    | Bayesian synthetic likelihood (Price, Drovandi, Lee & Nott, 2018)
      https://doi.org/10.1080/10618600.2017.1302882
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .mlp import MLP

__all__ = ["GaussianNatural", "GaussianStatistics", "gaussian_num_statistics"]


def gaussian_num_statistics(d: int) -> int:
    r"""The number of statistics of the Gaussian family in :math:`d` dimensions,
    :math:`d + d(d+1)/2`.

    Example:
        >>> gaussian_num_statistics(2)
        5
    """
    return d + d * (d + 1) // 2


class GaussianStatistics(nn.Module):
    r"""The monomials :math:`(y_a,\ y_a y_b\ (a \le b))` of the flattened data and a zero base
    measure: :math:`(n, *x_{shape}) \to (n, k + 1)`.

    Example:
        >>> GaussianStatistics((2,))(torch.tensor([[1.0, 2.0]]))
        tensor([[1., 2., 1., 2., 4., 0.]])
    """

    quadratic_in_input = True

    def __init__(self, x_shape: Sequence[int]):
        super().__init__()
        self.x_shape = tuple(int(s) for s in x_shape)
        self.config = {"x_shape": list(self.x_shape)}
        d = math.prod(self.x_shape)
        rows, cols = torch.triu_indices(d, d)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        self.out_features = gaussian_num_statistics(d) + 1

    def forward(self, y: Tensor) -> Tensor:
        flat = y.reshape(y.shape[0], -1)
        second = flat[:, self._rows] * flat[:, self._cols]
        return torch.cat([flat, second, flat.new_zeros(flat.shape[0], 1)], dim=1)


class GaussianNatural(nn.Module):
    r"""Natural parameters :math:`\eta(\theta)` and the exact :math:`c(\theta) = -\log
    Z(\theta)` of the Gaussian family, :math:`(n, p) \to (n, k + 1)` (see the module
    docstring), from an :class:`~ebm_lfi.energy.mlp.MLP` that outputs :math:`\mu(\theta)` and
    the lower triangle of :math:`L(\theta)`.

    Arguments:
        theta_dim: Number of parameters :math:`p` (the input is the standardised
            :math:`\theta`).
        d: Dimension of the flattened data.
        hidden: Hidden widths of the network.
        activation: Activation name (see :data:`~ebm_lfi.energy.mlp.ACTIVATIONS`).

    Example:
        >>> net = GaussianNatural(1, 2, hidden=(4,))
        >>> net(torch.zeros(3, 1)).shape
        torch.Size([3, 6])
    """

    exact_normalizer = True

    def __init__(
        self,
        theta_dim: int,
        d: int,
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
    ):
        super().__init__()
        self.d = int(d)
        self.config = {
            "theta_dim": int(theta_dim),
            "d": self.d,
            "hidden": [int(h) for h in hidden],
            "activation": str(activation),
        }
        self.net = MLP(int(theta_dim), gaussian_num_statistics(self.d), hidden, activation)
        rows, cols = torch.tril_indices(self.d, self.d)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        self.register_buffer("_on_diagonal", rows == cols, persistent=False)
        upper_rows, upper_cols = torch.triu_indices(self.d, self.d)
        self.register_buffer("_upper_rows", upper_rows, persistent=False)
        self.register_buffer("_upper_cols", upper_cols, persistent=False)
        # eta of y_a^2 is -P_aa / 2, of y_a y_b (a < b) -P_ab
        weight = torch.where(upper_rows == upper_cols, -0.5, -1.0)
        self.register_buffer("_quadratic_weight", weight, persistent=False)

    def mean_and_factor(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`\mu` :math:`(n, d)` and the lower-triangular factor :math:`L` :math:`(n, d,
        d)` of the precision, with a positive diagonal."""
        out = self.net(inputs)
        n, d = out.shape[0], self.d
        mean = out[:, :d]
        entries = out[:, d:]
        entries = torch.where(self._on_diagonal, entries.exp(), entries)
        factor = out.new_zeros(n, d, d)
        factor[:, self._rows, self._cols] = entries
        return mean, factor

    def forward(self, inputs: Tensor) -> Tensor:
        mean, factor = self.mean_and_factor(inputs)
        precision = factor @ factor.transpose(1, 2)
        linear = (precision @ mean[:, :, None])[..., 0]
        quadratic = precision[:, self._upper_rows, self._upper_cols] * self._quadratic_weight
        log_det_half = torch.diagonal(factor, dim1=1, dim2=2).log().sum(1)
        c = -0.5 * (mean * linear).sum(1) + log_det_half - 0.5 * self.d * math.log(2 * math.pi)
        return torch.cat([linear, quadratic, c[:, None]], dim=1)
