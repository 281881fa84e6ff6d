r"""A statistics network for series of fields on a ring: Markov in time, equivariant in space.

Data :math:`x \in \mathbb{R}^{T \times K}`: :math:`T` time steps of a state of :math:`K` sites on
a ring (site :math:`K` neighbours site 1), e.g. the Lorenz96 model. When the dynamics are the
same at every site and each step depends on the previous one, the log-likelihood of an
order-one Markov chain whose transition is translation-equivariant around the ring,

.. math:: \log p(x) = \log p(x_1) + \sum_{t=2}^{T} \log p(x_t \mid x_{t-1}),

with :math:`\log p(x_t \mid x_{t-1})` a sum over sites of one local function of the
neighbourhoods :math:`x_{t-1, k-m:k+m}` and :math:`x_{t, k-m:k+m}`, is a sum over all
(time, site) pairs of one function of the local window

.. math:: w_{t,k} = \big(x_{t-1,\, k-m}, \dots, x_{t-1,\, k+m},\ x_{t,\, k-m}, \dots,
    x_{t,\, k+m}\big) \in \mathbb{R}^{2(2m+1)}

(indices of sites modulo :math:`K`): a circular convolution over :math:`k` followed by a sum
over :math:`t` and :math:`k`. :class:`RingMarkovNet` pools the window features of
:class:`~ebm_lfi.energy.pooled_nets.PooledFeatures` (degree-two monomials and an optional small
learned network) over all :math:`(T - 1) K` windows, so its pooled part is invariant to
rotating the ring, and adds a *head* for :math:`\log p(x_1)`, which need not be invariant (a
series started from a fixed state is not): the first state and the products of neighbouring
sites within it, per site. A linear read-out :math:`\rho` (the default) gives the form of the
statistics of such an exponential family; a hidden :math:`\rho` is the outer network of the
paper's statistics network.

With a linear read-out, two coordinates of the flattened series interact only when their time
steps differ by at most one, so :attr:`RingMarkovNet.hessian_colors` is :math:`2K` (as for a
Markov network of order one on :math:`K`-vectors), and exact score matching costs :math:`2K`
Hessian-vector products instead of :math:`TK`.

References:
    | Score Matched Neural Exponential Families for Likelihood-Free Inference
      (Pacchiardi & Dutta, JMLR 2022) https://arxiv.org/abs/2012.10903

    | Partially Exchangeable Networks and Architectures for Learning Summary Statistics
      in Approximate Bayesian Computation (Wiqvist et al., 2019)
      https://arxiv.org/abs/1901.10230
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .mlp import MLP
from .pooled_nets import PooledFeatures

__all__ = ["RingMarkovNet"]


class RingMarkovNet(nn.Module):
    r"""Order-one Markov network over time, translation-equivariant around a ring of sites.

    .. math:: g(x) = \rho\Big(h(x_1),\ \operatorname{pool}_{t=2}^{T} \operatorname{pool}_{k=1}^{K}
        \phi(w_{t,k})\Big)

    with the local windows :math:`w_{t,k}` of radius :math:`m` (see the module docstring), the
    window features :math:`\phi` of :class:`~ebm_lfi.energy.pooled_nets.PooledFeatures` and the
    head :math:`h(x_1) = (x_{1,k},\ x_{1,k} x_{1,k+j})_{k,\ 0 \le j \le m}`: the first state
    and the products of sites at most :math:`m` apart in it, :math:`K(m + 2)` terms.

    Arguments:
        sites: Number of sites :math:`K \ge 2m + 1`.
        out_features: Output size.
        radius: Neighbourhood radius :math:`m \ge 0` on the ring.
        hidden: Hidden widths of :math:`\rho` (default ``()``: linear).
        embedding: Output size of the learned window network (``0``: none).
        activation: Activation name (see :class:`~ebm_lfi.energy.mlp.MLP`).
        pool: ``"sum"`` (default) or ``"mean"`` over the windows.
        quadratic: Include the window monomials.
        window_hidden: Hidden widths of the learned window network.
        head: Add the head :math:`h(x_1)` (without it the network is invariant to rotations).

    Shapes:
        Input :math:`(n, T, K)` with :math:`T \ge 2`; output :math:`(n, D_{out})`.

    Example:
        >>> net = RingMarkovNet(8, 3, radius=1, head=False)
        >>> x = torch.randn(2, 5, 8)
        >>> torch.allclose(net(x), net(torch.roll(x, 3, dims=2)), atol=1e-5)
        True
    """

    def __init__(
        self,
        sites: int,
        out_features: int,
        radius: int = 2,
        hidden: Sequence[int] = (),
        embedding: int = 0,
        activation: str = "silu",
        pool: str = "sum",
        quadratic: bool = True,
        window_hidden: Sequence[int] = (16,),
        head: bool = True,
    ):
        super().__init__()
        sites, radius = int(sites), int(radius)
        if radius < 0 or sites < 2 * radius + 1:
            raise ValueError(
                f"a ring of {sites} sites needs 0 <= radius <= (sites - 1) / 2, got {radius}"
            )
        self.config = {
            "sites": sites,
            "out_features": int(out_features),
            "radius": radius,
            "hidden": [int(h) for h in hidden],
            "embedding": int(embedding),
            "activation": str(activation),
            "pool": str(pool),
            "quadratic": bool(quadratic),
            "window_hidden": [int(h) for h in window_hidden],
            "head": bool(head),
        }
        self.sites, self.radius, self.head = sites, radius, bool(head)
        width = 2 * radius + 1
        self.features = PooledFeatures(
            2 * width, int(embedding), window_hidden, activation, pool, quadratic
        )
        head_size = sites * (radius + 2) if self.head else 0
        self.rho = MLP(self.features.out_features + head_size, out_features, hidden, activation)

    @property
    def hessian_colors(self) -> int | None:
        r"""With a linear :math:`\rho`, coordinates of the flattened series whose time steps
        differ by two or more never interact, so :math:`2K` probes give the Hessian diagonal
        (see :func:`~ebm_lfi.losses.score_matching.batched_score_and_hessian_diagonal`).
        ``None`` otherwise."""
        return None if self.config["hidden"] else 2 * self.sites

    @property
    def quadratic_in_input(self) -> bool:
        r"""Whether every output is a polynomial of degree at most two in the series."""
        return self.features.phi is None and self.features.quadratic and not self.config["hidden"]

    def _neighbourhoods(self, x: Tensor) -> Tensor:
        r"""The sites :math:`k - m, \dots, k + m` around each site, shape :math:`(n, T, K, 2m+1)`
        (``torch.roll`` rather than circular padding, so ``torch.func`` can batch it)."""
        m = self.radius
        return torch.stack([torch.roll(x, -j, dims=2) for j in range(-m, m + 1)], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        r"""Compute :math:`\rho\big(h(x_1), \operatorname{pool}_{t,k} \phi(w_{t,k})\big)`.

        Arguments:
            x: Series of ring states, shape :math:`(n, T, K)`, :math:`T \ge 2`.

        Returns:
            The outputs, shape :math:`(n, D_{out})`.

        Raises:
            ValueError: If ``x`` has another shape.
        """
        if x.ndim != 3 or x.shape[-1] != self.sites or x.shape[1] < 2:
            raise ValueError(
                f"RingMarkovNet expects (n, T, {self.sites}) inputs with T >= 2, "
                f"got {tuple(x.shape)}"
            )
        n, T, K = x.shape
        near = self._neighbourhoods(x)  # (n, T, K, 2m + 1)
        windows = torch.cat([near[:, :-1], near[:, 1:]], dim=-1)  # (n, T - 1, K, 2(2m + 1))
        parts = [self.features(windows.reshape(n, (T - 1) * K, windows.shape[-1]))]
        if self.head:
            first = near[:, 0]  # (n, K, 2m + 1), the centre at index m
            centre = first[..., self.radius]
            products = centre[..., None] * first[..., self.radius :]  # x_1k x_1(k+j), j = 0..m
            parts += [centre, products.reshape(n, -1)]
        return self.rho(torch.cat(parts, dim=-1))
