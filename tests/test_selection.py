"""Model choice by held-out score-matching loss."""

import math

import pytest
import torch

import ebm_lfi as el
from ebm_lfi.energy.model import ExpFamEBM
from ebm_lfi.losses import ScoreMatching, SlicedScoreMatching
from ebm_lfi.training.selection import (
    SelectionConfig,
    candidates,
    heldout_score_matching,
    select_model,
)

DT = torch.float64
FAST = SelectionConfig(epochs=6, train_size=1500, validation_size=1000)


def test_heldout_loss_is_unbiased_for_exact_sm_and_reproducible():
    torch.manual_seed(0)
    model = ExpFamEBM.default((6,), 2, hidden=(8,), activation="tanh").to(DT)
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(400, 6, generator=gen, dtype=DT)
    theta = torch.randn(400, 2, generator=gen, dtype=DT)
    rows = heldout_score_matching(model, y, theta, num_projections=4, seed=3)
    assert rows.shape == (400,)
    # common random numbers: same seed, same projections, same values
    torch.testing.assert_close(
        heldout_score_matching(model, y, theta, num_projections=4, seed=3), rows
    )
    assert not torch.equal(heldout_score_matching(model, y, theta, num_projections=4, seed=4), rows)
    # unbiased for the exact Hyvärinen loss: the mean difference is within 4 standard errors
    exact = torch.stack(
        [ScoreMatching()(model, y[i : i + 1], theta[i : i + 1]) for i in range(400)]
    )
    diff = (rows - exact.detach()).double()
    assert diff.abs().max() > 1e-6  # the estimate is noisy per row (the check has power)
    assert diff.mean().abs() < 4 * diff.std() / math.sqrt(400)


def test_candidates():
    s, orders, ks = candidates((100,), 2)
    # k from 2p: with k = p a fit of five Gaussian coefficients stopped at a poor solution
    assert s == ["mlp", "iid", "markov"] and orders == [1, 2, 3, 4, 6] and ks == [4, 6]
    assert candidates((100,), 2, config=SelectionConfig(k_factors=(1, 2, 3)))[2] == [2, 4, 6]
    assert candidates((100,), 2, num_statistics=None)[2] == [2]  # k = p when asked for
    assert candidates((3, 4, 5), 2)[0] == ["mlp"]
    assert candidates((2,), 1)[1] == [1]
    assert candidates((5,), 3, "markov", 4) == (["markov"], [1, 2, 3, 4], [4])
    with pytest.raises(ValueError, match="structure"):
        candidates((10,), 1, "transformer")


def fit_auto(task_name: str, n: int = 3000):
    task = el.benchmarks.get(task_name)
    theta, x = el.simulate(task.simulator, task.prior, n, seed=0)
    method = el.methods.get(
        "ssm-abc",
        prior=task.prior,
        x_support=task.x_support,
        selection=FAST,
        training={"epochs": 1, "batch_size": 256, "patience": None},
    )
    method.fit(theta, x, seed=0)
    return method


@pytest.mark.slow  # the shared fit takes about 35 s
@pytest.mark.xdist_group("ar2_default_fit")
def test_auto_picks_the_markov_network_on_ar2(ar2_default_fit):
    # the default search on 10,000 pairs (tests/conftest.py), shared with test_accuracy
    method = ar2_default_fit.method
    table = method.diagnostics["selection"]
    assert method.diagnostics["structure"] == "markov"
    assert method.diagnostics["order"] >= 2  # order 1 cannot represent the lag-2 products
    assert table["selected"].sum() == 1
    assert set(table["structure"]) == {"mlp", "iid", "markov"}
    chosen = table[table.selected].iloc[0]
    assert chosen["num_statistics"] == method.model.num_statistics
    # the posterior reports what was chosen
    post = method.posterior(el.benchmarks.get("ar2").observation(0), num_samples=50, seed=0)
    assert post.diagnostics["structure"] == "markov"


def test_auto_picks_the_exchangeable_network_on_an_iid_task():
    method = fit_auto("gamma")
    assert method.diagnostics["structure"] == "iid"
    table = method.diagnostics["selection"]
    iid = table[(table.structure == "iid") & (table.stage == "structure")]["loss"].item()
    mlp = table[table.structure == "mlp"]["loss"].item()
    assert iid < mlp


def test_fixed_choices_skip_the_search():
    task = el.benchmarks.get("ar2")
    theta, x = el.simulate(task.simulator, task.prior, 500, seed=0)
    method = el.methods.get(
        "ssm-abc",
        prior=task.prior,
        structure="markov",
        num_statistics=5,
        network={"order": 2},
        training={"epochs": 1, "patience": None},
    ).fit(theta, x, seed=0)
    assert method.selection_table is None
    assert method.diagnostics == {
        "structure": "markov",
        "order": 2,
        "num_statistics": 5,
        "dequantized": False,
        "x_support": None,
    }


@pytest.mark.parametrize("tolerance", [0.0, math.inf])
def test_select_model_parsimony_rule(tolerance):
    # x = theta + noise: an exact 1-statistic family; k in {1, 2, 3}
    gen = torch.Generator().manual_seed(0)
    theta = torch.rand(3000, 1, generator=gen, dtype=DT) * 2 - 1
    x = theta + torch.randn(3000, 8, generator=gen, dtype=DT)

    def build(cand, shared):
        assert shared is None  # the MLP alone keeps its per-coordinate standardisation
        return ExpFamEBM.default(
            (8,), 1, num_statistics=cand.num_statistics, structure=cand.structure, hidden=(16,)
        )

    config = SelectionConfig(
        epochs=6, train_size=1500, validation_size=1000, tolerance=tolerance, k_factors=(1, 2, 3)
    )
    model, table = select_model(
        theta, x, build, structure="mlp", loss=SlicedScoreMatching(), config=config, seed=0
    )
    assert list(table["num_statistics"]) == [3, 1, 2] and table["selected"].sum() == 1
    assert (table["se"] > 0).sum() == 2  # paired standard errors against the stage's best
    chosen = table[table.selected].iloc[0]
    assert model.num_statistics == chosen["num_statistics"]
    if tolerance == 0.0:  # the lowest held-out loss wins
        assert chosen["loss"] == table["loss"].min()
    else:  # any loss is within an infinite tolerance: the smallest k wins
        assert chosen["num_statistics"] == 1


def test_bad_choices_are_refused_at_construction():
    prior = el.BoxUniform([0.0], [1.0])
    with pytest.raises(ValueError, match="structure must be"):
        el.methods.get("ssm-abc", prior=prior, structure="markv")
    with pytest.raises(ValueError, match="num_statistics"):
        el.methods.get("ssm-abc", prior=prior, num_statistics=0)


def test_a_diverged_candidate_is_never_the_simplest_within_tolerance():
    from ebm_lfi.training.selection import Candidate, simplest_within

    simple, best = Candidate("iid", 2, None), Candidate("mlp", 2, None)
    scores = {
        simple: torch.tensor([float("inf"), 1.0, 2.0]),
        best: torch.tensor([0.0, 1.0, 2.0]),
    }
    assert simplest_within([simple, best], best, scores, tolerance=2.0) == best
    scores[simple] = torch.tensor([0.3, 0.9, 2.1])  # finite and within tolerance: kept
    assert simplest_within([simple, best], best, scores, tolerance=2.0) == simple
