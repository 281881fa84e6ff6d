import math

import pytest
import torch
from torch import nn

from ebm_lfi.energy.mlp import MLP
from ebm_lfi.energy.model import ExpFamEBM
from ebm_lfi.losses import (
    DenoisingScoreMatching,
    ScoreMatching,
    SlicedScoreMatching,
    batched_score_and_hessian_diagonal,
    hessian_diagonal,
    sample_projections,
    score_and_hessian_diagonal,
)

DT = torch.float64

# forward-mode AD (torch.func.jvp) loads its decompositions with torch.jit.script on first use
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

CASES = {
    "mlp": dict(x_shape=(5,), structure="mlp"),
    "iid": dict(x_shape=(4, 2), structure="iid"),
    "markov": dict(x_shape=(7,), structure="markov", order=2),
}


def random_model(case: str, seed: int = 0) -> ExpFamEBM:
    cfg = dict(CASES[case])
    x_shape = cfg.pop("x_shape")
    torch.manual_seed(seed)
    return ExpFamEBM.default(x_shape, 3, hidden=(8,), embedding=4, activation="tanh", **cfg).to(DT)


def random_batch(model: ExpFamEBM, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(n, *model.x_shape, generator=gen, dtype=DT)
    theta = torch.randn(n, model.theta_dim, generator=gen, dtype=DT)
    return y, theta


def brute_force(model, y, theta):
    """Gradient, Hessian diagonal and SM loss with one backward pass per coordinate."""
    n = y.shape[0]
    y = y.clone().requires_grad_(True)
    f = model.log_unnormalized_y(y, theta)
    (g,) = torch.autograd.grad(f.sum(), y, create_graph=True)
    gf = g.reshape(n, -1)
    diag = torch.stack(
        [
            torch.autograd.grad(gf[:, j].sum(), y, create_graph=True)[0].reshape(n, -1)[:, j]
            for j in range(gf.shape[1])
        ],
        dim=1,
    )
    loss = (0.5 * gf.square() + diag).sum(-1).mean()
    return g, diag.reshape(y.shape), loss


def assert_matches_brute_force(model, y, theta, g, h):
    """Gradient, Hessian diagonal, SM loss and its weight gradients equal the brute force."""
    g_bf, h_bf, loss_bf = brute_force(model, y, theta)
    torch.testing.assert_close(g, g_bf, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, h_bf, rtol=1e-10, atol=1e-10)
    loss = ScoreMatching()(model, y, theta)
    torch.testing.assert_close(loss, loss_bf, rtol=1e-10, atol=1e-10)
    # differentiable w.r.t. the weights, with the same gradient as the brute force
    torch.testing.assert_close(
        param_grads(model, loss), param_grads(model, loss_bf), rtol=1e-10, atol=1e-10
    )


def param_grads(model, loss):
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)]
    )


def score_free_parameters(model):
    """The statistics net's output-layer bias shifts f by a constant: no score depends on it."""
    return {"statistics_net.net.2.bias", "statistics_net.rho.net.2.bias"}


def test_hessian_diagonal_analytic():
    f = lambda y: (y**3).sum() + y[0] * y[1]  # noqa: E731
    y = torch.randn(6, 3, dtype=DT)
    g, h = score_and_hessian_diagonal(f, y)
    expected_g = 3 * y**2 + torch.stack([y[:, 1], y[:, 0], torch.zeros(6, dtype=DT)], 1)
    torch.testing.assert_close(g, expected_g, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(h, 6 * y, rtol=1e-14, atol=1e-14)
    # extra per-sample arguments are sliced per row
    a = torch.randn(6, dtype=DT)
    torch.testing.assert_close(
        hessian_diagonal(lambda y, ai: ai * y.sin().sum(), y, a),
        -a[:, None] * y.sin(),
        rtol=1e-14,
        atol=1e-14,
    )


@pytest.mark.parametrize("case", list(CASES))
def test_exact_sm_matches_brute_force(case):
    model = random_model(case)
    y, theta = random_batch(model, 6, seed=1)

    def f(yi, ti):
        return model.log_unnormalized_y(yi.unsqueeze(0), ti.unsqueeze(0)).squeeze(0)

    g, h = score_and_hessian_diagonal(f, y, theta)
    assert_matches_brute_force(model, y, theta, g, h)


@pytest.mark.parametrize(
    "x_shape, structure, order, colors",
    [
        ((12,), "markov", 2, 3),
        ((9, 2), "markov", 1, 4),
        ((10, 2), "iid", 1, 2),
        ((10,), "iid", 1, 1),
    ],
)
def test_structured_exact_sm_matches_brute_force(x_shape, structure, order, colors):
    # a linear read-out makes f a sum of local terms: K probes replace the d basis vectors
    torch.manual_seed(0)
    model = ExpFamEBM.default(
        x_shape,
        3,
        structure=structure,
        order=order,
        hidden=(),
        natural_hidden=(8,),
        embedding=3,
        window_hidden=(5,),
        activation="tanh",
    ).to(DT)
    assert model.hessian_colors == colors < math.prod(x_shape)
    y, theta = random_batch(model, 5, seed=2)
    h_bf = brute_force(model, y, theta)[1]
    f = lambda z: model.log_unnormalized_y(z, theta)  # noqa: E731
    g, h = batched_score_and_hessian_diagonal(f, y, colors=colors)
    assert_matches_brute_force(model, y, theta, g, h)
    # too few colours for the coupling gives a wrong diagonal: the check has power
    _, h_wrong = batched_score_and_hessian_diagonal(f, y, colors=colors - 1 or 1)
    if colors > 1:
        assert (h_wrong - h_bf).abs().max() > 1e-6


def test_nonlinear_read_out_declares_no_structure():
    for case in CASES:
        assert random_model(case).hessian_colors is None


def test_exact_sm_gaussian_closed_form():
    # f(y) = a y + c y^2: grad a + 2 c y, Hessian 2 c
    nat = MLP(1, 2, hidden=())
    with torch.no_grad():
        nat.net[0].weight.zero_()
        nat.net[0].bias.copy_(torch.tensor([0.4, -0.3]))

    class Quad(nn.Module):
        def forward(self, y):
            return torch.cat([y, y.square(), torch.zeros_like(y)], -1)

    model = ExpFamEBM(Quad(), nat, x_shape=(1,), theta_dim=1, num_statistics=2).to(DT)
    y = torch.linspace(-2, 2, 9, dtype=DT)[:, None]
    expected = (0.5 * (0.4 - 0.6 * y) ** 2 - 0.6).mean()
    torch.testing.assert_close(ScoreMatching()(model, y, torch.zeros(9, 1, dtype=DT)), expected)


@pytest.mark.parametrize("loss", [ScoreMatching(), SlicedScoreMatching()], ids=["sm", "ssm"])
def test_piecewise_linear_activation_refused(loss):
    model = ExpFamEBM.default((3,), 2, hidden=(8,), activation="relu")
    with pytest.raises(ValueError, match="piecewise-linear"):
        loss(model, torch.randn(4, 3), torch.randn(4, 2))
    DenoisingScoreMatching(0.1)(model, torch.randn(4, 3), torch.randn(4, 2))  # needs no curvature


def test_ssm_multi_projection_formula():
    model = random_model("mlp")
    y, theta = random_batch(model, 5, seed=2)
    g, h_diag, _ = brute_force(model, y, theta)
    yy = y.clone().requires_grad_(True)
    gg = torch.autograd.grad(model.log_unnormalized_y(yy, theta).sum(), yy, create_graph=True)[0]
    hess = torch.stack(
        [torch.autograd.grad(gg[:, j].sum(), yy, retain_graph=True)[0] for j in range(5)], 1
    )
    for kind in ("rademacher", "gaussian"):
        for vr in (True, False):
            loss = SlicedScoreMatching(kind, vr, num_projections=3)
            value = loss(model, y, theta, generator=torch.Generator().manual_seed(9))
            v = sample_projections(
                (3, 5, 5), kind, dtype=DT, generator=torch.Generator().manual_seed(9)
            )
            vhv = torch.einsum("pni,nij,pnj->pn", v, hess, v)
            first = (
                0.5 * g.square().sum(-1)
                if vr
                else 0.5 * torch.einsum("pni,ni->pn", v, g).square().mean(0)
            )
            torch.testing.assert_close(value, (first + vhv.mean(0)).mean(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
@pytest.mark.parametrize("vr", [True, False], ids=["vr", "plain"])
def test_ssm_unbiased_for_exact_sm_value_and_gradient(kind, vr):
    model = random_model("mlp", seed=3)
    y, theta = random_batch(model, 8, seed=4)
    exact = ScoreMatching()(model, y, theta)
    exact_grad = param_grads(model, exact)
    repeats, replicates = 50, 40  # each replicate averages 50 independent projections per sample
    Y, T = y.repeat(repeats, 1), theta.repeat(repeats, 1)
    loss = SlicedScoreMatching(kind, vr)
    gen = torch.Generator().manual_seed(5)
    values, grads = [], []
    for _ in range(replicates):
        value = loss(model, Y, T, generator=gen)
        values.append(value.detach())
        grads.append(param_grads(model, value))
    values, grads = torch.stack(values), torch.stack(grads)
    se = values.std() / math.sqrt(replicates)
    assert se > 0
    assert abs(values.mean() - exact.detach()) < 5 * se  # t with 39 d.o.f.: P(|t| > 5) ~ 1e-5
    gse = grads.std(0) / math.sqrt(replicates)
    diff = (grads.mean(0) - exact_grad).abs()
    random_part = gse > 1e-12
    assert random_part.sum() > 0.5 * gse.numel()
    assert (diff[random_part] / gse[random_part]).max() < 6  # ~150 components, P(|t_39| > 6) ~ 5e-7
    assert (diff * ~random_part).max() < 1e-10


def test_losses_reach_every_parameter():
    for case in CASES:
        model = random_model(case, seed=6)
        y, theta = random_batch(model, 6, seed=7)
        for loss in (ScoreMatching(), SlicedScoreMatching(), DenoisingScoreMatching([0.1, 0.5])):
            kwargs = (
                {}
                if isinstance(loss, ScoreMatching)
                else {"generator": torch.Generator().manual_seed(0)}
            )
            value = loss(model, y, theta, **kwargs)
            params = dict(model.named_parameters())
            grads = torch.autograd.grad(value, list(params.values()), allow_unused=True)
            for (name, _), grad in zip(params.items(), grads):
                if name in score_free_parameters(model):
                    assert grad is None or grad.abs().max() == 0
                else:
                    assert grad is not None and grad.abs().sum() > 0, (
                        case,
                        type(loss).__name__,
                        name,
                    )


def test_dsm_options_and_errors():
    model = random_model("mlp")
    y, theta = random_batch(model, 6, seed=8)
    a = DenoisingScoreMatching(0.3)(model, y, theta, generator=torch.Generator().manual_seed(1))
    b = DenoisingScoreMatching([0.3])(model, y, theta, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    for bad in (0.0, -1.0, [], [0.1, float("nan")]):
        with pytest.raises(ValueError, match="sigma"):
            DenoisingScoreMatching(bad)
    with pytest.raises(ValueError, match="projection"):
        SlicedScoreMatching("uniform")
    with pytest.raises(ValueError, match=r"theta must have shape \(n, p\) with n = 6"):
        ScoreMatching()(model, y, theta[:4])


def test_losses_follow_dtype():
    torch.manual_seed(0)
    model = ExpFamEBM.default((3,), 2, hidden=(8,))
    y, theta = torch.randn(4, 3), torch.randn(4, 2)
    for loss in (ScoreMatching(), SlicedScoreMatching(), DenoisingScoreMatching(0.2)):
        assert loss(model, y, theta).dtype == torch.float32
        assert loss(model.to(DT), y.to(DT), theta.to(DT)).dtype == DT
        model = model.float()


def _ls_score_fit(y: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Closed-form DSM minimiser over linear scores alpha + beta * y_noisy (a regression)."""
    noisy = y + sigma * eps
    design = torch.cat([torch.ones_like(noisy), noisy], 1)
    return torch.linalg.lstsq(design, -eps / sigma).solution[:, 0]


def test_dsm_recovers_smoothed_gaussian_score():
    # data N(mu, s^2): DSM at sigma fits the score of N(mu, s^2 + sigma^2). The model is the
    # Gaussian family (statistics y, y^2), so the only errors are the sampling errors of the
    # data (delta method for mean and variance) and of the fixed noise bank (measured on
    # independent banks with the closed-form regression).
    mu, s, sigma, N, M = 1.5, 0.8, 0.6, 2000, 16
    gen = torch.Generator().manual_seed(10)
    y = mu + s * torch.randn(N, 1, generator=gen, dtype=DT)
    Y, theta = y.repeat(M, 1), torch.zeros(N * M, 1, dtype=DT)

    class Quad(nn.Module):
        def forward(self, y):
            return torch.cat([y, y.square(), torch.zeros_like(y)], -1)

    torch.manual_seed(0)
    model = ExpFamEBM(Quad(), MLP(1, 2, hidden=()), x_shape=(1,), theta_dim=1, num_statistics=2).to(
        DT
    )
    loss = DenoisingScoreMatching(sigma)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = loss(model, Y, theta, generator=torch.Generator().manual_seed(11))  # same bank
        value.backward()
        return value

    for _ in range(3):
        opt.step(closure)
    closure()
    # converged: the objective is quadratic with curvature ~ sigma^2 var(y_noisy) ~ 0.4, so the
    # distance to the bank's exact minimiser is ~ |grad| / 0.4, negligible against the tolerances
    assert max(p.grad.abs().max() for p in model.parameters()) < 1e-5

    grid = mu + math.sqrt(s**2 + sigma**2) * torch.linspace(-2, 2, 21, dtype=DT)[:, None]
    fitted = model.score_y(grid, torch.zeros(1, 1, dtype=DT))[:, 0]
    v = s**2 + sigma**2
    smoothed = -(grid[:, 0] - mu) / v
    se_data2 = s**2 / (N * v**2) + (grid[:, 0] - mu) ** 2 * 2 * s**4 / (N * v**4)
    bank_fits = []
    for b in range(20):
        eps = torch.randn(N * M, 1, generator=torch.Generator().manual_seed(100 + b), dtype=DT)
        alpha, beta = _ls_score_fit(Y, eps, sigma)
        bank_fits.append(alpha + beta * grid[:, 0])
    se_noise2 = torch.stack(bank_fits).var(0)
    tol = 4 * (se_data2 + se_noise2).sqrt()
    assert ((fitted - smoothed).abs() <= tol).all(), (fitted - smoothed).abs() / tol
    unsmoothed = -(grid[:, 0] - mu) / s**2
    assert ((unsmoothed - smoothed).abs()[[0, -1]] > 3 * tol[[0, -1]]).all()  # the test can fail


@pytest.mark.slow
def test_dsm_small_mlp_prefers_smoothed_score():
    # a small default MLP trained with DSM (fresh noise each step) lands near the smoothed score
    # of N(mu, s^2 + sigma^2), clearly away from the unsmoothed score of N(mu, s^2)
    mu, s, sigma, N = 0.5, 0.7, 0.7, 4000
    gen = torch.Generator().manual_seed(12)
    y = mu + s * torch.randn(N, 1, generator=gen)
    theta = torch.zeros(N, 1)
    torch.manual_seed(0)
    model = ExpFamEBM.default((1,), 1, hidden=(16, 16), natural_hidden=())
    loss = DenoisingScoreMatching(sigma)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    noise = torch.Generator().manual_seed(13)
    for _ in range(600):
        idx = torch.randint(N, (256,), generator=noise)
        opt.zero_grad()
        loss(model, y[idx], theta[idx], generator=noise).backward()
        opt.step()
    grid = mu + math.sqrt(s**2 + sigma**2) * torch.linspace(-1.5, 1.5, 13)[:, None]
    fitted = model.score_y(grid, torch.zeros(1, 1))[:, 0].double()
    g = grid[:, 0].double()
    smoothed, unsmoothed = -(g - mu) / (s**2 + sigma**2), -(g - mu) / s**2
    gap = (unsmoothed - smoothed).square().mean().sqrt()
    assert (fitted - smoothed).square().mean().sqrt() < 0.25 * gap
