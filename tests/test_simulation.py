r"""Tests of :mod:`ebm_lfi.simulation`: seeding, batching, executors and the failure policy.

Simulators are defined at module level so that they pickle for process pools and Dask.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal

from ebm_lfi.priors import BoxUniform
from ebm_lfi.simulation.outcomes import SimulationError
from ebm_lfi.simulation.simulate import SimulationInfo, simulate
from ebm_lfi.simulation.simulator import Simulator

# ----------------------------------------------------------------------------- simulators
# Each returns x = (theta_1 + e_1, theta_2 + e_2, e_3) with e ~ N(0, I_3) from its own RNG.


def numpy_rng(theta, rng):
    return np.concatenate([np.asarray(theta), [0.0]]) + rng.standard_normal(3)


def numpy_global(theta):
    return np.concatenate([np.asarray(theta), [0.0]]) + np.random.standard_normal(3)  # noqa: NPY002


def python_global(theta):
    return [
        float(theta[0]) + random.gauss(0, 1),
        float(theta[1]) + random.gauss(0, 1),
        random.gauss(0, 1),
    ]


def torch_rng(theta, rng):
    noise = torch.as_tensor(rng.standard_normal(3), dtype=theta.dtype)
    return torch.cat([theta, theta.new_zeros(1)]) + noise


def torch_global(theta):
    return torch.cat([theta, theta.new_zeros(1)]) + torch.randn(3, dtype=theta.dtype)


def numpy_rng_batched(theta, rng):
    theta = np.asarray(theta)
    noise = np.stack([r.standard_normal(3) for r in rng])
    return np.concatenate([theta, np.zeros((len(theta), 1))], axis=1) + noise


def torch_global_batched(theta):
    noise = torch.randn(theta.shape[0], 3, dtype=theta.dtype)
    return torch.cat([theta, theta.new_zeros(theta.shape[0], 1)], dim=1) + noise


SIMULATORS = {
    "numpy_rng": Simulator(numpy_rng),
    "numpy_global": Simulator(numpy_global),
    "python_global": Simulator(python_global),
    "torch_rng": Simulator(torch_rng),
    "torch_global": Simulator(torch_global),
    "numpy_rng_batched": Simulator(numpy_rng_batched, batched=True),
    "torch_global_batched": Simulator(torch_global_batched, batched=True),
}


def flaky(theta, rng):
    """Raises when theta_1 > 0.5, returns NaN when theta_2 < 0.1 (fails w.p. 0.55 on [0, 1]^2)."""
    if theta[0] > 0.5:
        raise ValueError(f"theta_1 = {float(theta[0]):.3f} is too large")
    if theta[1] < 0.1:
        return np.full(3, np.nan)
    return numpy_rng(theta, rng)


def flaky_batched(theta, rng):
    """Batched :func:`flaky`: one bad row makes the whole call raise."""
    if bool((theta[:, 0] > 0.5).any()):
        raise ValueError("a row has theta_1 > 0.5")
    x = numpy_rng_batched(theta, rng)
    x[np.asarray(theta[:, 1] < 0.1)] = np.nan
    return x


def reshaping(theta, rng):
    """Shape (3,) when theta_1 > 0.9 (probability 0.1), else (2,)."""
    return rng.standard_normal(3 if theta[0] > 0.9 else 2)


def always_fails(theta):
    raise RuntimeError("broken simulator")


class _Unpicklable(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


def raises_unpicklable(theta):
    raise _Unpicklable(1, 2)


P_FAIL = 0.5 + 0.1 - 0.5 * 0.1  # P(theta_1 > 0.5 or theta_2 < 0.1) under U([0, 1]^2)


@pytest.fixture
def prior():
    return BoxUniform(low=[0.0, 0.0], high=[1.0, 1.0], dtype=torch.float64)


@pytest.fixture(scope="module")
def pool():
    # spawn: forking a process that has run torch's thread pool is not safe
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


def _global_states():
    return np.random.get_state(), random.getstate(), torch.get_rng_state()  # noqa: NPY002


def _assert_same_states(before, after):
    np_before, py_before, torch_before = before
    np_after, py_after, torch_after = after
    assert np_before[0] == np_after[0] and np.array_equal(np_before[1], np_after[1])
    assert np_before[2:] == np_after[2:]
    assert py_before == py_after
    assert torch.equal(torch_before, torch_after)


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", SIMULATORS)
def test_same_seed_same_results_for_any_batch_size(name, prior):
    simulator = SIMULATORS[name]
    theta, x = simulate(simulator, prior, 64, seed=3)
    assert theta.shape == (64, 2) and x.shape == (64, 3)
    assert theta.dtype == x.dtype == torch.float64
    for batch_size in (1, 7, 64):
        theta_b, x_b = simulate(simulator, prior, 64, seed=3, batch_size=batch_size)
        assert torch.equal(theta_b, theta) and torch.equal(x_b, x)
    theta_other, x_other = simulate(simulator, prior, 64, seed=4)
    assert not torch.equal(theta_other, theta) and not torch.equal(x_other, x)


@pytest.mark.parametrize("name", SIMULATORS)
def test_noise_is_independent_standard_normal(name, prior):
    # x - (theta, 0) ~ N(0, I_3) iid if every simulation gets its own seed: the sample mean has
    # standard error 1/sqrt(n), the variance sqrt(2/n) and a lag-1 autocorrelation 1/sqrt(n).
    n = 1000
    theta, x = simulate(SIMULATORS[name], prior, n, seed=11, batch_size=50)
    e = x - torch.cat([theta, torch.zeros(n, 1, dtype=theta.dtype)], dim=1)
    assert e.mean(0).abs().max() < 5 / math.sqrt(n)
    assert (e.var(0) - 1).abs().max() < 5 * math.sqrt(2 / n)
    lag = (e[1:] * e[:-1]).mean(0)  # rows seeded alike would give a correlation of 1
    assert lag.abs().max() < 5 / math.sqrt(n)
    cross = (e[:, 0] * e[:, 2]).mean()  # coordinates within one simulation
    assert cross.abs() < 5 / math.sqrt(n)


def test_theta_follows_the_prior(prior):
    n = 4000
    theta, _ = simulate(numpy_rng, prior, n, seed=5)
    assert bool(((theta >= 0) & (theta <= 1)).all())
    # U(0, 1): mean 1/2, standard deviation 1/sqrt(12)
    assert (theta.mean(0) - 0.5).abs().max() < 5 / math.sqrt(12 * n)
    assert (theta.var(0) - 1 / 12).abs().max() < 5 * math.sqrt(1 / 180 / n)


def test_non_uniform_prior_is_seeded_and_leaves_global_rng(prior):
    mvn = MultivariateNormal(
        torch.tensor([1.0, -2.0], dtype=torch.float64),
        torch.tensor([[1.0, 0.5], [0.5, 2.0]], dtype=torch.float64),
    )
    before = _global_states()
    theta, x = simulate(numpy_rng, mvn, 2000, seed=0)
    _assert_same_states(before, _global_states())
    theta_again, x_again = simulate(numpy_rng, mvn, 2000, seed=0, batch_size=9)
    assert torch.equal(theta, theta_again) and torch.equal(x, x_again)
    assert (theta.mean(0) - mvn.mean).abs().max() < 5 * math.sqrt(2.0 / 2000)


@pytest.mark.parametrize("name", ["numpy_global", "torch_global_batched", "numpy_rng_batched"])
def test_process_pool_matches_serial(name, prior, pool):
    simulator = SIMULATORS[name]
    theta, x = simulate(simulator, prior, 50, seed=8)
    theta_p, x_p = simulate(simulator, prior, 50, seed=8, executor=pool, batch_size=7)
    assert torch.equal(theta_p, theta) and torch.equal(x_p, x)


@pytest.mark.xdist_group("dask")  # the session's cluster (tests/conftest.py)
def test_dask_executor_matches_serial(prior, dask_client):
    start = time.perf_counter()
    executor = dask_client.get_executor()
    for name in ("numpy_global", "numpy_rng_batched"):
        simulator = SIMULATORS[name]
        theta, x = simulate(simulator, prior, 40, seed=2)
        theta_d, x_d = simulate(simulator, prior, 40, seed=2, executor=executor, batch_size=6)
        assert torch.equal(theta_d, theta) and torch.equal(x_d, x)
    theta, x = simulate(flaky, prior, 40, seed=2, on_error="drop", max_failure_rate=0.9)
    theta_d, x_d = simulate(
        flaky, prior, 40, seed=2, on_error="drop", max_failure_rate=0.9, executor=executor
    )
    assert torch.equal(theta_d, theta) and torch.equal(x_d, x)
    assert time.perf_counter() - start < 120


def test_call_reproduces_simulate(prior):
    for simulator in (SIMULATORS["numpy_global"], SIMULATORS["numpy_rng_batched"]):
        theta, x = simulate(simulator, prior, 20, seed=6)
        assert torch.equal(simulator(theta, seed=6), x)
        assert torch.equal(simulator(theta[0], seed=6), x[0])


def test_run_seeds_each_row_by_its_index_and_returns_failures_as_outcomes(prior):
    r"""Rows ``start + j`` of :meth:`Simulator.run` are simulations ``start + j`` of the seed,
    whatever the slice; a failing row is an outcome holding its error, not an exception."""
    theta = torch.rand(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    theta[4, 0] = 0.9  # flaky raises for theta_1 > 0.5
    theta[:, 1] = theta[:, 1].clamp(min=0.2)  # and returns NaN for theta_2 < 0.1
    theta[[0, 1, 2, 3, 5], 0] = theta[[0, 1, 2, 3, 5], 0].clamp(max=0.4)
    simulator = Simulator(flaky)
    rows = theta.numpy().copy()
    whole = simulator.run(rows, 7)
    tail = simulator.run(rows[3:], 7, start=3)
    assert [o.error is None for o in whole] == [True, True, True, True, False, True]
    assert isinstance(whole[4].error, ValueError) and whole[4].value is None
    for a, b in zip(whole[3:], tail):
        assert (a.error is None) == (b.error is None)
        if a.error is None:
            assert np.array_equal(a.value, b.value)
    expected = simulator(theta[:4], seed=7)
    for j in range(4):
        assert np.array_equal(whole[j].value, expected[j].numpy())
    portable = simulator.run(rows[4:5], 7, start=4, portable=True)[0]
    assert "ValueError" in portable.traceback and isinstance(portable.error, ValueError)


def test_seed_none_draws_a_fresh_logged_seed(prior, caplog):
    with caplog.at_level(logging.DEBUG, logger="ebm_lfi.simulation.simulate"):
        theta_1, x_1, info_1 = simulate(numpy_rng, prior, 10, return_info=True)
        theta_2, x_2, info_2 = simulate(numpy_rng, prior, 10, return_info=True)
    assert info_1.seed != info_2.seed and not torch.equal(x_1, x_2)
    assert str(info_1.seed) in caplog.text
    theta_3, x_3 = simulate(numpy_rng, prior, 10, seed=info_1.seed)
    assert torch.equal(theta_3, theta_1) and torch.equal(x_3, x_1)


# ----------------------------------------------------------------------------- wrapping


def test_global_rng_state_is_unchanged(prior):
    for name in ("numpy_global", "python_global", "torch_global", "torch_global_batched"):
        before = _global_states()
        simulate(SIMULATORS[name], prior, 5, seed=0)
        _assert_same_states(before, _global_states())
    before = _global_states()
    Simulator(numpy_global)(torch.zeros(3, 2), seed=1)
    _assert_same_states(before, _global_states())


def test_simulator_receives_the_documented_arguments(prior):
    calls = []

    def single(theta, rng):
        calls.append(("single", type(theta), theta.dtype, theta.shape, type(rng)))
        return theta

    def batched(theta, rng):
        calls.append(("batched", type(theta), theta.dtype, theta.shape, len(rng)))
        assert all(isinstance(r, np.random.Generator) for r in rng)
        return theta

    def as_numpy(theta):
        calls.append(("numpy", type(theta), theta.dtype, theta.shape, None))
        return theta

    simulate(single, prior, 2, seed=0)
    simulate(Simulator(batched, batched=True), prior, 5, seed=0, batch_size=5)
    simulate(Simulator(as_numpy, as_numpy=True), prior, 1, seed=0)
    assert calls == [
        ("single", torch.Tensor, torch.float64, (2,), np.random.Generator),
        ("single", torch.Tensor, torch.float64, (2,), np.random.Generator),
        ("batched", torch.Tensor, torch.float64, (5, 2), 5),
        ("numpy", np.ndarray, np.float64, (2,), None),
    ]


@pytest.mark.parametrize(
    ("fn", "x_shape"),
    [
        (lambda theta, rng: float(theta.sum() + rng.standard_normal()), ()),
        (lambda theta, rng: torch.tensor(rng.standard_normal(1)), (1,)),
        (lambda theta, rng: rng.standard_normal((2, 3)), (2, 3)),
        (lambda theta, rng: rng.integers(0, 5, size=4), (4,)),
    ],
)
def test_output_shapes_and_dtype_follow_the_prior(fn, x_shape):
    prior32 = BoxUniform(low=[0.0, 0.0], high=[1.0, 1.0], dtype=torch.float32)
    theta, x = simulate(fn, prior32, 6, seed=0)
    assert theta.shape == (6, 2) and x.shape == (6, *x_shape)
    assert theta.dtype == x.dtype == torch.float32


def test_sbi_prior_is_accepted():
    sbi_utils = pytest.importorskip("sbi.utils")
    prior = sbi_utils.BoxUniform(torch.tensor([-1.0, 2.0]), torch.tensor([1.0, 3.0]))
    theta, x = simulate(numpy_rng, prior, 30, seed=0)
    assert theta.shape == (30, 2) and x.shape == (30, 3)
    assert bool((theta[:, 0].abs() <= 1).all() and ((theta[:, 1] >= 2) & (theta[:, 1] <= 3)).all())


def test_progress_bar(prior, capsys):
    simulate(numpy_rng, prior, 30, seed=0, progress=True)
    assert "30/30" in capsys.readouterr().err
    simulate(numpy_rng, prior, 30, seed=0)
    assert capsys.readouterr().err == ""


def test_simulator_attributes():
    simulator = Simulator(numpy_rng_batched, batched=True)
    assert simulator.batched and simulator.accepts_rng and simulator.name == "numpy_rng_batched"
    assert not Simulator(numpy_global, name="g").accepts_rng
    assert Simulator(numpy_global, name="g").name == "g"
    assert "numpy_rng_batched" in repr(simulator)
    with pytest.raises(TypeError, match="callable"):
        Simulator(3)
    with pytest.raises(ValueError, match=r"\(p,\) or \(n, p\)"):
        simulator(torch.zeros(2, 2, 2))


# ----------------------------------------------------------------------------- failures


def test_raise_names_failing_theta_and_chains_the_cause(prior):
    with pytest.raises(SimulationError, match="theta_1 = .* is too large") as info:
        simulate(flaky, prior, 200, seed=0)
    error = info.value
    assert isinstance(error, RuntimeError)
    assert isinstance(error.__cause__, ValueError)
    assert error.theta.ndim == 2 and error.theta.shape[1] == 2
    failing = (error.theta[:, 0] > 0.5) | (error.theta[:, 1] < 0.1)
    assert bool(failing.all())
    assert f"failed for {len(error.theta)} of 100 parameters" in str(error)  # first batch
    assert str(error).count("theta=[") == min(len(error.theta), 5)


def test_raise_on_nan_and_on_overflow_in_the_prior_dtype():
    prior = BoxUniform(low=[0.0, 0.2], high=[0.4, 1.0], dtype=torch.float64)  # never raises
    with pytest.raises(SimulationError, match="non-finite"):
        simulate(lambda theta: np.array([1.0, np.nan]), prior, 3, seed=0)
    prior32 = BoxUniform(low=[0.0, 0.0], high=[1.0, 1.0], dtype=torch.float32)
    with pytest.raises(SimulationError, match="non-finite"):
        simulate(lambda theta: np.array([1e300]), prior32, 3, seed=0)


def test_remote_errors_come_back_from_a_process_pool(prior, pool):
    raising = BoxUniform(low=[0.6, 0.2], high=[1.0, 1.0], dtype=torch.float64)  # flaky raises
    with pytest.raises(SimulationError, match="theta_1 = .* is too large") as info:
        simulate(flaky, raising, 40, seed=0, executor=pool, batch_size=10)
    assert isinstance(info.value.__cause__, ValueError)
    assert "Traceback" in str(info.value.__cause__.__cause__)
    with pytest.raises(SimulationError, match="_Unpicklable: 1/2"):
        simulate(raises_unpicklable, prior, 4, seed=0, executor=pool)


@pytest.mark.parametrize("fn", [flaky, Simulator(flaky_batched, batched=True)])
def test_drop_keeps_exactly_n_valid_pairs(fn, prior, caplog):
    n = 400
    with caplog.at_level(logging.WARNING, logger="ebm_lfi.simulation.simulate"):
        theta, x, info = simulate(
            fn, prior, n, seed=1, on_error="drop", max_failure_rate=0.8, return_info=True
        )
    assert theta.shape == (n, 2) and x.shape == (n, 3)
    assert bool(torch.isfinite(x).all())
    assert bool(((theta[:, 0] <= 0.5) & (theta[:, 1] >= 0.1)).all())
    assert isinstance(info, SimulationInfo) and info.num_simulations == n and info.seed == 1
    assert info.seconds > 0
    # failures before n successes: negative binomial, mean n p / (1 - p), sd sqrt(n p) / (1 - p)
    mean, sd = n * P_FAIL / (1 - P_FAIL), math.sqrt(n * P_FAIL) / (1 - P_FAIL)
    assert abs(info.num_failed - mean) < 5 * sd
    assert f"Dropped {info.num_failed} of {n + info.num_failed}" in caplog.text
    # the kept theta are uniform on the valid region [0, 0.5] x [0.1, 1]
    assert abs(float(theta[:, 0].mean()) - 0.25) < 5 * 0.5 / math.sqrt(12 * n)
    assert abs(float(theta[:, 1].mean()) - 0.55) < 5 * 0.9 / math.sqrt(12 * n)


def test_drop_is_deterministic_across_batch_sizes_and_executors(prior, pool):
    options = dict(seed=4, on_error="drop", max_failure_rate=0.8)
    theta, x = simulate(flaky, prior, 60, **options)
    for batch_size in (1, 7, 64):
        theta_b, x_b = simulate(flaky, prior, 60, batch_size=batch_size, **options)
        assert torch.equal(theta_b, theta) and torch.equal(x_b, x)
    theta_p, x_p = simulate(flaky, prior, 60, executor=pool, batch_size=7, **options)
    assert torch.equal(theta_p, theta) and torch.equal(x_p, x)
    # a batched simulator whose whole call raises gets its failing rows isolated
    batched = Simulator(flaky_batched, batched=True)
    for batch_size in (1, 13):
        theta_b, _ = simulate(batched, prior, 60, batch_size=batch_size, **options)
        assert torch.equal(theta_b, theta)


def test_too_high_failure_rate_raises(prior):
    # p_fail = 0.55: with n = 400 the observed rate is within 0.05 of it (> 3 standard errors)
    with pytest.raises(SimulationError, match="max_failure_rate=0.4") as info:
        simulate(flaky, prior, 400, seed=0, on_error="drop", max_failure_rate=0.4)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(SimulationError, match="broken simulator"):
        simulate(always_fails, prior, 10, seed=0, on_error="drop", max_failure_rate=0.99)


def test_shape_change_raises_value_error(prior):
    class Growing:
        def __init__(self):
            self.calls = 0

        def __call__(self, theta):
            self.calls += 1
            return np.zeros(2 if self.calls == 1 else 3)

    with pytest.raises(ValueError, match=r"shape \(3,\), expected shape \(2,\)") as info:
        simulate(Growing(), prior, 5, seed=0)
    assert isinstance(info.value, SimulationError)


def test_wrong_shape_for_some_theta_is_dropped(prior):
    theta, x, info = simulate(
        reshaping, prior, 100, seed=0, on_error="drop", return_info=True, batch_size=10
    )
    assert x.shape == (100, 2) and bool((theta[:, 0] <= 0.9).all())
    assert info.num_failed > 0  # P(no theta_1 > 0.9 in 100 draws) = 0.9^100 < 3e-5


def test_batched_output_with_wrong_length_fails(prior):
    def wrong_length(theta, rng):
        return np.zeros((len(theta) + 1, 2))

    with pytest.raises(SimulationError, match="expected \\(1, \\*x_shape\\)"):
        simulate(Simulator(wrong_length, batched=True), prior, 4, seed=0)


def test_non_numeric_output_fails(prior):
    with pytest.raises(SimulationError, match="real numbers"):
        simulate(lambda theta: np.array(["a", "b"]), prior, 2, seed=0)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(prior=torch.zeros(2)), TypeError, "Distribution"),
        (dict(prior=MultivariateNormal(torch.zeros(2, 2), torch.eye(2))), ValueError, "shape"),
        (dict(num_simulations=0), ValueError, "num_simulations"),
        (dict(num_simulations=-3), ValueError, "num_simulations"),
        (dict(num_simulations=2.5), ValueError, "num_simulations"),
        (dict(num_simulations=True), ValueError, "num_simulations"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(batch_size=1.5), ValueError, "batch_size"),
        (dict(on_error="ignore"), ValueError, "on_error"),
        (dict(max_failure_rate=1.0), ValueError, "max_failure_rate"),
        (dict(max_failure_rate=-0.1), ValueError, "max_failure_rate"),
        (dict(simulator="not callable"), TypeError, "simulator"),
        (dict(executor=object()), TypeError, "executor"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed="0"), TypeError, "seed"),
    ],
)
def test_bad_inputs(kwargs, error, match, prior):
    arguments = dict(simulator=numpy_rng, prior=prior, num_simulations=4, seed=0)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        simulate(
            arguments.pop("simulator"),
            arguments.pop("prior"),
            arguments.pop("num_simulations"),
            **arguments,
        )
