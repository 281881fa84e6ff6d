r"""Tests of :mod:`ebm_lfi.benchmarks`: exact likelihoods, simulators and the stored references.

Likelihoods are checked against :mod:`scipy.stats` (i.i.d. tasks) and against a dense
multivariate normal built from the model's definition (AR(2), MA(2)); simulators against
closed-form moments and the zero-mean property of the score, which ties simulator and
likelihood together; the stored reference posteriors against an independent route (prior
importance sampling refined by random-walk Metropolis) and by simulation-based calibration.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as st
import torch

import ebm_lfi.benchmarks
from ebm_lfi.benchmarks import Task, available, data_directory, get
from ebm_lfi.benchmarks.reference import (
    content_hash,
    draw_observations,
    grid_posterior_samples,
    reference_samples,
)
from ebm_lfi.benchmarks.task import dequantize, quantize
from ebm_lfi.benchmarks.timeseries import (
    ar2_log_likelihood,
    ma2_log_likelihood,
    simulate_ar2,
    simulate_ma2,
)
from ebm_lfi.priors import BoxUniform

TASKS = ["beta", "gamma", "gaussian", "ar2", "ma2"]  # with a likelihood and a reference
LIKELIHOOD_FREE = ["lorenz96", "lorenz96-small"]  # tested in test_lorenz96.py
IID = ["beta", "gamma", "gaussian"]
F64 = torch.float64


def rngs(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def scipy_dist(name: str, theta: np.ndarray):
    a, b = theta
    if name == "beta":
        return st.beta(a, b)
    if name == "gamma":
        return st.gamma(a, scale=b)
    return st.norm(a, b)


def dense_covariance(name: str, t1: float, t2: float, length: int) -> np.ndarray:
    r"""Covariance of the series from the model's definition, as a linear map of innovations."""
    if name == "ar2":  # A x = e with x_0 = x_-1 = 0
        A = np.eye(length) - t1 * np.eye(length, k=-1) - t2 * np.eye(length, k=-2)
        Ainv = np.linalg.inv(A)
        return Ainv @ Ainv.T
    B = np.zeros((length, length + 2))  # x = B (e_-1, e_0, e_1, ..., e_T)
    for t in range(length):
        B[t, t + 2], B[t, t + 1], B[t, t] = 1.0, t1, t2
    return B @ B.T


def interior(task: Task, n: int, seed: int) -> np.ndarray:
    r"""``n`` parameters in the inner 80 % of the prior box."""
    low, high = np.array(task.low), np.array(task.high)
    u = np.random.default_rng(seed).uniform(0.1, 0.9, size=(n, task.dim))
    return low + u * (high - low)


# ----------------------------------------------------------------------------- registry


def test_registry():
    assert available() == TASKS + LIKELIHOOD_FREE
    assert get("MA2").name == "ma2"
    with pytest.raises(ValueError, match="available: beta, gamma"):
        get("lotka-volterra")
    with pytest.raises(TypeError):
        get(3)


@pytest.mark.parametrize("name", TASKS)
def test_task_attributes(name):
    task = get(name)
    assert isinstance(task.prior, BoxUniform)
    assert task.prior.parameter_names == list(task.parameter_names)
    assert task.prior.sample((7,)).shape == (7, 2)
    assert task.x_shape == ((10,) if name in IID else (100,))
    assert task.structure == ("iid" if name in IID else "markov")
    assert task.num_observations == 100
    lower, upper = task.x_support
    assert (lower, upper) == {"beta": (0.0, 1.0), "gamma": (0.0, None)}.get(name, (None, None))


# ----------------------------------------------------------------------------- likelihoods


@pytest.mark.parametrize("name", IID)
def test_iid_log_likelihood_matches_scipy(name):
    task = get(name)
    rng = np.random.default_rng(0)
    # Include parameters outside the prior box: the likelihood is the model's, not the prior's.
    theta = interior(task, 20, 1) * rng.uniform(0.5, 1.5, size=(20, 1))
    x = np.stack([scipy_dist(name, t).rvs(10, random_state=rng) for t in theta])
    expected = np.array([scipy_dist(name, t).logpdf(xi).sum() for t, xi in zip(theta, x)])
    got = task.log_likelihood(torch.tensor(theta), torch.tensor(x))
    assert got.dtype == F64 and got.shape == (20,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-10)
    # One x broadcast over many theta equals the batch evaluation.
    single = task.log_likelihood(torch.tensor(theta), torch.tensor(x[3]))
    batch = task.log_likelihood(torch.tensor(theta), torch.tensor(x[3]).expand(20, 10))
    torch.testing.assert_close(single, batch, rtol=0, atol=0)
    # float32 in, float32 out.
    assert task.log_likelihood(torch.tensor(theta).float(), torch.tensor(x).float()).dtype == (
        torch.float32
    )


@pytest.mark.parametrize(
    "name, theta, x_bad",
    [
        ("beta", [2.0, 2.0], 0.0),
        ("beta", [2.0, 2.0], 1.0),
        ("beta", [1.0, 1.0], -0.5),
        ("beta", [0.0, 2.0], 0.5),
        ("gamma", [2.0, 2.0], 0.0),
        ("gamma", [2.0, 2.0], -1.0),
        ("gamma", [2.0, -1.0], 1.0),
        ("gaussian", [0.0, 0.0], 1.0),
        ("gaussian", [0.0, 1.0], float("inf")),
    ],
)
def test_log_likelihood_outside_support(name, theta, x_bad):
    task = get(name)
    x = torch.full((10,), 0.5, dtype=F64)
    x[4] = x_bad
    out = task.log_likelihood(torch.tensor([theta, [2.0, 2.0]], dtype=F64), x)
    assert out[0] == -torch.inf and not torch.isnan(out).any()


@pytest.mark.parametrize("name", ["ar2", "ma2"])
@pytest.mark.parametrize("length", [1, 2, 3, 8, 100])
def test_timeseries_log_likelihood_matches_dense_gaussian(name, length):
    fn = ar2_log_likelihood if name == "ar2" else ma2_log_likelihood
    rng = np.random.default_rng(length)
    low, high = np.array(get(name).low), np.array(get(name).high)
    # The box's corners and centre, plus (short series only) values outside the prior box
    # where the AR(2) is explosive: the likelihood must hold for any theta.
    theta = np.array([[a, b] for a in (low[0], high[0]) for b in (low[1], high[1])])
    theta = np.vstack([theta, (low + high) / 2, [0.5, low[1] + 0.3 * (high[1] - low[1])]])
    if length <= 8:
        theta = np.vstack([theta, [[2.0, 1.5], [-1.5, 0.9]]])
    x = rng.standard_normal((len(theta), length)) * 2
    expected = [
        st.multivariate_normal(np.zeros(length), dense_covariance(name, *t, length)).logpdf(xi)
        for t, xi in zip(theta, x)
    ]
    got = fn(torch.tensor(theta), torch.tensor(x))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("name", TASKS)
def test_log_likelihood_shapes(name):
    task = get(name)
    theta = torch.tensor(interior(task, 4, 0))
    x = torch.zeros(task.x_shape, dtype=F64) + 0.5
    assert task.log_likelihood(theta, x).shape == (4,)
    assert task.log_likelihood(theta[0], x.expand(3, *task.x_shape)).shape == (3,)
    with pytest.raises(ValueError, match="theta must have shape"):
        task.log_likelihood(torch.zeros(4, 3), x)
    with pytest.raises(ValueError, match="x must have shape"):
        task.log_likelihood(theta, torch.zeros(4, 7))
    with pytest.raises(ValueError, match="rows"):
        task.log_likelihood(theta, x.expand(3, *task.x_shape))


@pytest.mark.parametrize("name", IID)
def test_sufficient_statistics_factorise_likelihood(name):
    r"""For an exponential family, :math:`\ell(\theta_1, x) - \ell(\theta_0, x)` is affine in
    :math:`s(x)`; a least-squares fit must leave only rounding error."""
    task = get(name)
    x = task.simulate_fn(interior(task, 200, 2), rngs(3, 200))
    s = task.sufficient_statistics(torch.tensor(x))
    assert s.shape == (200, 2)
    assert task.sufficient_statistics(torch.tensor(x).reshape(20, 10, 10)).shape == (20, 10, 2)
    assert task.sufficient_statistics(torch.tensor(x[0])).shape == (2,)
    design = np.column_stack([np.ones(200), s.numpy()])
    for t0 in interior(task, 3, 4):
        t1 = 1.2 * t0
        diff = (
            task.log_likelihood(torch.tensor(t1).expand(200, 2), torch.tensor(x))
            - task.log_likelihood(torch.tensor(t0).expand(200, 2), torch.tensor(x))
        ).numpy()
        coef, *_ = np.linalg.lstsq(design, diff, rcond=None)
        assert np.abs(design @ coef - diff).max() < 1e-9 * (1 + np.abs(diff).max())
    # A statistic that is not sufficient leaves a large residual: the check has power.
    wrong = np.column_stack([np.ones(200), np.abs(x).max(1), x.min(1)])
    coef, *_ = np.linalg.lstsq(wrong, diff, rcond=None)
    assert np.abs(wrong @ coef - diff).max() > 1e-3


def ar2_eta(t):
    """The natural parameters of AR(2) paired with its five lagged products."""
    return np.array([t[0], t[1], -(t[0] ** 2) / 2, -t[0] * t[1], -(t[1] ** 2) / 2])


def test_ar2_sufficient_statistics_factorise_likelihood():
    r"""AR(2) with :math:`x_0 = x_{-1} = 0`: :math:`\ell(\theta_1, x) - \ell(\theta_0, x)` is
    linear in the five lagged products, and fails to be with any one of them left out."""
    task = get("ar2")
    x = torch.tensor(task.simulate_fn(interior(task, 200, 2), rngs(3, 200)), dtype=torch.float64)
    s = task.sufficient_statistics(x)
    assert s.shape == (200, 5) and s.dtype == torch.float64
    design = s.numpy()
    for t0 in interior(task, 3, 4):
        t1 = 0.8 * t0
        diff = (
            task.log_likelihood(torch.tensor(t1).expand(200, 2), x)
            - task.log_likelihood(torch.tensor(t0).expand(200, 2), x)
        ).numpy()
        coef, *_ = np.linalg.lstsq(design, diff, rcond=None)
        assert np.abs(design @ coef - diff).max() < 1e-8 * (1 + np.abs(diff).max())
        # the natural parameters are known: (t1, t2, -t1^2/2, -t1 t2, -t2^2/2)
        np.testing.assert_allclose(coef, ar2_eta(t1) - ar2_eta(t0), rtol=1e-6, atol=1e-8)
        for drop in range(5):
            part = np.delete(design, drop, axis=1)
            c, *_ = np.linalg.lstsq(part, diff, rcond=None)
            assert np.abs(part @ c - diff).max() > 1e-4


def test_no_sufficient_statistics_for_ma2():
    assert get("ma2").sufficient_statistics(torch.zeros(3, 100)) is None


# ----------------------------------------------------------------------------- simulators


@pytest.mark.parametrize("name", IID)
def test_iid_simulator_moments(name):
    task = get(name)
    n = 4000
    for k, theta in enumerate(interior(task, 3, 5)):
        x = task.simulate_fn(np.tile(theta, (n, 1)), rngs(10 + k, n)).reshape(-1)
        dist = scipy_dist(name, theta)
        mean, var, _, kurt = (float(v) for v in dist.stats(moments="mvsk"))
        se_mean = np.sqrt(var / x.size)
        se_var = np.sqrt((kurt + 2) * var**2 / x.size)  # Var(s^2) ~ (mu_4 - sigma^4) / N
        assert abs(x.mean() - mean) < 5 * se_mean
        assert abs(x.var() - var) < 5 * se_var


@pytest.mark.parametrize("name", ["ar2", "ma2"])
def test_timeseries_simulator_covariance(name):
    r"""The empirical covariance of the first 8 values matches the dense covariance the
    likelihood is checked against (including the start: AR zero, MA stationary)."""
    simulate = simulate_ar2 if name == "ar2" else simulate_ma2
    n, length = 20000, 8
    for k, theta in enumerate(interior(get(name), 2, 6)):
        x = simulate(np.tile(theta, (n, 1)), rngs(20 + k, n), length=length)
        cov = dense_covariance(name, *theta, length)
        emp = x.T @ x / n  # zero mean
        se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
        assert np.abs(x.mean(0)).max() < 5 * np.sqrt(np.diag(cov).max() / n)
        assert (np.abs(emp - cov) < 5 * se).all()


@pytest.mark.parametrize("name", TASKS)
def test_score_of_simulations_has_zero_mean(name):
    r""":math:`\mathbb{E}_{x \sim p(\cdot|\theta)} \nabla_\theta \log p(x|\theta) = 0` ties the
    simulator to the likelihood (conventions, parameterisation)."""
    task = get(name)
    n = 2000
    for k, theta in enumerate(interior(task, 2, 7)):
        x = torch.tensor(task.simulate_fn(np.tile(theta, (n, 1)), rngs(30 + k, n)))
        th = torch.tensor(theta, dtype=F64).expand(n, 2).clone().requires_grad_(True)
        (score,) = torch.autograd.grad(task.log_likelihood(th, x).sum(), th)
        mean, se = score.mean(0), score.std(0) / np.sqrt(n)
        assert (mean.abs() < 5 * se).all(), (theta, mean, se)


@pytest.mark.parametrize("name", TASKS)
def test_simulator_batch_independence(name):
    task = get(name)
    theta = interior(task, 5, 8)
    batch = task.simulate_fn(theta, rngs(9, 5))
    rows = [task.simulate_fn(theta[i : i + 1], [g]) for i, g in enumerate(rngs(9, 5))]
    assert batch.shape == (5, *task.x_shape)
    np.testing.assert_array_equal(batch, np.concatenate(rows))
    with pytest.raises(ValueError, match="one Generator per row"):
        task.simulate_fn(theta, rngs(9, 4))


@pytest.mark.parametrize("name", ["beta", "ma2"])
def test_task_simulator_wraps_batched_function(name):
    simulation = pytest.importorskip("ebm_lfi.simulation.simulate")
    task = get(name)
    sim = task.simulator
    assert isinstance(sim, simulation.Simulator) and sim.batched
    theta = torch.tensor(interior(task, 6, 11), dtype=torch.float32)
    x = sim(theta, seed=5)
    assert x.shape == (6, *task.x_shape) and torch.isfinite(x).all()
    torch.testing.assert_close(x, sim(theta, seed=5))
    _, x1 = simulation.simulate(sim, task.prior, 6, seed=1, batch_size=1)
    _, x6 = simulation.simulate(sim, task.prior, 6, seed=1, batch_size=6)
    torch.testing.assert_close(x1, x6)


# ----------------------------------------------------------------------------- stored data


@pytest.mark.parametrize("name", TASKS)
def test_stored_data_shapes_and_support(name):
    task = get(name)
    low, high = torch.tensor(task.low), torch.tensor(task.high)
    xs = torch.stack([task.observation(i) for i in range(100)])
    assert xs.shape == (100, *task.x_shape) and xs.dtype == torch.get_default_dtype()
    assert torch.isfinite(xs).all()
    lower, upper = task.x_support
    if lower is not None:  # also after rounding to float32
        assert (xs > lower).all()
    if upper is not None:
        assert (xs < upper).all()
    for i in (0, 57, 99):
        theta = task.true_parameters(i)
        assert theta.shape == (2,) and ((theta >= low) & (theta <= high)).all()
        ref = task.reference_posterior(i, dtype=F64)
        assert ref.shape == (10_000, 2) and ref.dtype == F64
        assert ((ref > low) & (ref < high)).all()
        assert torch.isfinite(task.log_likelihood(ref[:100], task.observation(i, F64))).all()
    for bad in (-1, 100):
        with pytest.raises(IndexError, match="0 .. 99"):
            task.observation(bad)
        with pytest.raises(IndexError, match="0 .. 99"):
            task.reference_posterior(bad)
    with pytest.raises(TypeError):
        task.true_parameters(1.0)


def test_manifest_matches_data():
    manifest = json.loads((data_directory() / "manifest.json").read_text())
    assert sorted(manifest["tasks"]) == sorted(TASKS + LIKELIHOOD_FREE)
    for name, entry in manifest["tasks"].items():
        with np.load(data_directory() / entry["file"]) as f:
            data = {k: f[k] for k in f.files}
        assert content_hash(data) == entry["content_sha256"]
        assert int(data["seed"]) == get(name).seed
        if name in TASKS:
            assert data["edge_mass"].max() < 1e-10  # the refined grid enclosed the mass
        else:
            assert "reference" not in data and entry["num_samples"] == 0


@pytest.mark.parametrize("name", TASKS)
def test_data_regenerates_from_seed(name):
    task = get(name)
    theta, x = draw_observations(task)
    np.testing.assert_allclose(theta, [task.true_parameters(i, F64) for i in range(100)], 0, 0)
    np.testing.assert_allclose(x, [task.observation(i, F64) for i in range(100)], rtol=1e-12)
    i = 42
    samples, _ = reference_samples(task, x[i], i)
    with np.load(task.data_path) as f:
        stored = f["reference"][i]
    # Bit-identical but for draws that a last-ulp difference in the likelihood could move.
    assert (quantize(samples, task.low, task.high) == stored).mean() > 0.999


def test_data_directory_is_inside_the_package(monkeypatch):
    monkeypatch.delenv("EBM_LFI_DATA", raising=False)
    package = Path(ebm_lfi.benchmarks.__file__).resolve().parent
    assert data_directory() == package / "data"
    assert get("ma2").data_path == package / "data" / "ma2.npz"


def test_data_directory_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EBM_LFI_DATA", str(tmp_path))
    task = get("beta")
    assert data_directory() == tmp_path and task.data_path == tmp_path / "beta.npz"
    with pytest.raises(FileNotFoundError, match="python -m ebm_lfi.benchmarks.reference"):
        task.observation(0)


def test_quantize_roundtrip():
    low, high = np.array([-1.0, 2.0]), np.array([1.0, 5.0])
    u = np.random.default_rng(0).random((1000, 2))
    samples = low + u * (high - low)
    back = dequantize(quantize(samples, low, high), low, high)
    assert (np.abs(back - samples) <= (high - low) / 2**17 * (1 + 1e-9)).all()
    edge = quantize(np.array([low, high]), low, high)
    assert edge.dtype == np.uint16 and (edge[0] == 0).all() and (edge[1] == 65535).all()


# ----------------------------------------------------------------------------- reference


def test_grid_sampler_on_known_gaussian():
    r"""A correlated Gaussian well inside the box: sample mean and covariance within 5 SE."""
    mean = np.array([0.3, -0.2])
    cov = np.array([[0.04, 0.018], [0.018, 0.0225]])
    prec = torch.tensor(np.linalg.inv(cov))

    def log_density(theta):
        d = theta - torch.tensor(mean)
        return -0.5 * ((d @ prec) * d).sum(-1)

    m = 20000
    samples, info = grid_posterior_samples(
        log_density, [-5.0, -5.0], [5.0, 5.0], m, rng=np.random.default_rng(0)
    )
    assert info["volume_fraction"] < 0.1 and info["edge_mass"] < 1e-12
    se_mean = np.sqrt(np.diag(cov) / m)
    assert (np.abs(samples.mean(0) - mean) < 5 * se_mean).all()
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / m)
    assert (np.abs(np.cov(samples.T) - cov) < 5 * se_cov).all()
    with pytest.raises(ValueError, match="-inf"):
        grid_posterior_samples(
            lambda t: torch.full((len(t),), -torch.inf, dtype=F64),
            [0.0],
            [1.0],
            10,
            rng=np.random.default_rng(0),
        )


def independent_posterior(task: Task, x_o: torch.Tensor, n: int, seed: int) -> np.ndarray:
    r"""Posterior samples by a route that shares nothing with the grid builder: importance
    sampling from the prior, resampled, then refined by random-walk Metropolis chains."""
    gen = np.random.default_rng(seed)
    low, high = np.array(task.low), np.array(task.high)

    def log_post(theta):
        inside = ((theta >= low) & (theta <= high)).all(1)
        ll = task.log_likelihood(torch.tensor(theta), x_o).numpy()
        return np.where(inside, ll, -np.inf)

    draws = low + gen.random((1 << 17, 2)) * (high - low)
    logw = log_post(draws)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    state = draws[gen.choice(len(draws), size=n, p=w)]
    mean = w @ draws
    chol = np.linalg.cholesky((2.38**2 / 2) * ((draws - mean).T * w) @ (draws - mean))
    logp = log_post(state)
    for _ in range(200):
        prop = state + gen.standard_normal((n, 2)) @ chol.T
        logq = log_post(prop)
        accept = np.log(gen.random(n)) < logq - logp
        state[accept], logp[accept] = prop[accept], logq[accept]
    return state


W2_BLOCKS = (1000, 2000, 3000)


def standardized_w2(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> float:
    import ot

    cost = ot.dist(a / scale, b / scale)  # squared Euclidean
    return float(np.sqrt(ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), cost)))


def check_reference_against_independent_route(name: str, i: int):
    task = get(name)
    ref = task.reference_posterior(i, dtype=F64).numpy()
    fresh = independent_posterior(task, task.observation(i, F64), 1000, seed=100 + i)
    scale = ref.std(0)
    w2 = standardized_w2(fresh, ref[:1000], scale)
    # The noise level: W2 between disjoint 1000-subsamples of the reference (one law).
    floor = np.mean([standardized_w2(ref[k : k + 1000], ref[:1000], scale) for k in W2_BLOCKS])
    # Under the null both are W2 between two 1000-samples of one law, so their ratio is
    # about 1 (spread ~0.2); a posterior off by half a standard deviation gives a ratio
    # above 3 (test_independent_route_has_power).
    assert w2 < 2.0 * floor, (name, i, w2, floor)


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("i", [0, 1])
def test_reference_matches_independent_route(name, i):
    pytest.importorskip("ot")
    check_reference_against_independent_route(name, i)


@pytest.mark.slow
@pytest.mark.parametrize("name", TASKS)
def test_reference_matches_independent_route_more(name):
    pytest.importorskip("ot")
    for i in range(2, 12):
        check_reference_against_independent_route(name, i)


def test_independent_route_has_power():
    r"""The W2 check rejects a posterior shifted by half a standard deviation."""
    pytest.importorskip("ot")
    task = get("ar2")
    ref = task.reference_posterior(0, dtype=F64).numpy()
    fresh = independent_posterior(task, task.observation(0, F64), 1000, seed=100)
    scale = ref.std(0)
    floor = np.mean([standardized_w2(ref[k : k + 1000], ref[:1000], scale) for k in W2_BLOCKS])
    assert standardized_w2(fresh, ref[:1000] + 0.5 * scale, scale) > 3.0 * floor


@pytest.mark.parametrize("name", TASKS)
def test_simulation_based_calibration(name):
    r"""Ranks of the true parameters within their reference posteriors, over the 100 fixed
    observations, are uniform (KS test at the generous level 0.001)."""
    task = get(name)
    ranks = np.array(
        [
            (task.reference_posterior(i, F64) < task.true_parameters(i, F64)).double().mean(0)
            for i in range(100)
        ]
    )
    for j in range(2):
        assert st.kstest(ranks[:, j], "uniform").pvalue > 1e-3, (name, j)
    # Power: the same ranks against posteriors shifted by one posterior std are not uniform.
    shifted = np.array(
        [
            ((ref := task.reference_posterior(i, F64)) + ref.std(0) < task.true_parameters(i, F64))
            .double()
            .mean(0)
            for i in range(100)
        ]
    )
    assert min(st.kstest(shifted[:, j], "uniform").pvalue for j in range(2)) < 1e-3
