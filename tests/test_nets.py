import json

import pytest
import torch
from torch import nn

from ebm_lfi.energy.mlp import MLP, piecewise_linear_modules
from ebm_lfi.energy.nets import build_net, net_config
from ebm_lfi.energy.pooled_nets import ExchangeableNet, MarkovNet

DT = torch.float64


def make(cls, **kw):
    torch.manual_seed(0)
    return cls(**kw).to(DT)


def test_mlp_shapes_and_flatten():
    net = make(MLP, in_features=3, out_features=2, hidden=(8, 8))
    assert net(torch.randn(5, 3, dtype=DT)).shape == (5, 2)
    assert net(torch.randn(4, 5, 3, dtype=DT)).shape == (4, 5, 2)
    flat = make(MLP, in_features=6, out_features=1, hidden=(), flatten=True)
    assert flat(torch.randn(5, 2, 3, dtype=DT)).shape == (5, 1)
    assert sum(isinstance(m, nn.Linear) for m in flat.modules()) == 1
    with pytest.raises(ValueError, match="last axis of size 3"):
        net(torch.randn(5, 4, dtype=DT))
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(3, 2, activation="sigmoidish")


@pytest.mark.parametrize("pool", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(7, 12), (7, 12, 3)])
def test_exchangeable_permutation_invariance(pool, shape):
    d = 1 if len(shape) == 2 else shape[2]
    net = make(ExchangeableNet, in_features=d, out_features=4, hidden=(16,), embedding=5, pool=pool)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=gen, dtype=DT)
    out = net(x)
    assert out.shape == (7, 4)
    for _ in range(3):
        perm = torch.randperm(shape[1], generator=gen)
        torch.testing.assert_close(net(x[:, perm]), out, rtol=1e-12, atol=1e-12)
    # not invariant to changing a single draw (the test can fail)
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert (net(x2) - out).abs().max() > 1e-3


def manual_features(windows, features, quadratic=True, pool="sum"):
    """Pooled draw / window features written out window by window."""
    parts = []
    for w in windows:  # each (n, q)
        q = w.shape[1]
        rows, cols = torch.triu_indices(q, q)
        f = [w, (w[:, :, None] * w[:, None, :])[:, rows, cols]] if quadratic else []
        if features.phi is not None:
            f.append(features.phi(w))
        parts.append(torch.cat(f, -1))
    stacked = torch.stack(parts, 1)
    return stacked.sum(1) if pool == "sum" else stacked.mean(1)


@pytest.mark.parametrize("quadratic, embedding", [(True, 4), (False, 4), (True, 0)])
def test_exchangeable_matches_definition(quadratic, embedding):
    net = make(
        ExchangeableNet,
        in_features=2,
        out_features=3,
        hidden=(8,),
        embedding=embedding,
        quadratic=quadratic,
    )
    x = torch.randn(5, 6, 2, dtype=DT)
    pooled = manual_features([x[:, j] for j in range(6)], net.features, quadratic)
    torch.testing.assert_close(net(x), net.rho(pooled), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(n, m, 2\)"):
        net(torch.randn(5, 6, 3, dtype=DT))
    with pytest.raises(ValueError, match="no window features"):
        ExchangeableNet(2, 3, embedding=0, quadratic=False)


def test_default_read_out_is_linear_in_sum_pooled_features():
    # the exponential-family form: statistics are sums of per-draw features
    net = make(ExchangeableNet, in_features=1, out_features=2)
    assert sum(isinstance(m, nn.Linear) for m in net.rho.modules()) == 1
    x = torch.randn(4, 10, dtype=DT)
    bias = net.rho.net[0].bias
    halves = net(x[:, :5]) + net(x[:, 5:]) - bias
    torch.testing.assert_close(net(x), halves, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order, d", [(1, 1), (2, 1), (3, 2)])
@pytest.mark.parametrize("quadratic, pool", [(True, "sum"), (False, "mean")])
def test_markov_net_shapes_and_definition(order, d, quadratic, pool):
    net = make(
        MarkovNet,
        in_features=d,
        out_features=3,
        order=order,
        hidden=(8,),
        embedding=4,
        quadratic=quadratic,
        pool=pool,
    )
    T = 20
    x = torch.randn(6, T, d, dtype=DT)
    inp = x[..., 0] if d == 1 else x
    out = net(inp)
    assert out.shape == (6, 3)
    windows = [x[:, t : t + order + 1].reshape(6, -1) for t in range(T - order)]
    pooled = manual_features(windows, net.features, quadratic, pool)
    head, tail = x[:, :order].reshape(6, -1), x[:, T - order :].reshape(6, -1)
    h = head.shape[1]
    rows, cols = torch.triu_indices(h, h)
    edges = [(e[:, :, None] * e[:, None, :])[:, rows, cols] for e in (head, tail)]
    manual = net.rho(torch.cat([head, pooled, *edges, tail], -1))
    torch.testing.assert_close(out, manual, rtol=1e-12, atol=1e-12)
    plain = make(
        MarkovNet, in_features=d, out_features=3, order=order, hidden=(8,), embedding=4,
        quadratic=quadratic, pool=pool, edges=False,
    )  # fmt: skip
    manual = plain.rho(
        torch.cat([head, manual_features(windows, plain.features, quadratic, pool)], -1)
    )
    torch.testing.assert_close(plain(inp), manual, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=f"T > {order}"):
        net(torch.randn(2, order, d, dtype=DT))


def test_markov_net_invariant_to_reordering_transitions_with_same_head():
    # order 1: the pooled part only sees the multiset of transitions (x_t, x_{t+1})
    net = make(MarkovNet, in_features=1, out_features=2, order=1, hidden=(8,), embedding=4)
    a = torch.tensor([[0.0, 1.0, 0.0, 2.0, 0.0]], dtype=DT)  # transitions 01 10 02 20
    b = torch.tensor([[0.0, 2.0, 0.0, 1.0, 0.0]], dtype=DT)  # transitions 02 20 01 10
    torch.testing.assert_close(net(a), net(b), rtol=1e-12, atol=1e-12)
    c = torch.tensor([[0.0, 1.0, 0.0, 2.0, 1.0]], dtype=DT)
    assert (net(c) - net(a)).abs().max() > 1e-4


@pytest.mark.parametrize(
    "factory",
    [
        lambda: MLP(4, 3, hidden=(8,)),
        lambda: ExchangeableNet(2, 3, hidden=(8,), embedding=4),
        lambda: MarkovNet(1, 3, order=2, hidden=(8,), embedding=4),
    ],
    ids=["mlp", "exchangeable", "markov"],
)
def test_gradients_reach_every_parameter_and_config_round_trip(factory):
    torch.manual_seed(0)
    net = factory()
    x = {"MLP": torch.randn(5, 4), "ExchangeableNet": torch.randn(5, 6, 2)}.get(
        type(net).__name__, torch.randn(5, 9)
    )
    net(x).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    cfg = net_config(net)
    rebuilt = build_net(json.loads(json.dumps(cfg)))
    rebuilt.load_state_dict(net.state_dict())
    assert torch.equal(rebuilt(x), net(x))


def test_config_errors():
    with pytest.raises(TypeError, match="built-in"):
        net_config(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="invalid network config"):
        build_net({"class": "Nope", "kwargs": {}})
    with pytest.raises(ValueError, match="invalid network config"):
        build_net({"class": "MLP", "kwargs": {"bogus": 1}})


def test_piecewise_linear_detection():
    assert piecewise_linear_modules(MLP(2, 2, activation="softplus")) == []
    bad = piecewise_linear_modules(MLP(2, 2, hidden=(4, 4), activation="relu"))
    assert bad == ["net.1", "net.3"]
    assert piecewise_linear_modules(nn.Sequential(nn.Linear(2, 2), nn.LeakyReLU())) == ["1"]
