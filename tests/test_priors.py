r"""Tests of :mod:`ebm_lfi.priors`."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import (
    Beta,
    Exponential,
    Gamma,
    Independent,
    MultivariateNormal,
    Normal,
    Uniform,
)

import ebm_lfi as el
from ebm_lfi.priors import (
    BoxUniform,
    SupportBijection,
    parameter_names,
    prior_bounds,
    prior_dim,
    support_bounds,
    validate_prior,
)

LOW, HIGH = [-1.0, 0.0, 2.0], [1.0, 3.0, 2.5]


@pytest.fixture
def box():
    return BoxUniform(LOW, HIGH, parameter_names=["a", "b", "c"], dtype=torch.float64)


def test_shapes_and_dtype(box):
    assert box.event_shape == (3,) and box.batch_shape == ()
    assert box.sample().shape == (3,)
    assert box.sample((5,)).shape == (5, 3)
    assert box.sample((4, 2)).shape == (4, 2, 3)
    assert box.sample().dtype == torch.float64
    assert BoxUniform(LOW, HIGH).sample().dtype == torch.get_default_dtype()
    assert box.log_prob(torch.zeros(4, 2, 3)).shape == (4, 2)


def test_samples_are_uniform_on_the_box(box):
    n = 20_000
    generator_state = torch.get_rng_state()
    torch.manual_seed(0)
    try:
        theta = box.sample((n,))
    finally:
        torch.set_rng_state(generator_state)
    low, high = torch.tensor(LOW, dtype=torch.float64), torch.tensor(HIGH, dtype=torch.float64)
    assert bool(((theta >= low) & (theta <= high)).all())
    # U(l, h): mean (l + h) / 2, standard deviation (h - l) / sqrt(12)
    se = (high - low) / math.sqrt(12 * n)
    assert bool(((theta.mean(0) - (low + high) / 2).abs() < 5 * se).all())


def test_log_prob_inside_and_outside(box):
    expected = -math.log(2.0 * 3.0 * 0.5)  # minus the log volume of the box
    inside = torch.tensor([[0.0, 1.0, 2.2], [-1.0, 0.0, 2.0], [1.0, 3.0, 2.5]], dtype=torch.float64)
    assert torch.allclose(box.log_prob(inside), torch.full((3,), expected, dtype=torch.float64))
    outside = torch.tensor(
        [[1.01, 1.0, 2.2], [0.0, -1e-9, 2.2], [0.0, 1.0, 2.6], [-5.0, 9.0, 0.0]],
        dtype=torch.float64,
    )
    assert bool((box.log_prob(outside) == -math.inf).all())
    # accepts lists and other dtypes, returns the prior's dtype
    assert box.log_prob([0.0, 1.0, 2.2]).dtype == torch.float64
    assert math.isclose(float(box.log_prob([0.0, 1.0, 2.2])), expected, rel_tol=1e-12)


def test_log_prob_agrees_with_torch_uniform(box):
    reference = Independent(Uniform(box.low, box.high), 1)
    theta = box.sample((10,))
    assert torch.allclose(box.log_prob(theta), reference.log_prob(theta))


def test_names(box):
    assert box.parameter_names == ["a", "b", "c"]
    assert parameter_names(box) == ["a", "b", "c"]
    assert BoxUniform(LOW, HIGH).parameter_names is None
    assert parameter_names(BoxUniform(LOW, HIGH)) == ["theta_1", "theta_2", "theta_3"]
    assert parameter_names(None, dim=2) == ["theta_1", "theta_2"]
    assert BoxUniform([0.0], [1.0], parameter_names=(1,)).parameter_names == ["1"]


def test_prior_dim_and_bounds(box):
    assert prior_dim(box) == 3
    low, high = prior_bounds(box)
    assert torch.equal(low, box.low) and torch.equal(high, box.high)
    independent = Independent(Uniform(torch.zeros(2), torch.ones(2)), 1)
    low, high = prior_bounds(independent)
    assert torch.equal(low, torch.zeros(2)) and torch.equal(high, torch.ones(2))
    beta = Independent(Beta(torch.ones(2, dtype=torch.float64), torch.ones(2)), 1)
    low, high = prior_bounds(beta)  # interval support with Python-number bounds
    assert torch.equal(low, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(high, torch.ones(2, dtype=torch.float64))
    assert prior_bounds(MultivariateNormal(torch.zeros(2), torch.eye(2))) is None
    assert prior_bounds(Independent(Gamma(torch.ones(2), torch.ones(2)), 1)) is None


def test_sbi_box_uniform_is_accepted():
    sbi_utils = pytest.importorskip("sbi.utils")
    prior = sbi_utils.BoxUniform(torch.tensor([-1.0, 2.0]), torch.tensor([1.0, 3.0]))
    assert validate_prior(prior) is prior
    assert prior_dim(prior) == 2
    low, high = prior_bounds(prior)
    assert torch.equal(low, torch.tensor([-1.0, 2.0])) and torch.equal(
        high, torch.tensor([1.0, 3.0])
    )
    assert parameter_names(prior) == ["theta_1", "theta_2"]


@pytest.mark.parametrize(
    ("low", "high", "names", "match"),
    [
        ([0.0, 0.0], [1.0], None, r"shapes \(2,\) and \(1,\)"),
        ([[0.0, 0.0]], [[1.0, 1.0]], None, "1-D"),
        ([0.0, 1.0, 0.0], [1.0, 1.0, -1.0], None, r"fails at \[1, 2\]"),
        ([0.0, 0.0], [1.0, 1.0], ["a"], "1 parameter names for 2 parameters"),
    ],
)
def test_box_uniform_bad_input(low, high, names, match):
    with pytest.raises(ValueError, match=match):
        BoxUniform(low, high, parameter_names=names)


def test_log_prob_bad_shape(box):
    with pytest.raises(ValueError, match=r"\(\*, 3\), got \(4, 2\)"):
        box.log_prob(torch.zeros(4, 2))


@pytest.mark.parametrize(
    ("prior", "error"),
    [
        (torch.zeros(2), TypeError),
        ("uniform", TypeError),
        (MultivariateNormal(torch.zeros(3, 2), torch.eye(2)), ValueError),  # a batch of vectors
        (Independent(Normal(torch.zeros(2, 2), 1.0), 2), ValueError),  # a matrix
    ],
)
def test_validate_prior_bad_input(prior, error):
    with pytest.raises(error):
        validate_prior(prior)
    with pytest.raises(error):
        prior_dim(prior)


def test_validate_prior_accepts_vector_distributions():
    normal = Independent(Normal(torch.zeros(4), 1.0), 1)
    assert validate_prior(normal) is normal and prior_dim(normal) == 4


def test_a_scalar_distribution_is_one_parameter():
    # Gamma(2.0, 1.0) as a user with one parameter writes it: vectors of shape (1,)
    prior = validate_prior(Gamma(torch.tensor(2.0), torch.tensor(1.0)))
    assert tuple(prior.batch_shape) == () and tuple(prior.event_shape) == (1,)
    theta = torch.tensor([[0.5], [2.0]])
    expected = Gamma(torch.tensor(2.0), torch.tensor(1.0)).log_prob(theta[:, 0])
    assert torch.allclose(prior.log_prob(theta), expected) and prior_dim(prior) == 1
    assert prior.sample((3,)).shape == (3, 1)
    # and so wherever a prior is taken (simulate validates it and uses what it returns)
    theta, x = el.simulate(lambda t, rng: t, Gamma(torch.tensor(2.0), torch.tensor(1.0)), 4, seed=0)
    assert theta.shape == (4, 1) and bool((theta > 0).all())


def test_batch_of_scalars_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="Independent"):
        validate_prior(Normal(torch.zeros(3), 1.0))


def test_support_bounds_of_common_priors():
    box = BoxUniform([0.0, -2.0], [1.0, 3.0])
    low, high = support_bounds(box, 2)
    assert low.tolist() == [0.0, -2.0] and high.tolist() == [1.0, 3.0]
    assert low.dtype == torch.float64 and low.device.type == "cpu"
    uniform = Independent(Uniform(torch.zeros(3), torch.ones(3)), 1)
    assert support_bounds(uniform, 3)[1].tolist() == [1.0] * 3
    low, high = support_bounds(Independent(Normal(torch.zeros(3), 1.0), 1), 3)
    assert bool(torch.isinf(low).all() & torch.isinf(high).all())


def mixed_bijection() -> SupportBijection:
    # coordinates: box (0, 1), lower bound 2, upper bound 3, unbounded, box (-1, 4)
    low = torch.tensor([0.0, 2.0, -math.inf, -math.inf, -1.0], dtype=torch.float64)
    high = torch.tensor([1.0, math.inf, 3.0, math.inf, 4.0], dtype=torch.float64)
    return SupportBijection(low, high, tiny=1e-12)


def test_support_bijection_round_trip_and_jacobian():
    g = mixed_bijection()
    gen = torch.Generator().manual_seed(0)
    u = 3 * torch.randn(300, 5, generator=gen, dtype=torch.float64)
    theta = g.inverse(u)
    assert bool(((theta > g.low) & (theta < g.high)).all())
    torch.testing.assert_close(g.forward(theta), u, rtol=1e-9, atol=1e-9)
    # The map is elementwise: its log-derivative is the log of the gradient of the sum.
    ug = u.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(g.inverse(ug).sum(), ug)
    torch.testing.assert_close(g.log_abs_det_jacobian(u), grad.abs().log(), rtol=1e-10, atol=1e-10)


def test_support_bijection_moves_bounds_inside_and_clamps_back():
    g = mixed_bijection()
    edges = torch.tensor([[0.0, 2.0, 3.0, 0.0, 4.0]], dtype=torch.float64)
    u = g.forward(edges)
    assert bool(torch.isfinite(u).all())
    far = torch.full((1, 5), 1e4, dtype=torch.float64)
    theta = g.inverse(torch.cat([far, -far]))
    assert bool(((theta >= g.low) & (theta <= g.high)).all())


def test_support_bijection_from_prior():
    prior = Independent(Exponential(torch.ones(2)), 1)
    g = SupportBijection.from_prior(prior, dtype=torch.float32)
    assert g.low.dtype == torch.float32 and g.lower.tolist() == [True, True]
    theta = prior.sample((50,))
    torch.testing.assert_close(g.forward(theta), theta.log())
