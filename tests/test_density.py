"""The density posterior stage: a mixture density of theta given the statistics of a fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from posterior_checks import assert_catches, assert_matches
from torch.distributions import Independent, MultivariateNormal, Normal

import ebm_lfi as el
from ebm_lfi.methods import DensityConfig, DensityStage, FixedStatistics, Method, NotFittedError
from ebm_lfi.methods.density_stage import MixtureDensity

DT = torch.float64
NOISE = 0.5  # sd of each of the M noisy copies of theta
M = 4


def test_the_mixture_log_density_is_that_of_its_gaussians():
    # brute force: torch's multivariate normals, weighted and summed
    torch.manual_seed(0)
    q = MixtureDensity(3, 2, components=4).double()
    u, s = torch.randn(50, 2, dtype=DT), torch.randn(50, 3, dtype=DT)
    log_w, mean, lower = q.mixture(s)
    gaussians = MultivariateNormal(mean, scale_tril=lower)
    brute = torch.logsumexp(log_w + gaussians.log_prob(u[:, None, :]), dim=-1)
    torch.testing.assert_close(q.log_prob(u, s), brute)
    assert bool((torch.diagonal(lower, dim1=-2, dim2=-1) > 0).all())


def test_the_mixture_draws_have_its_mean_and_covariance():
    # one conditioning vector; the mixture's mean and covariance from its parameters, and the
    # sample's within four standard errors (10^5 draws)
    torch.manual_seed(1)
    q = MixtureDensity(2, 2, components=3).double()
    s = torch.randn(1, 2, dtype=DT)
    draws = q.sample(s, 100_000, torch.Generator().manual_seed(0))
    log_w, mean, lower = (t[0].detach() for t in q.mixture(s))
    w = log_w.exp()
    mu = (w[:, None] * mean).sum(0)
    cov = (w[:, None, None] * (lower @ lower.mT + mean[:, :, None] * mean[:, None, :])).sum(0)
    cov = cov - mu[:, None] * mu[None, :]
    se = (cov.diagonal() / draws.shape[0]).sqrt()
    assert bool(((draws.mean(0) - mu).abs() < 4 * se).all()), (draws.mean(0), mu, se)
    rel = (torch.cov(draws.T) - cov).abs() / cov.diagonal().sqrt().outer(cov.diagonal().sqrt())
    assert float(rel.max()) < 4 * math.sqrt(2 / draws.shape[0])  # sd of a sample covariance


def _conjugate(prior, n: int):
    """M noisy copies of theta; the statistic is their mean (sufficient)."""

    def simulate(theta, rng):
        return np.asarray(theta)[None] + NOISE * rng.standard_normal((M, 2))

    theta, x = el.simulate(simulate, prior, n, seed=0)
    fit = FixedStatistics(prior, lambda x: x.mean(1)).fit(theta, x)
    return fit, x


def test_the_density_of_a_sufficient_statistic_reaches_the_closed_form():
    prior = Independent(Normal(torch.zeros(2, dtype=DT), torch.ones(2, dtype=DT)), 1)
    fit, _ = _conjugate(prior, 4_000)
    method = Method(fit, DensityStage()).prepare(seed=0)
    x_o = torch.tensor([[1.0, -0.5]] * M, dtype=DT)
    precision = 1 + M / NOISE**2
    exact = Normal(x_o.mean(0) * (M / NOISE**2) / precision, torch.full((2,), precision**-0.5))
    post = method.posterior(x_o, 1_000, seed=0)
    assert post.method == "method" and post.diagnostics["simulations"] == 0
    assert post.diagnostics["total_simulations"] == 4_000

    def check(samples):
        assert_matches(samples, exact, ess=1_000)

    check(post.samples)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        exact_draws, prior_draws = exact.sample((1_000,)), prior.sample((1_000,))
    assert_catches(check, exact_draws, prior_draws)


def test_draws_stay_inside_a_bounded_prior_and_repeat_under_a_seed():
    prior = el.BoxUniform([0.0, 0.0], [1.0, 1.0])
    fit, x = _conjugate(prior, 1_000)
    config = DensityConfig(training={"epochs": 20, "validation_fraction": 0.1})
    method = Method(fit, DensityStage(config)).prepare(seed=0)
    x_o = torch.full((M, 2), 0.02, dtype=DT)  # posterior against the lower bounds
    post = method.posterior(x_o, 2_000, seed=3)
    assert bool(((post.samples > 0) & (post.samples < 1)).all())
    assert float(post.samples.mean()) < 0.35  # pushed to the bound, not the prior's 0.5
    again = Method(fit, DensityStage(config)).prepare(seed=0).posterior(x_o, 2_000, seed=3)
    torch.testing.assert_close(again.samples, post.samples, rtol=0, atol=0)
    other = method.posterior(x_o, 2_000, seed=4).samples
    assert not torch.equal(other, post.samples)


def test_the_stage_needs_preparing_and_checks_its_config():
    with pytest.raises(NotFittedError, match="prepare"):
        DensityStage().sample(torch.zeros(3), 10, seed=0)
    with pytest.raises(ValueError, match="components"):
        DensityConfig(components=0)
    with pytest.raises(TypeError):
        DensityConfig(training={"no_such_option": 1})


def test_the_registered_mdn_methods_are_a_fit_and_the_density_stage():
    prior = el.BoxUniform([-1.0, -1.0], [1.0, 1.0])
    for name in ("ssm-mdn", "nce-mdn"):
        method = el.methods.get(name, prior=prior)
        assert isinstance(method.posterior_stage, DensityStage)
        assert method.fit_stage.loss is not None and method.name == name
