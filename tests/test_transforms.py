import math

import pytest
import torch

from ebm_lfi.transforms import DataTransform, Standardize, SupportTransform

DT = torch.float64
INF = math.inf


def mixed_support() -> SupportTransform:
    # coordinates: (0, 1) logit, (2, inf) log, (-inf, 3) log, unbounded, (-1, 4) logit
    return SupportTransform(
        (5,), lower=[0.0, 2.0, -INF, -INF, -1.0], upper=[1.0, INF, 3.0, INF, 4.0]
    )


def inside_points(n: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, 5, generator=gen, dtype=DT) * 0.98 + 0.01
    e = torch.randn(n, 5, generator=gen, dtype=DT)
    return torch.stack(
        [u[:, 0], 2.0 + e[:, 1].exp(), 3.0 - e[:, 2].exp(), 5 * e[:, 3], -1.0 + 5 * u[:, 4]], dim=1
    )


def test_support_round_trip_and_jacobian():
    gen = torch.Generator().manual_seed(0)
    t = mixed_support().to(DT)
    x = inside_points(200, gen)
    u = t(x)
    assert torch.isfinite(u).all()
    torch.testing.assert_close(t.inverse(u), x, rtol=1e-12, atol=1e-12)
    u2 = torch.randn(200, 5, generator=gen, dtype=DT) * 3
    torch.testing.assert_close(t(t.inverse(u2)), u2, rtol=1e-9, atol=1e-9)
    # elementwise log-derivative against autograd, in float64
    xg = x.clone().requires_grad_(True)
    (du,) = torch.autograd.grad(t(xg).sum(), xg)  # the map is elementwise
    torch.testing.assert_close(t.log_abs_det_jacobian(u), du.abs().log(), rtol=1e-10, atol=1e-10)


def test_support_known_values():
    t = SupportTransform((3,), lower=[0.0, 1.0, -INF], upper=[2.0, INF, 0.0]).to(DT)
    x = torch.tensor([[1.0, 1.0 + math.e, -(math.e**2)]], dtype=DT)
    torch.testing.assert_close(t(x), torch.tensor([[0.0, 1.0, 2.0]], dtype=DT))
    assert not t.is_identity
    assert SupportTransform((2,)).is_identity


@pytest.mark.parametrize(
    "value, index",
    [(1.5, (3, 0)), (0.0, (1, 0)), (1.0, (2, 0)), (1.9, (4, 1)), (-0.5, (0, 2))],
)
def test_support_errors_name_index_and_value(value, index):
    t = SupportTransform((3,), lower=[0.0, 2.0, 0.0], upper=[1.0, INF, INF]).to(DT)
    x = torch.tensor([[0.5, 3.0, 1.0]], dtype=DT).repeat(6, 1)
    x[index] = value
    with pytest.raises(ValueError) as err:
        t.check(x)
    msg = str(err.value)
    assert f"x[{index[0]}, {index[1]}]" in msg and repr(value) in msg
    assert f"coordinate ({index[1]},)" in msg


def test_support_bad_bounds():
    with pytest.raises(ValueError, match="below upper"):
        SupportTransform((2,), lower=[0.0, 1.0], upper=[1.0, 1.0])
    with pytest.raises(ValueError, match="broadcast"):
        SupportTransform((2,), lower=[0.0, 1.0, 2.0])


def test_standardize_fit_and_shared_dims():
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(500, 4, 3, generator=gen, dtype=DT) * torch.tensor([1.0, 2.0, 3.0], dtype=DT)
    u = u + torch.tensor([5.0, -1.0, 0.0], dtype=DT)
    s = Standardize((4, 3)).to(DT).fit(u)
    y = s(u)
    torch.testing.assert_close(y.mean(0), torch.zeros(4, 3, dtype=DT), atol=1e-12, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(4, 3, dtype=DT), atol=1e-12, rtol=0)
    torch.testing.assert_close(s.inverse(y), u, rtol=1e-12, atol=1e-12)
    pooled = Standardize((4, 3), shared_dims=(0,)).to(DT).fit(u)
    assert pooled.mean.shape == (1, 3)
    yp = pooled(u).transpose(0, 1).reshape(-1, 3)  # pooled over samples and the 4 draws
    torch.testing.assert_close(yp.mean(0), torch.zeros(3, dtype=DT), atol=1e-12, rtol=0)
    torch.testing.assert_close(yp.std(0), torch.ones(3, dtype=DT), atol=1e-12, rtol=0)
    # permuting the pooled axis commutes with the map
    perm = torch.randperm(4, generator=gen)
    torch.testing.assert_close(pooled(u[:, perm]), pooled(u)[:, perm], rtol=0, atol=0)


def test_standardize_constant_coordinate_and_unfitted_identity():
    u = torch.stack([torch.arange(10.0, dtype=DT), torch.full((10,), 3.0, dtype=DT)], 1)
    s = Standardize((2,)).to(DT)
    torch.testing.assert_close(s(u), u)
    s.fit(u)
    assert s.std[1] == 1.0 and s.mean[1] == 3.0
    with pytest.raises(ValueError, match="at least 2"):
        s.fit(u[:1])


def test_data_transform_log_det_vs_full_jacobian():
    gen = torch.Generator().manual_seed(2)
    t = DataTransform((5,), support=([0.0, 2.0, -INF, -INF, -1.0], [1.0, INF, 3.0, INF, 4.0]))
    t = t.to(DT)
    x = inside_points(300, gen)
    t.fit(x)
    y = t(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(5, dtype=DT), atol=1e-12, rtol=0)
    torch.testing.assert_close(t.inverse(y), x, rtol=1e-10, atol=1e-10)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda z: t(z.unsqueeze(0))[0], x[i])
        expected = torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(
            t.log_abs_det_jacobian(x[i : i + 1])[0], expected, rtol=1e-10, atol=1e-10
        )


def test_data_transform_validation():
    t = DataTransform((2, 3), support=(0.0, None))
    with pytest.raises(ValueError, match=r"\(n, 2, 3\)"):
        t.check(torch.ones(4, 3, 2))
    x = torch.ones(4, 2, 3)
    x[2, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x\[2, 1, 0\] = nan"):
        t.check(x)
    x = torch.ones(4, 2, 3)
    x[3, 0, 2] = -2.0
    with pytest.raises(ValueError, match=r"x\[3, 0, 2\] = -2.0"):
        t.fit(x)
    with pytest.raises(ValueError, match="pair"):
        DataTransform((2,), support=(0.0,))


def test_transform_follows_dtype():
    t = DataTransform((2,), support=(0.0, 1.0)).to(DT)
    assert t.support.lower.dtype == DT and t.standardize.std.dtype == DT
    x = torch.full((3, 2), 0.25, dtype=DT)
    assert t(x).dtype == DT
    assert set(dict(t.named_buffers())) == {
        "support.lower",
        "support.upper",
        "standardize.mean",
        "standardize.std",
    }
