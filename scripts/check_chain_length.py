"""The posterior stages' longer runs where the draws are worth too little, against the planned
run (``max_extension=1``), on the same fits.

For each problem, one ``ssm-abc`` fit and one ``nce`` fit on the same prior pairs (seed 0);
for each observation, the exchange posterior of the first and the MCMC posterior of the second
on the second's potential, each with the planned chains only and with the default rule
(``min_ess=0.25``: run again, longer, until the smallest effective sample size reaches a
quarter of the draws, at most ``max_extension=4`` times longer). Prints C2ST to the reference,
the smallest effective size, the largest split R-hat, how much longer the chains ran and the
sampler's seconds::

    python scripts/check_chain_length.py --problems gaussian_linear_uniform two_moons \\
        --budget 10000 --observations 2

The problems are those of ``scripts/bench_generic.py`` (sbibm's need sbibm installed).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

import ebm_lfi as el
from ebm_lfi.methods import ExchangeConfig, ExchangeStage, Method, PotentialConfig, PotentialStage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generic import load_problem  # noqa: E402

NUM_SAMPLES = 1000
ROUTES = {  # route -> (the fit, its posterior stage and config)
    "ssm-exchange": ("ssm-abc", ExchangeStage, ExchangeConfig),
    "nce": ("nce", PotentialStage, PotentialConfig),
}


def rows(name: str, budget: int, observations: int, seed: int):
    problem = load_problem(name)
    theta, x = el.simulate(problem.simulator, problem.prior, budget, seed=seed)
    fits = {}
    for fit_name in {fit for fit, _, _ in ROUTES.values()}:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits[fit_name] = el.methods.get(fit_name, prior=problem.prior).fit(theta, x, seed=seed)
        print(f"{name} {budget}: {fit_name} fitted in {time.perf_counter() - start:.0f} s")
    for i in range(observations):
        label, x_o, reference = problem.observation(i)
        for route, (fit_name, stage, config) in ROUTES.items():
            for rule, options in (("planned", {"max_extension": 1}), ("default", {})):
                method = Method(fits[fit_name].fit_stage, stage(config(**options))).prepare()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    post = method.posterior(x_o, NUM_SAMPLES, seed=seed)
                d = post.diagnostics
                samples = post.chains.reshape(-1, post.chains.shape[-1])
                c2st = el.metrics.c2st(samples[:NUM_SAMPLES], reference[:NUM_SAMPLES], seed=0)
                row = {
                    "problem": name,
                    "budget": budget,
                    "observation": label,
                    "route": route,
                    "chains": rule,
                    "c2st": round(c2st, 3),
                    "min_ess": round(min(d["ess"])),
                    "max_rhat": round(max(d["rhat"]), 3),
                    "extension": d["extension"],
                    "seconds": round(d["seconds"], 1),
                }
                print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
                yield row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["gaussian_linear_uniform", "two_moons"])
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--observations", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = pd.DataFrame(
        [
            row
            for name in args.problems
            for row in rows(name, args.budget, args.observations, args.seed)
        ]
    )
    print()
    print(table.to_string(index=False))
    print()
    means = table.groupby(["problem", "route", "chains"], sort=False)["c2st"].mean().unstack()
    print("mean C2ST over the observations")
    print(means.round(3).to_string())


if __name__ == "__main__":
    main()
