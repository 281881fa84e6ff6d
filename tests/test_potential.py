r"""Tests of :func:`sample_potential`: MCMC on a tractable potential in an unconstrained space.

Accuracy checks compare the chains with exact draws by the 2-Wasserstein distance. The chains
(16 x 1000 MALA draws) are thinned by 8 to 2000 draws; their ESS is 6000-9000 for the
Gaussian and the Betas (1400-3000 for the Gamma), so the thinned draws are close to
independent. For a correct sampler the distance to 2000 exact draws then has about the same
distribution as the distance between two independent exact samples of 2000 (the "baseline");
over 16 seeded runs of these targets the ratio of the two ranged 0.7-1.45.
The threshold is twice the baseline. A bias of the target shows up as
:math:`W_2^2 \approx \text{baseline}^2 + \delta^2`, so a mean shift of about 1.7 baselines
(0.3 sd for the Gaussian, 0.2 sd for the Betas) already fails it; a missing Jacobian gives a
ratio above 10.
"""

from __future__ import annotations

import pytest
import torch
from torch.distributions import (
    Beta,
    Distribution,
    Exponential,
    Gamma,
    Independent,
    MultivariateNormal,
    Normal,
)

from ebm_lfi.metrics import wasserstein2
from ebm_lfi.priors import BoxUniform, SupportBijection
from ebm_lfi.samplers.mcmc.potential import PotentialResult, sample_potential

DT = torch.float64
MU = torch.tensor([1.0, -2.0], dtype=DT)
COV = torch.tensor([[1.0, 1.8], [1.8, 4.0]], dtype=DT)  # correlation 0.9
GAUSS = MultivariateNormal(MU, COV)
BETA = Beta(torch.tensor([0.8, 5.0], dtype=DT), torch.tensor([3.0, 2.0], dtype=DT))
UNIT_BOX = BoxUniform([0.0, 0.0], [1.0, 1.0], dtype=DT)
CHAINS, DRAWS, THIN = 16, 1000, 8


def draws(dist: Distribution, n: int, seed: int) -> torch.Tensor:
    """Seeded draws of a torch distribution (which uses the global RNG)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return dist.sample((n,))


def beta_potential(theta: torch.Tensor) -> torch.Tensor:
    return BETA.log_prob(theta).sum(-1)


def assert_matches_exact(res: PotentialResult, exact: Distribution, seed: int) -> float:
    """W2 of the thinned chains to exact draws below twice the exact-vs-exact baseline."""
    samples = res.chains[:, ::THIN].reshape(-1, res.chains.shape[-1])
    n = samples.shape[0]
    reference, other = draws(exact, n, seed), draws(exact, n, seed + 1)
    w2 = wasserstein2(samples, reference)
    baseline = wasserstein2(other, reference)
    assert w2 < 2.0 * baseline, (w2, baseline)
    return w2 / baseline


def run(log_potential, prior, seed: int, **kwargs) -> PotentialResult:
    initial = draws(prior, CHAINS, 100 + seed)
    return sample_potential(
        log_potential, prior, initial, num_samples=DRAWS, burn_in=500, seed=seed, **kwargs
    )


@pytest.mark.parametrize(
    "prior",
    [
        # Box [-5, 7] x [-14, 10]: 6 sd either side of the mean, logit transform.
        BoxUniform([-5.0, -14.0], [7.0, 10.0], dtype=DT),
        # Unbounded support: identity transform.
        Independent(Normal(torch.zeros(2, dtype=DT), 10.0), 1),
    ],
    ids=["box", "unbounded"],
)
def test_correlated_gaussian_matches_exact_draws(prior):
    res = run(GAUSS.log_prob, prior, seed=0)
    assert res.chains.shape == (CHAINS, DRAWS, 2) and res.chains.dtype == DT
    assert res.acceptance_rate.shape == (CHAINS,)
    assert res.ess.shape == (2,) and res.rhat.shape == (2,)
    assert float(res.rhat.max()) < 1.05
    assert_matches_exact(res, GAUSS, seed=1000)


def test_beta_with_mass_at_the_boundary_matches_exact_draws():
    # Beta(0.8, 3) has an infinite density at 0: in logit space the chains see
    # sigma(u)^0.8 sigma(-u)^3, which only holds with the Jacobian.
    res = run(beta_potential, UNIT_BOX, seed=1)
    assert bool(((res.chains > 0) & (res.chains < 1)).all())
    assert float(res.rhat.max()) < 1.05
    assert_matches_exact(res, BETA, seed=2000)


def test_beta_without_the_jacobian_fails_the_check(monkeypatch):
    # Without the log-Jacobian the chains target Beta(-0.2, 2) (improper: they run to 0)
    # times Beta(4, 1), far from the target.
    monkeypatch.setattr(SupportBijection, "log_abs_det_jacobian", lambda g, u: torch.zeros_like(u))
    res = run(beta_potential, UNIT_BOX, seed=1)
    with pytest.raises(AssertionError):
        assert_matches_exact(res, BETA, seed=2000)


def test_gamma_on_a_half_line_matches_exact_draws():
    # Positive support: log transform. Gamma(0.7, 2) also piles up mass at 0.
    gamma = Gamma(torch.tensor([0.7, 3.0], dtype=DT), torch.tensor([2.0, 1.0], dtype=DT))
    prior = Independent(Exponential(torch.ones(2, dtype=DT)), 1)
    res = run(lambda t: gamma.log_prob(t).sum(-1), prior, seed=2)
    assert bool((res.chains > 0).all())
    assert float(res.rhat.max()) < 1.05
    assert_matches_exact(res, gamma, seed=3000)


def test_single_parameter():
    # One parameter: the chains' covariance during burn-in is a 1 x 1 matrix.
    target = Beta(torch.tensor([0.8], dtype=DT), torch.tensor([3.0], dtype=DT))
    prior = BoxUniform([0.0], [1.0], dtype=DT)
    res = run(lambda t: target.log_prob(t).sum(-1), prior, seed=3)
    assert res.chains.shape == (CHAINS, DRAWS, 1)
    assert float(res.rhat.max()) < 1.05
    assert_matches_exact(res, target, seed=4000)


def test_reproducible_float32_and_random_walk():
    initial = draws(UNIT_BOX, 8, 0).float()
    prior = BoxUniform([0.0, 0.0], [1.0, 1.0], dtype=torch.float32)

    def sample(seed):
        return sample_potential(
            lambda t: BETA.log_prob(t.double()).sum(-1),
            prior,
            initial,
            num_samples=50,
            burn_in=50,
            kernel="rw",
            seed=seed,
        )

    a, b, c = sample(5), sample(5), sample(6)
    assert a.chains.dtype == torch.float32 and a.chains.shape == (8, 50, 2)
    assert torch.equal(a.chains, b.chains) and not torch.equal(a.chains, c.chains)
    assert bool(((a.chains > 0) & (a.chains < 1)).all())


def test_potential_is_only_evaluated_strictly_inside():
    # Beta(1, 0.05) in logit space has a tail exp(-0.05 u): in float32 many proposals
    # round onto theta = 1. They must be rejected without calling the potential there.
    target = Beta(torch.tensor([1.0, 2.0]), torch.tensor([0.05, 2.0]))

    def strict(theta):
        assert bool(((theta > 0) & (theta < 1)).all()), "called on the boundary"
        return target.log_prob(theta).sum(-1)

    prior = BoxUniform([0.0, 0.0], [1.0, 1.0], dtype=torch.float32)
    res = sample_potential(
        strict, prior, torch.full((8, 2), 0.5), num_samples=300, burn_in=200, seed=0
    )
    assert bool(((res.chains > 0) & (res.chains < 1)).all())
    assert bool(torch.isfinite(res.chains).all())


def test_initial_points_on_the_boundary_are_moved_inside():
    initial = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.2, 0.9]], dtype=DT)
    res = sample_potential(beta_potential, UNIT_BOX, initial, num_samples=20, burn_in=20, seed=0)
    assert bool(((res.chains > 0) & (res.chains < 1)).all())


def test_errors():
    ok = torch.full((4, 2), 0.5, dtype=DT)
    kw = dict(num_samples=10, burn_in=10, seed=0)
    with pytest.raises(ValueError, match="shape"):
        sample_potential(beta_potential, UNIT_BOX, ok[0], **kw)
    with pytest.raises(ValueError, match="floating"):
        sample_potential(beta_potential, UNIT_BOX, torch.zeros((4, 2), dtype=torch.long), **kw)
    with pytest.raises(ValueError, match="3 parameters but the prior has 2"):
        sample_potential(beta_potential, UNIT_BOX, torch.full((4, 3), 0.5, dtype=DT), **kw)
    outside = ok.clone()
    outside[2, 1] = 1.5
    with pytest.raises(ValueError, match=r"chains \[2\] are outside"):
        sample_potential(beta_potential, UNIT_BOX, outside, **kw)
    nan = ok.clone()
    nan[1, 0] = torch.nan
    with pytest.raises(ValueError, match=r"chains \[1\]"):
        sample_potential(beta_potential, UNIT_BOX, nan, **kw)

    def half(theta):  # no mass where theta_0 < 0.3
        lp = beta_potential(theta)
        return torch.where(theta[:, 0] < 0.3, torch.full_like(lp, -torch.inf), lp)

    low = ok.clone()
    low[3, 0] = 0.1
    with pytest.raises(ValueError, match=r"not finite at the initial points of chains \[3\]"):
        sample_potential(half, UNIT_BOX, low, **kw)
    with pytest.raises(ValueError, match=r"to \(4,\)"):
        sample_potential(lambda t: beta_potential(t)[:, None], UNIT_BOX, ok, **kw)
    with pytest.raises(ValueError, match="kernel"):
        sample_potential(beta_potential, UNIT_BOX, ok, kernel="hmc", **kw)
