"""Tests of the MCMC kernels (random walk, MALA), their burn-in adaptation, the driver and the
ESS / split R-hat diagnostics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ebm_lfi.samplers.mcmc.adaptation import (
    adaptation_init,
    adaptation_update,
    robbins_monro,
    window_length,
)
from ebm_lfi.samplers.mcmc.diagnostics import effective_sample_size, rhat
from ebm_lfi.samplers.mcmc.driver import sample_mcmc
from ebm_lfi.samplers.mcmc.kernels import mala_init, mala_step, random_walk_init, random_walk_step

DT = torch.float64
MU = torch.tensor([1.0, -2.0], dtype=DT)
COV = torch.tensor([[1.0, 1.8], [1.8, 4.0]], dtype=DT)  # correlation 0.9
PREC = torch.linalg.inv(COV)


def log_prob(x: torch.Tensor) -> torch.Tensor:
    z = x - MU
    return -0.5 * ((z @ PREC) * z).sum(-1)


def exact_draws(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MU + torch.randn((n, 2), generator=g, dtype=DT) @ torch.linalg.cholesky(COV).T


def assert_moments_iid(x: torch.Tensor, z: float = 4.5) -> None:
    """Mean and covariance of independent draws within z standard errors."""
    n = x.shape[0]
    sd = COV.diagonal().sqrt()
    assert bool(((x.mean(0) - MU).abs() < z * sd / math.sqrt(n)).all())
    c = x - MU
    for i in range(2):
        for j in range(2):
            f = c[:, i] * c[:, j]
            se = math.sqrt(float(COV[i, i] * COV[j, j] + COV[i, j] ** 2) / n)
            assert abs(float(f.mean() - COV[i, j])) < z * se, (i, j)


def assert_moments_chains(chains: torch.Tensor, z: float = 4.5) -> None:
    """Mean and covariance from MCMC chains within z ESS-based standard errors."""
    flat = chains.reshape(-1, 2)
    ess = effective_sample_size(chains)
    se = flat.std(0) / ess.sqrt()
    assert bool(((flat.mean(0) - MU).abs() < z * se).all()), (flat.mean(0), se)
    c = chains - MU
    for i in range(2):
        for j in range(2):
            f = c[..., i] * c[..., j]
            se_f = float(f.std() / effective_sample_size(f).sqrt())
            assert abs(float(f.mean() - COV[i, j])) < z * se_f, (i, j)


@pytest.mark.parametrize("kernel", ["rw", "mala"])
def test_kernels_keep_the_target_invariant(kernel):
    # 20 000 independent chains started at exact draws stay exact after 10 steps. The step
    # sizes are large, so a wrong Metropolis–Hastings ratio would show (unadjusted Langevin
    # at h = 0.9 inflates the variance along the narrow direction by ~40%).
    init, step, h = (
        (mala_init, mala_step, 0.9)
        if kernel == "mala"
        else (random_walk_init, random_walk_step, 1.5)
    )
    g = torch.Generator().manual_seed(11)
    state = init(exact_draws(20_000, 10), log_prob)
    rates = []
    for _ in range(10):
        state, info = step(state, log_prob, h, generator=g)
        rates.append(info.acceptance_rate.mean())
        torch.testing.assert_close(state.log_prob, log_prob(state.position))
    assert 0.05 < float(torch.stack(rates).mean()) < 0.95
    assert_moments_iid(state.position)


def test_mala_gradient_and_per_chain_step_sizes():
    x = exact_draws(5, 0)
    state = mala_init(x, log_prob)
    torch.testing.assert_close(state.grad, -(x - MU) @ PREC)
    h = torch.tensor([1e-8, 0.1, 0.2, 0.3, 0.4], dtype=DT)
    new, info = mala_step(state, log_prob, h, generator=torch.Generator().manual_seed(0))
    # A tiny step barely moves and is accepted with probability 1 - O(h).
    assert float(info.acceptance_rate[0]) > 1 - 1e-6
    assert float((new.position[0] - x[0]).abs().max()) < 1e-6
    with pytest.raises(ValueError, match=r"\(5,\)"):
        mala_step(state, log_prob, torch.ones(3, dtype=DT))
    with pytest.raises(ValueError, match=r"\(5,\)"):
        random_walk_init(x, lambda y: y.sum())


def test_robbins_monro_settles_where_the_acceptance_meets_the_target():
    # A noiseless acceptance a(h) = exp(-h) crosses the target 0.3 at h = log(1 / 0.3).
    log_h = math.log(5.0)
    for t in range(5000):
        log_h = robbins_monro(log_h, math.exp(-math.exp(log_h)), 0.3, t)
    assert abs(math.exp(log_h) - math.log(1 / 0.3)) < 0.01


def test_adaptation_learns_the_shape_and_freezes_the_last_window():
    # Positions drawn from N(0, C): the shape converges to chol(C) up to sampling error, the
    # size moves only with the acceptance (here on target), and the last window of burn-in
    # leaves the shape as it is.
    chol = torch.linalg.cholesky(COV)
    burn_in, g = 400, torch.Generator().manual_seed(5)
    state = adaptation_init(torch.randn(50, 2, generator=g, dtype=DT), log_scale=0.5)
    length = window_length(burn_in)
    shapes = []
    for _ in range(burn_in):
        x = torch.randn(50, 2, generator=g, dtype=DT) @ chol.T
        state = adaptation_update(state, x, acceptance=0.3, target=0.3, burn_in=burn_in)
        shapes.append(state.scale_tril)
    assert state.count == burn_in and state.log_scale == 0.5
    changes = [t for t in range(1, burn_in) if not torch.equal(shapes[t], shapes[t - 1])]
    assert len(changes) > 1 and changes[-1] < burn_in - length
    # 50 chains x 40 steps per window: relative error of a factor entry ~ 1 / sqrt(2000).
    torch.testing.assert_close(state.scale_tril, chol, rtol=0.15, atol=0.15)


def test_adaptation_start_and_degenerate_windows():
    one = adaptation_init(torch.tensor([[3.0, -20.0]], dtype=DT), log_scale=0.5)
    torch.testing.assert_close(one.scale_tril, torch.diag(torch.tensor([0.3, 2.0], dtype=DT)))
    start = adaptation_init(torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), 0.0)
    length = window_length(500)
    # Windows without a finite covariance, or in which the chains sat on one point (a shape of
    # zero would freeze them), leave the shape as it was.
    for still in (torch.full((4, 2), math.nan), torch.ones(4, 2)):
        state = start
        for _ in range(length):
            state = adaptation_update(state, still, 0.5, target=0.5, burn_in=500)
        assert state.window == () and torch.equal(state.scale_tril, start.scale_tril)


@pytest.mark.parametrize("kernel", ["rw", "mala"])
def test_sample_mcmc_reproduces_correlated_gaussian(kernel):
    start = MU + 3.0 * torch.randn((64, 2), generator=torch.Generator().manual_seed(1), dtype=DT)
    res = sample_mcmc(log_prob, start, num_samples=600, burn_in=300, kernel=kernel, seed=3)
    assert res.chains.shape == (64, 600, 2)
    target = 0.574 if kernel == "mala" else 0.234
    assert abs(float(res.acceptance_rate.mean()) - target) < 0.15
    assert bool((res.rhat < 1.05).all())
    assert_moments_chains(res.chains)
    again = sample_mcmc(log_prob, start, num_samples=600, burn_in=300, kernel=kernel, seed=3)
    assert torch.equal(res.chains, again.chains)


def test_sample_mcmc_respects_support():
    def half_plane(x):  # standard normal restricted to x0 > 0
        lp = -0.5 * (x**2).sum(-1)
        return torch.where(x[:, 0] > 0, lp, torch.full_like(lp, -torch.inf))

    start = torch.ones((32, 2), dtype=DT)
    res = sample_mcmc(half_plane, start, num_samples=300, burn_in=200, kernel="rw", seed=0)
    assert bool((res.chains[..., 0] > 0).all())
    # Half-normal mean sqrt(2 / pi), within 5 ESS-based standard errors.
    x0 = res.chains[..., 0]
    se = float(x0.std() / effective_sample_size(x0).sqrt())
    assert abs(float(x0.mean()) - math.sqrt(2 / math.pi)) < 5 * se


def ar1(phi: float, chains: int, n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((chains, n))
    x = np.empty((chains, n))
    x[:, 0] = e[:, 0] / math.sqrt(1 - phi**2)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return torch.from_numpy(x)


def test_ess_and_rhat_on_independent_draws():
    x = torch.randn((4, 2000, 3), generator=torch.Generator().manual_seed(0), dtype=DT)
    ess, r = effective_sample_size(x), rhat(x)
    assert ess.shape == (3,) and r.shape == (3,)
    # Sokal: var(tau_hat) / tau^2 ~ 2 (2M + 1) / N with a window M of a few lags: ~5% here.
    assert bool(((ess / 8000 - 1).abs() < 0.2).all())
    # With 8 half-chains of n = 1000, R^2 ~ 1 - 1/n + chi2_7 / (7 n): |R - 1| < 0.005.
    assert bool(((r - 1).abs() < 0.005).all())


def test_ess_of_ar1_matches_integrated_autocorrelation_time():
    phi = 0.5
    x = ar1(phi, 8, 5000, seed=1)
    tau = (1 + phi) / (1 - phi)
    # Sokal's variance with a window of ~15 lags gives a relative sd of ~4%; allow 4 sd.
    assert abs(float(effective_sample_size(x)) / (x.numel() / tau) - 1) < 0.16


def test_diagnostics_agree_with_arviz():
    az = pytest.importorskip("arviz")
    x = ar1(0.8, 4, 1000, seed=2)
    x[2:] += 0.3  # a little disagreement between chains
    np.testing.assert_allclose(
        float(effective_sample_size(x)), az.ess(x.numpy(), method="mean"), rtol=1e-3
    )
    np.testing.assert_allclose(float(rhat(x)), az.rhat(x.numpy(), method="split"), rtol=1e-9)


def test_rhat_and_ess_flag_mis_mixed_chains():
    x = torch.randn((4, 1000), generator=torch.Generator().manual_seed(3), dtype=DT)
    stuck = x + torch.tensor([0.0, 0.0, 3.0, 3.0], dtype=DT)[:, None]
    # var_plus / W ~ 1 + var(chain means) = 1 + 3: R ~ 2.
    assert float(rhat(stuck)) > 1.5
    assert float(effective_sample_size(stuck)) < 0.1 * stuck.numel()
    # The same drift in every chain: only split chains see it. Half-chain means 1 and 3
    # give B/n = 8/7, W = 1 + 2^2/12: R = sqrt(1 + (8/7) / (4/3)) ~ 1.36.
    drifting = x + torch.linspace(0, 4, 1000, dtype=DT)
    assert float(rhat(drifting)) > 1.2
    with pytest.raises(ValueError):
        rhat(torch.zeros(10))
    assert bool(torch.isnan(effective_sample_size(torch.ones(2, 10))))


# ------------------------------------------------------- jumps between separated modes
@pytest.mark.parametrize("kernel, jump_rate", [("mala", 0.0), ("mala", 0.3), ("rw", 0.3)])
def test_jumps_carry_chains_between_the_modes_of_a_mixture(kernel, jump_rate):
    # an equal mixture of N(-4, 0.5^2) and N(4, 0.5^2) in the first coordinate (N(0, 1) in the
    # second): the valley between the modes is exp(-32) deep, no Langevin step crosses it (a
    # random walk shaped by the spread across the chains sometimes does: no control for it)
    def log_prob(x):
        a = -0.5 * ((x[:, 0] - 4) / 0.5) ** 2
        b = -0.5 * ((x[:, 0] + 4) / 0.5) ** 2
        return torch.logaddexp(a, b) - 0.5 * x[:, 1] ** 2

    g = torch.Generator().manual_seed(0)
    signs = torch.tensor([1.0] * 16 + [-1.0] * 4, dtype=torch.float64)
    signs = signs[torch.randperm(20, generator=g)]
    start = torch.stack([4 * signs, torch.zeros(20, dtype=torch.float64)], 1)
    start = start + 0.1 * torch.randn(20, 2, generator=g, dtype=torch.float64)
    result = sample_mcmc(
        log_prob, start, num_samples=1500, burn_in=200, kernel=kernel, jump_rate=jump_rate, seed=0
    )
    positive = (result.chains[..., 0] > 0).to(torch.float64)
    share = float(positive.mean())
    # within a mode: |x_1| has mean 4 and sd 0.5, x_2 is N(0, 1)
    ess = effective_sample_size(result.chains.abs())
    magnitude = result.chains[..., 0].abs()
    assert abs(float(magnitude.mean()) - 4) < 5 * 0.5 / float(ess[0]) ** 0.5
    if jump_rate == 0:
        # negative control: no chain leaves its mode
        assert share == pytest.approx(0.8) and math.isnan(result.jump_acceptance)
    else:
        ess_share = float(effective_sample_size(positive[..., None])[0])
        assert ess_share > 50 and result.jump_acceptance > 0.05, (ess_share, result)
        assert abs(share - 0.5) < 4 * (0.25 / ess_share) ** 0.5, (share, ess_share)


def test_jump_rate_of_the_driver_is_checked():
    with pytest.raises(ValueError, match="jump_rate"):
        sample_mcmc(lambda x: -(x**2).sum(-1), torch.zeros(3, 1), num_samples=2, jump_rate=0.5)
    with pytest.raises(ValueError, match="jump_rate"):
        sample_mcmc(lambda x: -(x**2).sum(-1), torch.zeros(8, 1), num_samples=2, jump_rate=2.0)
