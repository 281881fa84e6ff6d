r"""Tests of sbi interoperability: sbi priors and simulators, embedding nets, posterior adapter.

The reference model is the conjugate Gaussian :math:`\theta \sim \mathcal N(0, I_2)`,
:math:`x = \theta + \sigma \varepsilon`, whose posterior is
:math:`\mathcal N(x / (1 + \sigma^2), \sigma^2 / (1 + \sigma^2) I)`.
"""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from posterior_checks import assert_catches, assert_contraction, assert_matches, moments
from torch.distributions import Beta, Gamma, MultivariateNormal, Normal, Uniform

import ebm_lfi as el
from ebm_lfi.priors import coordinate_bounds, prior_bounds, prior_dim

sbi_utils = pytest.importorskip("sbi.utils")
from sbi.inference import NLE, NPE  # noqa: E402
from sbi.neural_nets import posterior_nn  # noqa: E402

from ebm_lfi.integrations.sbi import (  # noqa: E402
    SBIPosterior,
    embedding,
    likelihood_estimator,
    parameter_embedding,
    posterior_estimator,
)

pytestmark = pytest.mark.filterwarnings("ignore:Maximum number of epochs:UserWarning")

SIGMA = 0.5
POST_SD = SIGMA / math.sqrt(1 + SIGMA**2)


def gaussian_simulator(theta):
    """An sbi-style batched simulator: ``(n, p) -> (n, p)``, torch's global RNG."""
    return theta + SIGMA * torch.randn(theta.shape[0], theta.shape[1])


def indexing_simulator(theta):
    """Batched and indexing the batch axis: fails on a single theta of shape (p,)."""
    return torch.stack([theta[:, 0], theta[:, 1]], 1) + SIGMA * torch.randn(theta.shape[0], 2)


def exact_mean(x_o: torch.Tensor) -> torch.Tensor:
    return x_o / (1 + SIGMA**2)


@pytest.fixture(scope="module")
def prior():
    return MultivariateNormal(torch.zeros(2), torch.eye(2))


@pytest.fixture(scope="module")
def data(prior):
    return el.simulate(gaussian_simulator, prior, 2000, seed=0)


@pytest.fixture(scope="module")
def method(prior, data):
    theta, x = data
    options = dict(structure="mlp", num_statistics=2, training=dict(epochs=30))
    return el.methods.get("ssm-abc", prior=prior, reference=data, **options).fit(theta, x, seed=0)


# --------------------------------------------------------------- sbi priors and simulators


def test_batched_sbi_simulator_is_detected_and_seeded(prior):
    theta, x = el.simulate(indexing_simulator, prior, 400, seed=3)
    assert theta.shape == x.shape == (400, 2)
    explicit = el.Simulator(indexing_simulator, batched=True)
    theta_b, x_b = el.simulate(explicit, prior, 400, seed=3, batch_size=7)
    assert torch.equal(theta, theta_b) and torch.equal(x, x_b)  # same seeds, any batching
    wrapper = el.Simulator(indexing_simulator)
    assert not wrapper.batched
    wrapper(theta[:3], seed=0)
    assert wrapper.batched  # detected
    noise = (x - theta) / SIGMA  # standard normal: mean 0 (SE 1/sqrt(n)), variance 1
    assert bool((noise.mean(0).abs() < 5 / math.sqrt(400)).all())
    assert bool(((noise.var(0) - 1).abs() < 5 * math.sqrt(2 / 400)).all())


def test_failing_single_theta_simulator_reports_its_own_error(prior):
    def broken(theta):
        raise KeyError("the simulator's own error")

    with pytest.raises(el.SimulationError, match="the simulator's own error") as info:
        el.simulate(broken, prior, 3, seed=0)
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(el.SimulationError, match="IndexError"):  # batched=False: no detection
        el.simulate(el.Simulator(indexing_simulator, batched=False), prior, 3, seed=0)


def test_detection_ends_once_a_single_theta_call_succeeds():
    def single(theta):  # one theta at a time; fails in a region (a batch of one would not)
        if theta.ndim == 1 and float(theta[0]) > 0.5:
            raise ValueError("bad region")
        return theta + SIGMA * torch.randn_like(theta)

    simulator = el.Simulator(single)
    with pytest.raises(el.SimulationError, match="bad region"):
        simulator(torch.tensor([[0.1, 0.0], [0.9, 0.0]]), seed=0)
    assert not simulator.batched


@pytest.mark.parametrize(
    "make_prior",
    [
        lambda: sbi_utils.BoxUniform(-2 * torch.ones(2), 2 * torch.ones(2)),
        lambda: MultivariateNormal(torch.zeros(2), torch.eye(2)),
        lambda: sbi_utils.MultipleIndependent(
            [Uniform(-2 * torch.ones(1), 2 * torch.ones(1)), Beta(torch.ones(1), torch.ones(1))]
        ),
        lambda: sbi_utils.MultipleIndependent(
            [Gamma(2 * torch.ones(1), 2 * torch.ones(1)), Normal(torch.zeros(1), torch.ones(1))]
        ),
    ],
    ids=["BoxUniform", "MultivariateNormal", "MultipleIndependent", "MultipleIndependent-open"],
)
def test_sbi_priors_through_infer_and_methods(make_prior):
    prior = make_prior()
    x_o = torch.tensor([[0.8, 0.3]])  # sbi's shape for one observation, (1, d)
    options = dict(structure="mlp", num_statistics=2, training=dict(epochs=20))
    post = el.infer(
        gaussian_simulator,
        prior,
        x_o,
        method="ssm-abc",
        num_simulations=4500,  # total: 1500 to train, the explicit 3000-row table
        num_samples=300,
        seed=0,
        abc=dict(num_reference=3000),
        **options,
    )
    assert post.samples.shape == (300, 2)
    assert bool(torch.isfinite(prior.log_prob(post.samples.float())).all())  # inside support
    method = el.methods.get("nce", prior=prior, mcmc=dict(burn_in=50), **options)
    theta, x = el.simulate(gaussian_simulator, prior, 800, seed=1)
    samples = method.fit(theta, x, seed=0).posterior(x_o, 200, seed=0).samples
    assert bool(torch.isfinite(prior.log_prob(samples.float())).all())


def test_sbi_prior_supports_and_one_parameter_prior():
    mixed = sbi_utils.MultipleIndependent(
        [Uniform(torch.tensor([-2.0]), torch.tensor([2.0])), Gamma(torch.ones(1), torch.ones(1))]
    )
    low, high = coordinate_bounds(mixed)
    assert low.tolist() == [-2.0, 0.0] and high.tolist() == [2.0, math.inf]
    assert prior_bounds(mixed) is None
    box = sbi_utils.MultipleIndependent(
        [Uniform(torch.tensor([-2.0]), torch.tensor([2.0])), Uniform(torch.zeros(1), torch.ones(1))]
    )
    assert [t.tolist() for t in prior_bounds(box)] == [[-2.0, 0.0], [2.0, 1.0]]
    one = Uniform(torch.zeros(1), torch.ones(1))  # sbi's one-parameter idiom
    assert prior_dim(one) == 1
    theta, x = el.simulate(lambda t: t + 0.1 * torch.randn_like(t), one, 50, seed=0)
    assert theta.shape == x.shape == (50, 1)
    assert bool(((theta >= 0) & (theta <= 1)).all())


# --------------------------------------------------------------- embedding nets


def test_embedding_shapes_dtype_standardisation_and_pickle():
    x_shape = (5, 2)  # five exchangeable draws of a 2-vector
    model = el.ExpFamEBM.default(x_shape, 3, num_statistics=4, structure="iid", hidden=(8,))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, *x_shape, generator=generator, dtype=torch.float64) * 2 + 1
    model = model.to(torch.float64).prepare(torch.rand(300, 3, dtype=torch.float64), x)
    with pytest.raises(ValueError, match="x="):
        embedding(model)
    net = embedding(model, x=x)
    out = net(x.float())
    assert out.shape == (300, 4) and out.dtype == torch.float32
    assert torch.allclose(net(x.reshape(300, 10).float()), out)  # sbi's flattened x
    with torch.no_grad():
        s = model.statistics(x)
    expected = (s - s.mean(0)) / s.std(0)  # in float64, from the model itself
    assert torch.allclose(out.double(), expected, atol=1e-4)
    restored = pickle.loads(pickle.dumps(net))
    assert torch.equal(restored(x[:7].float()), net(x[:7].float()))
    with pytest.raises(ValueError, match=r"x_shape=\(5, 2\)"):
        net(torch.zeros(3, 7))


def test_embedding_gradients_flow_only_when_trainable(method, data):
    _, x = data
    original = [p.detach().clone() for p in method.model.parameters()]
    frozen = embedding(method)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not frozen(x[:64]).requires_grad
    tuned = embedding(method, trainable=True)
    tuned(x[:64]).square().sum().backward()
    stats_grads = [p.grad for p in tuned.model.statistics_net.parameters()]
    assert all(g is not None for g in stats_grads) and any(
        bool(g.abs().sum() > 0) for g in stats_grads
    )
    assert all(p.grad is None for p in tuned.model.natural_net.parameters())
    torch.optim.SGD(tuned.parameters(), lr=0.1).step()
    for p, q in zip(method.model.parameters(), original):  # the fitted method is untouched
        assert torch.equal(p, q)
    eta = parameter_embedding(method)
    assert eta(data[0][:5]).shape == (5, 2)
    assert not any(p.requires_grad for p in eta.parameters())


def test_embedding_of_a_float64_fit_computes_in_float32():
    prior = el.BoxUniform([-2.0, -2.0], [2.0, 2.0], dtype=torch.float64)
    theta, x = el.simulate(gaussian_simulator, prior, 600, seed=0)
    options = dict(structure="mlp", num_statistics=2, training=dict(epochs=3))
    method = el.methods.get("ssm-abc", prior=prior, **options).fit(theta, x, seed=0)
    assert method.model.dtype == torch.float64
    net = embedding(method)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    with torch.no_grad():
        s = method.model.statistics(x)
    assert torch.allclose(net(x.float()).double(), (s - s.mean(0)) / s.std(0), atol=1e-4)


def test_embedding_of_fp_abc_regression_statistics(prior, data):
    theta, x = data
    fp = el.methods.get("fp-abc", prior=prior, reference=data, training=dict(epochs=3))
    with pytest.raises(el.methods.NotFittedError):
        embedding(fp)
    fp.fit(theta, x, seed=0)
    net = embedding(fp)  # standardised on the training data that the fit keeps
    with torch.no_grad():
        assert torch.equal(net(x[:50]), embedding(fp, x=x)(x[:50]))
    with torch.no_grad():
        s = fp.model.predict(x)
    assert torch.allclose(net(x).double(), ((s - s.mean(0)) / s.std(0)).double(), atol=1e-4)
    with pytest.raises(TypeError, match="ExpFamEBM"):
        parameter_embedding(fp)


def _train_npe(prior, data, density_estimator, epochs=20):
    theta, x = data
    with torch.random.fork_rng():
        torch.manual_seed(0)
        inference = NPE(prior, density_estimator=density_estimator, show_progress_bars=False)
        estimator = inference.append_simulations(theta, x).train(max_num_epochs=epochs)
        return inference.build_posterior(estimator)


@pytest.mark.parametrize("trainable", [False, True], ids=["frozen", "fine-tuned"])
def test_npe_trains_and_samples_with_the_embedding(prior, data, method, trainable, monkeypatch):
    net = embedding(method, trainable=trainable)
    before = [p.detach().clone() for p in net.parameters()]
    # MAF both times: a 20-epoch NSF posterior is 1.4 times too wide in theta_2
    build = posterior_nn("maf", embedding_net=net, z_score_x="none")
    posterior = _train_npe(prior, data, build)
    x_o = torch.tensor([1.0, -0.5])

    def sample(n, seed):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return posterior.sample((n,), x=x_o, show_progress_bars=False)

    samples = sample(1000, 1)
    assert samples.shape == (1000, 2) and bool(torch.isfinite(samples).all())
    changed = [not torch.equal(p, q) for p, q in zip(net.parameters(), before)]
    assert any(changed) if trainable else not any(changed)
    # location and width of the exact posterior (tests/posterior_checks.py: within 0.25
    # posterior sd and 15 %, plus four standard errors of 1000 draws)
    exact = (exact_mean(x_o), torch.full((2,), POST_SD))

    def check(draws):
        assert_matches(draws, exact)

    check(samples)
    # negative controls: the same flow with the embedding's output zeroed (a posterior that
    # ignores x), and exact draws made 1.3 times too wide, shifted by half a sd, or the prior
    (copied,) = [m for m in posterior.posterior_estimator.modules() if isinstance(m, type(net))]
    with monkeypatch.context() as patch:  # sbi samples with its own copy of the embedding
        patch.setattr(copied, "forward", lambda x: torch.zeros(len(x), copied.num_features))
        zeroed = sample(1000, 1)
    with pytest.raises(AssertionError):
        check(zeroed)
    g = torch.Generator().manual_seed(2)
    draws = exact[0] + POST_SD * torch.randn(1000, 2, generator=g)
    assert_catches(check, draws, torch.randn(1000, 2, generator=g))


def test_estimator_builders_turn_sbi_zscoring_off(prior, data, method):
    with pytest.raises(ValueError, match="z-score"):
        posterior_estimator(method, "maf", z_score_x="independent")
    posterior = _train_npe(prior, data, posterior_estimator(method, "maf"), epochs=5)
    assert posterior.sample((10,), x=data[1][0], show_progress_bars=False).shape == (10, 2)
    theta, x = data
    with torch.random.fork_rng():
        torch.manual_seed(0)
        inference = NLE(
            prior, density_estimator=likelihood_estimator(method), show_progress_bars=False
        )
        estimator = inference.append_simulations(theta, x).train(max_num_epochs=5)
        log_prob = estimator.log_prob(x[:4][None], condition=theta[:4])
    assert log_prob.shape == (1, 4) and bool(torch.isfinite(log_prob).all())


# --------------------------------------------------------------- posterior adapter


def test_adapter_shapes_seeds_and_default_x(method):
    x_o = torch.tensor([1.0, -0.5])
    posterior = SBIPosterior(method, seed=0)
    with pytest.raises(ValueError, match="set_default_x"):
        posterior.sample((3,))
    assert posterior.set_default_x(x_o[None]) is posterior
    assert posterior.default_x.shape == (1, 2)
    assert posterior.sample().shape == (2,)
    assert posterior.sample((4, 5)).shape == (4, 5, 2)
    draws = posterior.sample((500,), x=x_o)
    assert draws.dtype == torch.float32 and draws.shape == (500, 2)
    post = method.posterior(x_o, 500, seed=0)  # the method's own (weighted) posterior
    w = post.weights.double() if post.weights is not None else torch.full((500,), 1 / 500.0)
    mean = (w[:, None] * post.samples.double()).sum(0)
    sd = (w[:, None] * (post.samples.double() - mean).square()).sum(0).sqrt()
    # the same distribution: means within 4 standard errors (resampled draws + weighted sample)
    se = sd * math.sqrt(1 / 500 + w.square().sum())
    assert bool(((draws.double().mean(0) - mean).abs() < 4 * se).all())
    first, second = SBIPosterior(method, x_o, seed=5), SBIPosterior(method, x_o, seed=5)
    assert torch.equal(first.sample((20,)), second.sample((20,)))
    unseeded = SBIPosterior(method, x_o)
    with torch.random.fork_rng():
        torch.manual_seed(11)
        a = unseeded.sample((20,))
        torch.manual_seed(11)
        assert torch.equal(a, unseeded.sample((20,)))  # torch's global RNG decides
    xs = torch.tensor([[1.0, -0.5], [-3.0, 2.0]])
    batch = posterior.sample_batched((30,), x=xs)
    assert batch.shape == (30, 2, 2)
    for i in range(2):  # column i: draws given xs[i], as sample(x=xs[i]) draws them
        one = SBIPosterior(method, seed=0).sample((300,), x=xs[i])
        assert bool(((batch[:, i].mean(0) - one.mean(0)).abs() < 4 * one.std(0) * 0.2).all())
    with pytest.raises(ValueError, match="one observation"):
        posterior.sample((2,), x=torch.zeros(3, 2))


def test_adapter_resamples_weighted_abc_draws(prior, data):
    theta, x = data
    options = dict(structure="mlp", num_statistics=2, training=dict(epochs=10))
    weighted = el.methods.get("ssm-abc", prior=prior, reference=data, abc=dict(resample=False))
    for key, value in options.items():
        setattr(weighted, key, value if key != "training" else el.TrainConfig(**value))
    weighted.fit(theta, x, seed=0)
    x_o = torch.tensor([0.3, 0.9])
    post = weighted.posterior(x_o, 200, seed=0)
    assert post.weights is not None and post.samples.shape[0] != 4000
    with pytest.raises(ValueError, match="reference table"):  # 2000 simulations
        SBIPosterior(weighted, x_o, seed=0).sample((4000,))
    draws = SBIPosterior(weighted, x_o, seed=0, num_samples=200).sample((4000,))
    assert draws.shape == (4000, 2)
    w = post.weights.double()
    mean = (w[:, None] * post.samples.double()).sum(0)
    sd = (w[:, None] * (post.samples.double() - mean).square()).sum(0).sqrt()
    ess = 1 / w.square().sum()
    # resampling keeps the weighted mean: within 4 standard errors of the weighted sample
    assert bool(((draws.double().mean(0) - mean).abs() < 4 * sd / ess.sqrt()).all())


def test_log_prob_where_defined_and_clear_errors_elsewhere(prior, data, method):
    x_o = torch.tensor([1.0, -0.5])
    with pytest.raises(NotImplementedError, match="ABC posterior"):
        SBIPosterior(method, x_o).log_prob(torch.zeros(3, 2))
    exchange = el.methods.EnergyExchange.from_fitted(method)
    with pytest.raises(NotImplementedError, match="normaliser"):
        SBIPosterior(exchange, x_o).log_prob(torch.zeros(3, 2))
    theta, x = data
    options = dict(structure="mlp", num_statistics=2, training=dict(epochs=5))
    nce = el.methods.get("nce", prior=prior, **options).fit(theta, x, seed=0)
    posterior = SBIPosterior(nce, x_o)
    points = torch.tensor([[0.8, -0.4], [0.0, 0.0], [3.0, 3.0]])
    with pytest.warns(UserWarning, match="unnormalized"):
        values = posterior.log_prob(points)
    assert values.shape == (3,)
    expected = nce.log_potential(x_o)(points.to(nce.model.dtype))
    assert torch.allclose(values, expected.detach())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.allclose(posterior.potential(points), values)


def test_pairplot_draws_our_posterior(method):
    matplotlib = pytest.importorskip("matplotlib")
    pytest.importorskip("six", reason="sbi.analysis imports six, which sbi does not declare")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sbi.analysis import pairplot

    x_o = torch.tensor([1.0, -0.5])
    samples = SBIPosterior(method, x_o, seed=0).sample((300,))
    fig, axes = pairplot(samples, points=exact_mean(x_o), limits=[[-3, 3], [-3, 3]])
    try:
        assert isinstance(fig, matplotlib.figure.Figure)
        assert np.asarray(axes).shape == (2, 2)
    finally:
        plt.close(fig)


def test_run_sbc_calibrated_and_flags_a_shifted_posterior(prior, method):
    from sbi.diagnostics import check_sbc, run_sbc

    class Shifted:
        """The same posterior moved by one posterior standard deviation: miscalibrated."""

        name, model = "shifted", method.model

        def posterior(self, x_o, num_samples=1000, *, seed=None):
            post = method.posterior(x_o, num_samples, seed=seed)
            return el.Posterior(post.samples + POST_SD, weights=post.weights)

    num_sbc, num_post = 200, 100
    theta, x = el.simulate(gaussian_simulator, prior, num_sbc, seed=7)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ranks, dap = run_sbc(
            theta, x, SBIPosterior(method, seed=1), num_post, show_progress_bar=False
        )
        bad, _ = run_sbc(
            theta, x, SBIPosterior(Shifted(), seed=1), num_post, show_progress_bar=False
        )
        checks = check_sbc(ranks, prior.sample((num_sbc,)), dap, num_posterior_samples=num_post)
    assert ranks.shape == bad.shape == (num_sbc, 2)
    assert bool(((ranks >= 0) & (ranks <= num_post)).all())
    # uniform ranks: mean rank / num_post is 1/2 with standard error 1/sqrt(12 num_sbc)
    se = 1 / math.sqrt(12 * num_sbc)
    assert bool(((ranks / num_post).mean(0) - 0.5).abs().max() < 4 * se)
    assert bool(((bad / num_post).mean(0) - 0.5).abs().min() > 8 * se)
    assert bool((checks["ks_pvals"] > 1e-3).all())
    from sbi.diagnostics.sbc import check_uniformity_frequentist

    assert bool((check_uniformity_frequentist(bad, num_post) < 1e-6).all())
    # calibrated, and as narrow as the exact posterior on average (prior draws are calibrated
    # too): the mean posterior sd over the prior sd (1) on 50 of the observations
    sds = torch.stack(
        [moments(p.samples, p.weights).sd for p in (method.posterior(x[i], num_post, seed=i)
                                                     for i in range(50))]
    )  # fmt: skip
    assert_contraction(sds, 1.0, POST_SD)
    # negative control: the same posteriors 1.3 times as wide, and prior draws, fail it
    g = torch.Generator().manual_seed(3)
    prior_sds = torch.stack([torch.randn(num_post, 2, generator=g).std(0) for _ in range(50)])
    for wrong in (1.3 * sds, prior_sds):
        with pytest.raises(AssertionError, match="contraction"):
            assert_contraction(wrong, 1.0, POST_SD)
