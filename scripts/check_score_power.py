r"""Can the held-out energy score tell two posteriors apart? Per-pair scores on two_moons.

``auto`` chooses a route by the mean energy score of its posteriors on held-out pairs. On
sbibm's two_moons the exchange route (on the ``ssm-abc`` fit) and ``nce`` differ in C2ST on
the benchmark's observations by 0.1–0.2, yet ``auto``'s 20 pairs ranked them the other way.
This script fits ``ssm-abc`` and ``nce`` on ``--budget`` prior-predictive pairs (seed 0),
draws ``--pairs`` fresh pairs (seed 123) and prints, per pair and on average, the energy score
(prior-standardised units, 200 draws, as ``auto`` scores) of

* the exchange posterior of the ``ssm-abc`` fit (one batch of chains, as ``auto`` runs it),
* the ``nce`` posterior (its MCMC on the potential),
* the exact posterior (two_moons' likelihood on an 801 × 801 grid of the prior box),

with the paired differences and their standard errors. A difference smaller than a few of its
standard errors cannot be resolved by that many pairs::

    python scripts/check_score_power.py --budget 10000 --pairs 40

Needs sbibm (the benchmark's extra; see ``scripts/bench_generic.py``).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch
from bench_generic import load_problem
from check_ml_normalizer import true_log_likelihood

import ebm_lfi as el
from ebm_lfi.methods.energy_methods import EnergyExchange
from ebm_lfi.methods.scoring import energy_score, heldout_score, prior_scale

GRID = 801


def exact_draws(x_o: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Draws of two_moons' exact posterior under U(-1, 1)^2: a grid, jittered in its cells."""
    axis = torch.linspace(-1, 1, GRID, dtype=torch.float64)
    t1, t2 = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([t1.reshape(-1), t2.reshape(-1)], 1)
    weights = torch.softmax(true_log_likelihood(grid, x_o[None, :]), 0)
    index = torch.multinomial(weights, n, replacement=True, generator=generator)
    jitter = (torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5) * (2 / (GRID - 1))
    return grid[index] + jitter


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--num-samples", type=int, default=200)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    problem = load_problem("two_moons")
    theta, x = el.simulate(problem.simulator, problem.prior, args.budget, seed=0)
    start = time.perf_counter()
    abc = el.methods.get("ssm-abc", prior=problem.prior).fit(theta, x, seed=0)
    nce = el.methods.get("nce", prior=problem.prior).fit(theta, x, seed=0)
    print(f"fits on {args.budget} pairs: {time.perf_counter() - start:.0f} s", flush=True)
    theta, x = el.simulate(problem.simulator, problem.prior, args.pairs, seed=123)
    theta, x = theta.double(), x.double()
    scale = prior_scale(problem.prior)
    exchange = EnergyExchange.from_fitted(abc, exchange={"check_inner": 0})
    n = args.num_samples
    scores = {
        "exchange": heldout_score(exchange, theta, x, num_samples=n, scale=scale, batch=True),
        "nce": heldout_score(nce, theta, x, num_samples=n, scale=scale),
    }
    generator = torch.Generator().manual_seed(0)
    exact = [
        float(energy_score(exact_draws(x[i], n, generator), theta[i], scale=scale))
        for i in range(args.pairs)
    ]
    per_pair = {name: s.scores for name, s in scores.items()} | {"exact": torch.tensor(exact)}
    m = math.sqrt(args.pairs)
    print("mean energy score (se): " + ", ".join(
        f"{name} {float(v.mean()):.3f} ({float(v.std()) / m:.3f})" for name, v in per_pair.items()
    ))  # fmt: skip
    for a, b in (("exchange", "nce"), ("exchange", "exact"), ("nce", "exact")):
        d = per_pair[a] - per_pair[b]
        print(f"{a} - {b}: {float(d.mean()):+.3f} ± {float(d.std()) / m:.3f} (paired)")
    print("pair  theta_1  theta_2  exchange     nce   exact")
    for i in range(args.pairs):
        row = "  ".join(f"{float(per_pair[k][i]):6.3f}" for k in ("exchange", "nce", "exact"))
        print(f"{i:4d}  {float(theta[i, 0]):7.2f}  {float(theta[i, 1]):7.2f}  {row}")


if __name__ == "__main__":
    main()
