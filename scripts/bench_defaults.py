r"""The default method against the routes it chooses among, on two simulators a new user writes.

The problems (``tests/user_problems.py``): integer daily case counts of an outbreak (Poisson,
2 parameters) and 20 draws of a 2-D Student-t location model returned flat as 40 numbers;
both have an exact posterior on a grid. For each problem, ``--simulations`` pairs are
simulated once (the total budget: no method simulates anything else), each method is fitted
once on them and its posterior drawn for each observation (true parameter and data from the
observation seed), then compared with the exact posterior by C2ST (0.5: indistinguishable).
The table gives C2ST, the route ``auto`` chose, the fit's seconds and, for ``auto``, its
cost relative to ``ssm-abc`` (fit plus posterior).

    python scripts/bench_defaults.py                       # both problems, auto ssm-abc nce
    python scripts/bench_defaults.py --problems flat --methods auto nce --observations 100
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from user_problems import PROBLEMS  # noqa: E402


def run(problem: str, methods: list[str], simulations: int, observations: list[int], seed: int):
    prob = PROBLEMS[problem]
    theta, x = el.simulate(el.Simulator(prob.simulator), prob.prior, simulations, seed=seed)
    truths = {s: prob.observation(s) for s in observations}
    references = {s: prob.reference(truths[s][1]) for s in observations}
    rows, seconds = [], {}
    for name in methods:
        method = el.methods.get(name, prior=prob.prior)
        start = time.perf_counter()
        method.fit(theta, x, seed=seed)
        fit_seconds = time.perf_counter() - start
        for s in observations:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                post = method.posterior(truths[s][1], 1000, seed=s)
            post_seconds = time.perf_counter() - start
            seconds.setdefault(name, fit_seconds)
            seconds[name] += post_seconds
            samples = post.sample(1000, seed=0) if post.weights is not None else post.samples
            rows.append(
                {
                    "problem": problem,
                    "observation": s,
                    "method": name,
                    "c2st": el.metrics.c2st(samples.double(), references[s]),
                    "route": post.diagnostics.get("route", name),
                    "fit_seconds": round(fit_seconds, 1),
                    "posterior_seconds": round(post_seconds, 1),
                }
            )
            print(pd.DataFrame(rows[-1:]).to_string(header=len(rows) == 1), flush=True)
        if name == "auto":
            print(method.table.to_string(), flush=True)
    table = pd.DataFrame(rows)
    if "auto" in seconds and "ssm-abc" in seconds:
        table["auto_cost_vs_ssm_abc"] = seconds["auto"] / seconds["ssm-abc"]
    return table


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--methods", nargs="+", default=["auto", "ssm-abc", "nce"])
    parser.add_argument("--simulations", type=int, default=10_000)
    parser.add_argument("--observations", type=int, nargs="+", default=[100, 101])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tables = [
        run(p, args.methods, args.simulations, args.observations, args.seed) for p in args.problems
    ]
    table = pd.concat(tables, ignore_index=True)
    print()
    print(table.pivot_table(index=["problem", "observation"], columns="method", values="c2st"))
    if "auto_cost_vs_ssm_abc" in table:
        print(table.groupby("problem")["auto_cost_vs_ssm_abc"].first().round(2).to_string())
    return table


if __name__ == "__main__":
    main()
