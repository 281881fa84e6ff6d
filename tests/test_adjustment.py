"""Tests of the local-linear regression adjustment of accepted ABC samples.

Linear-Gaussian model: theta ~ N(0, 3^2 I_2), s = theta + N(0, I_2). The posterior given s_o is
N(v s_o, v I) with v = 1 / (1/9 + 1), and theta = v s + r with r ~ N(0, v I) independent of s,
so the linear model of the adjustment holds exactly: adjusted samples are draws of the exact
posterior at any tolerance, while unadjusted ones are widened by the spread of the accepted s.

On bounded priors the adjustment runs on g(theta) (logit, log) where the linear model is only
approximate; its samples must stay in the support and have the location and width of the
closed-form posterior (``tests/posterior_checks.py``: within 0.25 posterior sd and 15 %, plus
four standard errors of the kernel-weighted sample): a truncated normal for a box prior, and
theta N(theta; s_o - 1, 1) on theta > 0 for a Gamma(2, 1) prior with s = theta + N(0, 1).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from posterior_checks import assert_catches, assert_matches
from scipy import stats as st
from torch.distributions import Gamma, Independent, Normal

from ebm_lfi.metrics import wasserstein2
from ebm_lfi.priors import BoxUniform, support_bounds
from ebm_lfi.samplers.abc.adjustment import epanechnikov_weights, regression_adjustment
from ebm_lfi.samplers.abc.rejection import rejection_abc
from ebm_lfi.samplers.abc.scaler import StatisticScaler

PRIOR_SD, NOISE_SD = 3.0, 1.0
POST_V = 1.0 / (1.0 / PRIOR_SD**2 + 1.0 / NOISE_SD**2)
F64 = torch.float64


def accepted(theta, stats, s_o, m):
    """The m nearest entries (scaled statistics) and the (m+1)-th distance as bandwidth."""
    scaler = StatisticScaler().fit(stats)
    res = rejection_abc(theta, stats, s_o, num_samples=m + 1, scale=scaler)
    idx, dist = res.indices[0, :m], res.distances[0, :m]
    return theta[idx], scaler(stats[idx]), scaler(s_o), dist, float(res.distances[0, m])


def weighted_mean_std(x, w):
    mean = w @ x
    return mean, (w @ (x - mean) ** 2).sqrt()


@pytest.fixture(scope="module")
def gaussian_table():
    g = torch.Generator().manual_seed(0)
    theta = PRIOR_SD * torch.randn((20_000, 2), generator=g, dtype=F64)
    stats = theta + NOISE_SD * torch.randn((20_000, 2), generator=g, dtype=F64)
    return theta, stats


def normal_prior(p=2):
    return Independent(Normal(torch.zeros(p, dtype=F64), PRIOR_SD * torch.ones(p, dtype=F64)), 1)


@pytest.mark.parametrize("heteroscedastic", [False, True])
def test_adjustment_recovers_the_conjugate_posterior(gaussian_table, heteroscedastic):
    theta, stats = gaussian_table
    s_o = torch.tensor([1.0, -0.5], dtype=F64)
    th, s, so, dist, eps = accepted(theta, stats, s_o, 2000)  # 10 % of the table
    out = regression_adjustment(
        th, s, so, dist, epsilon=eps, bounds=normal_prior(), heteroscedastic=heteroscedastic
    )
    assert out.info["applied"] and out.info["reason"] is None
    assert out.samples.shape == (2000, 2) and out.samples.dtype == F64
    w = out.weights
    torch.testing.assert_close(w.sum(), torch.ones((), dtype=F64))
    torch.testing.assert_close(
        w, epanechnikov_weights(dist, eps) / epanechnikov_weights(dist, eps).sum()
    )

    exact_mean, exact_sd = POST_V * s_o / NOISE_SD**2, math.sqrt(POST_V)
    g = torch.Generator().manual_seed(1)
    exact = exact_mean + exact_sd * torch.randn((2000, 2), generator=g, dtype=F64)
    w2_adjusted = wasserstein2(out.samples, exact, w)
    w2_plain = wasserstein2(th, exact, w)  # same tolerance, same kernel weights
    assert w2_adjusted < w2_plain

    # Moments within 4 standard errors of the Kish effective sample size.
    ess = out.info["ess"]
    mean, sd = weighted_mean_std(out.samples, w)
    assert torch.all((mean - exact_mean).abs() < 4 * exact_sd / math.sqrt(ess))
    assert torch.all((sd - exact_sd).abs() < 4 * exact_sd / math.sqrt(2 * ess))
    # The unadjusted sample is wider than the posterior by more than that.
    _, sd_plain = weighted_mean_std(th, w)
    assert torch.all(sd_plain - exact_sd > 4 * exact_sd / math.sqrt(2 * ess))
    # The slopes of theta on the scaled statistics are v times the statistic scales.
    scale = stats.std(dim=0)
    expected = torch.linalg.norm(POST_V * scale / NOISE_SD**2)
    assert abs(out.info["coef_norm"] - float(expected)) < 0.1 * float(expected)


def test_heteroscedastic_correction_fixes_a_spread_that_depends_on_s():
    # s ~ U(-1, 1), theta = 2 s + exp(0.8 s) e: at s_o = 0 the target is exactly N(0, 1).
    g = torch.Generator().manual_seed(2)
    s = 2 * torch.rand((20_000, 1), generator=g, dtype=F64) - 1
    theta = 2 * s + torch.exp(0.8 * s) * torch.randn((20_000, 1), generator=g, dtype=F64)
    dist = s[:, 0].abs()
    sds = {}
    for flag in (False, True):
        out = regression_adjustment(theta, s, torch.zeros(1, dtype=F64), dist, heteroscedastic=flag)
        assert out.info["applied"] and out.info["heteroscedastic"] is flag
        mean, sd = weighted_mean_std(out.samples[:, 0], out.weights)
        ess = out.info["ess"]
        assert abs(float(mean)) < 4 / math.sqrt(ess)
        sds[flag] = float(sd)
    assert abs(sds[True] - 1) < 4 / math.sqrt(2 * ess)
    # Homoscedastic: residual variance averaged over the window, about 1 + 1.28 E[s^2] > 1.
    assert sds[False] - 1 > 4 / math.sqrt(2 * ess)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_adjusted_samples_stay_in_a_box_prior(dtype):
    prior = BoxUniform([0.0, -1.0], [1.0, 1.0], dtype=dtype)
    g = torch.Generator().manual_seed(3)
    theta = prior.low + (prior.high - prior.low) * torch.rand((20_000, 2), generator=g, dtype=dtype)
    stats = theta + 0.3 * torch.randn((20_000, 2), generator=g, dtype=dtype)
    s_o = torch.tensor([0.97, -0.98], dtype=dtype)  # posterior piled against two walls
    th, s, so, dist, eps = accepted(theta, stats, s_o, 2000)
    out = regression_adjustment(th, s, so, dist, epsilon=eps, bounds=prior)
    assert out.info["applied"] and out.samples.dtype == dtype
    assert bool(torch.isfinite(prior.log_prob(out.samples)).all())
    # the exact posterior: N(s_o, 0.3^2) truncated to the box, per parameter
    low, high, mu = prior.low.double().numpy(), prior.high.double().numpy(), s_o.double().numpy()
    exact = st.truncnorm((low - mu) / 0.3, (high - mu) / 0.3, loc=mu, scale=0.3)

    def check(samples, weights=None):
        assert_matches(samples, (exact.mean(), exact.std()), weights=weights, ess=out.info["ess"])

    check(out.samples, out.weights)
    # negative control: exact draws (as many as the effective size) pass; 1.3 times too
    # wide, shifted by half a sd, or the prior fail
    n = int(out.info["ess"])
    draws = torch.as_tensor(exact.rvs(size=(n, 2), random_state=np.random.default_rng(5)))
    assert_catches(check, draws, prior.sample((n,)))
    # The same regression on the raw scale would leave the box: the transform matters.
    raw = regression_adjustment(th, s, so, dist, epsilon=eps, bounds=None)
    assert not bool(torch.isfinite(prior.log_prob(raw.samples)).all())
    # Explicit bounds act like the prior.
    explicit = regression_adjustment(th, s, so, dist, epsilon=eps, bounds=(prior.low, prior.high))
    torch.testing.assert_close(explicit.samples, out.samples)


def test_one_sided_support_uses_the_log():
    prior = Independent(Gamma(2 * torch.ones(2, dtype=F64), torch.ones(2, dtype=F64)), 1)
    low, high = support_bounds(prior, 2)
    assert torch.equal(low, torch.zeros(2, dtype=F64)) and bool(torch.isinf(high).all())
    g = torch.Generator().manual_seed(4)
    with torch.random.fork_rng():
        torch.manual_seed(4)
        theta = prior.sample((10_000,))
    stats = theta + torch.randn((10_000, 2), generator=g, dtype=F64)
    th, s, so, dist, eps = accepted(theta, stats, torch.tensor([0.2, 0.1], dtype=F64), 1000)
    out = regression_adjustment(th, s, so, dist, epsilon=eps, bounds=prior)
    assert out.info["applied"] and bool((out.samples > 0).all())
    # posterior moments: with Z ~ N(s_o - 1, 1) truncated to (0, inf), E[theta^k] under the
    # posterior is E[Z^(k+1)] / E[Z]
    mean, sd = [], []
    for a in (0.2 - 1.0, 0.1 - 1.0):
        z = st.truncnorm(-a, np.inf, loc=a)
        first, second = z.moment(2) / z.mean(), z.moment(3) / z.mean()
        mean.append(first)
        sd.append(np.sqrt(second - first**2))

    def check(samples, weights=None):
        assert_matches(samples, (mean, sd), weights=weights, ess=out.info["ess"])

    check(out.samples, out.weights)
    # negative control: exact draws by rejection from the prior (accepted with probability
    # exp(-(s_o - theta)^2 / 2)) pass; 1.3 times too wide, shifted by half a sd, or the prior
    # fail
    n = int(out.info["ess"])
    u = torch.rand((6 * n, 2), generator=g, dtype=F64)
    keep = u < torch.exp(-0.5 * (torch.tensor([0.2, 0.1], dtype=F64) - theta[: 6 * n]) ** 2)
    draws = torch.stack([theta[: 6 * n][keep[:, j], j][:n] for j in range(2)], 1)
    assert_catches(check, draws, theta[-n:])


def test_too_few_samples_skip_the_adjustment(caplog):
    theta = torch.randn(3, 2, dtype=F64)
    stats = torch.randn(3, 2, dtype=F64)
    dist = stats.norm(dim=1)
    with caplog.at_level(logging.WARNING, logger="ebm_lfi.samplers.abc.adjustment"):
        out = regression_adjustment(theta, stats, torch.zeros(2, dtype=F64), dist)
    assert not out.info["applied"] and "coefficients" in out.info["reason"]
    assert "skipped" in caplog.text
    assert torch.equal(out.samples, theta)
    torch.testing.assert_close(out.weights.sum(), torch.ones((), dtype=F64))


def test_weights_on_too_few_samples_skip_the_adjustment():
    # 100 accepted samples and 6 statistics, but the (importance) weights put nearly all the
    # mass on 4 of them, as the weights of a table drawn from sequential proposals can: the
    # regression would pass through those 4 and every adjusted sample would land on one point
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(100, 2, generator=g, dtype=F64)
    stats = theta.repeat(1, 3) + 0.3 * torch.randn(100, 6, generator=g, dtype=F64)
    dist = stats.norm(dim=1)
    lopsided = torch.full((100,), 1e-6, dtype=F64)
    lopsided[:4] = 1.0
    out = regression_adjustment(theta, stats, torch.zeros(6, dtype=F64), dist, weights=lopsided)
    assert out.info["ess"] < 5 and out.info["num_positive"] == 100
    assert not out.info["applied"] and "effective sample size" in out.info["reason"]
    assert torch.equal(out.samples, theta)
    # negative control: the same samples with even weights are adjusted, and not to one point
    even = regression_adjustment(theta, stats, torch.zeros(6, dtype=F64), dist)
    assert even.info["applied"] and even.info["ess"] > 7
    assert bool((even.samples.std(0) > 0.1).all())


def test_epanechnikov_weights_and_validation():
    d = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=F64)
    torch.testing.assert_close(
        epanechnikov_weights(d, 1.0), torch.tensor([1.0, 0.75, 0.0, 0.0], dtype=F64)
    )
    w = epanechnikov_weights(d)
    assert bool((w > 0).all()) and float(w[-1]) < 1e-5
    assert torch.equal(epanechnikov_weights(torch.zeros(3)), torch.ones(3))
    theta, stats = torch.zeros(10, 2), torch.zeros(10, 3)
    with pytest.raises(ValueError, match=r"\(3,\)"):
        regression_adjustment(theta, stats, torch.zeros(2), torch.ones(10))
    with pytest.raises(ValueError, match=r"\(10,\)"):
        regression_adjustment(theta, stats, torch.zeros(3), torch.ones(9))
    with pytest.raises(ValueError, match="zero kernel weight"):
        regression_adjustment(theta, stats, torch.zeros(3), torch.ones(10), epsilon=0.5)
