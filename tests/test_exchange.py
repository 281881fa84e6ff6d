"""Tests of exchange MCMC on the Gaussian task, whose exponential family is known exactly.

Data: 10 iid N(mu, sigma), prior uniform on [-10, 10] x [1, 10]. Family: s(y) = (sum y,
sum y^2), eta(mu, sigma) = (mu / sigma^2, -1 / (2 sigma^2)), b = 0. The exact posterior is
evaluated on a fine grid over the prior box; samples from it (uniform within grid cells) are
the reference, and the W2 distance between two independent reference samples of the same size
is the noise floor.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebm_lfi.priors import BoxUniform
from ebm_lfi.samplers.mcmc.diagnostics import effective_sample_size
from ebm_lfi.samplers.mcmc.exchange import exchange_mcmc
from ebm_lfi.samplers.mcmc.exchange_auxiliary import (
    ExponentialFamily,
    gaussian_draw,
    quadratic_form,
)
from ebm_lfi.samplers.mcmc.inner_check import inner_chain_check

ot = pytest.importorskip("ot")

DT = torch.float64
LOW = torch.tensor([-10.0, 1.0], dtype=DT)
HIGH = torch.tensor([10.0, 10.0], dtype=DT)
N_OBS = 10
SUBSET = 1000


class GaussianFamily:
    def natural_parameters(self, theta: torch.Tensor) -> torch.Tensor:
        mu, sigma = theta[:, 0], theta[:, 1]
        return torch.stack([mu / sigma**2, -0.5 / sigma**2], dim=-1)

    def statistics_y(self, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y.sum(-1), (y**2).sum(-1)], dim=-1)

    def log_unnormalized_y(self, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return (self.natural_parameters(theta) * self.statistics_y(y)).sum(-1)


def prior_draws(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return LOW + (HIGH - LOW) * torch.rand((n, 2), generator=g, dtype=DT)


class GridPosterior:
    """Exact posterior on a fine grid of the prior box."""

    def __init__(self, y: torch.Tensor, size: int = 801):
        mu = torch.linspace(-10, 10, size, dtype=DT)
        sigma = torch.linspace(1, 10, size, dtype=DT)
        self.cell = torch.stack([mu[1] - mu[0], sigma[1] - sigma[0]])
        m, s = torch.meshgrid(mu, sigma, indexing="ij")
        loglik = -N_OBS * torch.log(s) - ((y - m[..., None]) ** 2).sum(-1) / (2 * s**2)
        self.points = torch.stack([m.flatten(), s.flatten()], dim=-1)
        self.probs = torch.softmax(loglik.flatten(), dim=0)
        self.mean = self.probs @ self.points
        centred = self.points - self.mean
        self.cov = (centred.T * self.probs) @ centred

    def sample(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        idx = torch.multinomial(self.probs, n, replacement=True, generator=g)
        jitter = (torch.rand((n, 2), generator=g, dtype=DT) - 0.5) * self.cell
        return self.points[idx] + jitter


def w2(a: torch.Tensor, b: torch.Tensor) -> float:
    cost = ot.dist(a.numpy(), b.numpy())  # squared Euclidean
    return math.sqrt(ot.emd2([], [], cost))


def subset(chains: torch.Tensor, seed: int) -> torch.Tensor:
    flat = chains.reshape(-1, chains.shape[-1])
    idx = torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(seed))
    return flat[idx[:SUBSET]]


@pytest.fixture(scope="module")
def task():
    g = torch.Generator().manual_seed(2024)
    y_obs = 1.0 + 2.0 * torch.randn(N_OBS, generator=g, dtype=DT)
    grid = GridPosterior(y_obs)
    refs = [grid.sample(SUBSET, seed) for seed in range(4)]
    floor = sum(w2(refs[i], refs[i + 1]) for i in (0, 2)) / 2
    return y_obs, grid, refs, floor


def log_prior(theta: torch.Tensor) -> torch.Tensor:
    inside = ((theta >= LOW) & (theta <= HIGH)).all(-1)
    value = -torch.log(HIGH - LOW).sum()
    return torch.where(inside, value, torch.full_like(value, -torch.inf))


def check_against_grid(result, grid, refs, floor, label: str) -> None:
    chains = result.chains
    assert bool(((chains >= LOW) & (chains <= HIGH)).all()), "left the prior box"
    spread = math.sqrt(float(grid.cov.trace()))
    distance = w2(subset(chains, 7), refs[0])
    print(
        f"\n[{label}] W2 {distance:.3f} (noise floor {floor:.3f}, posterior spread {spread:.3f}); "
        f"{result.seconds:.2f} s; outer acceptance {float(result.outer_acceptance.mean()):.3f}, "
        f"inner {result.inner_acceptance:.3f}; ESS {[round(v) for v in result.ess.tolist()]}"
    )
    # The subset must hold nearly independent draws (ESS of the order of its size), so that
    # its W2 to an exact sample fluctuates like the floor (about +-20% between subsets).
    assert bool((result.ess > SUBSET / 2).all())
    assert distance < 1.5 * floor + 0.05 * spread
    # Moments within 5 ESS-based standard errors of the exact ones.
    flat = chains.reshape(-1, 2)
    sd = grid.cov.diagonal().sqrt()
    ess = effective_sample_size(chains)
    assert bool(((flat.mean(0) - grid.mean).abs() < 5 * sd / ess.sqrt()).all())
    sq = (chains - grid.mean) ** 2
    se_var = sq.reshape(-1, 2).std(0) / effective_sample_size(sq).sqrt()
    assert bool(((sq.reshape(-1, 2).mean(0) - sd**2).abs() < 5 * se_var).all())


def test_family_satisfies_protocol():
    assert isinstance(GaussianFamily(), ExponentialFamily)


def test_exchange_mala_reproduces_exact_posterior(task):
    y_obs, grid, refs, floor = task
    result = exchange_mcmc(
        GaussianFamily(), log_prior, y_obs, prior_draws(200, 0), num_samples=300, burn_in=250,
        seed=1,
    )  # fmt: skip
    assert result.chains.shape == (200, 300, 2)
    assert result.outer_acceptance.shape == (200,)
    assert result.proposal_scale.shape == (2, 2)
    # Robbins–Monro brought the rates near their targets (0.25 outer, 0.8 inner MALA).
    assert 0.1 < float(result.outer_acceptance.mean()) < 0.4
    assert abs(result.inner_acceptance - 0.8) < 0.1
    check_against_grid(result, grid, refs, floor, "mala")


def test_wrong_auxiliary_draw_is_detected(task):
    # Sanity check of the test's power: with y' = y_obs (one inner step of size ~0) the
    # likelihood cancels and the chains sample the prior, far from the posterior.
    y_obs, grid, refs, floor = task
    result = exchange_mcmc(
        GaussianFamily(), log_prior, y_obs, prior_draws(50, 0), num_samples=40, burn_in=40,
        inner_steps=1, inner_step_size=1e-12, seed=1,
    )  # fmt: skip
    assert w2(subset(result.chains, 0), refs[0]) > 3 * floor


def test_fixed_scales_seed_and_validation(task):
    y_obs, *_ = task
    prior = BoxUniform(LOW, HIGH, dtype=DT)
    kwargs = dict(num_samples=20, burn_in=10, inner_steps=5, seed=3)
    a = exchange_mcmc(
        GaussianFamily(), prior, y_obs, prior_draws(8, 1), proposal_scale=torch.tensor([0.5, 0.3]),
        inner_step_size=0.7, **kwargs,
    )  # fmt: skip
    b = exchange_mcmc(
        GaussianFamily(), prior, y_obs, prior_draws(8, 1), proposal_scale=torch.tensor([0.5, 0.3]),
        inner_step_size=0.7, **kwargs,
    )  # fmt: skip
    assert torch.equal(a.chains, b.chains)
    torch.testing.assert_close(a.proposal_scale, torch.diag(torch.tensor([0.5, 0.3], dtype=DT)))
    assert a.inner_step_size == pytest.approx(0.7)
    assert bool(((a.chains >= LOW) & (a.chains <= HIGH)).all())
    with pytest.raises(ValueError, match=r"\(chains, p\)"):
        exchange_mcmc(GaussianFamily(), prior, y_obs, torch.zeros(2), **kwargs)
    with pytest.raises(ValueError, match="finite"):
        exchange_mcmc(GaussianFamily(), prior, y_obs, torch.zeros(3, 2, dtype=DT), **kwargs)
    with pytest.raises(ValueError, match="inner_kernel"):
        exchange_mcmc(
            GaussianFamily(), prior, y_obs, prior_draws(3, 0), inner_kernel="hmc", **kwargs
        )


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["bridging", "rw"])
def test_exchange_variants_reproduce_exact_posterior(task, variant):
    y_obs, grid, refs, floor = task
    options = {"bridging": {"bridging": 4}, "rw": {"inner_kernel": "rw", "inner_steps": 150}}
    result = exchange_mcmc(
        GaussianFamily(), log_prior, y_obs, prior_draws(200, 0), num_samples=300, burn_in=250,
        seed=2, **options[variant],
    )  # fmt: skip
    check_against_grid(result, grid, refs, floor, variant)


@pytest.mark.parametrize("steps, step_size, mixed", [(200, 0.6, True), (30, 0.1, False)])
def test_inner_chain_check_detects_a_chain_that_stays_at_the_observation(steps, step_size, mixed):
    # the exact family: simulations at theta are draws of the family itself, so a long inner
    # chain matches them; one tiny step leaves every auxiliary draw at the observation
    g = torch.Generator().manual_seed(5)
    theta = torch.stack([torch.zeros(200, dtype=DT), 2.0 + 0.2 * torch.rand(200, generator=g)], 1)
    theta[:, 0] = 0.3 * torch.randn(200, generator=g, dtype=DT)
    y_sim = theta[:, :1] + theta[:, 1:] * torch.randn(200, N_OBS, generator=g, dtype=DT)
    y_obs = 0.1 + 2.1 * torch.randn(N_OBS, generator=g, dtype=DT)
    check = inner_chain_check(
        GaussianFamily(), y_obs, theta, y_sim, inner_steps=steps, inner_step_size=step_size, seed=0
    )
    assert check.sd_ratio.shape == (2,) and check.z.shape == (2,)
    assert check.mixed is mixed
    if not mixed:
        assert bool((check.sd_ratio < 0.5).all()) and float(check.z.abs().max()) > 4
    if mixed:  # the family is the simulator's: the longer chain matches the simulations
        assert check.fits is True


def test_inner_chain_check_tells_a_model_that_misses_the_simulator_from_an_unmixed_chain():
    # simulations with a spread 1.5 times the family's: a long, mixed inner chain matches the
    # family (mixed) but not the simulator (does not fit); the family's own draws fit
    g = torch.Generator().manual_seed(6)
    theta = torch.stack(
        [0.3 * torch.randn(200, generator=g, dtype=DT), 2.0 + 0.2 * torch.rand(200, generator=g)], 1
    )
    y_obs = 0.1 + 2.1 * torch.randn(N_OBS, generator=g, dtype=DT)
    noise = torch.randn(200, N_OBS, generator=g, dtype=DT)
    for spread, fits in ((1.5, False), (1.0, True)):
        y_sim = theta[:, :1] + spread * theta[:, 1:] * noise
        check = inner_chain_check(
            GaussianFamily(), y_obs, theta, y_sim, inner_steps=200, inner_step_size=0.6, seed=0
        )
        assert check.mixed is True and check.fits is fits, (check.fit_sd_ratio, check.fit_shift)
        if not fits:  # the model's draws are narrower than the simulations
            assert float(check.fit_sd_ratio.max()) < 0.8


def test_gaussian_draw_is_exact_and_refuses_improper_models():
    # f(y) = mu/s^2 sum y - sum y^2 / (2 s^2): the family is N(mu, s^2) iid
    theta = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=DT).repeat_interleave(2000, 0)
    g = torch.Generator().manual_seed(0)
    y = gaussian_draw(GaussianFamily(), theta, torch.zeros(N_OBS, dtype=DT), g)
    assert y.shape == (4000, N_OBS)
    for rows, (mu, s) in ((slice(0, 2000), (1.0, 2.0)), (slice(2000, None), (-3.0, 0.5))):
        draws = y[rows].flatten()
        n = draws.numel()
        assert abs(float(draws.mean()) - mu) < 4 * s / math.sqrt(n)
        assert abs(float(draws.std()) / s - 1) < 4 / math.sqrt(2 * n)
        # coordinates are independent
        corr = torch.corrcoef(y[rows].T)
        assert float((corr - torch.eye(N_OBS, dtype=DT)).abs().max()) < 5 / math.sqrt(2000)

    class Improper(GaussianFamily):
        def natural_parameters(self, theta):
            return torch.stack([theta[:, 0], theta[:, 1]], dim=-1)  # +y^2 when theta_2 > 0

    t = torch.tensor([[0.0, -1.0], [0.0, 1.0]], dtype=DT)
    y = gaussian_draw(Improper(), t, torch.zeros(N_OBS, dtype=DT), g)
    assert bool(torch.isfinite(y[0]).all()) and bool(torch.isnan(y[1]).all())


def test_the_quadratic_form_read_off_once_gives_the_hessian_and_gradient_of_every_theta():
    # the Gaussian family plus a base measure that couples neighbours, b(y) = -0.1 sum y_i y_i+1
    # + 0.5 y_1: H(theta) = 2 eta_2 I + B, g(theta) = eta_1 1 + e_1 / 2 in closed form
    class Coupled(GaussianFamily):
        def log_unnormalized_y(self, y, theta):
            base = -0.1 * (y[:, 1:] * y[:, :-1]).sum(-1) + 0.5 * y[:, 0]
            return super().log_unnormalized_y(y, theta) + base

    family, like = Coupled(), torch.zeros(N_OBS, dtype=DT)
    g = torch.Generator().manual_seed(3)
    theta = torch.stack([torch.randn(6, generator=g, dtype=DT), 1 + torch.rand(6, generator=g)], 1)
    form = quadratic_form(family, theta, like)
    coupling = -0.1 * (torch.diag(torch.ones(N_OBS - 1), 1) + torch.diag(torch.ones(N_OBS - 1), -1))
    torch.testing.assert_close(form.base_hessian, coupling.to(DT))
    torch.testing.assert_close(form.base_gradient, 0.5 * torch.eye(N_OBS, dtype=DT)[0])
    eta = family.natural_parameters(theta)
    hessian = torch.einsum("cj,jab->cab", eta, form.hessians) + form.base_hessian
    expected = 2 * eta[:, 1, None, None] * torch.eye(N_OBS, dtype=DT) + coupling.to(DT)
    torch.testing.assert_close(hessian, expected)
    # the draws from the form are those read off the network at every theta (a proper model:
    # the precision 1 / sigma^2 >= 1/4 dominates the coupling)
    a = gaussian_draw(family, theta, like, torch.Generator().manual_seed(0))
    b = gaussian_draw(family, theta, like, torch.Generator().manual_seed(0), form)
    assert bool(torch.isfinite(a).all())
    torch.testing.assert_close(a, b)


def test_a_banded_precision_is_drawn_in_blocks_as_the_dense_one():
    # an AR(1)-like family on 23 points, s(y) = (sum y_i, sum y_i^2, sum y_i y_i+1): a
    # tridiagonal precision theta_2 on the diagonal and -theta_3 beside it (bandwidth 1, blocks
    # of 5, the last one padded), indefinite where 2 |theta_3| cos(pi / 24) > theta_2: those
    # draws are NaN either way. 400 chains: enough for the blocks to pay (_BANDED_FROM)
    class Chain:
        def natural_parameters(self, theta):
            return torch.stack([theta[:, 0], -0.5 * theta[:, 1], theta[:, 2]], dim=-1)

        def statistics_y(self, y):
            return torch.stack([y.sum(-1), (y**2).sum(-1), (y[:, 1:] * y[:, :-1]).sum(-1)], -1)

        def log_unnormalized_y(self, y, theta):
            return (self.natural_parameters(theta) * self.statistics_y(y)).sum(-1)

    family, like = Chain(), torch.zeros(23, dtype=DT)
    g = torch.Generator().manual_seed(5)
    theta = torch.stack(
        [torch.randn(400, generator=g, dtype=DT), 1 + torch.rand(400, generator=g, dtype=DT),
         1.4 * torch.randn(400, generator=g, dtype=DT)], 1,
    )  # fmt: skip
    form = quadratic_form(family, theta, like)
    assert form.bandwidth == 1
    banded = gaussian_draw(family, theta, like, torch.Generator().manual_seed(0), form)
    dense = gaussian_draw(
        family, theta, like, torch.Generator().manual_seed(0), form._replace(bandwidth=None)
    )
    proper = torch.isfinite(dense).all(1)
    assert 0 < int(proper.sum()) < 400  # both kinds of rows
    assert torch.equal(torch.isfinite(banded).all(1), proper)
    assert bool(torch.isnan(banded[~proper]).all())
    torch.testing.assert_close(banded[proper], dense[proper], rtol=0, atol=1e-12)
    # and the draws are those of the model: the sample covariance of one proper theta's
    # draws against the inverse precision (4,000 draws: entries within 5 standard errors)
    row = int(proper.nonzero()[0])
    draws = gaussian_draw(
        family, theta[row].expand(4_000, 3), like, torch.Generator().manual_seed(1), form
    )
    eta = family.natural_parameters(theta[row : row + 1])[0]
    precision = -2 * eta[1] * torch.eye(23, dtype=DT)
    precision -= eta[2] * (
        torch.diag(torch.ones(22, dtype=DT), 1) + torch.diag(torch.ones(22, dtype=DT), -1)
    )
    covariance = torch.linalg.inv(precision)
    mean = covariance @ (eta[0] * torch.ones(23, dtype=DT))
    sd = covariance.diagonal().sqrt()
    assert bool(((draws.mean(0) - mean).abs() < 5 * sd / 4_000**0.5).all())
    se = (covariance**2 + torch.outer(sd**2, sd**2)).sqrt() / 4_000**0.5
    assert bool(((torch.cov(draws.T) - covariance).abs() < 5 * se).all())


def test_exchange_with_exact_gaussian_draws_reproduces_exact_posterior(task):
    y_obs, grid, refs, floor = task
    result = exchange_mcmc(
        GaussianFamily(), log_prior, y_obs, prior_draws(200, 0), num_samples=300, burn_in=250,
        inner_kernel="gaussian", seed=1,
    )  # fmt: skip
    assert result.inner_acceptance == 1.0
    check_against_grid(result, grid, refs, floor, "gaussian")


def test_groups_of_chains_sample_each_observation_s_own_posterior(task):
    # Two observations, far apart and of different spread, sampled as one batch: each group
    # must reach its own exact posterior (its own adapted proposal), not a mixture.
    y_obs, grid, refs, floor = task
    g = torch.Generator().manual_seed(7)
    y_two = -4.0 + 0.7 * torch.randn(N_OBS, generator=g, dtype=DT)
    grid_two = GridPosterior(y_two)
    refs_two = [grid_two.sample(SUBSET, seed) for seed in range(4)]
    floor_two = sum(w2(refs_two[i], refs_two[i + 1]) for i in (0, 2)) / 2
    starts = torch.stack([prior_draws(200, 0), prior_draws(200, 1)])
    result = exchange_mcmc(
        GaussianFamily(), log_prior, torch.stack([y_obs, y_two]), starts, num_samples=300,
        burn_in=250, inner_kernel="gaussian", seed=1,
    )  # fmt: skip
    assert result.chains.shape == (2, 200, 300, 2)
    assert result.outer_acceptance.shape == (2, 200)
    assert result.ess.shape == result.rhat.shape == (2, 2)
    assert result.proposal_scale.shape == (2, 2, 2)
    # each group adapted to its own posterior: the narrow one gets the smaller proposal
    assert float(result.proposal_scale[1].diagonal().prod()) < float(
        result.proposal_scale[0].diagonal().prod()
    )
    for i, (grid_i, refs_i, floor_i) in enumerate(
        [(grid, refs, floor), (grid_two, refs_two, floor_two)]
    ):
        group = result._replace(
            chains=result.chains[i],
            outer_acceptance=result.outer_acceptance[i],
            ess=result.ess[i],
        )
        check_against_grid(group, grid_i, refs_i, floor_i, f"group {i}")
    # negative control: a group's draws are far from the other observation's posterior
    assert w2(subset(result.chains[0], 0), refs_two[0]) > 3 * floor_two
    with pytest.raises(ValueError, match="must hold 2 observations"):
        exchange_mcmc(
            GaussianFamily(), log_prior, y_obs, starts, num_samples=4, burn_in=1,
            inner_kernel="gaussian",
        )  # fmt: skip


# ------------------------------------------------------- jumps between separated modes
class SquaredMeanFamily:
    """y_1..n iid N(theta^2, 1): natural parameters (theta^2, -1/2) of (sum y, sum y^2), so
    the posterior is symmetric in theta, with two modes at +-sqrt(mean y) split by a valley
    the random walk does not cross."""

    def natural_parameters(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.stack([theta[:, 0] ** 2, torch.full_like(theta[:, 0], -0.5)], dim=-1)

    def statistics_y(self, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y.sum(-1), (y**2).sum(-1)], dim=-1)

    def log_unnormalized_y(self, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return (self.natural_parameters(theta) * self.statistics_y(y)).sum(-1)


@pytest.mark.parametrize("jump_rate", [0.0, 0.3])
def test_jumps_carry_chains_between_separated_modes(jump_rate):
    g = torch.Generator().manual_seed(0)
    y_obs = 2.25 + torch.randn(N_OBS, generator=g, dtype=DT)
    box = BoxUniform(torch.tensor([-3.0], dtype=DT), torch.tensor([3.0], dtype=DT), dtype=DT)
    mode = float(y_obs.mean().sqrt())
    # 16 of 20 chains start in the positive mode: the posterior puts half its mass in each
    signs = torch.tensor([1.0] * 16 + [-1.0] * 4, dtype=DT)[torch.randperm(20, generator=g)]
    start = (signs * mode + 0.05 * torch.randn(20, generator=g, dtype=DT))[:, None]
    result = exchange_mcmc(
        SquaredMeanFamily(), box, y_obs, start, num_samples=1500, burn_in=200,
        inner_kernel="gaussian", jump_rate=jump_rate, seed=0,
    )  # fmt: skip
    positive = (result.chains[..., 0] > 0).to(DT)  # (chains, draws)
    share = float(positive.mean())
    # the exact posterior of |theta| on a grid: the within-mode shape
    grid = torch.linspace(1e-4, 3.0, 30_001, dtype=DT)
    log_post = grid**2 * y_obs.sum() - N_OBS * grid**4 / 2
    weights = torch.softmax(log_post, 0)
    magnitude = result.chains[..., 0].abs()
    exact_mean = float(weights @ grid)
    exact_sd = float((weights @ (grid - exact_mean) ** 2).sqrt())
    se = exact_sd / float(effective_sample_size(magnitude[..., None])[0]).__pow__(0.5)
    assert abs(float(magnitude.mean()) - exact_mean) < 5 * se
    if jump_rate == 0:
        # negative control: no chain leaves its mode, the share stays where the chains began
        assert share == pytest.approx(0.8) and math.isnan(result.jump_acceptance)
    else:
        ess = float(effective_sample_size(positive[..., None])[0])
        assert ess > 50 and result.jump_acceptance > 0.1, (ess, result.jump_acceptance)
        assert abs(share - 0.5) < 4 * (0.25 / ess) ** 0.5, (share, ess)


def test_jump_rate_is_checked(task):
    y_obs, *_ = task
    with pytest.raises(ValueError, match="jump_rate"):
        exchange_mcmc(
            GaussianFamily(), log_prior, y_obs, prior_draws(3, 0), num_samples=2, burn_in=1,
            jump_rate=0.5,
        )  # fmt: skip
    with pytest.raises(ValueError, match="jump_rate"):
        exchange_mcmc(
            GaussianFamily(), log_prior, y_obs, prior_draws(8, 0), num_samples=2, burn_in=1,
            jump_rate=1.5,
        )  # fmt: skip
