r"""Training long enough on small budgets: the default schedule, stretched to
``TrainConfig.min_steps`` optimiser steps, against the schedule counted in epochs alone.

For each problem (``scripts/bench_generic.py``'s: ``two_moons``, ``ar2``, ``ma2``, ``counts``,
``flat``, ``slcp``, ...) the budget's pairs are simulated once (seed 0) and, for each fit seed,
``ssm-abc`` (its ABC posterior and the exchange posterior of the same fit) and ``nce`` are
fitted twice: with ``training={"epochs": 200}`` (the schedule before ``min_steps``: 200 epochs,
patience 20, learning rate times 0.99 per epoch) and with the defaults (at 10³ simulations:
800 training rows in 4 batches, stretched to 1,500 epochs, patience 150). Each posterior's
C2ST to the reference is averaged over the first ``--observations`` observations; the table
shows, per problem and route, the mean over seeds for both schedules and the epochs run.

    python scripts/check_min_steps.py --problems two_moons ar2 ma2 counts --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_generic as bg  # noqa: E402

import ebm_lfi as el  # noqa: E402
from ebm_lfi.methods.energy_methods import EnergyExchange  # noqa: E402

SCHEDULES = {"epochs=200": {"epochs": 200}, "default": {}}


def run(problem_name: str, budget: int, seeds: list[int], observations: int) -> list[dict]:
    problem = bg.load_problem(problem_name)
    obs = [problem.observation(i) for i in range(observations)]
    theta, x = el.simulate(problem.simulator, problem.prior, budget, seed=0)
    rows = []
    for seed in seeds:
        for schedule, training in SCHEDULES.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                ssm = el.methods.get("ssm-abc", prior=problem.prior, training=training)
                ssm.fit(theta, x, seed=seed)
                ssm_seconds = time.perf_counter() - start
                start = time.perf_counter()
                nce = el.methods.get("nce", prior=problem.prior, training=training)
                nce.fit(theta, x, seed=seed)
                nce_seconds = time.perf_counter() - start
            routes = {
                "ssm-abc": (ssm, ssm_seconds),
                "ssm-exchange": (EnergyExchange.from_fitted(ssm), ssm_seconds),
                "nce": (nce, nce_seconds),
            }
            for route, (method, seconds) in routes.items():
                c2st = [
                    bg.posterior_row(method, x_o, ref, int(label))["c2st"]
                    for label, x_o, ref in obs
                ]
                fit = method.fit_stage
                row = {
                    "problem": problem_name,
                    "budget": budget,
                    "seed": seed,
                    "schedule": schedule,
                    "route": route,
                    "c2st": sum(c2st) / len(c2st),
                    "epochs": len(fit.history),
                    "fit_seconds": seconds,
                }
                print(row, flush=True)
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["two_moons", "ar2", "ma2", "counts"])
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--observations", type=int, default=2)
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in args.problems:
        rows += run(name, args.budget, args.seeds, args.observations)
    frame = pd.DataFrame(rows)
    if args.csv is not None:
        frame.to_csv(args.csv, index=False)
    table = frame.pivot_table(
        index=["problem", "route"], columns="schedule", values=["c2st", "epochs"], aggfunc="mean"
    )
    print(f"\nmean over seeds {args.seeds}, {args.observations} observations, {args.budget} pairs")
    print(table.round(3).to_markdown())


if __name__ == "__main__":
    main()
