r"""pyabc's ABC-SMC with three summary statistics, at the same population and simulation budget.

For each task and observation, ``pyabc.ABCSMC`` runs with the task's prior
(:class:`~ebm_lfi.integrations.pyabc.TorchPrior`) and simulator
(:class:`~ebm_lfi.integrations.pyabc.SimulatorModel`) and a Euclidean ``PNormDistance`` on

* ``ebm``: our statistics, :class:`~ebm_lfi.integrations.pyabc.EBMSumstat` of an ``ssm-abc``
  fit on a pilot of prior-predictive simulations (``--pilot`` of the budget; the pilot counts
  in each observation's budget, and its simulation and fit time in each observation's seconds);
* ``mlp``: pyabc's ``PredictorSumstat`` with its ``MLPPredictor`` (regression statistics
  :math:`\hat E[\theta \mid x]`), fitted at the generations ``--mlp-fit-ixs`` (default 0: the
  calibration sample, and 3: all particles of generation 2);
* ``raw``: the raw data.

Budget: each run stops once pyabc's simulation count (calibration included) reaches what is
left of ``--budget``; since pyabc only checks between generations, the posterior is the last
generation whose cumulative count stays within the budget (``simulations`` reports it). The
metric is the 2-Wasserstein distance to the task's reference posterior (``--reference-samples``
of its draws), the median over observations is printed as a table and written to
``<out>/summary.csv`` (per observation: ``<out>/per_observation.csv``).

    python scripts/bench_pyabc.py --tasks ma2 gaussian --observations 3 --population 500 \
        --budget 20000 --seed 0 --out outputs/bench_pyabc
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyabc
import torch

import ebm_lfi as el
from ebm_lfi.integrations.pyabc import EBMSumstat, SimulatorModel, TorchPrior, history_to_posterior

VARIANTS = ("ebm", "mlp", "raw")


def fit_pilot(task, args, seed: int) -> tuple[EBMSumstat, int, float]:
    """An ``ssm-abc`` fit on the pilot simulations: (statistics, simulations, seconds)."""
    start = time.perf_counter()
    num = int(round(args.pilot * args.budget))
    theta, x = el.simulate(task.simulator, task.prior, num, seed=seed)
    structure = task.structure if args.structure == "task" else args.structure
    method = el.methods.get(
        "ssm-abc",
        prior=task.prior,
        structure=structure,
        num_statistics=args.num_statistics,
        x_support=task.x_support,
        training={"epochs": args.epochs, "batch_size": 128},
        abc={"sampler": "smc"},  # pyabc does the ABC: no reference table
    )
    method.fit(theta, x, seed=seed)
    return EBMSumstat(method), num, time.perf_counter() - start


def distance_for(variant: str, ebm: EBMSumstat | None, args) -> pyabc.Distance:
    if variant == "ebm":
        return pyabc.PNormDistance(p=2, sumstat=ebm)
    if variant == "mlp":
        fit_ixs = pyabc.EventIxs(ts=set(args.mlp_fit_ixs))
        sumstat = pyabc.PredictorSumstat(pyabc.MLPPredictor(), fit_ixs=fit_ixs)
        return pyabc.PNormDistance(p=2, sumstat=sumstat)
    return pyabc.PNormDistance(p=2)


def within_budget(history: pyabc.History, budget: int) -> int:
    """The last generation whose cumulative simulation count is within ``budget`` (else 0)."""
    pops = history.get_all_populations().sort_values("t")
    cumulative = pops.samples.cumsum()
    ok = pops.t[(cumulative <= budget) & (pops.t >= 0)]
    return int(ok.max()) if len(ok) else 0


def run_one(task, i: int, variant: str, ebm, pilot: tuple[int, float], args, db: Path) -> dict:
    x_o = task.observation(i, dtype=torch.float64).numpy()
    budget = args.budget - (pilot[0] if variant == "ebm" else 0)
    np.random.seed(args.seed + i)  # noqa: NPY002 - pyabc draws from numpy's global RNG
    start = time.perf_counter()
    abc = pyabc.ABCSMC(
        SimulatorModel(task.simulator, task.parameter_names),
        TorchPrior(task.prior, task.parameter_names),
        distance_for(variant, ebm, args),
        population_size=args.population,
        sampler=pyabc.SingleCoreSampler(),
    )
    db.unlink(missing_ok=True)
    abc.new(f"sqlite:///{db}", {"x": x_o})
    history = abc.run(max_total_nr_simulations=budget, max_nr_populations=args.max_generations)
    seconds = time.perf_counter() - start + (pilot[1] if variant == "ebm" else 0.0)
    t = within_budget(history, budget)
    post = history_to_posterior(db, t=t, parameter_names=task.parameter_names)
    ref = task.reference_posterior(i, dtype=torch.float64)
    ref = ref[torch.randperm(ref.shape[0], generator=torch.Generator().manual_seed(i))]
    ref = ref[: args.reference_samples]
    w2 = el.metrics.wasserstein2(post.samples, ref, post.weights)
    sims = post.diagnostics["simulations"] + (pilot[0] if variant == "ebm" else 0)
    return {
        "task": task.name,
        "variant": variant,
        "obs": i,
        "w2": w2,
        "simulations": sims,
        "generations": t + 1,
        "epsilon": post.diagnostics["epsilon"],
        "ess": post.diagnostics["ess"],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["ma2", "gaussian"])
    parser.add_argument("--observations", type=int, default=3, help="observations per task")
    parser.add_argument("--population", type=int, default=500)
    parser.add_argument("--budget", type=int, default=20_000, help="simulations per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/bench_pyabc")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--pilot", type=float, default=0.25, help="budget share of the pilot")
    parser.add_argument("--epochs", type=int, default=30, help="ssm-abc training epochs")
    parser.add_argument("--structure", default="task", help="'task' (its own), mlp, iid, ...")
    parser.add_argument("--num-statistics", type=int, default=None, help="default: p")
    parser.add_argument("--mlp-fit-ixs", type=int, nargs="+", default=[0, 3])
    parser.add_argument("--max-generations", type=int, default=30)
    parser.add_argument("--reference-samples", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    if not 0 < args.pilot < 1:
        parser.error("--pilot must be in (0, 1)")
    torch.set_num_threads(args.threads)
    logging.getLogger("ABC").setLevel(logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.tasks:
        task = el.benchmarks.get(name)
        ebm, pilot = None, (0, 0.0)
        if "ebm" in args.variants:
            ebm, num, fit_seconds = fit_pilot(task, args, args.seed)
            pilot = (num, fit_seconds)
            print(f"{name}: ssm-abc pilot fit on {num} simulations in {fit_seconds:.1f} s")
        for i in range(args.observations):
            for variant in args.variants:
                row = run_one(task, i, variant, ebm, pilot, args, out / "run.db")
                rows.append(row)
                print(
                    f"{name:>9} {variant:>4} obs {i}: W2 {row['w2']:.3f}, "
                    f"{row['simulations']} simulations, {row['generations']} generations, "
                    f"{row['seconds']:.1f} s",
                    flush=True,
                )
                pd.DataFrame(rows).to_csv(out / "per_observation.csv", index=False)
    table = (
        pd.DataFrame(rows)
        .groupby(["task", "variant"], sort=False)
        .agg(
            w2_median=("w2", "median"),
            simulations=("simulations", "median"),
            generations=("generations", "median"),
            seconds=("seconds", "median"),
            n_obs=("obs", "count"),
        )
        .reset_index()
    )
    table.to_csv(out / "summary.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
