r"""Simulators none of the defaults were tuned on, each with an exact posterior on a grid.

``weibull``: 20 Weibull lifetimes, :math:`\theta = (k, \lambda) \sim U([0.5, 3] \times [0.5,
2])`, :math:`x_j = \lambda W_j` with :math:`W_j` Weibull of shape :math:`k` (likelihood
:math:`\prod_j \frac{k}{\lambda} (x_j/\lambda)^{k-1} e^{-(x_j/\lambda)^k}`).

``modes``: :math:`\theta \sim U(-2, 2)^2`, five draws of :math:`(\theta_1\theta_2, \theta_1^2 +
\theta_2^2) + 0.3\,\varepsilon` returned flat (10 numbers): the posterior has four small modes,
:math:`(\pm a, \pm b)` and :math:`(\pm b, \pm a)` of one sign pattern, spread over the box.

``betabinomial``: integer counts, :math:`\theta = (\mu, \kappa) \sim U([0.1, 0.9] \times [1,
20])`, 8 groups of 30 trials, :math:`x_g \sim \mathrm{Binomial}(30, p_g)`, :math:`p_g \sim
\mathrm{Beta}(\mu\kappa, (1 - \mu)\kappa)` (beta-binomial likelihood).

``regression``: three parameters, :math:`\theta = (a, b, \sigma) \sim U([-2, 2]^2 \times
[0.1, 1.5])`, a straight line observed with noise at 15 times in [0, 1], :math:`x_i = a + b
t_i + \sigma \varepsilon_i` (Gaussian likelihood).

``decay``: :math:`\theta = (A, k) \sim U([10, 1000] \times [0.05, 1])`, an exponential decay
:math:`A e^{-k t}` at 25 times :math:`t = 0, 0.5, \ldots, 12` with log-normal measurement noise,
:math:`x_i = A e^{-k t_i} e^{0.3 \varepsilon_i}`: positive values over several orders of
magnitude (hundreds down to about :math:`10^{-4}`), a posterior narrow against the prior.

``beta``: 25 proportions in (0, 1), :math:`x_j \sim \mathrm{Beta}(a, b)`, :math:`\theta = (a,
b) \sim U([0.5, 5]^2)`: bounded data, with values piling up at 0 or 1 where :math:`a` or
:math:`b` is below 1; no support declared, as a user would leave it.

``dose``: binary outcomes, a dose-response experiment (a bioassay): 40 subjects at doses
:math:`d_i` evenly spaced in [-2, 2], :math:`x_i \sim \mathrm{Bernoulli}(\sigma(a + b d_i))`,
:math:`\theta = (a, b) \sim U([-3, 3] \times [0, 4])`, returned as 40 zeros and ones
(logistic likelihood; sufficient statistics :math:`\sum_i x_i` and :math:`\sum_i d_i x_i`).

``rain``: 30 daily rainfall amounts, dry (exactly 0) with probability :math:`1 - p`, else
Gamma of shape 2 and mean :math:`\mu`, :math:`\theta = (p, \mu) \sim U([0.1, 0.9] \times [0.5,
5])`: a point mass at 0 beside a continuous density (zero-inflated data).

``assay``: 20 log-normal concentrations :math:`e^{\mu + \sigma \varepsilon}`, those below the
detection limit 1 reported as 1, :math:`\theta = (\mu, \sigma) \sim U([-1, 2] \times [0.3,
1.5])`: censored data, a point mass at the limit (censored log-normal likelihood).

``survey``: mixed output, returned flat: the animals counted at 12 sites (Poisson of rate
:math:`\lambda`) and then the mean body mass measured at each (normal about :math:`\mu`, sd 1),
:math:`\theta = (\lambda, \mu) \sim U([0.5, 10] \times [-2, 2])`.

``waits``: 100 waiting times, Gamma of shape :math:`k` and mean :math:`m`, :math:`\theta = (k,
m) \sim U([0.5, 5]^2)`: many iid scalar draws.

``growth``: a matrix, 8 replicate experiments of a growth curve :math:`a (1 - e^{-b t_j})` at 6
times in [0.5, 5] with noise of sd 0.3, returned as shape (8, 6), :math:`\theta = (a, b) \sim
U([1, 5] \times [0.2, 2])`.

``scales``: parameters on very different scales, an amplitude in the thousands and a rate in
thousandths per second, :math:`\theta = (A, k) \sim U([10^3, 10^4] \times [10^{-3},
10^{-2}])`, :math:`x_i = A e^{-k t_i} + 50 \varepsilon_i` at 20 times in [0, 600] s.

``linear``: five parameters and a Gaussian prior instead of a box, a linear regression with
fixed covariates observed with noise at 12 points, :math:`x = X\theta + 0.8\,\varepsilon`,
:math:`\theta \sim \mathcal N(0, 2 I_5)`: the posterior is Gaussian in closed form (drawn
exactly, no grid).

``rate``: one parameter with a Gamma prior, as a user would pass it
(``torch.distributions.Gamma`` of shape 2 and rate 1, positive support, validating its
arguments), and 15 Poisson counts over observation periods from 0.5 to 3: the posterior is
Gamma in closed form.

The exact posterior is otherwise computed on a grid over the prior box (400 × 400; 500 × 500 for
``modes``; 120³ for ``regression``) and drawn with uniform jitter inside the cells; for
``decay``, ``beta`` and ``waits`` on a second grid (600 × 600, 400 × 400, 400 × 400) over
the part of the box within 30 nats of the first grid's mode. For each
budget the methods (``el.methods.get(name)``, defaults; ``npe`` and ``nre``: sbi's defaults
on the raw data, ``scripts/sbi_baselines.py``) are fitted on the same pairs (seed 0), and
optionally with ``training={"epochs": 200}`` (the schedule before ``TrainConfig.min_steps``);
their posteriors (1,000 draws) are scored by C2ST on two observations (simulated with seeds
100 and 101 at prior draws; for ``modes`` at :math:`\theta = (1, 0.5)` and :math:`(-1.2,
0.3)`), and the posterior warnings are printed::

    python scripts/check_fresh.py --problem weibull --budgets 1000 10000
    python scripts/check_fresh.py --problem modes --budgets 5000 --methods auto nce npe nre
    python scripts/check_fresh.py --problem regression --budgets 1000 10000 --methods auto nce npe
    python scripts/check_fresh.py --problem weibull --budgets 10000 --methods auto \
        --mcmc-pairs 200 --auto-routes
    python scripts/check_fresh.py --problem decay --methods auto nce npe --x-support none
    python scripts/check_fresh.py --problem dose --budgets 1000 10000 --methods auto nce npe \
        --auto-routes
    python scripts/check_fresh.py --problem rain --budgets 1000 10000 --methods auto nce npe \
        --auto-routes        # likewise assay, survey, waits, linear, rate,
        # growth, scales

``--auto-routes`` also prints ``auto``'s table of scores and the C2ST of each of its own
routes (fitted on its training part of the pairs); ``--mcmc-pairs`` sets on how many held-out
pairs it scores ``nce``; ``--x-support none`` fits without the default that reads positive data
on the log scale (``EnergyFit(x_support="auto")``), for a before-and-after comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.special import betaln, gammaln
from scipy.stats import norm

import ebm_lfi as el

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sbi_baselines import NPEBaseline, NREBaseline  # noqa: E402

BASELINES = {"npe": NPEBaseline, "nre": NREBaseline}  # sbi's defaults on the raw data
SCHEDULES = {"default": None, "epochs=200": {"epochs": 200}}


@dataclass(frozen=True)
class FreshProblem:
    """A simulator, its prior box, the log-likelihood of an observation on a grid of
    :math:`\\theta` and the grid's size; ``truths`` fixes the observations' parameters."""

    prior: torch.distributions.Distribution  # a box, but for a closed-form posterior
    simulator: Callable
    log_likelihood: Callable[..., np.ndarray] | None  # (grid of each parameter..., x_o)
    grid: int = 400
    truths: tuple | None = None
    zoom: bool = False  # a second grid over the box where the first one found the mass
    exact: Callable[[np.ndarray, int, int], torch.Tensor] | None = None  # closed form


# ---------------------------------------------------------------------------- weibull
WEIBULL_DRAWS = 20


def weibull_simulator(theta, rng):
    """20 lifetimes, Weibull of shape ``theta[0]`` and scale ``theta[1]``."""
    shape, scale = float(theta[0]), float(theta[1])
    return scale * rng.weibull(shape, size=WEIBULL_DRAWS)


def weibull_log_likelihood(k, lam, x):
    return (
        WEIBULL_DRAWS * np.log(k)
        - WEIBULL_DRAWS * k * np.log(lam)
        + (k - 1) * np.log(x).sum()
        - ((x[None, None, :] / lam[..., None]) ** k[..., None]).sum(-1)
    )


# ---------------------------------------------------------------------------- modes
MODES_DRAWS, MODES_NOISE = 5, 0.3


def modes_simulator(theta, rng):
    """Five noisy draws of (θ₁θ₂, θ₁² + θ₂²), flat."""
    t1, t2 = float(theta[0]), float(theta[1])
    mean = np.array([t1 * t2, t1**2 + t2**2])
    return (mean[None] + MODES_NOISE * rng.standard_normal((MODES_DRAWS, 2))).ravel()


def modes_log_likelihood(a, b, x):
    x = x.reshape(MODES_DRAWS, 2)
    product = (x[:, 0][None, None] - (a * b)[..., None]) ** 2
    radius = (x[:, 1][None, None] - (a**2 + b**2)[..., None]) ** 2
    return -(product + radius).sum(-1) / (2 * MODES_NOISE**2)


# ---------------------------------------------------------------------------- betabinomial
GROUPS, TRIALS = 8, 30


def betabinomial_simulator(theta, rng):
    """Successes in 8 groups of 30 trials, each group's rate Beta(μκ, (1 − μ)κ)."""
    mu, kappa = float(theta[0]), float(theta[1])
    rates = rng.beta(mu * kappa, (1 - mu) * kappa, size=GROUPS)
    return rng.binomial(TRIALS, rates).astype(float)


def betabinomial_log_likelihood(mu, kappa, x):
    a, b = (mu * kappa)[..., None], ((1 - mu) * kappa)[..., None]
    return (betaln(x + a, TRIALS - x + b) - betaln(a, b)).sum(-1)


# ---------------------------------------------------------------------------- regression
TIMES = np.linspace(0.0, 1.0, 15)


def regression_simulator(theta, rng):
    """A straight line a + b t at 15 times in [0, 1] plus N(0, σ²) noise."""
    a, b, sigma = (float(v) for v in theta)
    return a + b * TIMES + sigma * rng.standard_normal(TIMES.size)


def regression_log_likelihood(a, b, sigma, x):
    residual = x - a[..., None] - b[..., None] * TIMES
    return -TIMES.size * np.log(sigma) - (residual**2).sum(-1) / (2 * sigma**2)


# ---------------------------------------------------------------------------- decay
DECAY_TIMES, DECAY_NOISE = np.arange(25) * 0.5, 0.3


def decay_simulator(theta, rng):
    """An exponential decay A exp(-k t) at 25 times in [0, 12], measured with log-normal
    noise: values from hundreds down to about 1e-4."""
    amplitude, rate = float(theta[0]), float(theta[1])
    curve = amplitude * np.exp(-rate * DECAY_TIMES)
    return curve * np.exp(DECAY_NOISE * rng.standard_normal(DECAY_TIMES.size))


def decay_log_likelihood(amplitude, rate, x):
    expected = np.log(amplitude)[..., None] - rate[..., None] * DECAY_TIMES
    return -((np.log(x) - expected) ** 2).sum(-1) / (2 * DECAY_NOISE**2)


# ---------------------------------------------------------------------------- beta
BETA_DRAWS = 25


def beta_simulator(theta, rng):
    """25 proportions in (0, 1), Beta(a, b) draws."""
    return rng.beta(float(theta[0]), float(theta[1]), size=BETA_DRAWS)


def beta_log_likelihood(a, b, x):
    x = np.clip(x, 1e-300, 1 - 1e-16)
    return (a - 1) * np.log(x).sum() + (b - 1) * np.log1p(-x).sum() - BETA_DRAWS * betaln(a, b)


# ---------------------------------------------------------------------------- dose
DOSES = np.linspace(-2.0, 2.0, 40)


def dose_simulator(theta, rng):
    """40 binary outcomes, P(x_i = 1) = sigmoid(a + b d_i)."""
    a, b = float(theta[0]), float(theta[1])
    return (rng.random(DOSES.size) < 1 / (1 + np.exp(-(a + b * DOSES)))).astype(float)


def dose_log_likelihood(a, b, x):
    eta = a[..., None] + b[..., None] * DOSES
    # log sigmoid(eta) = -log(1 + e^-eta), log(1 - sigmoid(eta)) = -log(1 + e^eta)
    return (-x * np.logaddexp(0, -eta) - (1 - x) * np.logaddexp(0, eta)).sum(-1)


# ---------------------------------------------------------------------------- rain
RAIN_DAYS = 30


def rain_simulator(theta, rng):
    """30 daily rainfall amounts: dry (exactly 0) with probability 1 - p, else Gamma of shape
    2 and mean mu."""
    p, mu = float(theta[0]), float(theta[1])
    wet = rng.random(RAIN_DAYS) < p
    return np.where(wet, rng.gamma(2.0, mu / 2.0, RAIN_DAYS), 0.0)


def rain_log_likelihood(p, mu, x):
    wet = x > 0
    n_wet = wet.sum()
    amounts = x[wet]
    scale = mu / 2.0  # Gamma(2, scale): log f = log a - 2 log scale - a / scale
    log_amounts = np.log(amounts).sum() - 2 * n_wet * np.log(scale) - amounts.sum() / scale
    return n_wet * np.log(p) + (x.size - n_wet) * np.log1p(-p) + log_amounts


# ---------------------------------------------------------------------------- assay
ASSAY_SAMPLES, ASSAY_LIMIT = 20, 1.0


def assay_simulator(theta, rng):
    """20 log-normal concentrations exp(mu + sigma e); those below the detection limit 1 are
    reported as 1."""
    mu, sigma = float(theta[0]), float(theta[1])
    return np.maximum(np.exp(mu + sigma * rng.standard_normal(ASSAY_SAMPLES)), ASSAY_LIMIT)


def assay_log_likelihood(mu, sigma, x):
    censored = x <= ASSAY_LIMIT
    logs = np.log(x[~censored])
    z = (logs[:, None, None] - mu) / sigma
    observed = (-0.5 * z**2 - np.log(sigma) - logs[:, None, None]).sum(0)
    below = norm.logcdf((np.log(ASSAY_LIMIT) - mu) / sigma)
    return observed + censored.sum() * below - 0.5 * np.log(2 * np.pi) * (~censored).sum()


# ---------------------------------------------------------------------------- survey
SURVEY_SITES = 12


def survey_simulator(theta, rng):
    """A field survey of 12 sites, returned flat: the animals counted at each site (Poisson of
    rate lam), then the mean body mass measured there (normal about mu, sd 1)."""
    lam, mu = float(theta[0]), float(theta[1])
    counts = rng.poisson(lam, SURVEY_SITES).astype(float)
    return np.concatenate([counts, mu + rng.standard_normal(SURVEY_SITES)])


def survey_log_likelihood(lam, mu, x):
    counts, masses = x[:SURVEY_SITES], x[SURVEY_SITES:]
    poisson = counts.sum() * np.log(lam) - counts.size * lam - gammaln(counts + 1).sum()
    normal = -0.5 * ((masses[:, None, None] - mu) ** 2).sum(0)
    return poisson + normal


# ---------------------------------------------------------------------------- waits
WAITS = 100


def waits_simulator(theta, rng):
    """100 waiting times, Gamma of shape k and mean m."""
    k, m = float(theta[0]), float(theta[1])
    return rng.gamma(k, m / k, WAITS)


def waits_log_likelihood(k, m, x):
    scale = m / k
    n, logs = x.size, np.log(x).sum()
    return -n * gammaln(k) - n * k * np.log(scale) + (k - 1) * logs - x.sum() / scale


# ---------------------------------------------------------------------------- growth
GROWTH_TIMES = np.linspace(0.5, 5.0, 6)
GROWTH_REPLICATES = 8


def growth_simulator(theta, rng):
    """8 replicate growth curves of 6 points, a matrix (8, 6)."""
    curve = float(theta[0]) * (1.0 - np.exp(-float(theta[1]) * GROWTH_TIMES))
    return curve[None, :] + 0.3 * rng.standard_normal((GROWTH_REPLICATES, GROWTH_TIMES.size))


def growth_log_likelihood(a, b, x):
    mean = a[..., None] * (1.0 - np.exp(-b[..., None] * GROWTH_TIMES))  # (grid, grid, 6)
    return -0.5 * (((x[:, None, None, :] - mean[None]) / 0.3) ** 2).sum((0, -1))


# ---------------------------------------------------------------------------- scales
SCALES_TIMES = np.linspace(0.0, 600.0, 20)  # seconds


def scales_simulator(theta, rng):
    """A decay of amplitude in the thousands and rate in thousandths per second."""
    mean = float(theta[0]) * np.exp(-float(theta[1]) * SCALES_TIMES)
    return mean + 50.0 * rng.standard_normal(SCALES_TIMES.size)


def scales_log_likelihood(amplitude, rate, x):
    mean = amplitude[..., None] * np.exp(-rate[..., None] * SCALES_TIMES)
    return -0.5 * (((x - mean) / 50.0) ** 2).sum(-1)


# ---------------------------------------------------------------------------- linear
LINEAR_DESIGN = np.random.default_rng(7).standard_normal((12, 5))  # fixed covariates
LINEAR_NOISE = 0.8
LINEAR_PRIOR_VARIANCE = 2.0


def linear_simulator(theta, rng):
    design = LINEAR_DESIGN
    return design @ np.asarray(theta) + LINEAR_NOISE * rng.standard_normal(design.shape[0])


def linear_exact(x_o, num_samples, seed):
    """The conjugate Gaussian posterior of the five coefficients, drawn exactly."""
    design, s2 = LINEAR_DESIGN, LINEAR_NOISE**2
    precision = np.eye(design.shape[1]) / LINEAR_PRIOR_VARIANCE + design.T @ design / s2
    cov = np.linalg.inv(precision)
    mean = cov @ design.T @ np.asarray(x_o, dtype=np.float64) / s2
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.multivariate_normal(mean, cov, size=num_samples))


# ---------------------------------------------------------------------------- rate
RATE_EXPOSURE = np.linspace(0.5, 3.0, 15)  # observation periods of the 15 counts
RATE_PRIOR = (2.0, 1.0)  # Gamma shape and rate


def rate_simulator(theta, rng):
    return rng.poisson(float(np.asarray(theta)[0]) * RATE_EXPOSURE).astype(float)


def rate_exact(x_o, num_samples, seed):
    """The conjugate Gamma posterior of the rate, drawn exactly."""
    shape, rate = RATE_PRIOR[0] + float(np.sum(x_o)), RATE_PRIOR[1] + RATE_EXPOSURE.sum()
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.gamma(shape, 1.0 / rate, size=(num_samples, 1)))


PROBLEMS = {
    "weibull": FreshProblem(
        el.BoxUniform([0.5, 0.5], [3.0, 2.0]), weibull_simulator, weibull_log_likelihood
    ),
    "modes": FreshProblem(
        el.BoxUniform([-2.0, -2.0], [2.0, 2.0]),
        modes_simulator,
        modes_log_likelihood,
        grid=500,
        truths=((1.0, 0.5), (-1.2, 0.3)),
    ),
    "betabinomial": FreshProblem(
        el.BoxUniform([0.1, 1.0], [0.9, 20.0]), betabinomial_simulator, betabinomial_log_likelihood
    ),
    "regression": FreshProblem(
        el.BoxUniform([-2.0, -2.0, 0.1], [2.0, 2.0, 1.5]),
        regression_simulator,
        regression_log_likelihood,
        grid=120,
    ),
    "decay": FreshProblem(
        el.BoxUniform([10.0, 0.05], [1000.0, 1.0]),
        decay_simulator,
        decay_log_likelihood,
        grid=600,
        zoom=True,
    ),
    "dose": FreshProblem(
        el.BoxUniform([-3.0, 0.0], [3.0, 4.0]), dose_simulator, dose_log_likelihood
    ),
    "beta": FreshProblem(
        el.BoxUniform([0.5, 0.5], [5.0, 5.0]), beta_simulator, beta_log_likelihood, zoom=True
    ),
    "assay": FreshProblem(
        el.BoxUniform([-1.0, 0.3], [2.0, 1.5]), assay_simulator, assay_log_likelihood
    ),
    "survey": FreshProblem(
        el.BoxUniform([0.5, -2.0], [10.0, 2.0]), survey_simulator, survey_log_likelihood
    ),
    "waits": FreshProblem(
        el.BoxUniform([0.5, 0.5], [5.0, 5.0]), waits_simulator, waits_log_likelihood, zoom=True
    ),
    "growth": FreshProblem(
        el.BoxUniform([1.0, 0.2], [5.0, 2.0]), growth_simulator, growth_log_likelihood
    ),
    "scales": FreshProblem(
        el.BoxUniform([1e3, 1e-3], [1e4, 1e-2]),
        scales_simulator,
        scales_log_likelihood,
        zoom=True,
    ),
    "rain": FreshProblem(
        el.BoxUniform([0.1, 0.5], [0.9, 5.0]), rain_simulator, rain_log_likelihood
    ),
    "linear": FreshProblem(
        torch.distributions.MultivariateNormal(
            torch.zeros(5), LINEAR_PRIOR_VARIANCE * torch.eye(5)
        ),
        linear_simulator,
        None,
        exact=linear_exact,
    ),
    "rate": FreshProblem(
        torch.distributions.Gamma(torch.tensor([RATE_PRIOR[0]]), torch.tensor([RATE_PRIOR[1]])),
        rate_simulator,
        None,
        exact=rate_exact,
    ),
}


def exact_posterior(
    problem: FreshProblem, x_o: np.ndarray, num_samples: int, seed: int
) -> torch.Tensor:
    """Draws of the posterior of ``x_o``: in closed form where the problem has one, else
    from a grid over the prior box (any number of parameters: ``problem.grid`` points per
    axis)."""
    if problem.exact is not None:
        return problem.exact(np.asarray(x_o, dtype=np.float64), num_samples, seed)
    low, high = problem.prior.low.double().numpy(), problem.prior.high.double().numpy()
    x_o = np.asarray(x_o, dtype=np.float64)
    axes = [np.linspace(lo, hi, problem.grid) for lo, hi in zip(low, high)]
    grids = np.meshgrid(*axes, indexing="ij")
    log_lik = problem.log_likelihood(*grids, x_o)
    if problem.zoom:  # the cells within 30 nats of the mode, one cell of margin, same count
        kept = log_lik >= log_lik.max() - 30.0
        cells = [ax[1] - ax[0] for ax in axes]
        bounds = [(g[kept].min() - d, g[kept].max() + d) for g, d in zip(grids, cells)]
        axes = [
            np.linspace(max(lo, a), min(hi, b), problem.grid)
            for (a, b), lo, hi in zip(bounds, low, high)
        ]
        grids = np.meshgrid(*axes, indexing="ij")
        log_lik = problem.log_likelihood(*grids, x_o)
    p = np.exp(log_lik - log_lik.max()).ravel()
    rng = np.random.default_rng(seed)
    idx = rng.choice(p.size, size=num_samples, p=p / p.sum())
    cells = [ax[1] - ax[0] for ax in axes]
    draws = np.stack(
        [
            grid.ravel()[idx] + rng.uniform(-d / 2, d / 2, num_samples)
            for grid, d in zip(grids, cells)
        ],
        axis=1,
    )
    return torch.as_tensor(draws)


def observations(problem: FreshProblem) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The two observations and their exact posteriors (2,000 draws)."""
    out = []
    for i, seed in enumerate((100, 101)):
        if problem.truths is None:
            _, x_o = el.simulate(problem.simulator, problem.prior, 1, seed=seed)
            x_o = x_o[0]
        else:
            truth = torch.tensor(problem.truths[i])
            x_o = el.Simulator(problem.simulator)(truth, seed=seed)
        out.append((x_o, exact_posterior(problem, x_o.numpy(), 2_000, seed)))
    return out


def c2st(post, reference: torch.Tensor) -> float:
    """C2ST of 1,000 draws of a posterior (resampled where it is weighted) to the exact one."""
    draws = post.sample(1_000, seed=0) if post.weights is not None else post.samples
    return el.metrics.c2st(draws.double(), reference.double(), seed=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="weibull", choices=PROBLEMS)
    parser.add_argument("--budgets", nargs="+", type=int, default=[1_000, 10_000])
    parser.add_argument("--methods", nargs="+", default=["auto", "nce"])
    parser.add_argument("--schedules", nargs="+", default=["default"], choices=SCHEDULES)
    parser.add_argument(
        "--mcmc-pairs", type=int, default=None, help="auto: held-out pairs that score nce"
    )
    parser.add_argument(
        "--auto-routes", action="store_true", help="also print C2ST of each of auto's routes"
    )
    parser.add_argument(
        "--routes", nargs="+", default=None, help="auto: AutoConfig.routes (default: its own)"
    )
    parser.add_argument(
        "--x-support",
        choices=("auto", "none"),
        default="auto",
        help="the energy fits' x_support: the default ('auto': log x for positive data over "
        "two orders of magnitude) or none (unbounded, as before that default)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    problem = PROBLEMS[args.problem]
    observed = observations(problem)
    print(f"{args.problem}")
    print("budget  schedule    method  chose                  fit s   C2ST (obs 1, 2)  mean")
    for budget in args.budgets:
        theta, x = el.simulate(problem.simulator, problem.prior, budget, seed=0)
        for schedule in args.schedules:
            for name in args.methods:
                options = {} if SCHEDULES[schedule] is None else {"training": SCHEDULES[schedule]}
                if args.x_support == "none" and name not in BASELINES:
                    options["x_support"] = None
                if name == "auto":
                    options["config"] = {
                        **({} if args.mcmc_pairs is None else {"mcmc_pairs": args.mcmc_pairs}),
                        **({} if args.routes is None else {"routes": tuple(args.routes)}),
                    }
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    start = time.process_time()
                    if name in BASELINES:
                        method = BASELINES[name](problem.prior)
                    else:
                        method = el.methods.get(name, prior=problem.prior, **options)
                    method.fit(theta, x, seed=0)
                    seconds = time.process_time() - start
                    scores, said = [], []
                    for x_o, reference in observed:
                        post = method.posterior(x_o, 1_000, seed=0)
                        scores.append(c2st(post, reference))
                        said.append(post.diagnostics.get("warnings", []))
                    routes = {}
                    if name == "auto" and args.auto_routes:
                        for route, fitted in method.routes.items():
                            routes[route] = [
                                c2st(fitted.posterior(x_o, 1_000, seed=0), reference)
                                for x_o, reference in observed
                            ]
                chose = getattr(method, "chosen", "") or ""
                print(
                    f"{budget:6d}  {schedule:10s}  {name:6s}  {chose:21s}  {seconds:5.0f}   "
                    f"{scores[0]:.3f} / {scores[1]:.3f}    {np.mean(scores):.3f}",
                    flush=True,
                )
                if routes:
                    print(method.table[["route", "score", "se", "pairs", "chosen"]].to_string())
                for route, values in routes.items():
                    print(
                        f"        auto's {route:21s} {values[0]:.3f} / {values[1]:.3f}    "
                        f"{np.mean(values):.3f}"
                    )
                for i, messages in enumerate(said):
                    for message in messages:
                        print(f"        warning at observation {i + 1}: {message[:110]}")


if __name__ == "__main__":
    main()
