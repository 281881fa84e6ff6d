r"""A wrong answer is loud and the budget is the user's: the warnings of a posterior that should
not be trusted (:mod:`ebm_lfi.methods.checks`), ``num_simulations`` as the total number of
simulator calls, and ``on_error="drop"`` in every stage that simulates.

The problems are small and fast: :math:`\theta \sim U(-1, 1)^2` and either
:math:`x = (\theta, \theta, \theta) + 0.1\,\varepsilon` (informative: the exact posterior sd is
:math:`0.1/\sqrt 3 \approx 0.06` per parameter, against the prior's :math:`1/\sqrt 3 \approx
0.58`, a contraction of 0.1) or :math:`x = \varepsilon` (the output ignores :math:`\theta`, the
exact posterior is the prior: contraction 1).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import ebm_lfi as el
from ebm_lfi.methods import EnergyFit
from ebm_lfi.methods.checks import (
    CONTRACTION_THRESHOLD,
    COVERAGE_THRESHOLD,
    PosteriorWarning,
    about_the_prior,
    coverage_edges,
    effective_draws,
    posterior_problems,
    prior_coverage,
)
from ebm_lfi.methods.fit import point_masses
from ebm_lfi.methods.method import Draws, Method
from ebm_lfi.priors import prior_sample

PRIOR = el.BoxUniform([-1.0, -1.0], [1.0, 1.0], parameter_names=["a", "b"])
X_O = torch.tensor([0.2, -0.4, 0.2, -0.4, 0.2, -0.4])
# A typical output of the simulator that ignores theta. (At an atypical one, the regression
# adjustment extrapolates its spurious slopes and pushes the draws towards an edge of the
# prior, which narrows them: contractions 0.69 to 0.96 at X_O, about 1 here.)
X_FLAT = 0.1 * torch.tensor([0.3, -0.5, 1.1, 0.2, -0.8, 0.4])
FAST = {"epochs": 3, "batch_size": 256}


class Counting:
    """A simulator of one theta that counts its calls; ``flat`` ignores theta, ``fail_above``
    raises for ``theta[0]`` above it."""

    def __init__(self, flat: bool = False, fail_above: float | None = None):
        self.flat, self.fail_above, self.calls = flat, fail_above, 0

    def __call__(self, theta, rng):
        self.calls += 1
        theta = np.asarray(theta, dtype=float)
        if self.fail_above is not None and theta[0] > self.fail_above:
            raise RuntimeError("outside the simulator's range")
        mean = np.zeros(6) if self.flat else np.tile(theta, 3)
        return mean + 0.1 * rng.standard_normal(6)


def posterior_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, PosteriorWarning)]


# ---------------------------------------------------------------- say when it fails


def test_a_posterior_of_separated_modes_is_not_taken_for_the_prior():
    r"""x = (θ₁θ₂, θ₁² + θ₂²) plus noise, θ ~ U(-2, 2)²: the exact posterior (a grid) is four
    small modes spread over the box, with posterior sd / prior sd 0.77 for both parameters:
    with the allowance for 20 effective draws (stuck chains) the sd alone says "about the
    prior". Its mass sits on under half of each prior range (coverage 0.45), which the coverage
    sees; prior draws, the negative control (coverage 0.9), keep the warning at the same
    effective size."""
    g = torch.Generator().manual_seed(0)
    prior = el.BoxUniform([-2.0, -2.0], [2.0, 2.0])
    # seeded: 100 prior draws have a coverage of 0.7 or less with probability 0.04
    prior_draws = prior_sample(prior, 4_000, torch.Generator().manual_seed(0)).double()
    edges = coverage_edges(prior_draws)
    grid = torch.linspace(-2, 2, 401, dtype=torch.float64)
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    # five draws at θ = (-1.2, 0.3) (seeded); modes near (∓1.2, ±0.3) and (±0.3, ∓1.2)
    x_o = torch.tensor([[-0.48, 1.57], [0.04, 1.67], [-1.07, 1.5], [-0.42, 1.83], [-0.25, 1.45]])
    log_lik = -((x_o[:, 0] - (a * b)[..., None]) ** 2 + (x_o[:, 1] - (a**2 + b**2)[..., None]) ** 2)
    log_lik = log_lik.sum(-1) / (2 * 0.3**2)
    cells = torch.multinomial(torch.softmax(log_lik.flatten(), 0), 2_000, True, generator=g)
    exact = torch.stack([a.flatten()[cells], b.flatten()[cells]], 1)
    exact = exact + 0.01 * (torch.rand(exact.shape, generator=g, dtype=torch.float64) - 0.5)
    draws = 20.0
    for samples, informative in ((exact, True), (prior_draws[:2_000], False)):
        contraction = (samples.std(0) / prior_draws.std(0)).tolist()
        coverage = prior_coverage(samples, None, edges)
        assert about_the_prior(contraction, draws) is True, contraction  # the sd alone
        assert about_the_prior(contraction, draws, coverage) is not informative, coverage
        figures = {"contraction": contraction, "prior_coverage": coverage, "ess": [draws]}
        said = any("about the prior" in p for p in posterior_problems(figures, ["a", "b"]))
        assert said is not informative
    assert max(prior_coverage(exact, None, edges)) < COVERAGE_THRESHOLD - 0.1
    assert min(prior_coverage(prior_draws[:100], None, edges)) > COVERAGE_THRESHOLD + 0.1


@pytest.mark.parametrize("m", [7, 20, 4_000, 10_000])
def test_coverage_edges_bin_values_by_their_prior_quantile(m):
    # the bin of a value is floor(20 u), u the share of prior draws strictly below it: the
    # edges give it, ties and values outside the draws included (counts: many ties)
    g = torch.Generator().manual_seed(m)
    draws = torch.cat(
        [torch.randn(m, 1, generator=g), torch.randint(0, 9, (m, 1), generator=g).float()], 1
    ).double()
    values = torch.cat([draws[:300], 3 * torch.randn(300, 2, generator=g).double() + 4])
    edges = coverage_edges(draws)
    assert edges.shape == (19, 2)
    for j in range(2):
        below = (draws[:, j][None, :] < values[:, j][:, None]).sum(1)
        expected = torch.div(20 * below, m, rounding_mode="floor").clamp(max=19)
        got = torch.searchsorted(edges[:, j].contiguous(), values[:, j].contiguous())
        assert torch.equal(got, expected)


@pytest.mark.parametrize("method", ["rejection-abc", "ssm-abc"])
def test_a_simulator_that_ignores_theta_gets_a_warning_that_the_posterior_is_the_prior(method):
    options = {} if method == "rejection-abc" else dict(structure="mlp", training={"epochs": 15})
    for flat in (True, False):  # the negative control: an informative simulator
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            post = el.infer(
                Counting(flat=flat),
                PRIOR,
                X_FLAT if flat else X_O,
                method=method,
                num_simulations=2_000,
                num_samples=300,
                seed=0,
                **options,
            )
        messages = posterior_warnings(caught)
        contraction = post.diagnostics["contraction"]
        if flat:
            # the exact posterior is the prior: every sd ratio is about 1, within the sampling
            # error of the effective draws (about 200 kernel-weighted entries for ABC: 5 %),
            # so above the 0.9 of the warning less that allowance
            draws = effective_draws(post.diagnostics)
            assert draws is not None and draws < 300
            assert about_the_prior(contraction, draws), (contraction, draws)
            assert all(c > CONTRACTION_THRESHOLD - 2.5 / math.sqrt(2 * draws) for c in contraction)
            assert len(messages) == 1 and "the posterior is about the prior" in messages[0]
            assert method in messages[0] and "(a, b)" in messages[0]
            assert post.diagnostics["warnings"] == [messages[0][len(method) + 2 :]]
            if method == "rejection-abc":  # the regression adjustment's R^2 is named
                assert "regression-adjustment R^2" in messages[0]
        else:
            # exact contraction 0.1; ABC's tolerance and a short fit widen it, but the
            # posterior stays far from the prior
            assert all(c < 0.7 for c in contraction), contraction
            assert messages == [] and post.diagnostics["warnings"] == []


class FixedDraws:
    """A posterior stage that returns given chains and diagnostics (to test the checks)."""

    def __init__(self, diagnostics: dict):
        self.diagnostics = diagnostics

    def prepare(self, fit, theta, x, *, seed=None):
        return self

    def sample(self, x_o, num_samples, *, seed=None):
        chains = torch.rand(4, 50, 2, generator=torch.Generator().manual_seed(0)) * 0.1
        return Draws(None, None, chains, dict(self.diagnostics))


@pytest.mark.parametrize(
    "diagnostics, expected",
    [
        ({"rhat": [1.01, 1.2]}, "R-hat [1.010, 1.200] for (a, b) is above 1.05"),
        (
            {"inner_mixed": False, "inner_sd_ratio": [0.3], "inner_z": [9.0], "inner_steps": 30},
            "inner chain has not mixed",
        ),
        (
            {
                "inner_mixed": True,
                "inner_fits": False,
                "inner_fit_sd_ratio": [1.6],
                "inner_fit_shift": [0.9],
            },
            "the model's draws differ from the simulator's",
        ),
        ({"rhat": [1.01, 1.04], "inner_mixed": True, "inner_fits": True}, None),  # control
        (
            {
                "sampler": "exchange",
                "point_masses": {"coordinates": 30, "value": 0.0, "share": 0.51},
            },
            "the data have point masses (the value 0 in 51 % of the training values",
        ),
        # ABC compares the statistics of an atom like any others: no warning
        ({"sampler": "abc", "point_masses": {"coordinates": 30, "value": 0.0, "share": 0.5}}, None),
    ],
)
def test_unconverged_chains_and_an_unmixed_inner_chain_are_warned_about(diagnostics, expected):
    fit = el.methods.FixedStatistics(PRIOR).fit(PRIOR.sample((50,)), torch.zeros(50, 6))
    method = Method(fit, FixedDraws(diagnostics), name="fixed").prepare()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = method.posterior(X_O, 200)
    messages = posterior_warnings(caught)
    # draws of width 0.1 / sqrt(12) in a prior of width 2 / sqrt(12): contraction 0.05
    assert post.diagnostics["contraction"] == pytest.approx([0.05, 0.05], abs=0.01)
    if expected is None:
        assert messages == []
    else:
        assert len(messages) == 1 and expected in messages[0] and messages[0].startswith("fixed:")
        if "inner" in expected:
            assert "inner_steps (now 30)" in messages[0]


def test_the_checks_read_only_what_a_posterior_reports():
    assert posterior_problems({}, ["a"]) == []
    # one informative parameter is enough: no warning
    assert posterior_problems({"contraction": [0.95, 0.5]}, ["a", "b"]) == []
    assert len(posterior_problems({"contraction": [0.95, 0.91]}, ["a", "b"])) == 1
    # 0.85 is within the sampling error of 60 effective draws (se 0.08) of an
    # uninformative posterior, but not of 5,000 (se 0.009): the warning follows the draws
    few = {"contraction": [0.85, 0.97], "kernel_ess": 60.0, "num_accepted": 100}
    many = {"contraction": [0.85, 0.97], "ess": [5000.0, 6000.0]}
    assert effective_draws(few) == 60.0 and effective_draws(many) == 5000.0
    assert len(posterior_problems(few, ["a", "b"])) == 1
    assert posterior_problems(many, ["a", "b"]) == []


def test_the_fit_finds_the_point_masses_of_continuous_data():
    """Rainfall-like data, 0 on about half of the days and continuous otherwise: the atom is
    found and reported; continuous data and counts (dequantised) have none."""

    def rain(theta, rng):
        wet = rng.random(6) < 0.5
        return np.where(wet, rng.gamma(2.0, np.exp(np.tile(np.asarray(theta), 3))), 0.0)

    theta, x = el.simulate(rain, PRIOR, 300, seed=0)
    fit = EnergyFit(PRIOR, structure="mlp", num_statistics=None, training=FAST)
    atoms = fit.fit(theta, x, seed=0).diagnostics["point_masses"]
    assert atoms["coordinates"] == 6 and atoms["value"] == 0.0
    assert abs(atoms["share"] - 0.5) <= 4 * math.sqrt(0.25 / 300)  # binomial standard error
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(x.shape, generator=g, dtype=x.dtype)
    assert point_masses(x + 0.01 * noise) is None
    assert point_masses(torch.poisson(torch.full((300, 6), 0.5), generator=g)) is None  # integers
    continuous = EnergyFit(PRIOR, structure="mlp", num_statistics=None, training=FAST)
    assert "point_masses" not in continuous.fit(theta, x + 1.0 + noise, seed=0).diagnostics


def test_the_chosen_data_transform_is_in_the_diagnostics():
    r"""x in (0, 1)^6 declared bounded: the support map is a logit on all six coordinates;
    the Cauchy-like tails of logit-uniform data are below the tail rule's threshold."""

    def bounded(theta, rng):
        return 1 / (1 + np.exp(-(np.tile(np.asarray(theta), 3) + rng.logistic(size=6))))

    post = el.infer(
        bounded,
        PRIOR,
        torch.full((6,), 0.5),
        method="ssm-abc",
        num_simulations=500,
        num_samples=100,
        seed=0,
        structure="mlp",
        num_statistics=None,
        x_support=(0.0, 1.0),
        training=FAST,
    )
    transform = post.diagnostics["data_transform"]
    assert transform["support_map"] == {"logit": 6, "log": 0, "identity": 0}
    assert transform["tail_map"]["coordinates"] == 6
    assert transform["standardisation"] == {"pooled_over_axes": [], "coordinates": 6}


# ---------------------------------------------------------------- the budget


@pytest.mark.parametrize(
    "method, options, stage",
    [
        ("rejection-abc", {}, 0),  # the training pairs are the reference table
        ("rejection-abc", {"abc": {"num_reference": 700}}, 700),  # an explicit table
        ("rejection-abc", {"abc": {"sampler": "smc", "num_particles": 300}}, None),
        (
            "ssm-exchange",
            dict(
                structure="mlp",
                num_statistics=None,
                training=FAST,
                exchange={"burn_in": 20, "num_chains": 10, "check_inner": 60},
            ),
            60,  # the inner-chain check
        ),
    ],
)
def test_num_simulations_is_the_total_number_of_simulator_calls(method, options, stage):
    simulator = Counting()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PosteriorWarning)  # tiny fits, short chains
        post = el.infer(
            simulator, PRIOR, X_O, method=method, num_simulations=2_000, num_samples=200,
            seed=1, **options,
        )  # fmt: skip
    d = post.diagnostics
    assert d["total_simulations"] == simulator.calls
    if stage is None:  # SMC-ABC: half the budget to train, at most the other half per round
        assert d["training_simulations"] == 1_000 and simulator.calls <= 2_000
        assert simulator.calls > 1_000 + 300  # round 0 and more
    else:
        assert simulator.calls == 2_000 and d["training_simulations"] == 2_000 - stage
    assert d["simulations"] == simulator.calls and d["failed_simulations"] == 0


def test_a_budget_that_cannot_cover_the_table_is_refused_before_simulating():
    simulator = Counting()
    with pytest.raises(ValueError, match="num_reference=5000 leaves -3000 of num_simulations"):
        el.infer(
            simulator, PRIOR, X_O, method="rejection-abc", num_simulations=2_000,
            abc={"num_reference": 5_000},
        )  # fmt: skip
    with pytest.raises(ValueError, match="needs num_simulations of at least 2000"):
        el.infer(
            simulator, PRIOR, X_O, method="rejection-abc", num_simulations=1_000,
            abc={"sampler": "smc"},
        )  # fmt: skip
    assert simulator.calls == 0


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize(
    "abc",
    [{"num_reference": 1_000}, {"sampler": "smc", "num_particles": 200, "max_simulations": 1_500}],
    ids=["reference-table", "smc-abc"],
)
def test_on_error_drop_survives_failures_in_the_reference_table_and_in_smc_abc(abc):
    r"""The simulator fails for theta_0 > 0.6 (20 % of the prior): with the default policy the
    ABC stage raises; with ``on_error="drop"`` (infer's simulation option, or the method's)
    the run completes, counts the failures and stays within budget plus failures."""
    options = dict(method="rejection-abc", num_samples=200, seed=2, abc=abc)
    training = 3_000 - abc.get("num_reference", abc.get("max_simulations", 0))
    with pytest.raises(el.SimulationError, match="outside the simulator's range"):
        # the training set drops its failures; the table or SMC-ABC does not
        el.infer(
            el.Simulator(Counting(fail_above=0.6), batched=False), PRIOR, X_O,
            num_simulations=3_000,
            **options, simulation_options={"on_error": "drop"}, on_error="raise",
        )  # fmt: skip
    for how in ("infer", "method"):
        simulator = Counting(fail_above=0.6)
        extra = {"on_error": "drop"} if how == "method" else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PosteriorWarning)
            post = el.infer(  # batched=False: no second call to detect a batched simulator
                el.Simulator(simulator, batched=False), PRIOR, X_O, num_simulations=3_000,
                simulation_options={"on_error": "drop"}, **options, **extra,
            )  # fmt: skip
        d = post.diagnostics
        assert d["training_simulations"] == training
        assert d["failed_simulations"] > 0 and d["total_simulations"] == simulator.calls
        assert simulator.calls <= 3_000 + d["failed_simulations"]
        # 20 % of prior draws fail: replacing them costs 0.25 failures per valid training
        # simulation on average (negative binomial, sd under 5 % of that here)
        assert d["failed_simulations"] >= 0.2 * training
        assert bool(torch.isfinite(post.samples).all())


def test_the_message_of_a_failure_names_the_policy_of_every_interface():
    with pytest.raises(el.SimulationError) as info:
        el.simulate(Counting(fail_above=-2.0), PRIOR, 10, seed=0)
    err = info.value
    assert "simulation_options" in str(err) and "on_error='drop'" in err.hint
    assert err.hint not in err.message  # kept apart, for the command line's own words
