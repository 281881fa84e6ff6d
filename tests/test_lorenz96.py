r"""Tests of the stochastic Lorenz96 benchmark: simulator, tasks and stored data.

The vectorised simulator is checked against a slow reference written here from the model's
equations, one site and one RK4 stage at a time, at fixed innovations; the RK4 scheme against
an adaptive ODE solver in the noise-free limit; the AR(1) forcing against its defining moments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from ebm_lfi import simulation
from ebm_lfi.benchmarks import get
from ebm_lfi.benchmarks.lorenz96 import (
    FORCING,
    INITIAL_STATE,
    KERNEL_BANDWIDTH,
    lorenz96_integrate,
    simulate_lorenz96,
)
from ebm_lfi.benchmarks.reference import draw_observations

F64 = torch.float64
DT = 1.0 / 30.0


def slow_reference(theta, z, x0, dt=DT, shared_innovation=False):
    r"""One simulation, written from the equations with scalar loops.

    ``shared_innovation`` adds, after the first step, one innovation common to every site (the
    convention of the paper's public code), used as a negative control.
    """
    b0, b1, sigma, phi = (float(v) for v in theta)
    T, K = z.shape
    x = [float(v) for v in x0]
    e = [0.0] * K
    out = np.zeros((T, K))

    def rhs(state, forcing):
        d = []
        for k in range(K):
            left, left2, right = state[(k - 1) % K], state[(k - 2) % K], state[(k + 1) % K]
            g = b0 + b1 * state[k]
            d.append(-left * (left2 - right) - state[k] + FORCING - g + forcing[k])
        return d

    for j in range(T):
        for k in range(K):
            innovation = z[j, 0] if (shared_innovation and j > 0) else z[j, k]
            e[k] = phi * e[k] + sigma * math.sqrt(1.0 - phi * phi) * innovation
        k1 = rhs(x, e)
        k2 = rhs([x[k] + 0.5 * dt * k1[k] for k in range(K)], e)
        k3 = rhs([x[k] + 0.5 * dt * k2[k] for k in range(K)], e)
        k4 = rhs([x[k] + dt * k3[k] for k in range(K)], e)
        x = [x[k] + dt / 6.0 * (k1[k] + 2 * k2[k] + 2 * k3[k] + k4[k]) for k in range(K)]
        out[j] = x
    return out


THETAS = np.array(
    [[1.8, 0.5, 2.0, 0.5], [1.4, 0.0, 2.5, 0.99], [2.2, 1.0, 1.5, 0.0], [2.0, 0.3, 1.7, 1.0]]
)


@pytest.mark.parametrize("K", [5, 8, 40])
def test_simulator_matches_slow_reference_at_fixed_noise(K):
    rng = np.random.default_rng(K)
    T = 12 if K < 40 else 5
    z = rng.standard_normal((len(THETAS), T, K))
    fast = lorenz96_integrate(THETAS, z)
    for i, theta in enumerate(THETAS):
        slow = slow_reference(theta, z[i], INITIAL_STATE[:K])
        np.testing.assert_allclose(fast[i], slow, rtol=1e-12, atol=1e-12)
    # negative control: the shared innovation after step one changes the path
    shared = slow_reference(THETAS[0], z[0], INITIAL_STATE[:K], shared_innovation=True)
    assert np.abs(shared[1:] - fast[0, 1:]).max() > 1e-3


def test_noise_free_limit_converges_to_an_adaptive_ode_solver_at_fourth_order():
    # sigma_e = 0: the deterministic Lorenz96 with a linear closure. RK4's global error is
    # O(dt^4): halving the step divides the error against a tight adaptive solver by ~16.
    theta = np.array([[1.8, 0.4, 0.0, 0.5]])
    K, T = 8, 30

    def rhs(_, s):
        return np.roll(s, 1) * (np.roll(s, -1) - np.roll(s, 2)) - s + FORCING - 1.8 - 0.4 * s

    times = DT * np.arange(1, T + 1)
    sol = solve_ivp(rhs, (0, times[-1]), INITIAL_STATE[:K], t_eval=times, rtol=1e-12, atol=1e-12)
    coarse = lorenz96_integrate(theta, np.zeros((1, T, K)))[0]
    fine = lorenz96_integrate(theta, np.zeros((1, 2 * T, K)), dt=DT / 2)[0, 1::2]
    err_coarse, err_fine = np.abs(coarse - sol.y.T).max(), np.abs(fine - sol.y.T).max()
    assert err_coarse < 1e-2
    assert 10 < err_coarse / err_fine < 24


def test_an_innovation_acts_from_its_own_step_on():
    # z^(j) enters e^(j), used in step j: states before step j are unchanged, and with phi > 0
    # the forcing remembers it (a bump with phi = 0 differs from one with phi = 0.9 later on)
    z = np.zeros((2, 6, 5))
    theta = np.array([[1.8, 0.5, 2.0, 0.0], [1.8, 0.5, 2.0, 0.9]])
    base = lorenz96_integrate(theta, z)
    z[:, 2, 3] = 1.0
    bumped = lorenz96_integrate(theta, z)
    np.testing.assert_array_equal(base[:, :2], bumped[:, :2])
    assert (np.abs(bumped[:, 2] - base[:, 2]).max(-1) > 1e-3).all()
    # step 3 with phi = 0.9 still carries 0.9 of the bump in e; with phi = 0 none
    lag = np.abs(bumped[:, 3:] - base[:, 3:]).max(axis=(1, 2))
    assert lag[1] > lag[0]


def test_simulator_rows_depend_on_their_own_generator_only():
    theta = THETAS[:3]
    rngs = [np.random.default_rng(s) for s in (1, 2, 3)]
    batch = simulate_lorenz96(theta, rngs, num_sites=8, num_times=10)
    one = simulate_lorenz96(theta[1:2], [np.random.default_rng(2)], num_sites=8, num_times=10)
    np.testing.assert_array_equal(batch[1], one[0])
    z = np.random.default_rng(2).standard_normal((10, 8))
    np.testing.assert_array_equal(one[0], lorenz96_integrate(theta[1:2], z[None])[0])


def test_simulator_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(b, 4\)"):
        simulate_lorenz96(np.zeros((2, 3)), [np.random.default_rng(0)] * 2)
    with pytest.raises(ValueError, match="one Generator per row"):
        simulate_lorenz96(THETAS, [np.random.default_rng(0)])
    with pytest.raises(ValueError, match="at least 4 sites"):
        lorenz96_integrate(THETAS[:1], np.zeros((1, 3, 3)))


# ----------------------------------------------------------------------------- tasks


@pytest.mark.parametrize(("name", "shape"), [("lorenz96", (120, 40)), ("lorenz96-small", (45, 8))])
def test_tasks(name, shape):
    task = get(name)
    assert task.x_shape == shape and task.dim == 4 and task.structure == "markov"
    assert task.parameter_names == ("b0", "b1", "sigma_e", "phi")
    assert task.low == (1.4, 0.0, 1.5, 0.0) and task.high == (2.2, 1.0, 2.5, 1.0)
    assert name in KERNEL_BANDWIDTH
    assert not task.has_reference_posterior and get("ma2").has_reference_posterior
    with pytest.raises(ValueError, match="no reference posterior"):
        task.reference_posterior(0)
    with pytest.raises(ValueError, match="no exact likelihood"):
        task.log_likelihood(torch.zeros(1, 4), torch.zeros(shape))
    sim = task.simulator
    assert sim.batched
    theta = task.prior.sample((3,))
    x = sim(theta, seed=5)
    assert x.shape == (3, *shape) and torch.isfinite(x).all()
    torch.testing.assert_close(x, sim(theta, seed=5))
    _, x1 = simulation.simulate(sim, task.prior, 4, seed=1, batch_size=1)
    _, x4 = simulation.simulate(sim, task.prior, 4, seed=1, batch_size=4)
    torch.testing.assert_close(x1, x4)


@pytest.mark.parametrize("name", ["lorenz96", "lorenz96-small"])
def test_stored_observations_regenerate_from_their_seed(name):
    task = get(name)
    theta, x = draw_observations(task)
    assert x.shape == (100, *task.x_shape) and np.isfinite(x).all()
    stored_theta = np.stack([task.true_parameters(i, F64).numpy() for i in range(100)])
    np.testing.assert_array_equal(theta, stored_theta)
    low, high = np.array(task.low), np.array(task.high)
    assert ((stored_theta >= low) & (stored_theta <= high)).all()
    stored = np.stack([task.observation(i, F64).numpy() for i in range(100)])
    # stored in float32: the rounding error is at most half an ulp of float32
    np.testing.assert_allclose(stored, x, rtol=2**-24, atol=0)
    assert np.abs(stored - x).max() > 0  # rounded, not stored in float64
    with pytest.raises(IndexError, match="0 .. 99"):
        task.observation(100)


# ----------------------------------------------------------------------------- ring network


def _ring_model(hidden=None, embedding=3, T=5, K=7, radius=2):
    from ebm_lfi.energy.model import ExpFamEBM

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ExpFamEBM.default(
            (T, K), 4, 5, structure="ring", radius=radius, embedding=embedding, hidden=hidden
        ).double()
    x = torch.randn(9, T, K, dtype=F64, generator=torch.Generator().manual_seed(1))
    theta = torch.rand(9, 4, dtype=F64, generator=torch.Generator().manual_seed(2))
    model.prepare(theta, x)
    return model, model.transform_x(x), theta


def test_ring_network_structured_hessian_equals_brute_force():
    from ebm_lfi.losses.score_matching import ScoreMatching, batched_score_and_hessian_diagonal

    model, y, theta = _ring_model()
    assert model.hessian_colors == 2 * 7  # 14 probes instead of 35 basis vectors

    def f(z):
        return model.log_unnormalized_y(z, theta)

    g_full, h_full = batched_score_and_hessian_diagonal(f, y)
    g_ring, h_ring = batched_score_and_hessian_diagonal(f, y, colors=model.hessian_colors)
    torch.testing.assert_close(g_ring, g_full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_ring, h_full, rtol=1e-10, atol=1e-10)
    exact = ScoreMatching(structured=False)(model, y, theta)
    torch.testing.assert_close(ScoreMatching()(model, y, theta), exact, rtol=1e-10, atol=1e-10)
    # negative control: K probes are too few (steps t and t + 1 interact), and it shows
    _, h_wrong = batched_score_and_hessian_diagonal(f, y, colors=7)
    assert (h_wrong - h_full).abs().max() > 1e-3
    # an outer network mixes everything: no structure is declared
    assert _ring_model(hidden=(8,))[0].hessian_colors is None


def test_ring_network_is_invariant_to_rotations_without_its_head():
    from ebm_lfi.energy.ring_nets import RingMarkovNet

    x = torch.randn(4, 6, 9, dtype=F64, generator=torch.Generator().manual_seed(3))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pooled = RingMarkovNet(9, 3, radius=2, embedding=4, hidden=(8,), head=False).double()
        headed = RingMarkovNet(9, 3, radius=2, embedding=4, head=True).double()
    rolled = torch.roll(x, 4, dims=2)
    torch.testing.assert_close(pooled(rolled), pooled(x), rtol=1e-10, atol=1e-10)
    assert (headed(rolled) - headed(x)).abs().max() > 1e-3  # the head sees the fixed start
    # the windows are ordered pairs (x_{t-1}, x_t): reversing time changes the output
    assert (pooled(x.flip(1)) - pooled(x)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="radius"):
        RingMarkovNet(4, 3, radius=2)
    with pytest.raises(ValueError, match=r"\(n, T, 9\)"):
        pooled(torch.randn(2, 6, 8, dtype=F64))


def test_ring_network_saves_and_loads(tmp_path):
    from ebm_lfi.energy.model import ExpFamEBM

    model, y, theta = _ring_model()
    model.save(tmp_path / "ring.pt")
    again = ExpFamEBM.load(tmp_path / "ring.pt").double()
    torch.testing.assert_close(
        again.log_unnormalized_y(y, theta), model.log_unnormalized_y(y, theta)
    )


def test_auto_search_tries_the_ring_on_ring_shaped_series():
    from ebm_lfi.training.selection import Candidate, candidates

    assert "ring" in candidates((45, 8), 4)[0]
    assert "ring" not in candidates((45, 3), 4)[0] and "ring" not in candidates((100,), 2)[0]
    assert candidates((45, 8), 4, "ring", 4)[0] == ["ring"]
    assert Candidate("ring", 4, learned=True).label == "ring+learned"


@pytest.mark.parametrize("loss", ["ssm", "dsm", "sm"])
def test_small_size_fit_is_deterministic_under_a_seed(loss):
    from ebm_lfi.methods.fit import EnergyFit

    task = get("lorenz96-small")
    theta, x = simulation.simulate(task.simulator, task.prior, 120, seed=0)
    x_test = torch.stack([task.observation(i) for i in range(3)])

    def fit():
        stage = EnergyFit(
            task.prior,
            loss=loss,
            structure="ring",
            num_statistics=4,
            training={"epochs": 2, "batch_size": 32},
        )
        return stage.fit(theta, x, seed=7)

    a, b = fit(), fit()
    assert a.diagnostics["structure"] == "ring"
    torch.testing.assert_close(a.statistics(x_test), b.statistics(x_test), rtol=0, atol=0)
    assert torch.isfinite(a.statistics(x_test)).all()
    assert np.isfinite(a.history["train_loss"]).all()


def test_command_line_runs_a_task_without_reference(tmp_path, capsys):
    import json

    from ebm_lfi.cli import main

    out = tmp_path / "run"
    code = main(
        ["run", "lorenz96-small", "--method", "rejection-abc", "--simulations", "200"]
        + ["--observation", "2", "--no-plot", "--seed", "0", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert "metrics" not in summary or not summary["metrics"]
    assert "against the reference posterior" not in captured.out
