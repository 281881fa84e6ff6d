"""Maximum likelihood (``ml``, ``ml-abc``, ``ml-exchange``) against ground truth.

* A Gaussian family written as an exponential family with linear natural parameters
  eta(theta) = W theta + b and statistics (y, y^2): its log-normaliser is known, so the exact
  maximum-likelihood estimate and its standard errors (inverse observed information) are
  computed by Newton's method; the stochastic fit with MCMC negatives must
  land within a standard error of it, and within three of the truth. A sampler that ignores
  theta (negatives from the marginal) is the negative control.
* A linear-Gaussian model with a Gaussian prior has a closed-form posterior; the ``ml``
  posterior must be hard to tell from it (C2ST).
* Where the Gaussian family is misspecified (noise whose scale grows with theta), the
  normaliser fitted after training from the model's own chains must equal the family's
  closed-form -log Z(theta) up to a constant; the NCE head, the normaliser before that fit,
  is the negative control (it fits a correction of the true ratio, not the model's -log Z).
* Chains of a non-normalisable model diverge, and the fit and the posterior say so.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal

import ebm_lfi as el
from ebm_lfi.energy.mlp import MLP
from ebm_lfi.energy.model import ExpFamEBM
from ebm_lfi.losses.maximum_likelihood import MaximumLikelihood
from ebm_lfi.losses.score_matching import SlicedScoreMatching
from ebm_lfi.methods.checks import PosteriorWarning
from ebm_lfi.methods.fit import EnergyFit
from ebm_lfi.methods.registry import available
from ebm_lfi.samplers.mcmc.model_chains import ModelChains
from ebm_lfi.training.loop import train

DT = torch.float64


# ------------------------------------------------------------------ an exact Gaussian family
class _Quadratic(nn.Module):
    """s(y) = (y, y^2) and b(y) = 0, as (n, k + 1)."""

    def forward(self, y):
        return torch.cat([y, y**2, torch.zeros_like(y)], 1)


class _Linear(nn.Module):
    """eta(theta) = W theta + b (linear, the parameters of the test) and a head c(theta)."""

    def __init__(self):
        super().__init__()
        self.eta = nn.Linear(1, 2)
        self.c = MLP(1, 1, (16,), "silu")
        with torch.no_grad():  # a proper start: N(0, 1)
            self.eta.weight.zero_()
            self.eta.bias.copy_(torch.tensor([0.0, -0.5]))

    def forward(self, theta):
        return torch.cat([self.eta(theta), self.c(theta)], 1)


def _log_normalizer(eta):
    """log of the integral of exp(e1 y + e2 y^2) dy, e2 < 0."""
    e1, e2 = eta[:, 0], eta[:, 1]
    return -(e1**2) / (4 * e2) + 0.5 * torch.log(math.pi / -e2)


def _weights(model):
    """(W_1, b_1, W_2, b_2) of the fitted linear natural parameters."""
    lin = model.natural_net.eta
    return torch.stack([lin.weight[0, 0], lin.bias[0], lin.weight[1, 0], lin.bias[1]]).detach()


def _exact_mle(y, t):
    """The maximum-likelihood (W_1, b_1, W_2, b_2) by Newton's method, and standard errors."""

    def nll(w):
        eta = torch.stack([w[0] * t + w[1], w[2] * t + w[3]], 1)
        return -(eta[:, 0] * y + eta[:, 1] * y**2 - _log_normalizer(eta)).sum()

    w = torch.tensor([0.0, 0.0, 0.0, -0.5], dtype=DT)
    for _ in range(100):
        g = torch.autograd.functional.jacobian(nll, w)
        h = torch.autograd.functional.hessian(nll, w)
        step = torch.linalg.solve(h, g)
        while w[3] - step[3] >= 0 or (w[2] - step[2]) * t.abs().max() >= -(w[3] - step[3]):
            step = step / 2  # keep e2 < 0 on the data
        w = w - step
        if step.abs().max() < 1e-12:
            break
    h = torch.autograd.functional.hessian(nll, w)
    return w, torch.linalg.inv(h).diagonal().sqrt()


# 60 epochs of ML on 2,000 pairs of a one-dimensional family
ML_TRAINING = {
    "epochs": 60,
    "batch_size": 200,
    "lr": 0.05,
    "gamma": 0.95,
    "patience": None,
    "validation_fraction": 0.0,
}


def _quadratic_family(theta, x, seed):
    """The family eta(theta)^T (y, y^2) with linear eta and an NCE head, prepared on the pairs
    (its transformed data returned too)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = ExpFamEBM(
            _Quadratic(),
            _Linear(),
            x_shape=(1,),
            theta_dim=1,
            num_statistics=2,
            tails="none",
            normalizer=True,
            marginal_net=MLP(2, 1, (16,), "silu"),
        ).to(DT)
    model.prepare(theta, x)
    return model, model.transform_x(x)


def _gaussian_family_fit(negatives, seed=0):
    """Fit the linear-Gaussian family by ML; return fitted, exact MLE, its SE, the truth."""
    gen = torch.Generator().manual_seed(seed)
    n = 2000
    theta = 4 * torch.rand(n, 1, generator=gen, dtype=DT) - 2
    x = theta + torch.randn(n, 1, generator=gen, dtype=DT)  # x | theta ~ N(theta, 1)
    model, y = _quadratic_family(theta, x, seed)
    t = model.theta_transform(theta)[:, 0]
    mle, se = _exact_mle(y[:, 0], t)
    # the truth in the standardised coordinates: y = (x - m_x) / s_x, theta = m_t + s_t t
    m_x, s_x = model.x_transform.standardize.mean.item(), model.x_transform.standardize.std.item()
    m_t, s_t = model.theta_transform.mean.item(), model.theta_transform.std.item()
    truth = torch.tensor([s_t * s_x, (m_t - m_x) * s_x, 0.0, -(s_x**2) / 2], dtype=DT)
    loss = MaximumLikelihood(negatives)
    train(model, loss, y, theta, torch.arange(n), config=ML_TRAINING, seed=seed)
    return model, loss, mle, se, truth


def test_ml_recovers_the_exact_mle_of_a_gaussian_family():
    model, loss, mle, se, truth = _gaussian_family_fit(ModelChains(steps=5))
    fitted = _weights(model)
    assert ((fitted - mle).abs() <= se).all(), ((fitted - mle) / se).tolist()
    assert ((fitted - truth).abs() <= 3 * se).all(), ((fitted - truth) / se).tolist()
    assert loss.diagnostics["divergent"] == 0 and not loss.diagnostics["diverged"]
    # the normaliser head: c(theta) = -log Z(theta) + const, so c against -log Z has slope 1
    grid = torch.linspace(-1.5, 1.5, 41, dtype=DT)[:, None]
    with torch.no_grad():
        eta, c = model.natural_and_normalizer(grid)
        target = -_log_normalizer(eta)
    slope = torch.cov(torch.stack([c, target]))[0, 1] / target.var()
    assert abs(float(slope) - 1) < 0.15, float(slope)
    assert float((c - target).std()) < 0.1 * float(target.std())


def test_ml_check_fails_with_negatives_that_ignore_theta():
    # negative control: negatives from the data marginal (shuffled rows), not from the model
    def marginal(log_prob, y, theta, index):
        return y[torch.randperm(y.shape[0])]

    model, _, mle, se, _ = _gaussian_family_fit(marginal)
    assert not ((_weights(model) - mle).abs() <= se).all()


def test_normalizer_fitted_after_training_is_the_models_own():
    # x | theta ~ N(theta, (exp(theta) / 2)^2): the family's linear eta cannot follow the
    # scale, so the NCE head's optimum is not the model's -log Z
    gen = torch.Generator().manual_seed(0)
    n = 2000
    theta = 4 * torch.rand(n, 1, generator=gen, dtype=DT) - 2
    x = theta + 0.5 * torch.exp(theta) * torch.randn(n, 1, generator=gen, dtype=DT)
    model, y = _quadratic_family(theta, x, 0)
    loss = MaximumLikelihood(ModelChains(steps=5))
    train(model, loss, y, theta, torch.arange(n), config=ML_TRAINING, seed=0)
    grid = torch.linspace(-1.8, 1.8, 41, dtype=DT)[:, None]

    def spread_of_c_plus_log_z():
        with torch.no_grad():
            eta, c = model.natural_and_normalizer(grid)
            gap = c + _log_normalizer(eta)
        return float(gap.max() - gap.min())

    # 0.05 nats: a density ratio off by 5% at most across the grid, while log Z itself spans
    # about 1.5 nats here
    head = spread_of_c_plus_log_z()
    assert model.normalizer_net is None
    with torch.random.fork_rng():
        torch.manual_seed(1)
        net = loss.fit_normalizer(model, y, theta, seed=0)
    assert model.normalizer_net is net and not any(p.requires_grad for p in net.parameters())
    assert all(p.requires_grad for p in model.natural_net.parameters())  # unfrozen again
    fitted = spread_of_c_plus_log_z()
    assert fitted < 0.05, fitted
    assert head > 0.05, head  # negative control: the NCE head is not the model's -log Z


def test_a_refit_trains_with_the_head_and_fits_a_new_normalizer():
    prior, simulator, _, _ = _linear_gaussian()
    theta, x = el.simulate(simulator, prior, 300, seed=1)
    # the loss "ml" builds, with a short regression: the test is of when c(theta) is fitted
    loss = MaximumLikelihood(
        ModelChains(), warm_start=SlicedScoreMatching(), normalizer_iterations=200
    )
    fit = EnergyFit(prior, loss=loss, structure="mlp", num_statistics=2, training={"epochs": 1})
    first = fit.fit(theta, x, seed=0).model.normalizer_net
    seen = []
    train_step = fit.loss.forward

    def spy(model, *args, **kwargs):  # what c(theta) is while training
        seen.append(model.normalizer_net)
        return train_step(model, *args, **kwargs)

    fit.loss.forward = spy
    second = fit.fit(theta, x, seed=1).model.normalizer_net
    assert first is not None and second is not None and second is not first
    assert seen and all(net is None for net in seen)


def test_fit_normalizer_can_be_turned_off_and_is_checked():
    model = ExpFamEBM.default((1,), theta_dim=1, hidden=(8,), normalizer=True)
    theta, x = torch.rand(50, 1), torch.randn(50, 1)
    model.prepare(theta, x)
    off = MaximumLikelihood(ModelChains(), normalizer_fit=False)
    assert off.fit_normalizer(model, model.transform_x(x), theta) is None
    assert model.normalizer_net is None
    with pytest.raises(ValueError, match="normalizer_draws"):
        MaximumLikelihood(ModelChains(), normalizer_draws=0)
    with pytest.raises(ValueError, match="ratio model"):
        MaximumLikelihood(ModelChains()).fit_normalizer(
            ExpFamEBM.default((1,), theta_dim=1, hidden=(8,)).prepare(theta, x), x, theta
        )


# ------------------------------------------------------------------ the conjugate posterior
def _linear_gaussian():
    p, d, sigma = 2, 3, 0.5
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(d, p, generator=gen, dtype=DT)
    prior = Independent(Normal(torch.zeros(p, dtype=DT), torch.ones(p, dtype=DT)), 1)

    def simulate(theta, rng):
        noise = np.stack([r.standard_normal(d) for r in rng])
        return np.asarray(theta) @ a.numpy().T + sigma * noise

    x_o = a @ torch.tensor([0.5, -0.3], dtype=DT) + sigma * torch.randn(d, generator=gen, dtype=DT)
    cov = torch.linalg.inv(torch.eye(p, dtype=DT) + a.T @ a / sigma**2)
    exact = MultivariateNormal(cov @ a.T @ x_o / sigma**2, cov)
    return prior, el.Simulator(simulate, batched=True), x_o, exact


@pytest.mark.slow
def test_ml_posterior_matches_the_conjugate_closed_form():
    prior, simulator, x_o, exact = _linear_gaussian()
    theta, x = el.simulate(simulator, prior, 3_000, seed=1)
    method = el.methods.get(
        "ml", prior=prior, structure="mlp", num_statistics=2, training={"epochs": 60}
    )
    method.fit(theta, x, seed=0)
    post = method.posterior(x_o, 1_000, seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        reference = exact.sample((1_000,))
        prior_draws = prior.sample((1_000,))
    assert post.diagnostics["chains"]["diverged"] is False
    assert el.metrics.c2st(post.samples, reference, seed=0) <= 0.6
    # the test has power: the prior is easy to tell from the posterior
    assert el.metrics.c2st(prior_draws, reference, seed=0) > 0.9


# ------------------------------------------------------------------ divergence
def test_chains_of_a_non_normalisable_model_are_reported_divergent():
    theta = torch.zeros(200, 1, dtype=DT)
    y = torch.randn(200, 2, dtype=DT, generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        proper = ModelChains(steps=20)
        for _ in range(5):
            proper(lambda y, t: -0.5 * (y**2).sum(-1), y, theta, torch.arange(200))
        improper = ModelChains(steps=20)
        for _ in range(5):
            improper(lambda y, t: 0.5 * (y**2).sum(-1), y, theta, torch.arange(200))
    assert proper.diagnostics["divergent"] == 0 and not proper.diagnostics["diverged"]
    assert improper.diagnostics["divergent"] > 0 and improper.diagnostics["diverged"]


def test_divergence_is_reported_by_the_fit_and_the_posterior():
    prior, simulator, x_o, _ = _linear_gaussian()
    theta, x = el.simulate(simulator, prior, 400, seed=1)
    method = el.methods.get(  # a bound inside the data's range: most visits count as divergent
        "ml",
        prior=prior,
        structure="mlp",
        num_statistics=2,
        training={"epochs": 2},
        chains={"divergence_bound": 0.5},
        mcmc={"burn_in": 20},
    )
    method.fit(theta, x, seed=0)
    assert method.diagnostics["chains"]["diverged"] is True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = method.posterior(x_o, 100, seed=0)
    assert post.diagnostics["chains"]["divergent"] > 0
    assert any("diverged" in str(w.message) for w in caught if w.category is PosteriorWarning)


def test_ml_methods_are_registered_and_checked():
    assert {"ml", "ml-abc", "ml-exchange"} <= set(available())
    with pytest.raises(ValueError, match="steps"):
        ModelChains(steps=0)
    with pytest.raises(TypeError, match="negatives"):
        MaximumLikelihood(None)
    model = ExpFamEBM.default((3,), theta_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match="ratio model"):
        MaximumLikelihood(ModelChains())(model, torch.randn(4, 3), torch.rand(4, 2))


@pytest.mark.parametrize("name", ["ml", "ml-abc", "ml-exchange"])
def test_ml_methods_fit_and_sample_through_one_interface(name):
    task = el.benchmarks.get("gaussian")
    theta, x = el.simulate(task.simulator, task.prior, 600, seed=0)
    stage = {  # short chains: the checks are of the interface, not of convergence
        "ml": {"mcmc": {"burn_in": 20}},
        "ml-exchange": {"exchange": {"burn_in": 20, "inner_steps": 5}},
    }.get(name, {})
    method = el.methods.get(
        name,
        prior=task.prior,
        simulator=task.simulator,
        structure="iid",
        num_statistics=2,
        training={"epochs": 2, "batch_size": 128},
        chains={"steps": 2},
        **stage,
    ).fit(theta, x, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PosteriorWarning)
        post = method.posterior(task.observation(0), num_samples=100, seed=1)
    assert post.method == name and post.samples.shape[1] == 2
    assert bool(torch.isfinite(post.samples).all())
    assert post.diagnostics["loss"] == "MaximumLikelihood"
    assert post.diagnostics["chains"]["visits"] > 0
    assert method.fit_stage.warm_start_history is not None  # sliced SM first, then ML
