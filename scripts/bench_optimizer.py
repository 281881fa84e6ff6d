r"""What the default optimiser's update kernel costs: ``auto`` at 10⁴ simulations with Adam's
batched ``foreach`` update (the default until 0.1, the weights of torch's per-parameter loop to
the last bit) and with its fused kernel (the default since), on the same simulations.

For each problem, observation and update the table gives the CPU seconds of ``el.infer``'s
whole ``auto`` run in this process (one torch thread; the fits, the held-out scoring of every
route and the posterior), the route ``auto`` chose and the C2ST of its draws to the exact
posterior; the last column is the fused run's CPU time over the ``foreach`` one's. The two
updates compute the same formula in a different order, so the fits differ in their last bits
and the posteriors by the noise of training, not by a method.

    python scripts/bench_optimizer.py [--problems counts flat] [--num-simulations 10000]
"""

from __future__ import annotations

import argparse
import functools
import time
import warnings

import torch
from bench_generic import accuracy, draws, load_problem

import ebm_lfi as el
from ebm_lfi.methods.fit import EnergyFit
from ebm_lfi.training.config import adam

UPDATES = {"foreach": functools.partial(adam, foreach=True), "fused": adam}


def run(problem, x_o, reference, update: str, num_simulations: int) -> dict:
    """One ``auto`` run with the given Adam update; its CPU seconds, route and C2ST."""
    method = el.methods.get("auto", prior=problem.prior, training={"optimizer": UPDATES[update]})
    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = el.infer(
            problem.simulator,
            problem.prior,
            x_o,
            method=method,
            num_simulations=num_simulations,
            seed=0,
        )
    seconds = time.process_time() - start
    c2st, _ = accuracy(draws(post), reference)
    return {"seconds": seconds, "route": post.diagnostics["route"], "c2st": c2st}


def run_fits(problem, update: str, num_simulations: int) -> list[dict]:
    """The ``ssm`` and ``nce`` fits of ``auto`` with the given Adam update: CPU seconds and
    epochs of each."""
    theta, x = el.simulate(problem.simulator, problem.prior, num_simulations, seed=0)
    rows = []
    for loss in ("ssm", "nce"):
        fit = EnergyFit(problem.prior, loss=loss, training={"optimizer": UPDATES[update]})
        start = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit.fit(theta, x, seed=0)
        seconds = time.process_time() - start
        rows.append({"loss": loss, "seconds": seconds, "epochs": len(fit.history)})
    return rows


def main_fits(args) -> None:
    print(
        f"{'problem':<8} {'loss':<5} {'update':<8} {'CPU-s':>7} {'epochs':>7} {'fused/foreach':>13}"
    )
    for name in args.problems:
        problem = load_problem(name)
        results = {u: run_fits(problem, u, args.num_simulations) for u in UPDATES}
        for i, loss in enumerate(("ssm", "nce")):
            base = results["foreach"][i]["seconds"]
            for update, rows in results.items():
                r = rows[i]
                ratio = f"{r['seconds'] / base:13.2f}" if update == "fused" else f"{'':>13}"
                print(
                    f"{name:<8} {loss:<5} {update:<8} {r['seconds']:7.1f} {r['epochs']:7d} {ratio}",
                    flush=True,
                )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["counts", "flat"])
    parser.add_argument("--num-simulations", type=int, default=10_000)
    parser.add_argument("--fits", action="store_true", help="time the ssm and nce fits only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.fits:
        main_fits(args)
        return
    print(
        f"{'problem':<8} {'update':<8} {'CPU-s':>7} {'route':<24} {'C2ST':>6} {'fused/foreach':>13}"
    )
    for name in args.problems:
        problem = load_problem(name)
        _, x_o, reference = problem.observation(0)
        results = {u: run(problem, x_o, reference, u, args.num_simulations) for u in UPDATES}
        for update, r in results.items():
            ratio = r["seconds"] / results["foreach"]["seconds"] if update == "fused" else None
            print(
                f"{name:<8} {update:<8} {r['seconds']:7.1f} {r['route']:<24} {r['c2st']:6.3f} "
                + (f"{ratio:13.2f}" if ratio is not None else f"{'':>13}"),
                flush=True,
            )


if __name__ == "__main__":
    main()
