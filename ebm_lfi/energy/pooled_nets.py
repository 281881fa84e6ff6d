r"""Structured statistics networks: exchangeable draws and Markov series.

Both pool features of small pieces of the data, :math:`\operatorname{pool}_t \phi(w_t)`, over the
draws of an iid sample (:class:`ExchangeableNet`) or over the overlapping windows of a Markov
series (:class:`MarkovNet`), through :class:`PooledFeatures`: monomials up to degree two of each
piece plus a small learned network. The log-likelihood of an iid sample or of a Markov chain is a
sum of per-draw or per-transition terms, so sum pooling and a linear read-out (the defaults) give
outputs of the form of the statistics of such an exponential family; a linear read-out also makes
the Hessian of any linear functional banded (:attr:`hessian_colors`), which exact score matching
uses.

References:
    | Deep Sets (Zaheer et al., 2017) https://arxiv.org/abs/1703.06114

    | Partially Exchangeable Networks and Architectures for Learning Summary Statistics
      in Approximate Bayesian Computation (Wiqvist et al., 2019)
      https://arxiv.org/abs/1901.10230
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .mlp import MLP

__all__ = ["PooledFeatures", "ExchangeableNet", "MarkovNet"]


def _pool(h: Tensor, pool: str, dim: int) -> Tensor:
    return h.mean(dim) if pool == "mean" else h.sum(dim)


def _config(arguments: dict) -> dict:
    """The JSON-able config of a pooled network from its constructor's arguments."""
    kinds = {"in_features": int, "out_features": int, "order": int, "embedding": int}
    kinds |= {"activation": str, "pool": str, "quadratic": bool, "edges": bool}
    config = {k: kinds[k](v) for k, v in arguments.items() if k in kinds}
    config |= {k: [int(h) for h in arguments[k]] for k in ("hidden", "window_hidden")}
    return config


class PooledFeatures(nn.Module):
    r"""Pooled features of a set of windows: :math:`\operatorname{pool}_t \phi(w_t)`.

    .. math:: \phi(w) = \big(w,\ \{w_a w_b\}_{a \le b},\ \phi_{\text{net}}(w)\big)

    joins the first- and second-order monomials of a window :math:`w \in \mathbb{R}^q`
    (optional) and a small learned network (optional). With sum pooling, a linear function of
    these features is the natural form of the statistics of an iid or Markov exponential family,
    whose log-likelihood is a sum of per-draw or per-transition terms; the monomials alone give
    the sufficient statistics of Gaussian models (for AR(2), the lagged products
    :math:`\sum_t x_{t-i} x_{t-j}`) at the cost of one batched matrix product.

    Arguments:
        window: Window size :math:`q`.
        embedding: Output size of :math:`\phi_{\text{net}}` (``0``: none).
        hidden: Hidden widths of :math:`\phi_{\text{net}}`.
        activation: Activation name (see :class:`~ebm_lfi.energy.mlp.MLP`).
        pool: ``"sum"`` or ``"mean"`` over the windows.
        quadratic: Include the monomials.

    Shapes:
        Input :math:`(n, W, q)`; output :math:`(n, F)` with
        :math:`F = q + q(q+1)/2 + \text{embedding}` (without monomials: ``embedding``).
    """

    def __init__(
        self,
        window: int,
        embedding: int,
        hidden: Sequence[int],
        activation: str,
        pool: str,
        quadratic: bool,
    ):
        super().__init__()
        if pool not in ("mean", "sum"):
            raise ValueError(f"pool must be 'mean' or 'sum', got {pool!r}")
        if not quadratic and int(embedding) < 1:
            raise ValueError("no window features: set quadratic=True or embedding >= 1")
        q = int(window)
        self.pool, self.quadratic = pool, bool(quadratic)
        self.phi = MLP(q, int(embedding), hidden, activation) if int(embedding) else None
        rows, cols = torch.triu_indices(q, q)
        self.register_buffer("_triu", rows * q + cols, persistent=False)
        self.out_features = (q + q * (q + 1) // 2 if self.quadratic else 0) + int(embedding)

    def forward(self, windows: Tensor) -> Tensor:
        r"""Pool the window features over the windows.

        Arguments:
            windows: The windows :math:`w_t`, shape :math:`(n, W, q)`.

        Returns:
            The pooled features, shape :math:`(n, F)`: the sums (means if ``pool="mean"``) over
            :math:`t` of :math:`w_t`, then of :math:`w_{t,a} w_{t,b}` for :math:`a \le b` in
            row-major order (if ``quadratic``), then of :math:`\phi_{\text{net}}(w_t)` (if
            ``embedding``).
        """
        n, num = windows.shape[0], windows.shape[1]
        scale = 1.0 / num if self.pool == "mean" else 1.0
        features = []
        if self.quadratic:
            second = torch.einsum("ntq,ntr->nqr", windows, windows).reshape(n, -1)
            features += [windows.sum(1) * scale, second[:, self._triu] * scale]
        if self.phi is not None:
            features.append(_pool(self.phi(windows), self.pool, 1))
        return torch.cat(features, dim=-1)


class ExchangeableNet(nn.Module):
    r"""Permutation-invariant network for an iid sample :math:`x_{1:m}`.

    .. math:: g(x_{1:m}) = \rho\Big(\operatorname{pool}_{j=1}^m \phi(x_j)\Big)

    with the draw features :math:`\phi` of :class:`PooledFeatures` (monomials up to degree two
    and a small learned network). By default :math:`\rho` is linear and the pooling a sum, so
    the outputs are sums of per-draw features: the statistics of an iid exponential family
    (Zaheer et al., 2017, https://arxiv.org/abs/1703.06114, for the deep-sets form).

    Arguments:
        in_features: Size :math:`d` of one draw (``1`` for scalar draws).
        out_features: Output size.
        hidden: Hidden widths of :math:`\rho` (default ``()``: linear).
        embedding: Output size of the learned draw network (``0``: none).
        activation: Activation name (see :class:`~ebm_lfi.energy.mlp.MLP`).
        pool: ``"sum"`` (default) or ``"mean"``.
        quadratic: Include the draw monomials :math:`x_j` and :math:`x_j x_j^\top`.
        window_hidden: Hidden widths of the learned draw network.

    Shapes:
        Input :math:`(n, m)` (scalar draws, ``in_features=1``) or :math:`(n, m, d)`; output
        :math:`(n, D_{out})`.

    Example:
        >>> net = ExchangeableNet(1, 3, hidden=(8,), embedding=4)
        >>> x = torch.randn(2, 10)
        >>> torch.allclose(net(x), net(x[:, torch.randperm(10)]), atol=1e-6)
        True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (),
        embedding: int = 8,
        activation: str = "softplus",
        pool: str = "sum",
        quadratic: bool = True,
        window_hidden: Sequence[int] = (16,),
    ):
        super().__init__()
        self.config = _config(locals())
        hidden, window_hidden = self.config["hidden"], self.config["window_hidden"]
        self.in_features, self.pool = int(in_features), pool
        self.features = PooledFeatures(
            self.in_features, embedding, window_hidden, activation, pool, quadratic
        )
        self.rho = MLP(self.features.out_features, out_features, hidden, activation)

    @property
    def hessian_colors(self) -> int | None:
        r"""With a linear :math:`\rho`, any linear functional of the output is a sum of per-draw
        terms, so two coordinates of the flattened input interact only within one draw: its
        Hessian needs :math:`d` probes (see
        :func:`~ebm_lfi.losses.batched_score_and_hessian_diagonal`). ``None`` otherwise."""
        return None if self.config["hidden"] else self.in_features

    @property
    def quadratic_in_input(self) -> bool:
        r"""Whether every output is a polynomial of degree at most two in the input (monomials
        only, linear read-out): the family is then Gaussian in the data."""
        return self.features.phi is None and self.features.quadratic and not self.config["hidden"]

    def forward(self, x: Tensor) -> Tensor:
        r"""Compute :math:`\rho\big(\operatorname{pool}_{j} \phi(x_j)\big)`.

        Arguments:
            x: An iid sample per row, shape :math:`(n, m, d)`, or :math:`(n, m)` if
                ``in_features=1``.

        Returns:
            The outputs, shape :math:`(n, D_{out})`, invariant to permuting the :math:`m` draws.

        Raises:
            ValueError: If ``x`` has another shape.
        """
        if x.ndim == 2 and self.in_features == 1:
            x = x.unsqueeze(-1)
        if x.ndim != 3 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"ExchangeableNet expects (n, m) or (n, m, {self.in_features}) inputs, got "
                f"{tuple(x.shape)}"
            )
        return self.rho(self.features(x))


class MarkovNet(nn.Module):
    r"""Partially exchangeable network for a Markov time series of order :math:`r`.

    .. math:: g(x_{1:T}) = \rho\Big(x_{1:r},\ \operatorname{pool}_{t=1}^{T-r}
        \phi(w_t)\Big), \qquad w_t = x_{t:t+r},

    over the overlapping windows :math:`w_t` of :math:`r + 1` steps, with the window features
    :math:`\phi` of :class:`PooledFeatures` (monomials up to degree two and a small learned
    network). The log-likelihood of a Markov chain of order :math:`r`,
    :math:`\log p(x_{1:r}) + \sum_t \log p(x_{t+r} \mid x_{t:t+r-1})`, is a sum over windows plus
    a head term, so with sum pooling and a linear :math:`\rho` (the defaults) the outputs have
    the form of its statistics. With ``edges`` (default), :math:`\rho` also sees the last
    :math:`r` steps and the degree-two monomials of the first and last :math:`r` steps, the
    boundary terms of a Gaussian chain's quadratic form (e.g. AR(2) started at zero), so that
    the window and edge monomials are exactly the sufficient statistics of a Gaussian Markov
    chain of order :math:`r`.

    Arguments:
        in_features: Size :math:`d` of one time step (``1`` for scalar series).
        out_features: Output size.
        order: Markov order :math:`r \geq 1`; :math:`\phi` sees windows of :math:`r + 1` steps.
        hidden: Hidden widths of :math:`\rho` (default ``()``: linear).
        embedding: Output size of the learned window network (``0``: none).
        activation: Activation name (see :class:`~ebm_lfi.energy.mlp.MLP`).
        pool: ``"sum"`` (default) or ``"mean"`` over the windows.
        quadratic: Include the window monomials.
        window_hidden: Hidden widths of the learned window network.
        edges: Add the last :math:`r` steps and the edge monomials to :math:`\rho`'s input.

    Shapes:
        Input :math:`(n, T)` (``in_features=1``) or :math:`(n, T, d)` with :math:`T > r`;
        output :math:`(n, D_{out})`.

    References:
        | Partially Exchangeable Networks and Architectures for Learning Summary Statistics
          in Approximate Bayesian Computation (Wiqvist et al., 2019)
        | https://arxiv.org/abs/1901.10230

    Example:
        >>> net = MarkovNet(1, 2, order=2, hidden=(8,), embedding=4)
        >>> net(torch.randn(5, 50)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        order: int = 1,
        hidden: Sequence[int] = (),
        embedding: int = 8,
        activation: str = "softplus",
        pool: str = "sum",
        quadratic: bool = True,
        window_hidden: Sequence[int] = (16,),
        edges: bool = True,
    ):
        super().__init__()
        if int(order) < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.config = _config(locals())
        hidden, window_hidden = self.config["hidden"], self.config["window_hidden"]
        self.in_features, self.order, self.pool = int(in_features), int(order), pool
        q = (self.order + 1) * self.in_features
        self.features = PooledFeatures(q, embedding, window_hidden, activation, pool, quadratic)
        h = self.order * self.in_features
        self.edges = bool(edges)
        rows, cols = torch.triu_indices(h, h)
        self.register_buffer("_edge_triu", rows * h + cols, persistent=False)
        edge = h + h * (h + 1) if self.edges else 0
        self.rho = MLP(
            self.features.out_features + h + edge,
            out_features,
            hidden,
            activation,
        )

    @property
    def hessian_colors(self) -> int | None:
        r"""With a linear :math:`\rho`, any linear functional of the output is a sum of window
        terms plus a linear head, so coordinates of the flattened series more than
        :math:`(r + 1) d - 1` apart never interact: :math:`(r + 1) d` probes give the Hessian
        diagonal (see :func:`~ebm_lfi.losses.batched_score_and_hessian_diagonal`). ``None``
        otherwise."""
        return None if self.config["hidden"] else (self.order + 1) * self.in_features

    @property
    def quadratic_in_input(self) -> bool:
        r"""Whether every output is a polynomial of degree at most two in the series (window
        monomials only, linear read-out): the family is then Gaussian in the data."""
        return self.features.phi is None and self.features.quadratic and not self.config["hidden"]

    def forward(self, x: Tensor) -> Tensor:
        r"""Compute :math:`\rho\big(x_{1:r},\ \operatorname{pool}_{t} \phi(x_{t:t+r}), \dots\big)`.

        :math:`\rho`'s input joins, in this order, the first :math:`r` steps, the pooled window
        features and, with ``edges``, the degree-two monomials (:math:`a \le b`) of the first
        and of the last :math:`r` steps, then the last :math:`r` steps.

        Arguments:
            x: A series per row, shape :math:`(n, T, d)`, or :math:`(n, T)` if
                ``in_features=1``, with :math:`T > r`.

        Returns:
            The outputs, shape :math:`(n, D_{out})`.

        Raises:
            ValueError: If ``x`` has another shape or :math:`T \le r`.
        """
        if x.ndim == 2 and self.in_features == 1:
            x = x.unsqueeze(-1)
        if x.ndim != 3 or x.shape[-1] != self.in_features or x.shape[1] <= self.order:
            raise ValueError(
                f"MarkovNet(order={self.order}) expects (n, T) or (n, T, {self.in_features}) "
                f"inputs with T > {self.order}, got {tuple(x.shape)}"
            )
        n, T, r = x.shape[0], x.shape[1], self.order
        # overlapping windows x[t : t + r + 1], (n, T - r, (r + 1) d); slices instead of
        # Tensor.unfold so that torch.func.vmap has batching rules for the double backward
        windows = torch.cat([x[:, i : T - r + i] for i in range(r + 1)], dim=-1)
        head = x[:, :r].reshape(n, r * self.in_features)
        parts = [head, self.features(windows)]
        if self.edges:
            tail = x[:, T - r :].reshape(n, r * self.in_features)
            for end in (head, tail):
                parts.append((end[:, :, None] * end[:, None, :]).reshape(n, -1)[:, self._edge_triu])
            parts.append(tail)
        return self.rho(torch.cat(parts, dim=-1))
