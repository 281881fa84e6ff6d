r"""SLCP through a Gaussian family: is the score-matching fit the obstacle, or the sampler?

sbibm's SLCP draws four points of a 2-D Gaussian whose mean, scales and correlation are functions
of :math:`\theta`: read as 4 draws of 2, its likelihood is an iid Gaussian, an exponential family
whose statistics are the sums of the draws' monomials of degree one and two. The exchangeable
network with those monomials only (``embedding=0``) and a linear read-out is quadratic in the
(standardised) data, so the fitted model is a Gaussian in :math:`y` at every :math:`\theta`, with
precision :math:`P(\theta) = -\sum_j \eta_j(\theta) A_j - A_b` and linear term :math:`g(\theta)`
read off once (:func:`~ebm_lfi.samplers.mcmc.exchange_auxiliary.quadratic_form`). Its normaliser
is then known, and so is the posterior potential
:math:`\log \pi(\theta) + \log \mathcal N(y_o; P^{-1} g, P^{-1})` (:math:`-\infty` where
:math:`P` is not positive definite), which tempered SMC samples across SLCP's four modes (with
the true likelihood it reaches C2ST 0.50–0.56, ``docs/benchmarks.md``).

The script fits that family by sliced score matching on 10⁴ prior simulations, samples the
potential by :func:`~ebm_lfi.samplers.mcmc.tempering.sample_tempered` for the first two
observations and prints the C2ST to sbibm's reference draws, and, at the reference draws of the
first observation and at prior draws, how the fitted log-likelihood follows the true one
(correlation, spread) and the share of prior draws where :math:`P` is not positive definite.

    python scripts/check_slcp_gaussian.py [--num-simulations 10000] [--loss ssm]

``--loss nll`` fits the same family by its exact likelihood instead (the family is Gaussian in
:math:`y`, so its normaliser is closed-form: :class:`ExactGaussianNLL`, from a random start,
no warm start), ``--sinh`` passes the natural parameters through :math:`\sinh` (so that the
network reaches values over several orders of magnitude with outputs of order one), and
``--epochs`` / ``--lr`` set the training.

``--toy fixed|moving`` runs the same fits on a one-dimensional analogue instead, four draws of
:math:`\mathcal N(\mu, \tau^4)` with :math:`\tau \sim U(-3, 3)` and :math:`\mu = 0`
(``fixed``) or :math:`\mu \sim U(-3, 3)` (``moving``), and prints the fitted standard
deviation against :math:`\tau^2` (at :math:`\mu = 0` and :math:`\mu = 2.7`): is the spread
learned, and does a mean that moves with :math:`\theta` (the linear natural parameter is then
:math:`\mu / \tau^4`, a product of the two) stop it from being learned?

Needs sbibm (see ``scripts/bench_generic.py``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

import ebm_lfi as el
from ebm_lfi.methods.fit import EnergyFit
from ebm_lfi.samplers.mcmc.exchange_auxiliary import quadratic_form
from ebm_lfi.samplers.mcmc.tempering import sample_tempered

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generic import load_problem  # noqa: E402

LAYOUT = (4, 2)


class ExactGaussianNLL(torch.nn.Module):
    r"""The exact negative log-likelihood of a family quadratic in :math:`y`: with
    :math:`g, H` the gradient and Hessian of :math:`f(\cdot, \theta_i)` at :math:`y = 0`
    (exact for a quadratic), :math:`P = -H` and :math:`\mu = P^{-1} g`, the mean over rows of
    :math:`-\log \mathcal N(y_i; \mu_i, P_i^{-1})`; a row whose :math:`P` is not positive
    definite costs 100 plus 100 times its most negative eigenvalue."""

    def forward(self, model, y, theta):
        n, d = y.shape[0], y[0].numel()
        with torch.enable_grad():
            zero = torch.zeros_like(y).requires_grad_(True)
            (g,) = torch.autograd.grad(
                model.log_unnormalized_y(zero, theta).sum(), zero, create_graph=True
            )
            g = g.reshape(n, d)
            rows = [
                torch.autograd.grad(g[:, j].sum(), zero, create_graph=True)[0].reshape(n, d)
                for j in range(d)
            ]
        hessian = torch.stack(rows, 1)
        precision = -0.5 * (hessian + hessian.transpose(1, 2))
        lower, info = torch.linalg.cholesky_ex(precision)
        ok = info == 0
        lower = torch.where(ok[:, None, None], lower, torch.eye(d, dtype=y.dtype))
        mean = torch.cholesky_solve(g[:, :, None], lower)[..., 0]
        z = (lower.transpose(1, 2) @ (y.reshape(n, d) - mean)[:, :, None])[..., 0]
        log_det = torch.log(torch.diagonal(lower, dim1=1, dim2=2)).sum(1)
        nll = 0.5 * z.square().sum(1) - log_det + 0.5 * d * math.log(2 * math.pi)
        smallest = torch.linalg.eigvalsh(precision)[:, 0]
        penalty = 100.0 + 100.0 * torch.relu(-smallest)
        return torch.where(ok, nll, penalty).mean()


class _Sinh(torch.nn.Module):
    def forward(self, u):
        return torch.sinh(u)


def true_log_likelihood(theta: torch.Tensor, x_o: torch.Tensor) -> torch.Tensor:
    """SLCP's log-likelihood (sbibm's definition) at parameters ``(n, 5)``."""
    mean = theta[:, :2]
    s1, s2, rho = theta[:, 2] ** 2, theta[:, 3] ** 2, torch.tanh(theta[:, 4])
    cov = torch.stack(
        [torch.stack([s1**2, rho * s1 * s2], -1), torch.stack([rho * s1 * s2, s2**2], -1)], -2
    )
    normal = torch.distributions.MultivariateNormal(mean[:, None, :], cov[:, None])
    return normal.log_prob(x_o.reshape(1, *LAYOUT)).sum(1)


def gaussian_log_likelihood(model, form, y_o: torch.Tensor):
    r"""The fitted family's normalised log-likelihood of ``y_o`` as a function of
    :math:`\theta`, with the positive-definiteness of :math:`P(\theta)`."""
    d = y_o.numel()
    y_o = y_o.reshape(-1)

    def log_likelihood(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            eta = model.natural_parameters(theta.to(y_o.dtype))
            g = eta @ form.gradients + form.base_gradient
            precision = -(torch.einsum("nj,jab->nab", eta, form.hessians) + form.base_hessian)
            lower, info = torch.linalg.cholesky_ex(precision)
            ok = info == 0
            eye = torch.eye(d, dtype=lower.dtype)
            lower = torch.where(ok[:, None, None], lower, eye)
            mean = torch.cholesky_solve(g[:, :, None], lower)[..., 0]
            z = (lower.transpose(1, 2) @ (y_o - mean)[:, :, None])[..., 0]
            log_det = torch.log(torch.diagonal(lower, dim1=1, dim2=2)).sum(1)
            value = log_det - 0.5 * z.square().sum(1) - 0.5 * d * math.log(2 * math.pi)
        return torch.where(ok, value, torch.full_like(value, -math.inf)).double(), ok

    return log_likelihood


def fit_family(prior, theta, draws, args):
    """The family of this script (monomials only, linear read-out) fitted by ``args.loss``."""
    loss = ExactGaussianNLL() if args.loss == "nll" else args.loss
    options = {
        "loss": loss,
        "structure": "iid",
        "num_statistics": args.num_statistics,
        "network": {"embedding": 0},
        "training": {"epochs": args.epochs, "lr": args.lr},
    }
    model = None
    if args.sinh:  # the same network, its outputs through sinh (built by a one-epoch fit)
        model = EnergyFit(prior, **{**options, "training": {"epochs": 1}})
        model = model.fit(theta, draws, seed=0).model
        model.natural_net = torch.nn.Sequential(model.natural_net, _Sinh())
    return EnergyFit(prior, model=model, **options).fit(theta, draws, seed=0)


def toy(args) -> None:
    """The one-dimensional analogue (see the module docstring): fitted sd against the truth."""
    prior = el.BoxUniform([-3.0, -3.0], [3.0, 3.0])  # (mu, tau)
    torch.manual_seed(0)
    theta = prior.sample((args.num_simulations,))
    g = torch.Generator().manual_seed(1)
    mu = theta[:, :1] if args.toy == "moving" else torch.zeros_like(theta[:, :1])
    noise = torch.randn(args.num_simulations, 4, generator=g)
    draws = (mu + theta[:, 1:] ** 2 * noise)[..., None]
    model = fit_family(prior, theta, draws, args).model
    form = quadratic_form(model, theta[:1], model.transform_x(draws[:1])[0])
    ones, zeros = torch.ones(1, 4, 1), torch.zeros(1, 4, 1)
    scale = float((model.inverse_transform_x(ones) - model.inverse_transform_x(zeros))[0, 0, 0])
    taus = [-3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0]
    print(f"true sd (tau^2): {[t * t for t in taus]}")
    for m in (0.0, 2.7) if args.toy == "moving" else (0.0,):
        at = torch.tensor([[m, t] for t in taus])
        with torch.no_grad():
            eta = model.natural_parameters(at)
            precision = -(torch.einsum("nj,jab->nab", eta, form.hessians) + form.base_hessian)
            sd = torch.linalg.inv(precision)[:, 0, 0].sqrt() * scale
        print(f"fitted sd at mu = {m}: {[round(float(v), 2) for v in sd]}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-simulations", type=int, default=10_000)
    parser.add_argument("--loss", default="ssm")
    parser.add_argument("--num-statistics", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sinh", action="store_true")
    parser.add_argument("--toy", choices=("fixed", "moving"), default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.toy:
        toy(args)
        return
    problem = load_problem("slcp")
    theta, x = el.simulate(problem.simulator, problem.prior, args.num_simulations, seed=0)
    draws = x.reshape(x.shape[0], *LAYOUT)
    start = time.process_time()
    fit = fit_family(problem.prior, theta, draws, args)
    model = fit.model
    like = model.transform_x(draws[:1])[0]
    print(
        f"{args.loss} fit: {len(fit.history)} epochs, {time.process_time() - start:.0f} CPU-s, "
        f"quadratic in y: {model.gaussian_in_y}",
        flush=True,
    )
    form = quadratic_form(model, theta[:1].to(like.dtype), like)
    for i in range(2):
        label, x_o, reference = problem.observation(i)
        y_o = model.transform_x(x_o.reshape(1, *LAYOUT).to(like.dtype))
        log_likelihood = gaussian_log_likelihood(model, form, y_o)
        result = sample_tempered(lambda t, f=log_likelihood: f(t)[0], problem.prior, 2000, seed=0)
        samples = result.samples[:1000].double()
        c2st = el.metrics.c2st(samples, reference[:1000].double(), seed=0)
        line = f"observation {label}: C2ST {c2st:.3f}"
        if i == 0:
            prior_draws = problem.prior.sample((2000,))
            for name, at in (("reference draws", reference[:2000]), ("prior draws", prior_draws)):
                fitted, ok = log_likelihood(at.float())
                true = true_log_likelihood(at.double(), x_o.double())
                keep = torch.isfinite(fitted) & torch.isfinite(true)
                corr = torch.corrcoef(torch.stack([fitted[keep], true[keep]]))[0, 1]
                line += (
                    f"; at {name}: correlation with the true log-likelihood {float(corr):.2f}, "
                    f"sd fitted {float(fitted[keep].std()):.3g} / true "
                    f"{float(true[keep].std()):.3g}, P not positive definite at "
                    f"{float((~ok).double().mean()):.1%}"
                )
        print(line, flush=True)


if __name__ == "__main__":
    main()
