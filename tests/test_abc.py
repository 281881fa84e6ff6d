"""Tests of rejection ABC, SMC-ABC and the statistic scaler on a conjugate Gaussian model.

Model: theta ~ N(0, 3^2) (or a uniform box), x = 10 iid N(theta, 1), statistic xbar.
Posterior N(m, v) with v = 1 / (1/9 + 10), m = 10 v xbar_o. ABC with a uniform kernel of
half-width eps on xbar targets pi(theta) [Phi((xo + eps - theta)/s) - Phi((xo - eps - theta)/s)]
with s = 1/sqrt(10), whose moments we integrate numerically; its variance exceeds v by about
(10 v)^2 eps^2 / 3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps
from torch.distributions import Independent, Normal

from ebm_lfi.methods.abc_stage import ABCConfig, ABCStage
from ebm_lfi.methods.baselines import FixedStatistics
from ebm_lfi.priors import BoxUniform
from ebm_lfi.samplers.abc.rejection import auto_num_accepted, rejection_abc, systematic_resample
from ebm_lfi.samplers.abc.scaler import StatisticScaler
from ebm_lfi.samplers.abc.smc import (
    _beaumont_factor,
    _importance_weights,
    _log_kernel_mixture,
    _olcm_factors,
    _Population,
    smc_abc,
)
from ebm_lfi.samplers.abc.smoothing import smoothed_resample, smoothing_bandwidth
from ebm_lfi.simulation.simulate import simulate
from ebm_lfi.simulation.simulator import Simulator

N_OBS = 10
PRIOR_SD = 3.0
XBAR_O = 1.0
POST_V = 1.0 / (1.0 / PRIOR_SD**2 + N_OBS)
POST_M = POST_V * N_OBS * XBAR_O
SHRINK = N_OBS * POST_V  # d(posterior mean) / d(xbar)


def normal_prior() -> Independent:
    zero = torch.zeros(1, dtype=torch.float64)
    return Independent(Normal(zero, PRIOR_SD + zero), 1)


def simulate_xbar(theta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    x = theta + torch.randn((theta.shape[0], N_OBS), generator=generator, dtype=theta.dtype)
    return x.mean(dim=1, keepdim=True)


def abc_moments(log_prior, lo: float, hi: float, xo: float, eps: float) -> tuple[float, float]:
    """Mean and variance of the exact uniform-kernel ABC posterior by quadrature."""
    s = 1.0 / math.sqrt(N_OBS)
    grid = np.linspace(lo, hi, 200_001)
    like = sps.norm.cdf((xo + eps - grid) / s) - sps.norm.cdf((xo - eps - grid) / s)
    dens = np.exp(log_prior(grid)) * like
    mass = np.trapezoid(dens, grid)
    mean = np.trapezoid(grid * dens, grid) / mass
    return mean, np.trapezoid((grid - mean) ** 2 * dens, grid) / mass


def normal_log_prior(grid):
    return sps.norm.logpdf(grid, scale=PRIOR_SD)


@pytest.fixture(scope="module")
def table():
    g = torch.Generator().manual_seed(0)
    theta = PRIOR_SD * torch.randn((200_000, 1), generator=g, dtype=torch.float64)
    return theta, simulate_xbar(theta, g)


def test_scaler_standardises_and_validates():
    g = torch.Generator().manual_seed(1)
    stats = torch.randn((5000, 3), generator=g, dtype=torch.float64) * torch.tensor(
        [1.0, 10.0, 0.1], dtype=torch.float64
    )
    scaler = StatisticScaler().fit(stats)
    torch.testing.assert_close(scaler(stats).std(dim=0), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(\*, 3\)"):
        scaler(torch.zeros(4, 2))
    with pytest.raises(RuntimeError):
        StatisticScaler()(stats)
    with pytest.raises(ValueError):
        StatisticScaler().fit(torch.zeros(10))


def test_rejection_matches_brute_force_and_is_amortised(table):
    theta, stats = table
    theta, stats = theta[:20_000], stats[:20_000]
    obs = torch.tensor([[-2.0], [0.0], [1.0], [3.5]], dtype=torch.float64)
    res = rejection_abc(theta, stats, obs, num_samples=50, chunk_size=3001)
    assert res.samples.shape == (4, 50, 1) and res.epsilon.shape == (4,)
    scale = stats.std(dim=0)
    for i in range(4):
        brute = ((stats - obs[i]) / scale).norm(dim=1)
        expected = torch.sort(brute).values[:50]
        torch.testing.assert_close(res.distances[i], expected)
        assert torch.equal(res.samples[i], theta[res.indices[i]])
        single = rejection_abc(theta, stats, obs[i], num_samples=50)
        assert single.samples.shape == (1, 50, 1)
        assert torch.equal(single.indices[0], res.indices[i])
    assert torch.all(res.epsilon == res.distances[:, -1])


def test_rejection_validates_inputs(table):
    theta, stats = table
    with pytest.raises(ValueError, match="exactly one"):
        rejection_abc(theta, stats, stats[0])
    with pytest.raises(ValueError, match=r"\(1,\) or \(m, 1\)"):
        rejection_abc(theta, stats, torch.zeros(3), num_samples=5)
    with pytest.raises(ValueError, match="rows"):
        rejection_abc(theta[:10], stats, stats[0], num_samples=5)


def test_rejection_converges_to_conjugate_posterior(table):
    theta, stats = table
    obs = torch.tensor([XBAR_O], dtype=torch.float64)
    scale = float(stats.std())
    var_errors = []
    for q in (0.3, 0.1, 0.01):
        res = rejection_abc(theta, stats, obs, quantile=q)
        draws = res.samples[0, :, 0]
        n = draws.numel()
        eps = float(res.epsilon[0]) * scale
        mean, var = float(draws.mean()), float(draws.var())
        abc_mean, abc_var = abc_moments(normal_log_prior, -20, 20, XBAR_O, eps)
        # The sample matches the exact ABC posterior at its tolerance (4 standard errors).
        assert abs(mean - abc_mean) < 4 * math.sqrt(abc_var / n)
        assert abs(var - abc_var) < 4 * abc_var * math.sqrt(2 / (n - 1))
        var_errors.append(abs(var - POST_V))
    assert var_errors[0] > var_errors[1] > var_errors[2]
    # Smallest tolerance: closed form within standard errors plus the kernel inflation.
    inflation = SHRINK**2 * eps**2 / 3
    assert abs(mean - POST_M) < 4 * math.sqrt(var / n)
    assert abs(var - POST_V) < 4 * POST_V * math.sqrt(2 / (n - 1)) + inflation


def counting_simulator(seed: int, low: float = -math.inf, high: float = math.inf):
    g = torch.Generator().manual_seed(seed)
    calls = {"n": 0}

    def simulate(theta: torch.Tensor) -> torch.Tensor:
        assert theta.ndim == 2 and theta.shape[1] == 1
        assert bool(((theta >= low) & (theta <= high)).all()), "simulated outside the prior"
        calls["n"] += theta.shape[0]
        return simulate_xbar(theta, g)

    return simulate, calls


def weighted_moments(particles: torch.Tensor, weights: torch.Tensor) -> tuple[float, float]:
    x = particles[:, 0]
    mean = float(weights @ x)
    return mean, float(weights @ (x - mean) ** 2)


def test_smc_abc_converges_and_respects_budget():
    obs = torch.tensor([XBAR_O], dtype=torch.float64)
    scale = math.sqrt(PRIOR_SD**2 + 1 / N_OBS)  # std of xbar under the prior predictive
    results = {}
    for rounds in (2, None):
        simulate, calls = counting_simulator(1)
        res = smc_abc(
            simulate, normal_prior(), obs, num_particles=2000, max_simulations=60_000,
            max_rounds=rounds, scale=torch.tensor([scale]), seed=2,
        )  # fmt: skip
        assert calls["n"] == res.simulations <= 60_000
        assert int(res.simulations_per_round.sum()) <= res.simulations
        assert torch.allclose(res.weights.sum(), torch.ones((), dtype=torch.float64))
        assert bool((res.distances <= res.epsilon[-1]).all())
        assert bool((res.epsilon[1:].diff() <= 0).all())
        results[rounds] = res
    early, final = results[2], results[None]
    assert early.epsilon.shape == (2,) and final.epsilon.shape[0] > 3
    assert final.stop_reason in ("budget", "acceptance")
    # Same seed: the long run starts with the short one's rounds.
    torch.testing.assert_close(final.epsilon[:2], early.epsilon)

    # Weighted moments match the exact ABC posterior at the final tolerance within 4.5
    # standard errors (Kish ESS of the weights). Unweighted particles are ~6 SE too narrow
    # here, so the importance weights are tested too.
    errors = []
    for res in (early, final):
        mean, var = weighted_moments(res.particles, res.weights)
        eps = float(res.epsilon[-1]) * scale
        abc_mean, abc_var = abc_moments(normal_log_prior, -20, 20, XBAR_O, eps)
        assert abs(mean - abc_mean) < 4.5 * math.sqrt(abc_var / res.ess)
        assert abs(var - abc_var) < 4.5 * abc_var * math.sqrt(2 / res.ess)
        errors.append(abs(var - POST_V) + abs(mean - POST_M))
    assert errors[1] < errors[0]
    inflation = SHRINK**2 * eps**2 / 3
    assert abs(mean - POST_M) < 4.5 * math.sqrt(POST_V / final.ess)
    assert abs(var - POST_V) < 4.5 * POST_V * math.sqrt(2 / final.ess) + inflation


def test_smc_abc_box_prior_truncated_posterior():
    low, high, xo = -1.0, 2.0, 1.9
    prior = BoxUniform([low], [high], dtype=torch.float64)
    simulate, calls = counting_simulator(3, low, high)
    res = smc_abc(
        simulate, prior, torch.tensor([xo], dtype=torch.float64), num_particles=1000,
        max_simulations=20_000, seed=4,
    )  # fmt: skip
    assert calls["n"] == res.simulations <= 20_000
    assert bool(((res.particles >= low) & (res.particles <= high)).all())
    mean, var = weighted_moments(res.particles, res.weights)
    scale = float(math.sqrt((high - low) ** 2 / 12 + 1 / N_OBS))
    eps = float(res.epsilon[-1]) * scale
    abc_mean, abc_var = abc_moments(lambda g: np.zeros_like(g), low, high, xo, eps)
    assert abs(mean - abc_mean) < 5 * math.sqrt(abc_var / res.ess)
    assert abs(var - abc_var) < 5 * abc_var * math.sqrt(2 / res.ess)
    s = 1 / math.sqrt(N_OBS)
    exact = sps.truncnorm((low - xo) / s, (high - xo) / s, loc=xo, scale=s)
    assert abs(mean - exact.mean()) < 5 * math.sqrt(exact.var() / res.ess) + eps**2


def test_smc_abc_small_budget_and_validation():
    simulate, calls = counting_simulator(5)
    obs = torch.tensor([XBAR_O], dtype=torch.float64)
    res = smc_abc(simulate, normal_prior(), obs, num_particles=200, max_simulations=1234, seed=0)
    assert calls["n"] == res.simulations <= 1234
    assert res.stop_reason == "budget"
    assert res.particles.shape == (200, 1)
    with pytest.raises(ValueError, match="max_simulations"):
        smc_abc(simulate, normal_prior(), obs, num_particles=200, max_simulations=100)
    with pytest.raises(ValueError, match=r"\(k,\)"):
        smc_abc(simulate, normal_prior(), obs[None], num_particles=200)
    with pytest.raises(TypeError):
        smc_abc(simulate, lambda t: t, obs)


def test_smc_abc_is_reproducible():
    obs = torch.tensor([XBAR_O], dtype=torch.float64)
    runs = []
    for _ in range(2):
        simulate, _ = counting_simulator(6)
        runs.append(smc_abc(simulate, normal_prior(), obs, num_particles=300,
                            max_simulations=5000, seed=7))  # fmt: skip
    torch.testing.assert_close(runs[0].particles, runs[1].particles)
    torch.testing.assert_close(runs[0].weights, runs[1].weights)


def test_auto_num_accepted_follows_the_rate_and_clips():
    # m = N^(4 / (p + 4)) / 2 inside [min(N, 100), max(min(N, 100), N // 10)].
    assert auto_num_accepted(100_000, 2) == round(0.5 * 100_000 ** (2 / 3))
    assert auto_num_accepted(1_000_000, 3) == round(0.5 * 1_000_000 ** (4 / 7))
    assert auto_num_accepted(1_000, 1) == 100  # the rate (125) is above N / 10
    assert auto_num_accepted(100_000, 1, constant=2.0) == 10_000  # clipped at N / 10
    assert auto_num_accepted(1_000_000, 5) == round(0.5 * 1_000_000 ** (4 / 9))
    assert auto_num_accepted(500, 5) == 100  # the floor
    assert auto_num_accepted(40, 2) == 40  # never more than the table
    sizes = [10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6]
    for p in range(1, 6):
        values = [auto_num_accepted(n, p) for n in sizes]
        assert values == sorted(values), "more simulations never keep fewer entries"
        fractions = [m / n for m, n in zip(values, sizes, strict=True)]
        assert fractions == sorted(fractions, reverse=True), "the kept fraction shrinks"
        assert all(100 <= m <= n // 10 for m, n in zip(values, sizes, strict=True))
    for n in sizes:
        values = [auto_num_accepted(n, p) for p in range(1, 6)]
        assert values == sorted(values, reverse=True), "more parameters keep fewer entries"
    with pytest.raises(ValueError):
        auto_num_accepted(0, 2)


def test_systematic_resample_takes_floor_or_ceil_copies():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(50, generator=g, dtype=torch.float64)
    w[::7] = 0.0
    w = w / w.sum()
    for n in (10, 37, 1000):
        idx = systematic_resample(w, n, generator=g)
        assert idx.shape == (n,) and bool((idx[1:] >= idx[:-1]).all())
        counts = torch.bincount(idx, minlength=50).double()
        assert bool(((counts - n * w).abs() < 1).all())
        assert counts[::7].sum() == 0
    with pytest.raises(ValueError):
        systematic_resample(torch.zeros(3), 5)


# ---- the ABC stage of the methods (ABCStage) ----


def xbar_statistic(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1, keepdim=True)


def draws(theta, rng):
    noise = np.stack([r.standard_normal(N_OBS) for r in rng])
    return theta.numpy() + noise


XBAR_SIMULATOR = Simulator(draws, batched=True)


@pytest.fixture(scope="module")
def abc_stage():
    train = simulate(XBAR_SIMULATOR, normal_prior(), 2_000, seed=0)
    reference = simulate(XBAR_SIMULATOR, normal_prior(), 20_000, seed=1)
    x_o = torch.full((N_OBS,), XBAR_O, dtype=torch.float64)

    def stage(**config):
        fit = FixedStatistics(normal_prior(), xbar_statistic).fit(*train)
        abc = ABCStage(ABCConfig(**config), simulator=XBAR_SIMULATOR, reference=reference)
        return abc.prepare(fit, *fit.training_data)

    return stage, reference, x_o


def test_statistics_abc_old_behaviour_is_reproducible(abc_stage):
    stage, (theta_ref, x_ref), x_o = abc_stage
    abc = stage(regression_adjustment=False, num_accepted=300)
    samples, weights, _, diag = abc.sample(x_o, 300, seed=0)
    expected = rejection_abc(
        theta_ref, xbar_statistic(x_ref), torch.tensor([XBAR_O], dtype=torch.float64),
        num_samples=300, scale=abc.scaler.scale,
    )  # fmt: skip
    assert weights is None and torch.equal(samples, expected.samples[0])
    assert diag["regression_adjustment"] is False and diag["num_accepted"] == 300
    assert diag["acceptance_rate"] == 300 / 20_000
    assert diag["epsilon"] == pytest.approx(float(expected.epsilon[0]))


def test_statistics_abc_adjusts_a_wide_acceptance(abc_stage):
    stage, _, x_o = abc_stage
    # auto: min(N^0.8 / 2, N / 10) = 1380 of 20000 kept for p = 1.
    kept = auto_num_accepted(20_000, 1)
    samples, weights, _, diag = stage(resample=False).sample(x_o, 500, seed=0)
    assert kept > 500 and diag["num_accepted"] == kept
    assert diag["acceptance_rate"] == pytest.approx(kept / 20_000)
    assert diag["regression_adjustment"] is True and diag["num_samples"] == 500
    assert samples.shape == (kept, 1) and weights.shape == (kept,)
    mean, var = weighted_moments(samples, weights)
    ess = float(1 / (weights**2).sum())
    # The model is linear-Gaussian, so the adjusted sample is exact at any tolerance; the
    # same kept entries unadjusted are far too wide.
    assert abs(mean - POST_M) < 4 * math.sqrt(POST_V / ess)
    assert abs(var - POST_V) < 4 * POST_V * math.sqrt(2 / ess)
    plain = stage(regression_adjustment=False, resample=False).sample(x_o, 500, seed=0).samples
    assert plain.shape == (kept, 1)
    assert float(plain.var()) - POST_V > 5 * POST_V * math.sqrt(2 / kept)

    resampled, none, _, diag2 = stage(resample=True).sample(x_o, 500, seed=0)
    assert resampled.shape == (500, 1) and none is None
    assert diag2["num_accepted"] == kept and diag2["epsilon"] == pytest.approx(diag["epsilon"])
    assert abs(float(resampled.mean()) - POST_M) < 4 * math.sqrt(POST_V / 500)
    # Systematically resampled draws are adjusted kept samples, in no particular order.
    assert bool(torch.isin(resampled[:, 0], samples[:, 0]).all())
    again = stage(resample=True).sample(x_o, 500, seed=0).samples
    assert torch.equal(again, resampled)
    # The default draws from the kept samples' shrunk kernel density: no draw repeats a kept
    # sample or another draw, and mean and variance are the weighted sample's (the kernel adds
    # no spread; on the real line here, so exactly in expectation)
    smooth, none, _, diag3 = stage().sample(x_o, 500, seed=0)
    assert smooth.shape == (500, 1) and none is None and diag3["smoothing_bandwidth"] > 0
    assert not bool(torch.isin(smooth[:, 0], samples[:, 0]).any())
    assert smooth[:, 0].unique().numel() == 500
    assert abs(float(smooth.mean()) - mean) < 4 * math.sqrt(var / 500)
    assert abs(float(smooth.var()) - var) < 4 * var * math.sqrt(2 / 500)
    assert torch.equal(stage().sample(x_o, 500, seed=0).samples, smooth)


def test_smoothed_resampling_keeps_the_moments_and_the_support():
    # 100 weighted atoms near the lower end of (0, 1): the draws are continuous, inside the box,
    # and in u = logit(theta) their mean and covariance are the atoms' (the shrinkage cancels
    # the kernel's spread); the same atoms resampled systematically repeat 100 values
    g = torch.Generator().manual_seed(0)
    atoms = torch.sigmoid(-2.0 + 0.5 * torch.randn(100, 2, generator=g, dtype=torch.float64))
    weights = torch.rand(100, generator=g, dtype=torch.float64) + 0.5
    box = BoxUniform([0.0, 0.0], [1.0, 1.0])
    draws, h = smoothed_resample(atoms, weights, 20_000, box, generator=g)
    w = weights / weights.sum()
    assert h == pytest.approx(smoothing_bandwidth(float(1 / (w**2).sum()), 2))
    assert bool(((draws > 0) & (draws < 1)).all()) and draws[:, 0].unique().numel() == 20_000
    u, v = torch.logit(atoms), torch.logit(draws)
    mean = w @ u
    cov = ((u - mean).T * w) @ (u - mean)
    sd = cov.diagonal().sqrt()
    assert torch.allclose(v.mean(0), mean, atol=float(4 * sd.max() / math.sqrt(20_000)))
    # the sample covariance of 20,000 draws: a relative error of about sqrt(2 / 20000) = 1 %
    assert torch.allclose(torch.cov(v.T), cov, rtol=0.05, atol=0.05 * float(cov.diagonal().min()))
    plain = atoms[systematic_resample(w, 20_000, generator=g)]
    assert plain[:, 0].unique().numel() == 100


class _Triangle(BoxUniform):
    """U of the triangle theta_1 + theta_2 < 1 in the unit square (a support that is no box)."""

    def log_prob(self, value):
        inside = value.sum(-1) < 1
        return torch.where(inside, super().log_prob(value) + math.log(2), -math.inf)


def test_smoothed_draws_stay_inside_a_support_that_is_not_a_box():
    g = torch.Generator().manual_seed(1)
    atoms = torch.rand(50, 2, generator=g, dtype=torch.float64) * 0.1 + torch.tensor([0.4, 0.45])
    draws, _ = smoothed_resample(atoms, None, 5_000, _Triangle([0.0, 0.0], [1.0, 1.0]), generator=g)
    assert bool((draws.sum(1) < 1).all()) and bool(((draws > 0) & (draws < 1)).all())
    # the box's bijection alone puts a share of them across the diagonal
    loose, _ = smoothed_resample(
        atoms, None, 5_000, BoxUniform([0.0, 0.0], [1.0, 1.0]), generator=g
    )
    assert float((loose.sum(1) >= 1).double().mean()) > 0.05


def test_statistics_abc_config_validation():
    with pytest.raises(ValueError, match="num_accepted"):
        ABCConfig(num_accepted="some")
    with pytest.raises(ValueError, match="num_accepted"):
        ABCConfig(num_accepted=0)
    with pytest.raises(ValueError, match="max_rounds"):
        ABCConfig(max_rounds=0)
    with pytest.raises(ValueError, match="resample"):
        ABCConfig(resample="kde")


class RecordingSimulator(Simulator):
    """Remembers the seed of every batch of simulations."""

    def __init__(self):
        super().__init__(draws, batched=True)
        self.seeds = []

    def __call__(self, theta, *, seed=None):
        self.seeds.append(seed)
        return super().__call__(theta, seed=seed)


def test_statistics_smc_fresh_randomness_unless_seeded(abc_stage):
    stage, _, x_o = abc_stage
    abc = stage(sampler="smc", num_particles=200, max_simulations=2_000)
    abc.simulator = recorder = RecordingSimulator()

    def run(seed):
        recorder.seeds.clear()
        out = abc.sample(x_o, 200, seed=seed)
        return out, list(recorder.seeds)

    (seeded, seeds_a), (again, seeds_b) = run(5), run(5)
    torch.testing.assert_close(seeded.samples, again.samples)
    torch.testing.assert_close(seeded.weights, again.weights)
    assert seeds_a == seeds_b
    (first, seeds_c), (second, seeds_d) = run(None), run(None)
    assert not torch.equal(first.samples, second.samples)
    # The simulations are seeded afresh too (not from a fixed default seed).
    assert seeds_c[0] != seeds_d[0]
    assert first.diagnostics["seed"] != second.diagnostics["seed"]
    # The reported seed repeats an unseeded call.
    (repeat, seeds_e) = run(first.diagnostics["seed"])
    torch.testing.assert_close(repeat.samples, first.samples)
    assert seeds_e == seeds_c


def test_statistics_smc_rounds_stop_and_adjustment(abc_stage):
    stage, _, x_o = abc_stage
    diag = stage(sampler="smc", num_particles=300, max_rounds=2).sample(x_o, 300, seed=1)[-1]
    assert diag["rounds"] == 2 and diag["stop_reason"] == "max_rounds"
    abc = stage(sampler="smc", num_particles=1000, max_simulations=10_000, resample=False)
    samples, weights, _, diag = abc.sample(x_o, 1000, seed=2)
    assert diag["regression_adjustment"] is True and diag["simulations"] <= 10_000
    assert diag["kernel"] == "olcm" and diag["last_round"] in ("complete", "truncated-kept")
    # A kept truncated last round has fewer than num_particles particles.
    m = diag["num_accepted"]
    assert (m == 1000) == (diag["last_round"] == "complete")
    assert samples.shape == (m, 1) and weights.shape == (m,)
    mean, var = weighted_moments(samples, weights)
    ess = float(1 / (weights**2).sum())
    assert abs(mean - POST_M) < 4.5 * math.sqrt(POST_V / ess)
    assert abs(var - POST_V) < 4.5 * POST_V * math.sqrt(2 / ess)


# ---- SMC-ABC's kernels and its truncated last round ----


def random_population(n: int, p: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    theta = (
        torch.randn((n, p), generator=g, dtype=torch.float64)
        @ torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.5, 0.0], [-0.3, 0.2, 2.0]], dtype=torch.float64)[
            :p, :p
        ]
    )
    weights = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    distances = torch.rand(n, generator=g, dtype=torch.float64)
    return _Population(theta, weights / weights.sum(), distances, theta.clone())


def test_olcm_covariances_and_mixture_density_match_brute_force():
    p, n = 3, 40
    pop = random_population(n, p, seed=0)
    eps = float(pop.distances.median())
    tril = _olcm_factors(pop, eps)
    assert tril.shape == (n, p, p)
    near = (pop.distances <= eps).nonzero()[:, 0].tolist()
    w_near = pop.weights[near] / pop.weights[near].sum()
    covs = []
    for j in range(n):  # Sigma_j = sum_k w~_k (theta_k - theta_j)(theta_k - theta_j)^T
        diffs = [pop.theta[k] - pop.theta[j] for k in near]
        covs.append(sum(w * torch.outer(d, d) for w, d in zip(w_near, diffs, strict=True)))
        torch.testing.assert_close(tril[j] @ tril[j].T, covs[j], rtol=1e-9, atol=1e-12)

    g = torch.Generator().manual_seed(1)
    new = 1.5 * torch.randn((25, p), generator=g, dtype=torch.float64)
    log_w = pop.weights.log()
    brute = np.array([
        np.log(sum(
            float(pop.weights[j]) * sps.multivariate_normal(pop.theta[j], covs[j]).pdf(x)
            for j in range(n)
        ))
        for x in new.numpy()
    ])  # fmt: skip
    const = 0.5 * p * math.log(2 * math.pi)
    for chunk in (7, 2**22):  # several rows per chunk, a part of a row, one chunk
        got = _log_kernel_mixture(new, pop.theta, log_w, tril, chunk=chunk) - const
        np.testing.assert_allclose(got.numpy(), brute, rtol=1e-10)
    # A shared factor (the Beaumont kernel) is the same density with equal components.
    shared = _beaumont_factor(pop)
    cov = shared @ shared.T
    brute_shared = np.log([
        sum(float(pop.weights[j]) * sps.multivariate_normal(pop.theta[j], cov).pdf(x)
            for j in range(n))
        for x in new.numpy()
    ])  # fmt: skip
    got = _log_kernel_mixture(new, pop.theta, log_w, shared, chunk=50) - const
    np.testing.assert_allclose(got.numpy(), brute_shared, rtol=1e-10)
    torch.testing.assert_close(
        _log_kernel_mixture(new, pop.theta, log_w, shared.expand(n, p, p).contiguous()), got + const
    )
    # The importance weights: prior / mixture, normalised.
    prior = Independent(Normal(torch.zeros(p, dtype=torch.float64), 2.0), 1)
    w = _importance_weights(new, pop, tril, prior)
    expected = np.exp(prior.log_prob(new).numpy() - brute)
    np.testing.assert_allclose(w.numpy(), expected / expected.sum(), rtol=1e-9)


def test_olcm_falls_back_to_all_particles_when_too_few_are_near():
    pop = random_population(30, 2, seed=2)
    eps = float(pop.distances.min())  # one particle within: cannot span two dimensions
    tril = _olcm_factors(pop, eps)
    w, theta = pop.weights, pop.theta
    mean = w @ theta
    cov = ((theta - mean).T * w) @ (theta - mean)
    for j in (0, 17):
        d = theta[j] - mean
        torch.testing.assert_close(tril[j] @ tril[j].T, cov + torch.outer(d, d))


XBAR2_O = torch.tensor([1.0, -0.5], dtype=torch.float64)


def simulate_xbar2(seed: int):
    g = torch.Generator().manual_seed(seed)
    calls = {"n": 0}

    def simulate(theta: torch.Tensor) -> torch.Tensor:
        calls["n"] += theta.shape[0]
        noise = torch.randn((theta.shape[0], N_OBS, 2), generator=g, dtype=theta.dtype)
        return theta + noise.mean(dim=1)

    return simulate, calls


def test_smc_olcm_reaches_the_conjugate_posterior():
    # theta ~ N(0, 3^2 I_2), xbar ~ N(theta, I / 10): posterior N(SHRINK xbar_o, POST_V I).
    prior = Independent(Normal(torch.zeros(2, dtype=torch.float64), PRIOR_SD), 1)
    scale = math.sqrt(PRIOR_SD**2 + 1 / N_OBS)
    simulate, calls = simulate_xbar2(11)
    res = smc_abc(
        simulate, prior, XBAR2_O, num_particles=1000, max_simulations=100_000,
        scale=torch.full((2,), scale), seed=12,
    )  # fmt: skip
    assert res.kernel == "olcm" and calls["n"] == res.simulations <= 100_000
    w, x = res.weights, res.particles
    mean = w @ x
    var = w @ (x - mean) ** 2
    # ABC with a ball of radius r around xbar_o: the posterior mean moves with xbar, so the
    # ball adds SHRINK^2 r^2 / 4 (a uniform disk's variance per axis) to each variance.
    r = float(res.epsilon[-1]) * scale
    inflation = SHRINK**2 * r**2 / 4
    assert inflation < 0.1 * POST_V  # the run went far enough for the check to mean much
    # 4.5 standard errors from the Kish ESS (over 16 seeds the errors in these units had sd
    # 1.0 to 1.2 and mean within 0.2 of 0).
    ess = res.ess
    truth = SHRINK * XBAR2_O
    assert bool(((mean - truth).abs() < 4.5 * math.sqrt((POST_V + inflation) / ess)).all())
    assert bool(((var - POST_V - inflation).abs() < 4.5 * POST_V * math.sqrt(2 / ess)).all())
    # Negative control: the same particles without their importance weights are too narrow.
    flat = x.var(dim=0)
    bound = 4.5 * POST_V * math.sqrt(2 / x.shape[0])
    assert bool(((flat - POST_V - inflation).abs() > bound).any())


def truncating_run(budget: int, keep: float, kernel: str = "olcm"):
    simulate, calls = counting_simulator(21)
    res = smc_abc(
        simulate, normal_prior(), torch.tensor([XBAR_O], dtype=torch.float64),
        num_particles=400, max_simulations=budget, kernel=kernel, keep_truncated=keep,
        scale=torch.tensor([3.0]), seed=22,
    )  # fmt: skip
    assert calls["n"] == res.simulations <= budget
    return res


@pytest.mark.parametrize("kernel", ["olcm", "beaumont"])
def test_truncated_last_round_is_kept_by_the_ess_rule(kernel):
    budget = 3_100  # round 0 and a few rounds, then the budget runs out inside one
    discarded = truncating_run(budget, math.inf, kernel)
    kept = truncating_run(budget, 0.0, kernel)
    assert discarded.last_round == "truncated-discarded" and kept.last_round == "truncated-kept"
    assert discarded.simulations == kept.simulations == budget
    # Discarded: the previous population, as a run stopped before the last round returns it.
    rounds = discarded.epsilon.shape[0]
    stopped = truncating_run(int(discarded.simulations_per_round.sum()), math.inf, kernel)
    assert stopped.last_round == "complete" and stopped.epsilon.shape[0] == rounds
    assert torch.equal(stopped.particles, discarded.particles)
    assert int(discarded.simulations_per_round.sum()) < discarded.simulations
    # Kept: the accepted particles of the cut round, at its tighter tolerance, with the
    # round's simulations, rate and tolerance recorded.
    m = kept.particles.shape[0]
    assert 2 <= m < 400 and kept.weights.shape == kept.distances.shape == (m,)
    assert kept.epsilon.shape[0] == rounds + 1 and kept.epsilon[-1] < discarded.epsilon[-1]
    assert bool((kept.distances <= kept.epsilon[-1]).all())
    assert int(kept.simulations_per_round.sum()) == kept.simulations
    torch.testing.assert_close(kept.weights.sum(), torch.ones((), dtype=torch.float64))
    # The rule: kept when ESS >= keep_truncated x the previous population's ESS.
    ratio = kept.ess / discarded.ess
    assert truncating_run(budget, 0.99 * ratio, kernel).last_round == "truncated-kept"
    assert truncating_run(budget, 1.01 * ratio, kernel).last_round == "truncated-discarded"
    default = smc_abc(
        counting_simulator(21)[0], normal_prior(), torch.tensor([XBAR_O], dtype=torch.float64),
        num_particles=400, max_simulations=budget, kernel=kernel, scale=torch.tensor([3.0]),
        seed=22,
    )  # fmt: skip
    assert default.last_round == ("truncated-kept" if ratio >= 0.5 else "truncated-discarded")


def test_truncated_round_with_too_few_particles_is_discarded_and_budgets_hold():
    # One simulation left for the last round: at most one particle, never kept.
    first = truncating_run(10_000, 0.0)
    spent = int(first.simulations_per_round[:3].sum())
    res = truncating_run(spent + 1, 0.0)
    assert res.last_round == "truncated-discarded" and res.simulations == spent + 1
    assert res.particles.shape == (400, 1)
    for budget in (400, 401, 999, 2_345):  # the budget is never exceeded
        for keep in (0.0, 0.5, math.inf):
            assert truncating_run(budget, keep).simulations <= budget


def test_smc_kernel_options_are_validated():
    simulate, _ = counting_simulator(5)
    obs = torch.tensor([XBAR_O], dtype=torch.float64)
    with pytest.raises(ValueError, match="kernel"):
        smc_abc(simulate, normal_prior(), obs, num_particles=50, kernel="gaussian")
    for bad in (-0.1, math.nan):
        with pytest.raises(ValueError, match="keep_truncated"):
            smc_abc(simulate, normal_prior(), obs, num_particles=50, keep_truncated=bad)
    with pytest.raises(ValueError, match="smc_kernel"):
        ABCConfig(sampler="smc", smc_kernel="2sigma")
