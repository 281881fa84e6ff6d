"""Is the training set a fair ABC reference table? The default ABC table against a fresh one.

By default the ABC stage reads its reference table from the training pairs, on which the
statistics were fitted (so that no simulation is spent beyond the user's budget). If the fit
memorised them, their statistics would sit closer to their own parameters than fresh data's do,
and the ABC posterior would come out too narrow. This script fits ``ssm-abc`` on N simulations
of a benchmark task, then draws the posterior of a few stored observations twice, from the
training pairs and from N fresh simulations, and prints C2ST and W2 to the reference posterior
and the posterior sd over the reference sd.

    python scripts/check_reference_table.py --task gaussian --simulations 10000

Measured (10^4 simulations, observations 0-2; C2ST training table / fresh table): gaussian
0.599 / 0.580, 0.562 / 0.575, 0.565 / 0.578; ma2 0.863 / 0.873, 0.843 / 0.845, 0.797 / 0.792,
with the same widths: no sign of memorisation (early stopping on held-out pairs).
"""

from __future__ import annotations

import argparse
import time

import torch

import ebm_lfi as el


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="gaussian")
    parser.add_argument("--simulations", type=int, default=10_000)
    parser.add_argument("--observations", default="0,1,2", help="comma-separated indices")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = el.benchmarks.get(args.task)
    theta, x = el.simulate(task.simulator, task.prior, args.simulations, seed=args.seed)
    start = time.perf_counter()
    method = el.methods.get("ssm-abc", prior=task.prior).fit(theta, x, seed=args.seed + 1)
    print(f"fit {time.perf_counter() - start:.0f} s, {method.diagnostics['structure']}")
    theta_f, x_f = el.simulate(task.simulator, task.prior, args.simulations, seed=args.seed + 2)
    stage = method.posterior_stage
    tables = {"training": stage.table, "fresh": (theta_f, method.statistics(x_f))}
    print(f"{'obs':>4} {'table':>9} {'C2ST':>6} {'W2':>7}  sd / reference sd")
    for i in (int(v) for v in args.observations.split(",")):
        reference = task.reference_posterior(i).double()
        for name, table in tables.items():
            stage.table = table
            post = method.posterior(task.observation(i), 1_000, seed=args.seed + 3)
            samples = post.samples.double()
            c2st = el.metrics.c2st(samples, reference[:1_000], seed=0)
            w2 = el.metrics.wasserstein2(samples, reference)
            ratio = ", ".join(f"{v:.2f}" for v in (samples.std(0) / reference.std(0)).tolist())
            print(f"{i:>4} {name:>9} {c2st:>6.3f} {w2:>7.4f}  [{ratio}]")


if __name__ == "__main__":
    main()
