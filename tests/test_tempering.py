"""Tempered SMC on a tractable posterior (``ebm_lfi.samplers.mcmc.tempering``): against closed
forms, on separated modes of unequal weight, and through the potential stage of ``nce``."""

import math

import pytest
import torch

import ebm_lfi as el
from ebm_lfi.samplers.mcmc.potential import sample_potential
from ebm_lfi.samplers.mcmc.tempering import sample_tempered

DT = torch.float64


def _two_modes(theta, share=0.75, sd=0.1):
    """log of share N(2, sd²) + (1 - share) N(-2, sd²) at theta (n, 1)."""
    t = theta[:, 0]
    right = math.log(share) - 0.5 * ((t - 2) / sd) ** 2
    left = math.log(1 - share) - 0.5 * ((t + 2) / sd) ** 2
    return torch.logaddexp(right, left) - math.log(sd * math.sqrt(2 * math.pi))


def test_separated_modes_get_their_posterior_share_where_chains_keep_their_start():
    prior = el.BoxUniform([-4.0], [4.0])
    out = sample_tempered(_two_modes, prior, 2000, seed=0)
    right = out.samples[:, 0] > 0
    share = float(right.to(DT).mean())
    # 2,000 independent draws would give the share a standard error of 0.0097; the particles
    # of one SMC run are correlated by the resampling, so allow five of those errors
    assert abs(share - 0.75) < 0.05, share
    for mode, centre in ((right, 2.0), (~right, -2.0)):
        draws = out.samples[mode, 0]
        assert abs(float(draws.mean()) - centre) < 0.02, float(draws.mean())
        assert abs(float(draws.std()) - 0.1) < 0.015, float(draws.std())
    # the evidence: the mixture's mass inside (-4, 4) is 1 to 1e-80, times the prior's 1/8
    assert abs(out.log_evidence - math.log(1 / 8)) < 0.1, out.log_evidence
    assert out.temperatures[-1] == 1.0 and out.unique > 0.5
    # the negative control: MCMC chains started in the light mode stay there
    chains = sample_potential(
        _two_modes, prior, torch.full((20, 1), -2.0, dtype=DT), num_samples=200, seed=0
    ).chains
    assert float((chains > 0).to(DT).mean()) < 0.05


def test_a_gaussian_prior_and_likelihood_give_the_closed_form_posterior_and_evidence():
    # theta ~ N(0, I_2), three draws x_j ~ N(theta, 0.5² I): posterior N(m, v I) with
    # v = 1 / (1 + 3 / 0.25), m = v * sum(x) / 0.25
    prior = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(2, dtype=DT), torch.ones(2, dtype=DT)), 1
    )
    x = torch.tensor([[0.8, -1.1], [1.3, -0.4], [0.9, -0.9]], dtype=DT)
    noise = torch.distributions.Normal(torch.zeros((), dtype=DT), 0.5)

    def log_likelihood(theta):
        return noise.log_prob(x[None] - theta[:, None]).sum((1, 2))

    out = sample_tempered(log_likelihood, prior, 4000, seed=1)
    v = 1 / (1 + 3 / 0.25)
    m = v * x.sum(0) / 0.25
    se = math.sqrt(v / 4000)  # of the mean of 4,000 independent draws
    assert torch.allclose(out.samples.mean(0), m, atol=6 * se), (out.samples.mean(0), m)
    assert torch.allclose(out.samples.std(0), torch.full((2,), math.sqrt(v), dtype=DT), rtol=0.06)
    # log Z = log N(x_flat; theta 1, ...) marginal: per coordinate, the three draws are jointly
    # Gaussian with covariance 0.25 I + 1 1ᵀ
    cov = 0.25 * torch.eye(3, dtype=DT) + torch.ones(3, 3, dtype=DT)
    marginal = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=DT), cov)
    log_z = float(marginal.log_prob(x.T).sum())
    assert abs(out.log_evidence - log_z) < 0.1, (out.log_evidence, log_z)


def test_draws_stay_inside_the_support_and_repeat_under_a_seed():
    prior = el.BoxUniform([0.0, 0.0], [1.0, 1.0])

    def pile_at_the_edge(theta):  # Beta(0.5, 1) x Beta(1, 1): mass piled at theta_1 = 0
        return -0.5 * torch.log(theta[:, 0])

    one = sample_tempered(pile_at_the_edge, prior, 1000, seed=3)
    two = sample_tempered(pile_at_the_edge, prior, 1000, seed=3)
    assert torch.equal(one.samples, two.samples)
    assert bool(((one.samples > 0) & (one.samples < 1)).all())
    # Beta(0.5, 1) has mean 1/3 and sd 0.298: the standard error of 1,000 draws is 0.0094
    assert abs(float(one.samples[:, 0].mean()) - 1 / 3) < 0.04


def test_bad_likelihoods_are_refused_with_a_reason():
    prior = el.BoxUniform([0.0], [1.0])
    with pytest.raises(ValueError, match="every prior draw"):
        sample_tempered(lambda t: torch.full((t.shape[0],), -math.inf), prior, 100, seed=0)
    with pytest.raises(ValueError, match="must map"):
        sample_tempered(lambda t: t, prior, 100, seed=0)
    with pytest.raises(ValueError, match="target_ess"):
        sample_tempered(lambda t: t[:, 0], prior, 100, target_ess=1.0)
