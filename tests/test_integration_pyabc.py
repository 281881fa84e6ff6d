r"""The pyabc plug-in, with real pyabc runs (sqlite databases in a temporary directory).

The accuracy checks use a conjugate model: :math:`x_{1..N} \sim \mathcal N(\mu, \sigma_0^2)`
iid, :math:`\mu \sim \mathcal N(0, \tau^2)`, whose posterior is
:math:`\mathcal N(m_N, s_N^2)` with :math:`s_N^2 = (1/\tau^2 + N/\sigma_0^2)^{-1}` and
:math:`m_N = s_N^2 \sum_i x_i / \sigma_0^2 = \lambda \bar x`, :math:`\lambda = s_N^2 N/\sigma_0^2`.

With a statistic that is (locally) a monotone function of :math:`\bar x` and a final tolerance
:math:`\varepsilon` in distance units, the accepted region is
:math:`|\bar x - \bar x_o| \le h = \varepsilon / |d\,\mathrm{dist}/d\bar x|`. The ABC posterior
is then a mixture of the exact posteriors :math:`\mathcal N(\lambda \bar x, s_N^2)` over that
window, whatever the weighting inside it: its mean lies within :math:`\lambda h` of
:math:`m_N`, and its standard deviation between :math:`s_N` and
:math:`\sqrt{s_N^2 + \lambda^2 h^2}`. On top of this, Monte Carlo error: the mean of a weighted
sample of effective size ESS has standard error :math:`\mathrm{sd}/\sqrt{\mathrm{ESS}}`, the
standard deviation about :math:`\mathrm{sd}/\sqrt{2\,\mathrm{ESS}}`; we allow 4 of them.
"""

from __future__ import annotations

import pickle
from contextlib import contextmanager

import cloudpickle
import numpy as np
import pyabc
import pytest
import torch
from torch.distributions import Independent, Normal

import ebm_lfi as el
from ebm_lfi.integrations.pyabc import (
    EBMSumstat,
    SimulatorModel,
    TorchPrior,
    data_to_x,
    history_to_posterior,
)

N, SIGMA0, TAU, MU_TRUE = 10, 1.0, 3.0, 1.5
POST_VAR = 1.0 / (1.0 / TAU**2 + N / SIGMA0**2)
SHRINK = POST_VAR * N / SIGMA0**2


def gauss(theta, rng):
    """N iid draws of N(mu, SIGMA0^2) (module level: pickles for process pools)."""
    return theta.numpy()[0] + SIGMA0 * rng.standard_normal(N)


def two_parameters(theta, rng):
    """x = theta + small noise, two parameters."""
    return theta.numpy() + 0.1 * rng.standard_normal(2)


@contextmanager
def numpy_global_seed(seed: int):
    """pyabc draws from numpy's global RNG: seed it for a block, then restore its state."""
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


@pytest.fixture(scope="module")
def problem():
    prior = Independent(Normal(torch.zeros(1), TAU * torch.ones(1)), 1)
    simulator = el.Simulator(gauss)
    x_o = MU_TRUE + SIGMA0 * np.random.default_rng(1).standard_normal(N)
    return prior, simulator, x_o


@pytest.fixture(scope="module")
def fitted(problem):
    prior, simulator, _ = problem
    theta, x = el.simulate(simulator, prior, 2000, seed=0)
    options = dict(structure="iid", num_statistics=1, training={"epochs": 30})
    method = el.methods.get("ssm-abc", prior=prior, abc={"sampler": "smc"}, **options)
    return method.fit(theta, x, seed=0)


def run_abc(problem, distance, db, generations, population=300, sampler=None, seed=0):
    prior, simulator, x_o = problem
    with numpy_global_seed(seed):
        abc = pyabc.ABCSMC(
            SimulatorModel(simulator, ["mu"]),
            TorchPrior(prior, ["mu"]),
            distance,
            population_size=population,
            sampler=sampler or pyabc.SingleCoreSampler(),
        )
        abc.new(f"sqlite:///{db}", {"x": x_o})
        return abc.run(max_nr_populations=generations)


@pytest.fixture(scope="module")
def offline_run(problem, fitted, tmp_path_factory):
    db = tmp_path_factory.mktemp("pyabc") / "offline.db"
    sumstat = EBMSumstat(fitted)
    history = run_abc(problem, pyabc.PNormDistance(p=2, sumstat=sumstat), db, generations=5)
    return db, history, sumstat


def check_conjugate(post, sumstat, x_o, weight: float = 1.0) -> None:
    """The weighted sample agrees with the exact posterior up to the ABC window and MC error."""
    m_n = POST_VAR * x_o.sum() / SIGMA0**2
    s_n = POST_VAR**0.5
    c = 0.05  # a common shift of all x moves x_bar by c
    slope = weight * abs(float(sumstat({"x": x_o + c})[0] - sumstat({"x": x_o - c})[0])) / (2 * c)
    h = post.diagnostics["epsilon"] / slope
    ess = post.effective_sample_size
    mean, sd = float(post.mean()[0]), float(post.std()[0])
    assert abs(mean - m_n) <= SHRINK * h + 4 * sd / ess**0.5
    assert sd >= s_n * (1 - 4 / (2 * ess) ** 0.5)
    assert sd <= (s_n**2 + (SHRINK * h) ** 2) ** 0.5 * (1 + 4 / (2 * ess) ** 0.5)
    assert SHRINK * h < s_n  # the run got below the posterior scale: the check has teeth


def test_offline_statistics_recover_conjugate_posterior(problem, offline_run):
    db, history, sumstat = offline_run
    post = history_to_posterior(db)
    assert post.diagnostics["t"] == history.max_t == 4
    assert post.weights is not None and post.num_samples == 300
    check_conjugate(post, sumstat, problem[2])


def test_adaptive_pnorm_distance(problem, fitted, tmp_path):
    sumstat = EBMSumstat(fitted)
    distance = pyabc.AdaptivePNormDistance(p=2, sumstat=sumstat)
    history = run_abc(problem, distance, tmp_path / "adaptive.db", generations=4, seed=1)
    post = history_to_posterior(history)
    weight = float(np.asarray(distance.get_weights(t=history.max_t)).reshape(-1)[0])
    assert weight > 0
    check_conjugate(post, sumstat, problem[2], weight=weight)


def test_training_inside_pyabc_at_chosen_generations(problem, tmp_path):
    prior = TorchPrior(problem[0], ["mu"])  # its names order theta
    options = {"structure": "iid", "num_statistics": 1}
    sumstat = EBMSumstat("ssm", prior=prior, fit_ixs={0, 2}, epochs=15, method_options=options)
    distance = pyabc.PNormDistance(p=2, sumstat=sumstat)
    history = run_abc(problem, distance, tmp_path / "inside.db", generations=5, population=200)
    assert [fit["t"] for fit in sumstat.fits] == [0, 2]
    populations = history.get_all_populations().set_index("t")
    # t = 0: the prior-predictive calibration sample; t = 2: all of generation 1's particles
    assert sumstat.fits[0]["num_train"] == 200 == populations.loc[-1, "samples"]
    assert sumstat.fits[1]["num_train"] == populations.loc[1, "samples"] > 200
    assert not np.allclose(sumstat.fits[0]["s_obs"], sumstat.fits[1]["s_obs"])
    check_conjugate(history_to_posterior(history), sumstat, problem[2])


def test_training_is_seeded(problem, offline_run):
    _, history, _ = offline_run
    sample = pyabc.Sample.from_population(history.get_population(t=0))
    x_o = {"x": problem[2]}

    def trained(seed):
        options = {"structure": "iid", "num_statistics": 1}
        s = EBMSumstat(
            "ssm",
            prior=problem[0],
            parameter_names=["mu"],
            epochs=3,
            method_options=options,
            seed=seed,
        )
        s.initialize(t=0, get_sample=lambda: sample, x_0=x_o, total_sims=0)
        assert s.num_fits == 1 and s.fits[0]["num_train"] == 300
        data = {"x": problem[2] + 1.0}
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(s))(data), s(data))
        return s(data)

    first = trained(3)
    np.testing.assert_array_equal(first, trained(3))
    assert not np.array_equal(first, trained(4))


def test_auto_chooses_the_statistics_inside_pyabc(problem, offline_run):
    """``"auto"`` fits the ABC routes' statistics on the calibration sample and keeps the one
    whose ABC posterior scores best on held-out particles; the statistics then carry x-bar."""
    _, history, _ = offline_run
    sample = pyabc.Sample.from_population(history.get_population(t=0))
    s = EBMSumstat(
        "auto",
        prior=problem[0],
        parameter_names=["mu"],
        epochs=5,
        method_options={"selection": {"epochs": 2, "orders": (1,)}},
    )
    s.initialize(t=0, get_sample=lambda: sample, x_0={"x": problem[2]}, total_sims=0)
    assert s.fits[0]["route"] in ("ssm-abc", "nce-abc") and s.fits[0]["num_train"] == 300
    # a shift of x-bar by its prior-predictive sd (about TAU) moves an informative statistic
    # by about one of its own sds (the scales); an uninformative one stays put
    shifted = s({"x": problem[2] + TAU}) - s({"x": problem[2]})
    assert np.abs(shifted).max() > 0.5


def test_statistics_standardised_as_our_abc(problem, fitted):
    """s(x) divided by the method's scales: sd 1 over fresh prior-predictive simulations."""
    sumstat = EBMSumstat(fitted)
    np.testing.assert_array_equal(
        sumstat.scale.numpy(), fitted.posterior_stage.scaler.scale.double()
    )
    _, x = el.simulate(problem[1], problem[0], 500, seed=7)
    stats = np.stack([sumstat({"x": row.numpy()}) for row in x])
    with torch.no_grad():
        raw = fitted.model.statistics(x).double().numpy()
    np.testing.assert_allclose(stats, raw / sumstat.scale.numpy(), rtol=1e-5, atol=1e-5)  # float32
    # scales from 1,600 training rows, checked on 500 new ones: 4 / sqrt(2 * 500) = 13 %
    assert abs(stats.std(axis=0)[0] - 1.0) < 0.13 + 4 / (2 * 1600) ** 0.5


def test_pickling_round_trip(problem, fitted):
    sumstat = EBMSumstat(fitted)
    rng = np.random.default_rng(0)
    data = [{"x": problem[2]}] + [{"x": rng.normal(size=N) * 3} for _ in range(5)]
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)):
        copy = loads(dumps(sumstat))
        for d in data:
            np.testing.assert_array_equal(copy(d), sumstat(d))
    prior_copy = pickle.loads(pickle.dumps(TorchPrior(problem[0], ["mu"])))
    assert prior_copy.pdf({"mu": 0.3}) == TorchPrior(problem[0], ["mu"]).pdf({"mu": 0.3})


def test_multicore_sampler_pickles_everything(problem, fitted, tmp_path):
    sumstat = EBMSumstat(fitted)
    distance = pyabc.PNormDistance(p=2, sumstat=sumstat)
    sampler = pyabc.MulticoreEvalParallelSampler(n_procs=2, pickle=True)
    history = run_abc(problem, distance, tmp_path / "mc.db", 2, population=100, sampler=sampler)
    population = history.get_population(t=history.max_t)
    x_o = {"x": problem[2]}
    for particle in population.particles:  # the workers' statistics are the parent's
        recomputed = distance(particle.sum_stat, x_o, t=history.max_t)
        assert particle.distance == pytest.approx(recomputed, rel=1e-9)
    xs = np.stack([p.sum_stat["x"] for p in population.particles])
    assert np.unique(xs, axis=0).shape[0] == xs.shape[0]  # workers drew independent seeds


@pytest.fixture(scope="module")
def small_model():
    model = el.ExpFamEBM.default((4,), theta_dim=1, num_statistics=2, hidden=(8,))
    gen = torch.Generator().manual_seed(0)
    return model.prepare(torch.rand(50, 1, generator=gen), torch.randn(50, 4, generator=gen))


def test_dict_data_mapping(small_model):
    scale = torch.tensor([2.0, 0.5])
    data = {"a": np.array([1.0, 2.0]), "b": 3.0, "c": np.array([[4.0]]), "d": np.int64(7)}

    def expected(values):
        with torch.no_grad():
            stats = small_model.statistics(torch.tensor([values], dtype=torch.float32))[0]
        return (stats.double() / scale.double()).numpy()

    s = EBMSumstat(small_model, keys=["a", "b", "c"], scale=scale)
    np.testing.assert_allclose(s(data), expected([1.0, 2.0, 3.0, 4.0]), rtol=1e-12)
    s = EBMSumstat(small_model, keys=["d", "a", "b"], scale=scale)
    np.testing.assert_allclose(s(data), expected([7.0, 1.0, 2.0, 3.0]), rtol=1e-12)
    np.testing.assert_array_equal(data_to_x({"x": np.arange(4.0)}, None, (2, 2)), [[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="pass keys"):
        EBMSumstat(small_model, scale=scale)(data)
    with pytest.raises(KeyError, match="'e'"):
        EBMSumstat(small_model, keys=["a", "e"], scale=scale)(data)


def test_bad_shapes_raise_clear_errors(problem, fitted, small_model, tmp_path):
    sumstat = EBMSumstat(fitted)
    with pytest.raises(ValueError, match=r"\(7,\).*x of shape \(10,\)"):
        sumstat({"x": np.zeros(7)})
    with pytest.raises(ValueError, match=r"'a': \(2,\), 'b': \(\).*\(4,\)"):
        EBMSumstat(small_model, keys=["a", "b"], scale=[1.0, 1.0])({"a": np.ones(2), "b": 1.0})
    with pytest.raises(ValueError, match="scale has shape"):
        EBMSumstat(small_model, scale=[1.0, 1.0, 1.0])
    with pytest.raises(
        ValueError, match=r"reference must have shape .* = \(n, \*\(4,\)\), got \(20, 5\)"
    ):
        EBMSumstat(small_model, reference=np.zeros((20, 5)))
    with pytest.raises(ValueError, match=r"\(3,\).*\(10,\)"):  # the observed data, at once
        problem_bad = (problem[0], problem[1], np.zeros(3))
        run_abc(problem_bad, pyabc.PNormDistance(p=2, sumstat=sumstat), tmp_path / "b.db", 1)


def test_constructor_errors(problem, fitted, small_model):
    prior = problem[0]
    with pytest.raises(ValueError, match="loss name"):
        EBMSumstat(fitted, fit_ixs={0})
    with pytest.raises(ValueError, match="unknown loss"):
        EBMSumstat("foo", prior=prior)
    with pytest.raises(ValueError, match="prior"):
        EBMSumstat("ssm")
    with pytest.raises(ValueError, match="not fitted"):
        EBMSumstat(el.methods.get("ssm-abc", prior=prior))
    with pytest.raises(ValueError, match="scale and reference belong"):
        EBMSumstat("ssm", prior=prior, scale=[1.0])
    with pytest.raises(RuntimeError, match="scales are not set"):
        EBMSumstat(small_model)({"x": np.zeros(4)})


def test_model_scales_from_calibration(problem, fitted, tmp_path):
    """A bare model takes its scales from pyabc's prior-predictive calibration sample."""
    sumstat = EBMSumstat(fitted.model)
    assert sumstat.requires_calibration()
    run_abc(problem, pyabc.PNormDistance(p=2, sumstat=sumstat), tmp_path / "c.db", 1)
    # 300 prior-predictive draws: the sd estimate is within ~4 / sqrt(2 * 300) = 16 %
    reference = EBMSumstat(fitted).scale
    np.testing.assert_allclose(sumstat.scale.numpy(), reference.numpy(), rtol=0.2)


def test_history_to_posterior_keeps_weights(offline_run):
    db, history, _ = offline_run
    for t in (0, history.max_t):
        frame, weights = history.get_distribution(m=0, t=t)
        for source in (db, str(db), f"sqlite:///{db}", history):
            post = history_to_posterior(source, t=t)
            np.testing.assert_allclose(post.samples[:, 0].numpy(), frame["mu"].to_numpy())
            np.testing.assert_allclose(post.weights.numpy(), weights, rtol=1e-12)
        populations = history.get_all_populations().set_index("t")
        assert post.diagnostics["epsilon"] == populations.loc[t, "epsilon"]
    assert post.diagnostics["simulations"] == history.total_nr_simulations
    assert post.parameter_names == ["mu"]
    with pytest.raises(ValueError, match="t must be in 0 .. 4"):
        history_to_posterior(db, t=5)
    with pytest.raises(FileNotFoundError):
        history_to_posterior(db.parent / "missing.db")


def test_history_parameter_order_and_runs(tmp_path):
    prior = el.BoxUniform([0.0, 0.0], [1.0, 1.0], parameter_names=["zeta", "alpha"])
    db = tmp_path / "two.db"
    with numpy_global_seed(0):
        for x_o in ([0.2, 0.7], [0.8, 0.1]):  # two runs in one database
            abc = pyabc.ABCSMC(
                SimulatorModel(el.Simulator(two_parameters), ["zeta", "alpha"]),
                TorchPrior(prior),
                population_size=50,
                sampler=pyabc.SingleCoreSampler(),
            )
            abc.new(f"sqlite:///{db}", {"x": np.array(x_o)})
            history = abc.run(max_nr_populations=2)
    default = history_to_posterior(db)
    assert default.parameter_names == ["alpha", "zeta"]  # pyabc's order: sorted
    assert default.diagnostics["run_id"] == 2
    for run_id in (1, 2):
        frame, weights = pyabc.History(f"sqlite:///{db}", _id=run_id).get_distribution()
        post = history_to_posterior(history, parameter_names=["zeta", "alpha"], run_id=run_id)
        assert post.parameter_names == ["zeta", "alpha"]
        np.testing.assert_allclose(post.samples.numpy(), frame[["zeta", "alpha"]].to_numpy())
        np.testing.assert_allclose(post.weights.numpy(), weights, rtol=1e-12)
    assert history.id == 2  # the given History is left as it was
    # the run found the observation: posterior means near x_o of run 2 = (zeta, alpha)
    np.testing.assert_allclose(post.mean().numpy(), [0.8, 0.1], atol=0.15)
    with pytest.raises(ValueError, match="stored names"):
        history_to_posterior(db, parameter_names=["zeta", "beta"])
    with pytest.raises(ValueError, match="run_id 3"):
        history_to_posterior(db, run_id=3)


def test_prior_and_model_helpers():
    prior = el.BoxUniform([-1.0, 0.0], [1.0, 2.0], parameter_names=["a", "b"])
    wrapped = TorchPrior(prior)
    with numpy_global_seed(5):
        first = [wrapped.rvs() for _ in range(3)]
    with numpy_global_seed(5):
        assert [wrapped.rvs() for _ in range(3)] == first
    assert all(-1 <= p["a"] <= 1 and 0 <= p["b"] <= 2 for p in first)
    assert wrapped.pdf({"a": 0.0, "b": 1.0}) == pytest.approx(1 / 4)
    assert wrapped.pdf({"a": 0.0, "b": 3.0}) == 0.0
    normal = TorchPrior(Independent(Normal(torch.zeros(2), torch.ones(2)), 1), ["u", "v"])
    assert normal.pdf({"u": 0.5, "v": -1.0}) == pytest.approx(
        np.exp(-0.5 * (0.25 + 1.0)) / (2 * np.pi), rel=1e-6
    )
    with pytest.raises(ValueError, match="differ"):
        wrapped.pdf({"a": 0.0})
    model = SimulatorModel(el.benchmarks.get("ma2").simulator, ["a", "b"])
    with numpy_global_seed(1):
        out = model.sample({"a": 0.3, "b": 0.2})
    with numpy_global_seed(1):
        again = model.sample({"a": 0.3, "b": 0.2})
    assert list(out) == ["x"] and out["x"].shape == (100,) and out["x"].dtype == np.float64
    np.testing.assert_array_equal(again["x"], out["x"])
    assert not np.array_equal(model.sample({"a": 0.3, "b": 0.2})["x"], out["x"])
