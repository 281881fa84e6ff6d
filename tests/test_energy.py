import json
import math

import pytest
import torch
from scipy import integrate
from torch import nn

from ebm_lfi.energy.mlp import MLP
from ebm_lfi.energy.model import FORMAT_VERSION, ExpFamEBM

DT = torch.float64


class QuadStats(nn.Module):
    """s(y) = (y, y^2), b(y) = 0 for scalar data: a Gaussian family."""

    def forward(self, y):
        return torch.cat([y, y.square(), torch.zeros_like(y)], dim=-1)


def gaussian_model(a: float, c: float, support) -> ExpFamEBM:
    nat = MLP(1, 2, hidden=())
    with torch.no_grad():
        nat.net[0].weight.zero_()
        nat.net[0].bias.copy_(torch.tensor([a, c]))
    model = ExpFamEBM(
        QuadStats(), nat, x_shape=(1,), theta_dim=1, num_statistics=2, x_support=support
    )
    return model.to(DT)


def seeded_default(*args, **kwargs) -> ExpFamEBM:
    torch.manual_seed(0)
    return ExpFamEBM.default(*args, **kwargs).to(DT)


def test_log_unnormalized_is_eta_dot_s_plus_b():
    model = seeded_default((4,), 3, num_statistics=5, hidden=(8,))
    assert model.num_statistics == 5
    gen = torch.Generator().manual_seed(0)
    y, theta = torch.randn(6, 4, generator=gen, dtype=DT), torch.rand(6, 3, generator=gen, dtype=DT)
    out = model.statistics_net(y)
    eta = model.natural_parameters(theta)
    assert model.statistics_y(y).shape == (6, 5) and eta.shape == (6, 5)
    expected = (eta * out[:, :5]).sum(-1) + out[:, 5]
    torch.testing.assert_close(model.log_unnormalized_y(y, theta), expected, rtol=1e-14, atol=1e-14)
    # broadcasting a single theta or a single y
    torch.testing.assert_close(
        model.log_unnormalized_y(y, theta[0]), model.log_unnormalized_y(y, theta[:1].expand(6, 3))
    )
    torch.testing.assert_close(
        model.log_unnormalized_y(y[:1], theta), model.log_unnormalized_y(y[:1].expand(6, 4), theta)
    )
    assert model.score_y(y[:1], theta).shape == (6, 4)


def test_the_energy_at_fixed_theta_is_the_energy_to_the_bit():
    # eta computed once: the same values as log_unnormalized_y, the same gradients in y, and
    # for a noise-conditional model at one noise scale (the view the exchange sampler reads)
    gen = torch.Generator().manual_seed(0)
    y, theta = torch.randn(6, 4, generator=gen, dtype=DT), torch.rand(6, 3, generator=gen, dtype=DT)
    noisy = seeded_default((4,), 3, hidden=(8,), noise_conditional=True)
    for family in (seeded_default((4,), 3, hidden=(8,)), noisy.at_noise(0.3)):
        energy = family.log_unnormalized_y_at(theta)
        yg = y.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(yg).sum(), yg)
        yg2 = y.clone().requires_grad_(True)
        (grad2,) = torch.autograd.grad(family.log_unnormalized_y(yg2, theta).sum(), yg2)
        assert torch.equal(energy(y), family.log_unnormalized_y(y, theta))
        assert torch.equal(grad, grad2)
        with pytest.raises(ValueError, match="one per theta"):
            energy(y[:2])


def test_default_k_and_structures():
    assert ExpFamEBM.default((4,), 3).num_statistics == 3
    m = ExpFamEBM.default((10, 2), 2, structure="iid", hidden=(8,), embedding=4)
    assert m.statistics(torch.randn(3, 10, 2)).shape == (3, 2)
    m = ExpFamEBM.default(30, 2, structure="markov", order=2, hidden=(8,), embedding=4)
    assert m.statistics(torch.randn(3, 30)).shape == (3, 2)
    m = ExpFamEBM.default((2, 3), 2, hidden=(8,))
    assert m.log_unnormalized(torch.randn(3, 2, 3), torch.rand(3, 2)).shape == (3,)
    with pytest.raises(ValueError, match="structure"):
        ExpFamEBM.default((4,), 2, structure="cnn")
    with pytest.raises(ValueError, match="too short"):
        ExpFamEBM.default((2,), 2, structure="markov", order=2)


@pytest.mark.parametrize(
    "support, lo, hi",
    [((0.0, 1.0), 0.0, 1.0), ((2.0, None), 2.0, math.inf), ((None, -1.0), -math.inf, -1.0)],
)
def test_change_of_variables_normaliser(support, lo, hi):
    # exp(0.3 y - 0.7 y^2) integrates to sqrt(pi / 0.7) exp(0.09 / 2.8) over y; the raw-space
    # density (Jacobian included) must integrate to the same over the support of x
    model = gaussian_model(0.3, -0.7, support)
    gen = torch.Generator().manual_seed(3)
    u = (
        torch.randn(200, 1, generator=gen, dtype=DT) * 1.3 + 0.4
    )  # fit a non-trivial standardisation
    x_train = model.x_transform.support.inverse(u)
    model.prepare(torch.rand(200, 1, generator=gen, dtype=DT), x_train)
    assert abs(float(model.x_transform.standardize.std) - 1.0) > 0.05
    theta = torch.zeros(1, 1, dtype=DT)

    @torch.no_grad()
    def density(x: float) -> float:
        return math.exp(float(model.log_unnormalized(torch.tensor([[x]], dtype=DT), theta)))

    value, _ = integrate.quad(density, lo, hi, epsabs=0, epsrel=1e-10, limit=200)
    assert value == pytest.approx(math.sqrt(math.pi / 0.7) * math.exp(0.09 / 2.8), rel=1e-7)


def test_raw_score_matches_finite_differences():
    model = seeded_default(
        (3,), 2, x_support=([0.0, -math.inf, 1.0], [1.0, math.inf, math.inf]), hidden=(8,)
    )
    gen = torch.Generator().manual_seed(4)
    x = torch.stack(
        [
            torch.rand(5, generator=gen),
            torch.randn(5, generator=gen),
            1 + torch.rand(5, generator=gen) * 3,
        ],
        1,
    ).to(DT)
    theta = torch.rand(5, 2, generator=gen, dtype=DT)
    model.prepare(torch.rand(50, 2, dtype=DT), torch.cat([x] * 10))
    score = model.score(x, theta)
    h = 1e-6
    for j in range(3):
        e = torch.zeros(3, dtype=DT)
        e[j] = h
        fd = (model.log_unnormalized(x + e, theta) - model.log_unnormalized(x - e, theta)) / (2 * h)
        # central differences: O(h^2) truncation plus ~1e-16 / h rounding
        torch.testing.assert_close(score[:, j], fd, rtol=1e-6, atol=1e-6)
    # y-space score is the chain-rule partner of the raw score
    y = model.transform_x(x)
    xg = x.clone().requires_grad_(True)
    jac_diag = torch.autograd.grad(model.transform_x(xg).sum(), xg)[0]
    ladj_grad = torch.autograd.grad(model.x_transform.log_abs_det_jacobian(xg).sum(), xg)[0]
    torch.testing.assert_close(
        score, model.score_y(y, theta) * jac_diag + ladj_grad, rtol=1e-10, atol=1e-10
    )
    torch.testing.assert_close(model.inverse_transform_x(y), x, rtol=1e-10, atol=1e-10)


def test_prepare_standardises_x_and_theta():
    model = seeded_default((2,), 2, x_support=(0.0, None), hidden=(8,))
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(300, 2, generator=gen, dtype=DT) * 5 + 0.1
    theta = torch.randn(300, 2, generator=gen, dtype=DT) * 3 + 7
    assert model.prepare(theta, x) is model
    y = model.transform_x(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(2, dtype=DT), atol=1e-12, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(2, dtype=DT), atol=1e-12, rtol=0)
    ts = model.theta_transform(theta)
    torch.testing.assert_close(ts.std(0), torch.ones(2, dtype=DT), atol=1e-12, rtol=0)


def test_validation_errors():
    model = ExpFamEBM.default((3,), 2, x_support=(0.0, None), hidden=(8,))
    with pytest.raises(ValueError, match=r"x_shape=\(3,\)"):
        model.statistics(torch.ones(4, 2))
    with pytest.raises(ValueError, match=r"theta must have shape \(n, 2\)"):
        model.natural_parameters(torch.ones(4, 3))
    with pytest.raises(ValueError, match="differ"):
        model.log_unnormalized_y(torch.ones(4, 3), torch.ones(3, 2))
    x = torch.ones(4, 3)
    x[1, 2] = -0.5
    with pytest.raises(ValueError, match=r"x\[1, 2\] = -0.5.*coordinate \(2,\)"):
        model.log_unnormalized(x, torch.ones(4, 2))
    with pytest.raises(ValueError, match="differ in n"):
        model.prepare(torch.ones(5, 2), torch.ones(4, 3))


def test_user_statistics_net_shape_errors(tmp_path):
    model = ExpFamEBM(MLP(3, 2), MLP(2, 2), x_shape=(3,), theta_dim=2, num_statistics=2)
    with pytest.raises(ValueError, match=r"\(n, k \+ 1\) = \(n, 3\)"):
        model.log_unnormalized_y(torch.ones(4, 3), torch.ones(4, 2))
    base = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0))
    ok = ExpFamEBM(MLP(3, 2), MLP(2, 2), x_shape=(3,), theta_dim=2, num_statistics=2, base_net=base)
    assert ok.log_unnormalized_y(torch.ones(4, 3), torch.ones(4, 2)).shape == (4,)
    with pytest.raises(TypeError, match="built-in"):
        ok.save(tmp_path / "user.pt")


def test_gradients_reach_every_parameter():
    model = seeded_default((6, 2), 2, structure="iid", hidden=(8,), embedding=4)
    x, theta = torch.randn(5, 6, 2, dtype=DT), torch.rand(5, 2, dtype=DT)
    model.log_unnormalized(x, theta).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kwargs, x_shape",
    [
        ({"structure": "mlp", "x_support": (0.0, 1.0)}, (3,)),
        ({"structure": "iid", "x_support": (0.0, None)}, (8, 2)),
        ({"structure": "markov", "order": 2}, (12,)),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_save_load_bit_identical(tmp_path, kwargs, x_shape, dtype):
    torch.manual_seed(0)
    model = ExpFamEBM.default(x_shape, 2, hidden=(8,), embedding=4, **kwargs).to(dtype)
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(40, *x_shape, generator=gen, dtype=dtype) * 0.9 + 0.05
    theta = torch.randn(40, 2, generator=gen, dtype=dtype)
    model.prepare(theta, x)
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = ExpFamEBM.load(path)
    assert loaded.dtype == dtype and loaded.x_shape == model.x_shape
    for method in ("statistics",):
        assert torch.equal(getattr(loaded, method)(x), getattr(model, method)(x))
    assert torch.equal(loaded.log_unnormalized(x, theta), model.log_unnormalized(x, theta))
    assert torch.equal(loaded.score(x, theta), model.score(x, theta))
    assert torch.equal(loaded.natural_parameters(theta), model.natural_parameters(theta))
    # the file loads with weights_only (no pickled code) and carries a JSON config
    blob = torch.load(path, weights_only=True)
    assert blob["format_version"] == FORMAT_VERSION and json.loads(blob["config"])["theta_dim"] == 2


def test_save_load_keeps_the_normalizer_network(tmp_path):
    torch.manual_seed(0)
    model = ExpFamEBM.default((3,), 2, hidden=(8,), normalizer=True).to(DT)
    theta, x = torch.randn(40, 2, dtype=DT), torch.randn(40, 3, dtype=DT)
    model.prepare(theta, x)
    head = model.normalizer(theta)
    model.normalizer_net = MLP(2, 1, (8,), "silu").to(DT)  # as maximum likelihood installs it
    c = model.normalizer(theta)
    assert not torch.equal(c, head)  # the network, not the head, is c(theta) now
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = ExpFamEBM.load(path)
    assert torch.equal(loaded.normalizer(theta), c)
    assert torch.equal(loaded.natural_parameters(theta), model.natural_parameters(theta))
    with pytest.raises(ValueError, match="normalizer=True"):
        ExpFamEBM(
            MLP(3, 3),
            MLP(2, 2),
            x_shape=(3,),
            theta_dim=2,
            num_statistics=2,
            normalizer_net=MLP(2, 1),
        )


def test_load_errors(tmp_path):
    model = ExpFamEBM.default((3,), 2, hidden=(8,))
    good = tmp_path / "good.pt"
    model.save(good)
    raw = good.read_bytes()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        ExpFamEBM.load(corrupt)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        ExpFamEBM.load(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="not an ebm_lfi"):
        ExpFamEBM.load(other)
    blob = torch.load(good, weights_only=True)
    torch.save({**blob, "format_version": 99}, tmp_path / "v99.pt")
    with pytest.raises(ValueError, match="version 99"):
        ExpFamEBM.load(tmp_path / "v99.pt")
    cfg = json.loads(blob["config"])
    cfg["statistics_net"]["kwargs"]["hidden"] = [9]
    torch.save({**blob, "config": json.dumps(cfg)}, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match="mismatched"):
        ExpFamEBM.load(tmp_path / "mismatch.pt")
    with pytest.raises(FileNotFoundError):
        ExpFamEBM.load(tmp_path / "missing.pt")


def test_follows_dtype_and_device():
    model = ExpFamEBM.default((3,), 2, x_support=(0.0, None), hidden=(8,)).to(DT)
    assert model.dtype == DT
    assert all(b.dtype == DT for b in model.buffers())
    x = torch.rand(4, 3, dtype=torch.float32) + 0.1  # cast to the model's dtype at the boundary
    out = model.log_unnormalized(x, torch.rand(4, 2).numpy())
    assert out.dtype == DT
    assert model.score(x, torch.rand(4, 2)).dtype == DT
    if torch.cuda.is_available():
        cuda = model.to("cuda")
        assert cuda.x_transform.support.lower.is_cuda
        assert cuda.statistics(x).is_cuda
