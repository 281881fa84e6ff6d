"""SMC-ABC's perturbation kernels and its truncated last round, against exact posteriors.

Runs :func:`~ebm_lfi.samplers.abc.smc.smc_abc` with the Beaumont kernel (``2 Sigma``) and the
optimal local covariances (``olcm``, Filippi et al. 2013), each with a last round cut short by
the budget discarded (``keep_truncated=inf``, the old rule) or kept by the ESS rule
(``keep_truncated=0.5``) or kept whenever it accepted two particles (``always``,
``keep_truncated=0``), at equal simulation budgets, on problems whose posterior is known
exactly and whose simulator costs nothing:

- ``gauss2``: theta ~ N(0, 3^2 I_2), 20 draws x_i ~ N(theta, I), statistic the sample mean;
- ``gauss3``: theta ~ N(0, 2^2 I_3), 20 draws x_i ~ N(theta, C) with correlated C (0.8, 0.5,
  0.3), statistic the sample mean (a correlated Gaussian posterior);
- ``edge``: theta ~ U([0, 1]^2), 20 draws x_i ~ N(theta, 0.5^2 I), observed mean (0.98, 0.6):
  the posterior is a product of normals truncated to [0, 1], its mass against the edge 1.

Each run's final population is compared with 2,000 exact posterior draws: the largest mean
shift in posterior sds, the posterior sds over the exact ones (the largest ratio's distance
from 1 is reported with its sign), and W2 (weighted particles, exact transport); with the
final tolerance (scaled distance), the number of rounds (round 0 and a kept truncated round
included), the acceptance rate of the last round and the mean over the rounds after round 0,
and the ESS; ``trunc`` and ``kept`` count the runs whose last round the budget cut short and
those that kept it. Averages over seeds, with their standard errors.

    python scripts/check_smc_kernel.py --budgets 10000,30000 --seeds 5

Measured (N = 1000 particles, 5 seeds; W2 means over seeds, whose standard errors the script
prints; b/ Beaumont, o/ OLCM):

    W2     budget  b/discard     b/keep   b/always  o/discard     o/keep   o/always
    gauss2  10000      2.410      1.631      1.631      1.617      1.051      1.051
    gauss2  30000      0.266      0.201      0.165      0.098      0.098      0.097
    gauss3  10000      3.504      2.850      2.850      2.853      2.323      2.323
    gauss3  30000      1.133      0.971      0.869      0.530      0.409      0.379
    edge    10000      0.094      0.094      0.057      0.096      0.057      0.057
    edge    30000      0.033      0.026      0.026      0.025      0.025      0.050

Mean acceptance rate after round 0 (Beaumont / OLCM, a truncated round discarded): 0.324 /
0.463, 0.287 / 0.388 (gauss2, 10^4 / 3x10^4), 0.324 / 0.451, 0.284 / 0.394 (gauss3), 0.410 /
0.529, 0.316 / 0.362 (edge); final tolerance 1.251 / 0.877, 0.221 / 0.111; 2.324 / 1.916,
0.860 / 0.471; 0.905 / 0.889, 0.439 / 0.309; rounds 3 / 4, 8 / 10; 3 / 4, 8 / 11; 4 / 4,
6 / 7.

With N = 500 particles (``--particles 500``, four variants), W2 and the ESS of a discarded
truncated round:

    W2     budget  b/discard     b/keep  o/discard     o/keep  ESS b/d  ESS o/d
    gauss2  10000      0.679      0.679      0.289      0.269      473      418
    gauss2  30000      0.070      0.070      0.072      0.074      462      386
    gauss3  10000      1.775      1.775      1.141      1.036      359      386
    gauss3  30000      0.331      0.262      0.168      0.145      429      296
    edge    10000      0.051      0.040      0.037      0.038      480      383
    edge    30000      0.023      0.023      0.030      0.029      459      345

OLCM wins wherever the tolerance still limits the accuracy, and loses a little (edge, 3x10^4,
N = 500: 0.030 +- 0.003 against 0.023 +- 0.002) once the run has converged so far that the
Monte Carlo error dominates, as its weights are more variable (lower ESS). It is the default
kernel, and ``keep_truncated=0.5`` the default rule.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict

import numpy as np
import torch
from scipy import stats as sps
from torch.distributions import Independent, MultivariateNormal, Normal

import ebm_lfi as el
from ebm_lfi.priors import BoxUniform
from ebm_lfi.samplers.abc.smc import smc_abc

N_DRAWS = 20
VARIANTS = {  # name: (kernel, keep_truncated)
    "beaumont/discard": ("beaumont", math.inf),
    "beaumont/keep": ("beaumont", 0.5),
    "beaumont/always": ("beaumont", 0.0),
    "olcm/discard": ("olcm", math.inf),
    "olcm/keep": ("olcm", 0.5),
    "olcm/always": ("olcm", 0.0),
}


class Problem:
    """A prior, a simulator of the sample mean, an observation and exact posterior draws."""

    def __init__(self, name: str):
        self.name = name
        f64 = torch.float64
        if name in ("gauss2", "gauss3"):
            p = 2 if name == "gauss2" else 3
            prior_sd = 3.0 if p == 2 else 2.0
            cov = torch.eye(p, dtype=f64)
            if p == 3:
                cov = torch.tensor([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 1.0]], dtype=f64)
            self.prior = Independent(Normal(torch.zeros(p, dtype=f64), prior_sd), 1)
            self.noise = torch.linalg.cholesky(cov)
            theta_true = prior_sd * torch.randn(p, generator=torch.Generator().manual_seed(0))
            x = (
                theta_true.to(f64)
                + torch.randn((N_DRAWS, p), generator=torch.Generator().manual_seed(1), dtype=f64)
                @ self.noise.T
            )
            self.obs = x.mean(0)
            precision = torch.eye(p, dtype=f64) / prior_sd**2 + N_DRAWS * torch.linalg.inv(cov)
            post_cov = torch.linalg.inv(precision)
            post_mean = post_cov @ (N_DRAWS * torch.linalg.solve(cov, self.obs))
            exact = MultivariateNormal(post_mean, post_cov)
            with torch.random.fork_rng():
                torch.manual_seed(2)
                self.exact = exact.sample((2000,))
            self.mean, self.sd = post_mean, post_cov.diagonal().sqrt()
        elif name == "edge":
            self.prior = BoxUniform(torch.zeros(2), torch.ones(2), dtype=f64)
            self.noise = 0.5 * torch.eye(2, dtype=f64)
            self.obs = torch.tensor([0.98, 0.6], dtype=f64)
            s = 0.5 / math.sqrt(N_DRAWS)
            lo, hi = (0.0 - self.obs.numpy()) / s, (1.0 - self.obs.numpy()) / s
            exact = sps.truncnorm(lo, hi, loc=self.obs.numpy(), scale=s)
            draws = exact.rvs(size=(2000, 2), random_state=np.random.default_rng(2))
            self.exact = torch.as_tensor(draws)
            self.mean = torch.as_tensor(exact.mean())
            self.sd = torch.as_tensor(exact.std())
        else:
            raise ValueError(f"unknown problem {name!r}")

    def simulator(self, seed: int):
        """The sample mean of 20 draws, seeded; counts its calls."""
        generator = torch.Generator().manual_seed(seed)
        calls = [0]

        def simulate(theta: torch.Tensor) -> torch.Tensor:
            calls[0] += theta.shape[0]
            eps = torch.randn((theta.shape[0], N_DRAWS, theta.shape[1]), generator=generator)
            return theta + (eps.to(theta) @ self.noise.T).mean(1)

        return simulate, calls


def run_one(problem: Problem, variant: str, budget: int, seed: int, particles: int) -> dict:
    kernel, keep = VARIANTS[variant]
    simulate, calls = problem.simulator(1000 + seed)
    res = smc_abc(
        simulate, problem.prior, problem.obs, num_particles=particles, max_simulations=budget,
        kernel=kernel, keep_truncated=keep, seed=seed,
    )  # fmt: skip
    assert calls[0] == res.simulations <= budget
    w = res.weights
    mean = w @ res.particles
    sd = (w @ (res.particles - mean) ** 2).sqrt()
    ratio = sd / problem.sd
    worst = int((ratio.log()).abs().argmax())
    return {
        "eps": float(res.epsilon[-1]),
        "rounds": len(res.epsilon),
        "rate": float(res.acceptance_rate[-1]),
        "mean rate": float(res.acceptance_rate[1:].mean()),
        "ess": res.ess,
        "shift": float(((mean - problem.mean) / problem.sd).abs().max()),
        "sd": float(ratio[worst]) - 1.0,
        "w2": el.metrics.wasserstein2(res.particles, problem.exact, w),
        "kept": res.last_round == "truncated-kept",
        "truncated": res.last_round != "complete",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="gauss2,gauss3,edge")
    parser.add_argument("--budgets", default="10000,30000")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = args.variants.split(",")
    keys = ("eps", "rounds", "rate", "mean rate", "ess", "shift", "sd", "w2")
    print(
        f"{'problem':>7} {'budget':>6} {'variant':>17} {'eps':>13} {'rounds':>10} {'rate':>13} "
        f"{'mean rate':>13} "
        f"{'ESS':>9} {'|shift|/sd':>13} {'sd/sd-1':>14} {'W2':>15} {'trunc':>5} {'kept':>4}"
    )
    start = time.perf_counter()
    for name in args.problems.split(","):
        problem = Problem(name)
        for budget in (int(b) for b in args.budgets.split(",")):
            for variant in variants:
                rows = defaultdict(list)
                for seed in range(args.seeds):
                    for key, value in run_one(
                        problem, variant, budget, seed, args.particles
                    ).items():
                        rows[key].append(value)
                cells = []
                for key in keys:
                    v = np.asarray(rows[key], dtype=float)
                    se = v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else 0.0
                    digits = 1 if key in ("rounds", "ess") else 3
                    width = {"rounds": 10, "ess": 9}.get(key, 13)
                    if key == "ess":
                        cells.append(f"{v.mean():>{width}.0f}")
                    else:
                        cell = f"{v.mean():.{digits}f}±{se:.{digits}f}"
                        cells.append(f"{cell:>{width}}")
                print(
                    f"{name:>7} {budget:>6} {variant:>17} "
                    + " ".join(cells[:6])
                    + f" {cells[6]:>14} {cells[7]:>15} {sum(rows['truncated']):>5} "
                    f"{sum(rows['kept']):>4}",
                    flush=True,
                )
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
