"""Denoising score matching as ABC at any tolerance (``dsm-exchange``).

With noise sigma, DSM fits p_sigma(y | theta) = int N(y; y', sigma^2 I) p(y' | theta) dy', the
ABC likelihood with a Gaussian kernel of bandwidth sigma. For iid draws N(mu, 1) the smoothed
model of the raw data is iid N(mu, 1 + (a sigma)^2), a being the scale of the standardisation
(sigma is a tolerance on the standardised data), so under a flat prior the ABC posterior at
tolerance sigma is N(mean(x_o), (1 + (a sigma)^2) / m). One noise-conditional fit must give it
at two tolerances.
"""

import math

import pytest
import torch

import ebm_lfi as el
from ebm_lfi.energy.model import ExpFamEBM
from ebm_lfi.losses import DenoisingScoreMatching
from ebm_lfi.methods.exchange_stage import tolerance_levels

DT = torch.float64
M = 10


@pytest.fixture(scope="module")
def fitted():
    prior = el.BoxUniform(torch.tensor([-5.0]), torch.tensor([5.0]))
    g = torch.Generator().manual_seed(0)
    theta = torch.rand(20_000, 1, generator=g, dtype=DT) * 10 - 5
    x = theta + torch.randn(20_000, M, generator=g, dtype=DT)
    method = el.methods.get(
        "dsm-exchange",
        prior=prior,
        structure="iid",
        num_statistics=2,
        network={"embedding": 0},
        training={"epochs": 100},
        exchange={"check_inner": 0},
    )
    return method.fit(theta, x, seed=0)


X_O = torch.tensor([0.3, -0.5, 1.2, 0.8, 0.1, 1.1, -0.2, 0.4, 0.9, 0.0], dtype=DT)


@pytest.mark.slow
@pytest.mark.parametrize("tolerance", [0.2, 0.5])
def test_abc_posterior_at_a_tolerance_matches_the_smoothed_closed_form(fitted, tolerance):
    post = fitted.posterior(X_O, 4000, seed=1, tolerance=tolerance)
    assert post.diagnostics["tolerance"] == pytest.approx(tolerance)
    assert max(post.diagnostics["rhat"]) < 1.05
    scale = float(fitted.model.x_transform.standardize.std.reshape(-1)[0])
    sd = math.sqrt((1 + (tolerance * scale) ** 2) / M)  # 0.37 and 0.58: they differ clearly
    mean, spread = float(post.samples.mean()), float(post.samples.std())
    ess = min(post.diagnostics["ess"])
    assert abs(mean - float(X_O.mean())) < 4 * sd / math.sqrt(ess), (mean, ess)
    assert abs(spread / sd - 1) < 0.1, (spread, sd)
    exact = X_O.mean() + sd * torch.randn(4000, 1, generator=torch.Generator().manual_seed(2))
    assert el.metrics.wasserstein2(post.samples, exact.to(DT)) < 0.1 * sd / 0.37


def test_tolerance_schedule_and_errors(fitted):
    low, high = fitted.model.noise_range.tolist()
    assert low == pytest.approx(0.05) and high == pytest.approx(1.0)
    levels = fitted.tolerances()
    assert levels[0] == pytest.approx(high) and levels[-1] == pytest.approx(low)
    assert all(a > b for a, b in zip(levels, levels[1:])) and len(levels) == 4
    assert fitted.tolerances(1.0) == [pytest.approx(1.0)]
    assert fitted.tolerances(0.05)[-1] == pytest.approx(0.05)  # the bound itself is inside
    with pytest.raises(ValueError, match="outside the trained range"):
        fitted.tolerances(2.0)
    plain = ExpFamEBM.default((M,), theta_dim=1, hidden=(8,)).double()
    with pytest.raises(ValueError, match="range of noise scales"):
        tolerance_levels(plain, 0.3, anneal=4)
    assert tolerance_levels(plain, None, anneal=4) == []


def test_noise_conditional_model_and_loss():
    model = ExpFamEBM.default((3,), theta_dim=2, hidden=(8,), noise_conditional=True).double()
    y, theta = torch.randn(4, 3, dtype=DT), torch.rand(4, 2, dtype=DT)
    at = model.at_noise(0.3)
    torch.testing.assert_close(
        at.log_unnormalized_y(y, theta), model.log_unnormalized_y(y, theta, sigma=0.3)
    )
    torch.testing.assert_close(  # default: the lowest trained scale
        model.log_unnormalized_y(y, theta), model.log_unnormalized_y(y, theta, sigma=0.05)
    )
    assert not torch.allclose(at.natural_parameters(theta), model.natural_parameters(theta))
    plain = ExpFamEBM.default((3,), theta_dim=2, hidden=(8,)).double()
    with pytest.raises(ValueError, match="noise-conditional"):
        plain.natural_parameters(theta, sigma=0.3)
    with pytest.raises(ValueError, match="noise-conditional"):
        plain.at_noise(0.3)
    with pytest.raises(ValueError, match="positive"):
        model.natural_parameters(theta, sigma=-1.0)
    with pytest.raises(ValueError, match="lowest, highest"):
        DenoisingScoreMatching((1.0, 0.1), conditional=True)
    # the conditional loss, brute force: sigma log-uniform on the range, then the noise
    loss = DenoisingScoreMatching((0.1, 0.8), conditional=True)
    value = loss(model, y, theta, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    u = torch.rand(4, generator=g, dtype=DT)
    sigma = (math.log(0.1) + (math.log(0.8) - math.log(0.1)) * u).exp()
    eps = torch.randn(4, 3, generator=g, dtype=DT)
    noisy = (y + sigma[:, None] * eps).requires_grad_(True)
    f = model.log_unnormalized_y(noisy, theta, sigma=sigma)
    (score,) = torch.autograd.grad(f.sum(), noisy)
    manual = 0.5 * (sigma[:, None] * score + eps).square().sum(-1).mean()
    torch.testing.assert_close(value.detach(), manual)


def test_ratio_and_noise_conditional_models_round_trip(tmp_path):
    for options in ({"normalizer": True}, {"noise_conditional": True, "noise_range": (0.1, 2)}):
        model = ExpFamEBM.default((3,), theta_dim=2, hidden=(8,), **options).double()
        model.prepare(torch.rand(50, 2, dtype=DT), torch.randn(50, 3, dtype=DT))
        model.save(tmp_path / "m.pt")
        back = ExpFamEBM.load(tmp_path / "m.pt")
        y, theta = torch.randn(4, 3, dtype=DT), torch.rand(4, 2, dtype=DT)
        torch.testing.assert_close(
            back.log_unnormalized_y(y, theta), model.log_unnormalized_y(y, theta)
        )
        if model.has_normalizer:
            torch.testing.assert_close(back.log_ratio_y(y, theta), model.log_ratio_y(y, theta))
        else:
            torch.testing.assert_close(back.noise_range, model.noise_range)
