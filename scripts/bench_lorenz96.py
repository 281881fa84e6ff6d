r"""Lorenz96 benchmark: posterior-predictive energy and kernel scores of ABC on learned vs
regression statistics (issue 19; Pacchiardi & Dutta, 2022, Sec. 6.3).

For each method: one fit on ``--num-simulations`` pairs (seed 0; 20 % held out for early
stopping), then for each of the first ``--num-obs`` stored observations a posterior of 1000
samples by rejection ABC on the training pairs (automatic acceptance, regression adjustment),
``--predictive`` simulations from it, and their energy and kernel scores against the observation
(:func:`ebm_lfi.diagnostics.predictive.predictive_scores`, per time step summed, lower is
better, the kernel bandwidth of the paper). Methods:

* ``ssm-abc``: sliced score matching on the ring network (:math:`k = 8` statistics by default,
  ``--num-statistics``);
* ``ssm-abc-ring-learned``: the same with 16 learned window features (a 32-unit network on each
  window) and an outer network of 64 units;
* ``ssm-abc-markov``: sliced SM on the paper's kind of network, order-one Markov over time on
  :math:`K`-vectors with learned window features and an outer network;
* ``fp-abc``: ABC on the regression statistics :math:`\hat{\mathbb{E}}[\theta \mid x]`
  (Fearnhead & Prangle; an MLP on the flattened series);
* ``prior``: the prior predictive, a yardstick that any informative posterior beats.

Prints one table (median scores over observations, fit and posterior seconds) and, for each
score-matching method, its mean paired difference to ``fp-abc`` (with its standard error) and
the fraction of observations on which it scores lower.

    python scripts/bench_lorenz96.py                              # lorenz96-small, 10 obs
    python scripts/bench_lorenz96.py --num-simulations 10000 --num-obs 20 --epochs 200
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
import torch

import ebm_lfi as el
from ebm_lfi.benchmarks.lorenz96 import KERNEL_BANDWIDTH
from ebm_lfi.diagnostics.predictive import predictive_scores


def make_method(name: str, task, epochs: int, k: int):
    training = {"epochs": epochs, "batch_size": 128}
    if name == "ssm-abc":
        return el.methods.get(
            "ssm-abc", prior=task.prior, structure="ring", num_statistics=k, training=training
        )
    if name == "ssm-abc-ring-learned":
        network = {"embedding": 16, "window_hidden": (32,), "hidden": (64,)}
        return el.methods.get(
            "ssm-abc",
            prior=task.prior,
            structure="ring",
            num_statistics=k,
            network=network,
            training=training,
        )
    if name == "ssm-abc-markov":
        network = {"order": 1, "embedding": 16, "hidden": (64,), "window_hidden": (64,)}
        return el.methods.get(
            "ssm-abc",
            prior=task.prior,
            structure="markov",
            num_statistics=k,
            network=network,
            training=training,
        )
    if name == "fp-abc":
        return el.methods.get("fp-abc", prior=task.prior, training=training)
    raise ValueError(name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="lorenz96-small")
    parser.add_argument("--num-simulations", type=int, default=4000)
    parser.add_argument("--num-obs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--predictive", type=int, default=200)
    parser.add_argument(
        "--methods", nargs="+", default=["ssm-abc", "ssm-abc-markov", "fp-abc", "prior"]
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", default=None, help="write the per-observation scores here")
    parser.add_argument(
        "--num-statistics", type=int, default=None, help="k of the energy fits (default 2p = 8)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = el.benchmarks.get(args.task)
    bandwidth = KERNEL_BANDWIDTH[task.name]
    start = time.perf_counter()
    theta, x = el.simulate(task.simulator, task.prior, args.num_simulations, seed=0)
    theta, x = theta.float(), x.float()
    print(
        f"{task.name}: x {task.x_shape}, {args.num_simulations} training simulations in "
        f"{time.perf_counter() - start:.1f} s; {args.num_obs} observations, "
        f"{args.predictive} predictive simulations each, kernel bandwidth {bandwidth}",
        flush=True,
    )
    rows, per_obs = [], {}
    for name in args.methods:
        fit_seconds, post_seconds, energy, kernel = 0.0, [], [], []
        if name != "prior":
            method = make_method(name, task, args.epochs, args.num_statistics or 2 * task.dim)
            t0 = time.perf_counter()
            method.fit(theta, x, seed=0)
            fit_seconds = time.perf_counter() - t0
        for i in range(args.num_obs):
            x_o = task.observation(i)
            t0 = time.perf_counter()
            if name == "prior":
                post = el.Posterior(task.prior.sample((1000,)))
            else:
                post = method.posterior(x_o, num_samples=1000, seed=i)
            post_seconds.append(time.perf_counter() - t0)
            s = predictive_scores(
                post,
                task.simulator,
                x_o,
                bandwidth=bandwidth,
                num_simulations=args.predictive,
                seed=1000 + i,
            )
            energy.append(s.energy)
            kernel.append(s.kernel)
        per_obs[name] = (np.array(energy), np.array(kernel))
        rows.append(
            {
                "method": name,
                "energy (median)": float(np.median(energy)),
                "kernel (median)": float(np.median(kernel)),
                "fit s": round(fit_seconds, 1),
                "posterior s (median)": round(float(np.median(post_seconds)), 2),
            }
        )
        print(
            f"  {name}: energy {rows[-1]['energy (median)']:.1f}, kernel "
            f"{rows[-1]['kernel (median)']:.2f}, fit {fit_seconds:.0f} s",
            flush=True,
        )
    table = pd.DataFrame(rows).set_index("method")
    with pd.option_context(
        "display.width", 120, "display.max_columns", None, "display.float_format", "{:.3f}".format
    ):
        print(table)
    for name in [m for m in per_obs if m.startswith("ssm") and "fp-abc" in per_obs]:
        for j, score in enumerate(("energy", "kernel")):
            diff = per_obs[name][j] - per_obs["fp-abc"][j]
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.nan
            print(
                f"{name} - fp-abc ({score}): mean paired difference {diff.mean():+.2f} "
                f"(se {se:.2f}); lower on {np.mean(diff < 0):.0%} of observations"
            )
    if args.csv:
        frame = pd.DataFrame(
            {
                f"{name} {score}": values[j]
                for name, values in per_obs.items()
                for j, score in enumerate(("energy", "kernel"))
            }
        )
        frame.index.name = "observation"
        frame.to_csv(args.csv)
        print(f"per-observation scores written to {args.csv}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
