"""Sequential rounds (:mod:`ebm_lfi.methods.rounds`) on a narrow posterior near the edge of
the prior's support: x = theta + 0.1 eps in two dimensions, theta uniform on [-5, 5]^2, so the
exact posterior is N(x_o, 0.01 I) truncated to the box, and draws of it are exact."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ebm_lfi as el
from ebm_lfi.methods.checks import PosteriorWarning
from ebm_lfi.methods.rounds import (
    DefensiveProposal,
    default_rounds,
    importance_weights,
    proposal_sample,
    round_budgets,
    run_rounds,
)
from ebm_lfi.priors import prior_log_prob, prior_sample

DT = torch.float64
SIGMA = 0.1
PRIOR = el.BoxUniform(torch.full((2,), -5.0, dtype=DT), torch.full((2,), 5.0, dtype=DT))
X_O = torch.tensor([4.93, -1.0], dtype=DT)  # the posterior touches the upper bound of theta_1
OPTIONS = {"structure": "mlp", "num_statistics": 2, "training": {"epochs": 40}}


def _simulate(theta, rng):
    return np.asarray(theta) + SIGMA * np.stack([r.standard_normal(2) for r in rng])


SIMULATOR = el.Simulator(_simulate, batched=True)


def _exact(n=1_000):
    draws = X_O + SIGMA * torch.randn(20 * n, 2, generator=torch.Generator().manual_seed(0))
    return draws[(draws.abs() < 5).all(1)][:n]


@pytest.mark.slow
def test_rounds_beat_one_round_at_the_same_budget_and_keep_the_support():
    reference = _exact()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PosteriorWarning)
        one = el.infer(SIMULATOR, PRIOR, X_O, "nce", num_simulations=2_000, seed=0, **OPTIONS)
        method = el.methods.get("nce", prior=PRIOR, **OPTIONS)
        four = run_rounds(method, SIMULATOR, PRIOR, X_O, num_simulations=2_000, rounds=4, seed=0)
    c2st_one = el.metrics.c2st(one.samples, reference, seed=0)
    c2st_four = el.metrics.c2st(four.samples, reference, seed=0)
    # C2ST of 1000 against 1000 draws has a standard error of about 0.016
    assert c2st_four < c2st_one - 0.05, (c2st_one, c2st_four)
    error = lambda post: float((post.mean() - reference.mean(0)).norm())  # noqa: E731
    assert error(four) < error(one)
    # the budget: four rounds of 500, all counted
    rounds = four.diagnostics["rounds"]
    assert [r["simulations"] for r in rounds] == [500] * 4
    assert four.diagnostics["total_simulations"] == 2_000 == one.diagnostics["total_simulations"]
    widths = [max(r["width"]) for r in rounds]
    assert widths[-1] < widths[0]  # the rounds narrow the posterior
    # every training parameter lies inside the prior's support, although the proposal's
    # kernel reaches past the bound at theta_1 = 5
    theta = method.fit_stage.training_data[0]
    assert theta.shape[0] == 2_000
    assert bool(torch.isfinite(prior_log_prob(PRIOR, theta)).all())


def test_proposal_keeps_the_support_and_mixes_in_the_prior():
    g = torch.Generator().manual_seed(0)
    samples = X_O + SIGMA * torch.randn(500, 2, generator=g, dtype=DT)  # half past the bound
    post = el.Posterior(samples, parameter_names=["a", "b"])
    theta = proposal_sample(PRIOR, post, 4_000, g, defensive=0.2)
    assert bool(torch.isfinite(prior_log_prob(PRIOR, theta)).all())
    far = ((theta - X_O).abs() > 1).any(1).double().mean()  # prior draws, about 0.2 * 0.96
    assert abs(float(far) - 0.2 * 0.96) < 4 * (0.2 * 0.8 / 4_000) ** 0.5


def test_round_rules_and_checks():
    assert round_budgets(2_000, 4) == [500] * 4 and sum(round_budgets(1_003, 3)) == 1_003
    assert default_rounds("ml", 10_000) == 8 and default_rounds("nce", 400) == 1
    assert default_rounds("rejection-abc", 10_000) == 1
    with pytest.raises(ValueError, match="not valid in sequential rounds"):
        el.infer(SIMULATOR, PRIOR, X_O, "rejection-abc", num_simulations=200, rounds=2)
    with pytest.raises(ValueError, match="rounds must be"):
        el.infer(SIMULATOR, PRIOR, X_O, "nce", num_simulations=200, rounds=0)


def test_importance_weights_of_pooled_rounds_recover_prior_expectations():
    # pairs pooled over a prior round and two proposal rounds; weighted by prior / mixture,
    # they must give the prior's mean and variance back (self-normalised importance sampling)
    g = torch.Generator().manual_seed(1)
    near = el.Posterior(
        X_O + 0.3 * torch.randn(400, 2, generator=g, dtype=DT), parameter_names=["a", "b"]
    )
    nearer = el.Posterior(
        X_O + 0.1 * torch.randn(400, 2, generator=g, dtype=DT), parameter_names=["a", "b"]
    )
    proposals = [
        None,
        DefensiveProposal(PRIOR, near, 0.1, g),
        DefensiveProposal(PRIOR, nearer, 0.1, g),
    ]
    budgets = [3_000, 3_000, 3_000]
    theta = torch.cat([prior_sample(PRIOR, 3_000, g)] + [q.sample(3_000, g) for q in proposals[1:]])
    w = importance_weights(PRIOR, theta, proposals, budgets).double()
    w = w / w.sum()
    mean = (w[:, None] * theta).sum(0)
    second = (w[:, None] * theta**2).sum(0)
    ess = 1 / (w**2).sum()
    se_mean = (100 / 12 / ess) ** 0.5  # prior sd of U(-5, 5) over the root of the ESS
    assert (mean.abs() <= 4 * se_mean).all(), (mean, se_mean)
    assert ((second - 100 / 12).abs() <= 4 * 6.7 / ess**0.5).all()  # sd of theta^2: 6.7
    # negative control: without the weights the pooled draws are far from the prior
    assert (theta.mean(0)[0] - 0.0).abs() > 10 * se_mean


def test_abc_rounds_weight_their_table():
    method = el.methods.get(
        "ssm-abc", prior=PRIOR, structure="mlp", num_statistics=2, training={"epochs": 2}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PosteriorWarning)
        post = run_rounds(method, SIMULATOR, PRIOR, X_O, num_simulations=600, rounds=2, seed=0)
    stage = method.posterior_stage
    assert stage.table_weights is not None and stage.table_weights.shape == (600,)
    assert float(stage.table_weights.std()) > 0  # the proposal round is down-weighted
    assert len(post.diagnostics["rounds"]) == 2
    assert post.diagnostics["total_simulations"] == 600
