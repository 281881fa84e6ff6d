r"""Networks for the statistics :math:`s(x)`, base measure :math:`b(x)` and natural parameters.

Three built-in architectures, all with smooth activations by default (score matching needs
:math:`\partial^2_{x_i} f`; a piecewise-linear activation such as ReLU has zero curvature almost
everywhere, so the Hessian diagonal it yields is the zero function):

* :class:`MLP`: a multi-layer perceptron acting on the last axis (or on the flattened event).
* :class:`ExchangeableNet`: a deep-sets / PEN network for an iid sample of :math:`m` draws,
  :math:`\rho\big(\operatorname{pool}_{j} \phi(x_j)\big)`, invariant to permuting the draws
  (Zaheer et al., 2017, https://arxiv.org/abs/1703.06114).
* :class:`MarkovNet`: the partially exchangeable network of Wiqvist et al. (2019,
  https://arxiv.org/abs/1901.10230) for a Markov series of order :math:`r`:
  :math:`\rho\big(x_{1:r}, \operatorname{pool}_{t} \phi(x_{t:t+r})\big)` over the overlapping
  windows of length :math:`r + 1`.

Both structured networks share :class:`PooledFeatures`: monomials up to degree two of each draw or
window plus a small learned network, sum-pooled, read out linearly by default, so that their
outputs have the form of the statistics of an iid / Markov exponential family.

Any user :class:`torch.nn.Module` with the right input and output shapes works in their place;
built-in networks carry a JSON-able :attr:`config` so that models made of them can be saved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "statistics_network",
    "MLP",
    "PooledFeatures",
    "ExchangeableNet",
    "MarkovNet",
    "ACTIVATIONS",
    "piecewise_linear_modules",
    "net_config",
    "build_net",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
}

_PIECEWISE_LINEAR = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Threshold,
)


def piecewise_linear_modules(module: nn.Module) -> list[str]:
    r"""Names of the submodules of ``module`` that are piecewise-linear activations.

    Such activations (ReLU, LeakyReLU, Hardtanh, ...) have zero second derivative almost
    everywhere, which makes the score-matching objectives degenerate.

    Arguments:
        module: Any module.

    Returns:
        The qualified names (``"stats.net.1"``, ...) of the offending submodules.
    """
    return [
        name or "<root>" for name, m in module.named_modules() if isinstance(m, _PIECEWISE_LINEAR)
    ]


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    r"""Multi-layer perceptron :math:`\mathbb{R}^{D_{in}} \to \mathbb{R}^{D_{out}}`.

    Arguments:
        in_features: Input size :math:`D_{in}`.
        out_features: Output size :math:`D_{out}`.
        hidden: Widths of the hidden layers (``()`` gives a single linear layer).
        activation: One of :data:`ACTIVATIONS` (``"softplus"``, ``"tanh"``, ``"silu"``,
            ``"elu"``, ``"gelu"``; ``"relu"`` is allowed but refused by the score-matching losses).
        flatten: If ``True``, an input :math:`(n, *event)` is first flattened to
            :math:`(n, \prod event)`; otherwise the network acts on the last axis, shape
            :math:`(*, D_{in}) \to (*, D_{out})`.

    Example:
        >>> net = MLP(3, 2, hidden=(8,))
        >>> net(torch.randn(5, 3)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "softplus",
        flatten: bool = False,
    ):
        super().__init__()
        hidden = [int(h) for h in hidden]
        self.config = {
            "in_features": int(in_features),
            "out_features": int(out_features),
            "hidden": hidden,
            "activation": str(activation),
            "flatten": bool(flatten),
        }
        self.in_features, self.out_features, self.flatten = in_features, out_features, flatten
        layers: list[nn.Module] = []
        widths = [int(in_features), *hidden]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), _activation(activation)]
        layers.append(nn.Linear(widths[-1], int(out_features)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"MLP expects inputs with last axis of size {self.in_features}, got shape "
                f"{tuple(x.shape)}"
            )
        return self.net(x)


def _pool(h: Tensor, pool: str, dim: int) -> Tensor:
    return h.mean(dim) if pool == "mean" else h.sum(dim)


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
        activation: Activation name (see :class:`MLP`).
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
        activation: Activation name (see :class:`MLP`).
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
        hidden, window_hidden = [int(h) for h in hidden], [int(h) for h in window_hidden]
        self.config = {
            "in_features": int(in_features),
            "out_features": int(out_features),
            "hidden": hidden,
            "embedding": int(embedding),
            "activation": str(activation),
            "pool": pool,
            "quadratic": bool(quadratic),
            "window_hidden": window_hidden,
        }
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

    def forward(self, x: Tensor) -> Tensor:
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
    the form of its statistics; for a stationary Gaussian chain the pooled monomials are exactly
    the sufficient statistics.

    Arguments:
        in_features: Size :math:`d` of one time step (``1`` for scalar series).
        out_features: Output size.
        order: Markov order :math:`r \geq 1`; :math:`\phi` sees windows of :math:`r + 1` steps.
        hidden: Hidden widths of :math:`\rho` (default ``()``: linear).
        embedding: Output size of the learned window network (``0``: none).
        activation: Activation name (see :class:`MLP`).
        pool: ``"sum"`` (default) or ``"mean"`` over the windows.
        quadratic: Include the window monomials.
        window_hidden: Hidden widths of the learned window network.

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
    ):
        super().__init__()
        if int(order) < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        hidden, window_hidden = [int(h) for h in hidden], [int(h) for h in window_hidden]
        self.config = {
            "in_features": int(in_features),
            "out_features": int(out_features),
            "order": int(order),
            "hidden": hidden,
            "embedding": int(embedding),
            "activation": str(activation),
            "pool": pool,
            "quadratic": bool(quadratic),
            "window_hidden": window_hidden,
        }
        self.in_features, self.order, self.pool = int(in_features), int(order), pool
        q = (self.order + 1) * self.in_features
        self.features = PooledFeatures(q, embedding, window_hidden, activation, pool, quadratic)
        self.rho = MLP(
            self.features.out_features + self.order * self.in_features,
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

    def forward(self, x: Tensor) -> Tensor:
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
        return self.rho(torch.cat([head, self.features(windows)], dim=-1))


def statistics_network(
    x_shape: Sequence[int],
    out_features: int,
    structure: str = "mlp",
    *,
    hidden: Sequence[int] | None = None,
    activation: str = "silu",
    embedding: int | None = None,
    order: int = 1,
    pool: str = "sum",
    quadratic: bool = True,
    window_hidden: Sequence[int] = (16,),
) -> tuple[nn.Module, tuple[int, ...]]:
    r"""A network :math:`(n, *x_{shape}) \to (n, D_{out})` suited to the data's structure.

    Arguments:
        x_shape: Shape of one data point.
        out_features: Output size :math:`D_{out}`.
        structure: ``"mlp"`` (any shape, flattened), ``"iid"`` (:math:`(m,)` or :math:`(m, d)`
            exchangeable draws, :class:`ExchangeableNet`) or ``"markov"`` (a series of shape
            :math:`(T,)` or :math:`(T, d)`, :class:`MarkovNet` of order ``order``).
        hidden: Hidden widths of the network (of :math:`\rho` for ``"iid"`` / ``"markov"``);
            default ``(64, 64)`` for ``"mlp"`` and ``()`` otherwise: a linear read-out of the
            sum-pooled draw / window features, the form of the statistics of an iid or Markov
            exponential family, whose log-likelihood is a sum over draws / windows.
        activation, order, pool: Passed to the network.
        embedding: Size of the learned draw / window features (default 8 for ``"iid"``; 0 for
            ``"markov"``, whose window monomials alone cost about 1.5 sliced-SM epochs of the
            MLP, where 8 learned features cost 12: model choice adds them when they pay).
        quadratic, window_hidden: Draw / window features (see :class:`PooledFeatures`).

    Returns:
        The network and the event axes over which standardisation should pool (``(0,)``
        for draws or time steps, so that it commutes with the structure).
    """
    x_shape = tuple(int(s) for s in x_shape)
    if hidden is None:
        hidden = (64, 64) if structure == "mlp" else ()
    if structure == "mlp":
        return MLP(math.prod(x_shape), out_features, hidden, activation, flatten=True), ()
    if structure not in ("iid", "markov"):
        raise ValueError(f"structure must be 'mlp', 'iid' or 'markov', got {structure!r}")
    if len(x_shape) not in (1, 2):
        raise ValueError(f"structure={structure!r} needs x_shape (m,) or (m, d), got {x_shape}")
    d = 1 if len(x_shape) == 1 else x_shape[1]
    emb = int(embedding) if embedding is not None else (8 if structure == "iid" else 0)
    if structure == "iid":
        net = ExchangeableNet(
            d, out_features, hidden, emb, activation, pool, quadratic, window_hidden
        )
        return net, (0,)
    if x_shape[0] <= order:
        raise ValueError(f"a series of length {x_shape[0]} is too short for order {order}")
    net = MarkovNet(d, out_features, order, hidden, emb, activation, pool, quadratic, window_hidden)
    return net, (0,)


_REGISTRY: dict[str, type[nn.Module]] = {
    "MLP": MLP,
    "ExchangeableNet": ExchangeableNet,
    "MarkovNet": MarkovNet,
}


def net_config(net: nn.Module) -> dict:
    r"""JSON-able description ``{"class": ..., "kwargs": ...}`` of a built-in network.

    Raises:
        TypeError: If ``net`` is not one of the built-in networks (a user module cannot be
            rebuilt from a config; save its ``state_dict`` yourself).
    """
    name = type(net).__name__
    if _REGISTRY.get(name) is not type(net):
        raise TypeError(
            f"cannot describe a {name} by a config: only the built-in networks "
            f"{sorted(_REGISTRY)} can be saved with the model; save a model built from user "
            "modules with torch.save(model.state_dict(), path) and rebuild it in code"
        )
    return {"class": name, "kwargs": dict(net.config)}


def build_net(config: dict) -> nn.Module:
    r"""Rebuild a built-in network from :func:`net_config`'s description."""
    try:
        cls = _REGISTRY[config["class"]]
        return cls(**config["kwargs"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"invalid network config {config!r}: {e}") from e
