r"""The factory of the statistics networks :math:`s(x)`, :math:`b(x)`, and their saved configs.

Three built-in architectures, all with smooth activations by default (score matching needs
:math:`\partial^2_{x_i} f`; a piecewise-linear activation such as ReLU has zero curvature almost
everywhere, so the Hessian diagonal it yields is the zero function):

* :class:`~ebm_lfi.energy.mlp.MLP`: a multi-layer perceptron acting on the last axis (or on the
  flattened event).
* :class:`~ebm_lfi.energy.pooled_nets.ExchangeableNet`: a deep-sets / PEN network for an iid
  sample of :math:`m` draws, :math:`\rho\big(\operatorname{pool}_{j} \phi(x_j)\big)`, invariant
  to permuting the draws (Zaheer et al., 2017, https://arxiv.org/abs/1703.06114).
* :class:`~ebm_lfi.energy.pooled_nets.MarkovNet`: the partially exchangeable network of Wiqvist
  et al. (2019, https://arxiv.org/abs/1901.10230) for a Markov series of order :math:`r`:
  :math:`\rho\big(x_{1:r}, \operatorname{pool}_{t} \phi(x_{t:t+r})\big)` over the overlapping
  windows of length :math:`r + 1`.
* :class:`~ebm_lfi.energy.ring_nets.RingMarkovNet`: for series of states on a ring of :math:`K`
  sites, :math:`(T, K)`: order-one Markov over time and translation-equivariant around the
  ring (local windows of radius :math:`m` in space and two steps in time, a circular
  convolution over sites), pooled over time and sites, plus a head for the first state.

The structured networks share :class:`~ebm_lfi.energy.pooled_nets.PooledFeatures`: monomials up
to degree two of each draw or window plus a small learned network, sum-pooled, read out linearly
by default, so that their outputs have the form of the statistics of an iid / Markov exponential
family.

This module builds them (:func:`statistics_network`) and describes them for saving
(:func:`net_config`, :func:`build_net`). Any user :class:`torch.nn.Module` with the right input
and output shapes works in their place; built-in networks carry a JSON-able :attr:`config` so
that models made of them can be saved.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from .gaussian_nets import GaussianNatural, GaussianStatistics
from .mlp import MLP
from .pooled_nets import ExchangeableNet, MarkovNet
from .ring_nets import RingMarkovNet

__all__ = [
    "frozen",
    "statistics_network",
    "net_config",
    "build_net",
]


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
    radius: int = 2,
) -> tuple[nn.Module, tuple[int, ...]]:
    r"""A network :math:`(n, *x_{shape}) \to (n, D_{out})` suited to the data's structure.

    Arguments:
        x_shape: Shape of one data point.
        out_features: Output size :math:`D_{out}`.
        structure: ``"mlp"`` (any shape, flattened), ``"iid"`` (:math:`(m,)` or :math:`(m, d)`
            exchangeable draws, :class:`~ebm_lfi.energy.pooled_nets.ExchangeableNet`) or
            ``"markov"`` (a series of shape :math:`(T,)` or :math:`(T, d)`,
            :class:`~ebm_lfi.energy.pooled_nets.MarkovNet` of order ``order``) or ``"ring"``
            (a series of ring states :math:`(T, K)`,
            :class:`~ebm_lfi.energy.ring_nets.RingMarkovNet` of radius ``radius``).
        hidden: Hidden widths of the network (of :math:`\rho` for ``"iid"`` / ``"markov"``);
            default ``(64, 64)`` for ``"mlp"`` and ``()`` otherwise: a linear read-out of the
            sum-pooled draw / window features, the form of the statistics of an iid or Markov
            exponential family, whose log-likelihood is a sum over draws / windows.
        activation, order, pool: Passed to the network.
        embedding: Size of the learned draw / window features (default 8 for ``"iid"``; 0 for
            ``"markov"``, whose window monomials alone cost about 1.5 sliced-SM epochs of the
            MLP, where 8 learned features cost 12: model choice adds them when they pay).
        quadratic, window_hidden: Draw / window features (see
            :class:`~ebm_lfi.energy.pooled_nets.PooledFeatures`).
        radius: Neighbourhood radius on the ring (``"ring"``).

    Returns:
        The network and the event axes over which standardisation should pool (``(0,)``
        for draws or time steps, ``(0, 1)`` for time steps and sites of a ring, so that it
        commutes with the structure).
    """
    x_shape = tuple(int(s) for s in x_shape)
    if hidden is None:
        hidden = (64, 64) if structure == "mlp" else ()
    if structure == "mlp":
        return MLP(math.prod(x_shape), out_features, hidden, activation, flatten=True), ()
    if structure == "ring":
        if len(x_shape) != 2 or x_shape[0] < 2:
            raise ValueError(f"structure='ring' needs x_shape (T, K) with T >= 2, got {x_shape}")
        emb = int(embedding) if embedding is not None else 0
        net = RingMarkovNet(
            x_shape[1],
            out_features,
            radius,
            hidden,
            emb,
            activation,
            pool,
            quadratic,
            window_hidden,
        )
        return net, (0, 1)
    if structure not in ("iid", "markov"):
        raise ValueError(f"structure must be 'mlp', 'iid', 'markov' or 'ring', got {structure!r}")
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
    "RingMarkovNet": RingMarkovNet,
    "GaussianStatistics": GaussianStatistics,
    "GaussianNatural": GaussianNatural,
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


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Hold the module's weights out of autograd for the block (their ``requires_grad`` flags
    restored after it): to sample from a fitted model, to evaluate a loss without an update,
    or to fit a head with the rest fixed. Gradients in the inputs still flow."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
