"""Posterior checks: simulation-based calibration, coverage and posterior predictive checks.

The reference model is conjugate: theta ~ N(0, I_2), x = M = 5 i.i.d. draws of N(theta, I_2),
so the posterior is N(sum(x) / (M + 1), I / (M + 1)) and can be drawn exactly. Tolerances are
binomial standard errors over the N calibration observations.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from posterior_checks import assert_contraction
from scipy import stats
from torch.distributions import Independent, Normal

import ebm_lfi as el
from ebm_lfi.diagnostics import (
    PredictiveCheck,
    SBCResult,
    coverage_band,
    marginal_ranks,
    predictive_check,
    sbc,
)
from ebm_lfi.diagnostics.ranks import bin_ranks, uniformity_table
from ebm_lfi.methods.checks import PosteriorWarning

matplotlib.use("Agg")

M = 5  # observations per simulation
P = 2  # parameters
N_OBS = 200
L = 100
LEVELS = [0.5, 0.8, 0.9, 0.95]
ALPHA = 1e-3  # level of the uniformity tests (seeded, so never flaky)


def gaussian_prior() -> Independent:
    return Independent(Normal(torch.zeros(P, dtype=torch.float64), torch.ones(P)), 1)


def simulator(theta, rng):
    return theta.numpy()[None, :] + rng.normal(size=(M, P))


def posterior_moments(x) -> tuple[np.ndarray, float]:
    x = np.asarray(x, dtype=np.float64)
    return x.sum(axis=0) / (M + 1), 1.0 / math.sqrt(M + 1)


def gaussian_posterior(scale: float = 1.0):
    """Draws of the exact posterior with its sd multiplied by ``scale``."""

    def draw(x, num_samples, seed):
        mean, sd = posterior_moments(x)
        rng = np.random.default_rng(seed)
        return torch.as_tensor(mean + scale * sd * rng.normal(size=(num_samples, P)))

    return draw


@pytest.fixture(scope="module")
def exact() -> SBCResult:
    return sbc(
        gaussian_posterior(),
        gaussian_prior(),
        simulator,
        num_observations=N_OBS,
        num_samples=L,
        seed=1,
    )


@pytest.fixture(scope="module")
def overconfident() -> SBCResult:
    return sbc(
        gaussian_posterior(0.5),
        gaussian_prior(),
        simulator,
        num_observations=N_OBS,
        num_samples=L,
        seed=2,
    )


EXACT_CONTRACTION = 1 / math.sqrt(M + 1)  # posterior sd over prior sd, whatever x


def binomial_se(c: float, n: int = N_OBS) -> float:
    return math.sqrt(c * (1 - c) / n)


# --------------------------------------------------------------------------- ranks
def test_ranks_have_the_documented_shape_range_and_names(exact):
    assert exact.ranks.shape == (N_OBS, P) and exact.ranks.dtype == torch.int64
    assert int(exact.ranks.min()) >= 0 and int(exact.ranks.max()) <= L
    assert exact.hpd_ranks.shape == (N_OBS,)
    assert exact.theta.shape == (N_OBS, P) and exact.x.shape == (N_OBS, M, P)
    assert np.all((exact.fractions > 0) & (exact.fractions < 1))
    # the fractional rank refines the rank: floor((L + 1) u) == r
    assert np.array_equal(np.floor(exact.fractions * (L + 1)), exact.ranks.numpy())
    table = exact.to_pandas()
    assert len(table) == N_OBS
    assert {"rank_theta_1", "hpd_rank", "true_theta_2", "mean_theta_1", "std_theta_2"} <= set(
        table.columns
    )
    # the posterior sd is the closed form one, within the sampling error of L draws
    sd = 1 / math.sqrt(M + 1)
    assert abs(float(exact.posterior_std.mean()) - sd) < 4 * sd / math.sqrt(2 * L * N_OBS) + 0.01


def test_ties_are_broken_uniformly():
    rng = np.random.default_rng(0)
    draws, truth = np.zeros((4, 1)), np.zeros(1)
    reps = 5000
    counts = np.bincount([int(marginal_ranks(draws, truth, rng)[0]) for _ in range(reps)])
    assert counts.shape == (5,)
    assert np.all(np.abs(counts / reps - 0.2) < 4 * math.sqrt(0.2 * 0.8 / reps))


def test_bins_of_unequal_size_have_exact_probabilities():
    counts, prob, edges = bin_ranks(np.arange(10)[:, None], num_samples=9, bins=3)
    assert np.allclose(prob, [0.4, 0.3, 0.3])
    assert counts[:, 0].tolist() == [4, 3, 3]
    assert np.allclose(edges, [-0.5, 3.5, 6.5, 9.5])


def test_perfectly_uniform_ranks_give_zero_chi2():
    ranks = np.tile(np.arange(L + 1), 3)[:, None]
    fractions = (ranks + 0.5) / (L + 1)
    table = uniformity_table(ranks, fractions, L, ["a"], bins=10)
    assert table.loc["a", "chi2"] == pytest.approx(0.0, abs=1e-9)
    assert table.loc["a", "chi2_pvalue"] == pytest.approx(1.0)


# ---------------------------------------------------------------------- uniformity
def test_exact_posterior_is_uniform(exact):
    table = exact.uniformity()
    assert list(table.index) == ["theta_1", "theta_2", "hpd"]
    assert (table["chi2_pvalue"] > ALPHA).all(), table
    assert (table["ks_pvalue"] > ALPHA).all(), table
    # the sd of U(0, 1) is 1 / sqrt(12); its estimate has a standard error about 0.06 / sqrt(N)
    assert np.all(np.abs(table["sd"] - 1 / math.sqrt(12)) < 4 * 0.0745 / math.sqrt(N_OBS))


def test_overconfident_posterior_is_detected(overconfident):
    table = overconfident.uniformity()
    assert (table["chi2_pvalue"] < ALPHA).all(), table
    assert (table["ks_pvalue"] < ALPHA).all(), table
    # a U-shaped histogram: fractional ranks more spread than uniform
    assert (table.loc[["theta_1", "theta_2"], "sd"] > 1 / math.sqrt(12) + 0.03).all()


def test_underconfident_posterior_has_a_peaked_histogram():
    result = sbc(
        gaussian_posterior(2.0),
        gaussian_prior(),
        simulator,
        num_observations=N_OBS,
        num_samples=L,
        seed=3,
        hpd=False,
    )
    assert result.hpd_ranks is None
    table = result.uniformity()
    assert list(table.index) == ["theta_1", "theta_2"]
    assert (table["chi2_pvalue"] < ALPHA).all()
    assert (table["sd"] < 1 / math.sqrt(12) - 0.03).all()


def importance_posterior(scale: float = 1.0):
    """Importance sample of the posterior with its sd times ``scale``: 4 L draws of a Gaussian
    twice as wide as the exact posterior, weighted by target over proposal density."""

    def draw(x, num_samples, seed):
        mean, sd = posterior_moments(x)
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(4 * num_samples, P))  # proposal: mean + 2 sd z
        log_w = (-0.5 * (2 * z / scale) ** 2 + 0.5 * z**2).sum(axis=1)
        w = np.exp(log_w - log_w.max())
        return el.Posterior(torch.as_tensor(mean + 2 * sd * z), weights=torch.as_tensor(w))

    return draw


def test_weighted_and_oversized_posteriors_are_resampled():
    prior = gaussian_prior()
    result = sbc(
        importance_posterior(), prior, simulator, num_observations=N_OBS, num_samples=50, seed=4
    )
    assert result.num_resampled == N_OBS
    table = result.uniformity()
    assert (table["chi2_pvalue"] > ALPHA).all() and (table["ks_pvalue"] > ALPHA).all(), table
    # the split density rank keeps its power on weighted samples
    result = sbc(
        importance_posterior(0.5), prior, simulator, num_observations=N_OBS, num_samples=50, seed=4
    )
    assert (result.uniformity()["chi2_pvalue"] < ALPHA).all()

    def oversized(x, num_samples, seed):  # 3 L unweighted exact draws: subsampled
        return gaussian_posterior()(x, 3 * num_samples, seed)

    result = sbc(
        oversized, gaussian_prior(), simulator, num_observations=50, num_samples=20, seed=5
    )
    assert result.num_resampled == 50 and result.ranks.max() <= 20


# ------------------------------------------------------------------------ coverage
def test_coverage_of_the_exact_posterior_is_nominal(exact):
    table = exact.coverage(LEVELS)
    assert list(table.columns) == ["theta_1", "theta_2", "hpd"]
    for c in LEVELS:
        assert np.all(np.abs(table.loc[c] - c) <= 3.5 * binomial_se(c)), table


def _overconfident_central_coverage(c: float, scale: float = 0.5) -> float:
    """Expected coverage of the randomised central interval from L draws of N(m, (scale s)^2)
    when theta* ~ N(m, s^2): integrate over z = (theta* - m) / s the binomial rank."""
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    lo, hi = (0.5 - c / 2) * (L + 1), (0.5 + c / 2) * (L + 1)
    r = np.arange(L + 1)
    inside = np.clip(np.minimum(r + 1, hi) - np.maximum(r, lo), 0, 1)  # length of V's range
    pmf = stats.binom.pmf(r[None], L, stats.norm.cdf(z / scale)[:, None])
    return float(w @ (pmf @ inside))


def test_overconfident_posterior_under_covers_as_predicted(overconfident):
    table = overconfident.coverage(LEVELS)
    for c in LEVELS:
        assert np.all(table.loc[c] < c - 3.5 * binomial_se(c)), table
        expected = _overconfident_central_coverage(c)
        observed = table.loc[c, ["theta_1", "theta_2"]].to_numpy()
        assert np.all(np.abs(observed - expected) <= 3.5 * binomial_se(expected)), (c, expected)


def test_coverage_band_contains_the_nominal_level():
    lower, upper = coverage_band(LEVELS, N_OBS, 0.99)
    assert np.all(lower < LEVELS) and np.all(upper > LEVELS)
    assert np.all(upper - lower < 2 * 2.6 * np.array([binomial_se(c) for c in LEVELS]) + 0.01)
    with pytest.raises(ValueError, match="levels"):
        coverage_band([0.0, 0.5], N_OBS)


# ------------------------------------------------------------------ reproducibility
def test_executor_gives_the_serial_results(exact):
    with ThreadPoolExecutor(max_workers=2) as pool:
        parallel = sbc(
            gaussian_posterior(),
            gaussian_prior(),
            simulator,
            num_observations=N_OBS,
            num_samples=L,
            seed=1,
            executor=pool,
            batch_size=7,
        )
    assert torch.equal(parallel.theta, exact.theta)
    assert torch.equal(parallel.ranks, exact.ranks)
    assert torch.equal(parallel.hpd_ranks, exact.hpd_ranks)
    assert np.array_equal(parallel.fractions, exact.fractions)


def test_seed_controls_the_run(exact):
    def run(seed):
        return sbc(
            gaussian_posterior(),
            gaussian_prior(),
            simulator,
            num_observations=N_OBS,
            num_samples=L,
            seed=seed,
        )

    again, other = run(1), run(7)
    assert torch.equal(again.theta, exact.theta) and torch.equal(again.ranks, exact.ranks)
    assert not torch.equal(other.ranks, again.ranks)


# ---------------------------------------------------------------- through methods
@pytest.fixture(scope="module")
def training_data():
    return el.simulate(simulator, gaussian_prior(), 20_000, seed=5)


def test_sbc_through_rejection_abc_on_the_sufficient_statistic(training_data):
    theta, x = training_data
    method = el.methods.get(
        "rejection-abc", prior=gaussian_prior(), statistics=lambda x: x.mean(dim=1)
    )
    method.fit(theta, x, seed=0)
    result = sbc(method, gaussian_prior(), simulator, num_observations=150, num_samples=L, seed=3)
    assert (result.uniformity()["chi2_pvalue"] > ALPHA).all()
    table = result.coverage([0.5, 0.9])
    for c in (0.5, 0.9):
        assert np.all(np.abs(table.loc[c] - c) <= 3.5 * binomial_se(c, 150))
    # calibrated and as informative as the exact posterior (prior draws are calibrated too)
    assert_contraction(result.posterior_std, 1.0, EXACT_CONTRACTION)


def test_sbc_through_a_fitted_energy_method(training_data):
    theta, x = training_data
    # The draws' structure and the whole table: with structure="mlp" (the flat saddle) the
    # posterior of theta_1 was about the prior (contraction 0.97), which SBC passed; with 10
    # epochs the posteriors were 1.5 times too wide
    method = el.methods.get(
        "ssm-abc",
        prior=gaussian_prior(),
        structure="iid",
        num_statistics=2,
        reference=(theta, x),
        training={"epochs": 30, "batch_size": 128, "patience": None},
    ).fit(theta[:3000], x[:3000], seed=0)
    result = sbc(method, gaussian_prior(), simulator, num_observations=100, num_samples=50, seed=3)
    assert (result.uniformity()["chi2_pvalue"] > ALPHA).all()
    assert_contraction(result.posterior_std, 1.0, EXACT_CONTRACTION)
    with ThreadPoolExecutor(max_workers=2) as pool:
        parallel = sbc(
            method,
            gaussian_prior(),
            simulator,
            num_observations=100,
            num_samples=50,
            seed=3,
            executor=pool,
        )
    assert torch.equal(parallel.ranks, result.ranks)


@pytest.mark.parametrize("wrong", ["wide", "prior"])
def test_contraction_check_fails_a_wide_or_uninformative_calibrated_posterior(exact, wrong):
    r"""Negative control of the contraction checks of the SBC runs above: SBC of the exact
    posterior made 1.3 times too wide, or of the prior, through the same check (prior draws
    pass every calibration test: their ranks are exactly uniform)."""
    assert_contraction(exact.posterior_std, 1.0, EXACT_CONTRACTION)  # the exact one passes

    def prior_draws(x, num_samples, seed):
        return torch.randn(num_samples, P, generator=torch.Generator().manual_seed(seed))

    draw = gaussian_posterior(1.3) if wrong == "wide" else prior_draws
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PosteriorWarning)
        result = sbc(draw, gaussian_prior(), simulator, num_observations=100, num_samples=50,
                     seed=3, hpd=False)  # fmt: skip
    with pytest.raises(AssertionError, match="contraction"):
        assert_contraction(result.posterior_std, 1.0, EXACT_CONTRACTION)


def test_bad_inputs_are_clear_errors():
    prior = gaussian_prior()
    with pytest.raises(TypeError, match="fitted ebm_lfi method"):
        sbc(3, prior, simulator)
    with pytest.raises(ValueError, match=r"expected \(num_samples, 2\)"):
        sbc(lambda x, n, s: torch.zeros(n, 3), prior, simulator, num_observations=2)
    with pytest.raises(ValueError, match="num_samples"):
        sbc(gaussian_posterior(), prior, simulator, num_samples=0)
    with pytest.raises(TypeError, match="executor"):
        sbc(gaussian_posterior(), prior, simulator, executor=object())
    with pytest.raises(el.methods.NotFittedError):
        sbc(el.methods.get("rejection-abc", prior=prior), prior, simulator, num_observations=2)


# ------------------------------------------------------------- predictive checks
def test_contraction_stands_next_to_calibration(exact):
    r"""The exact posterior has sd 1/sqrt(M + 1) whatever x; prior draws are calibrated too
    (uniform ranks) but do not contract: SBC passes them, the contraction and a warning do not.
    Tolerances: the mean of N sample sds of L draws has an sd of about sd / sqrt(2 L N)."""
    sd = 1 / math.sqrt(M + 1)
    assert exact.contraction.to_numpy() == pytest.approx([sd, sd], abs=0.01)
    assert "contraction" in exact.uniformity().columns and "contraction" in repr(exact)

    def prior_draws(x, num_samples, seed):
        return torch.randn(num_samples, P, generator=torch.Generator().manual_seed(seed))

    with pytest.warns(PosteriorWarning, match="about the prior on average"):
        result = sbc(
            prior_draws, gaussian_prior(), simulator, num_observations=100, num_samples=L,
            seed=3, hpd=False,
        )  # fmt: skip
    assert (result.uniformity()["chi2_pvalue"] > ALPHA).all()  # calibrated...
    assert result.contraction.to_numpy() == pytest.approx([1.0, 1.0], abs=0.03)  # ...and the prior


def flaky(theta, rng):
    """The simulator, failing for theta_1 > 1 (16 % of the standard normal prior)."""
    if float(theta[0]) > 1.0:
        raise RuntimeError("unstable")
    return simulator(theta, rng)


def test_on_error_drop_reaches_predictive_checks_and_sbc():
    post = el.Posterior(torch.randn(1000, P, generator=torch.Generator().manual_seed(0)))
    x_o = np.zeros((M, P))
    with pytest.raises(el.SimulationError, match="unstable"):
        predictive_check(post, flaky, x_o, num_simulations=200, seed=0)
    check = predictive_check(post, flaky, x_o, num_simulations=200, seed=0, on_error="drop")
    # the failed draws are left out with their simulations: 200 * 0.84 kept, binomial sd 5
    assert 140 < check.theta.shape[0] == check.x.shape[0] == check.predicted.shape[0] < 200
    assert float(check.theta[:, 0].max()) <= 1.0
    with pytest.raises(el.SimulationError, match="unstable"):
        sbc(gaussian_posterior(), gaussian_prior(), flaky, num_observations=50, num_samples=20)
    result = sbc(
        gaussian_posterior(), gaussian_prior(), flaky, num_observations=50, num_samples=20,
        on_error="drop",
    )  # fmt: skip
    assert result.num_observations == 50 and float(result.theta[:, 0].max()) <= 1.0


@pytest.fixture(scope="module")
def observation():
    theta_o = torch.tensor([0.3, -0.5], dtype=torch.float64)
    x_o = el.Simulator(simulator)(theta_o, seed=11)
    mean, sd = posterior_moments(x_o)
    rng = np.random.default_rng(0)
    post = el.Posterior(torch.as_tensor(mean + sd * rng.normal(size=(2000, P))))
    return x_o, post


def test_predictive_check_of_data_from_the_model_is_not_extreme(observation):
    x_o, post = observation
    check = predictive_check(post, simulator, x_o, num_simulations=300, seed=0)
    assert isinstance(check, PredictiveCheck)
    table = check.table
    assert list(table.index) == ["mean", "sd", "q10", "q50", "q90"]
    assert list(table.columns) == ["observed", "mean", "sd", "z", "quantile", "p_value"]
    assert (table["p_value"] > 0.02).all(), table
    assert check.flagged(0.01) == []
    assert check.predicted.shape == (300, 5) and check.x.shape == (300, M, P)
    assert table.loc["mean", "observed"] == pytest.approx(float(x_o.mean()))


def test_predictive_check_flags_an_observation_far_out(observation):
    x_o, post = observation
    n = 200
    check = predictive_check(post, simulator, x_o + 10.0, num_simulations=n, seed=0)
    table = check.table
    for name in ("mean", "q10", "q50", "q90"):
        assert table.loc[name, "quantile"] == 1.0
        assert table.loc[name, "p_value"] == pytest.approx(2 / (n + 1))  # the smallest possible
    assert {"mean", "q50"} <= set(check.flagged(0.05))
    assert table.loc["sd", "p_value"] > 0.02  # shifting the data leaves its spread alone


def test_predictive_check_on_an_executor_is_bit_identical(observation):
    x_o, post = observation
    serial = predictive_check(post, simulator, x_o, num_simulations=40, seed=3)
    with ThreadPoolExecutor(max_workers=2) as pool:
        parallel = predictive_check(post, simulator, x_o, num_simulations=40, seed=3, executor=pool)
    assert torch.equal(serial.theta, parallel.theta) and torch.equal(serial.x, parallel.x)
    pd.testing.assert_frame_equal(serial.table, parallel.table)
    with pytest.raises(TypeError, match="executor"):
        predictive_check(post, simulator, x_o, num_simulations=10, executor=object())


def test_predictive_check_statistics_options(observation, training_data):
    x_o, post = observation
    check = predictive_check(
        post, simulator, x_o[None], statistics=lambda x: x.mean(dim=1), num_simulations=50
    )
    assert list(check.table.index) == ["s_1", "s_2"]
    check = predictive_check(
        post.samples,
        simulator,
        x_o,
        statistics={"max": lambda x: x.amax(dim=(1, 2)), "means": lambda x: x.mean(dim=1)},
        num_simulations=50,
    )
    assert list(check.table.index) == ["max", "means[0]", "means[1]"]
    theta, x = training_data
    method = el.methods.get(
        "rejection-abc", prior=gaussian_prior(), statistics=lambda x: x.mean(dim=1)
    ).fit(theta[:500], x[:500])
    check = predictive_check(post, simulator, x_o, statistics=method, num_simulations=50)
    assert check.predicted.shape == (50, 2)
    with pytest.raises(ValueError, match="shape of one simulation"):
        predictive_check(post, simulator, x_o[:3], num_simulations=10)
    with pytest.raises(TypeError, match="statistics"):
        predictive_check(post, simulator, x_o, statistics=3, num_simulations=10)
    with pytest.raises(ValueError, match="num_simulations"):
        predictive_check(post, simulator, x_o, num_simulations=1)


# -------------------------------------------------------------------------- plots
def test_plots_return_figures(exact, observation, tmp_path):
    from matplotlib.figure import Figure

    fig = exact.plot(path=tmp_path / "ranks.png")
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.axison]) == P + 1
    fig = exact.plot_coverage(path=tmp_path / "coverage.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    x_o, post = observation
    fig = predictive_check(post, simulator, x_o, num_simulations=50).plot(path=tmp_path / "ppc.png")
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.axison]) == 5
    assert all((tmp_path / f).stat().st_size > 0 for f in ("ranks.png", "coverage.png", "ppc.png"))
