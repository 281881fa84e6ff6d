r"""Cost of training against the data dimension and the number of simulations (issue 19).

Seconds per epoch and peak memory of one training epoch on stochastic Lorenz96 data of shape
:math:`(T, K)`, :math:`d = TK`, for

* ``ssm``: sliced score matching (one Rademacher projection, variance-reduced),
* ``dsm``: denoising score matching (one noise scale),
* ``sm``: exact score matching with the structured Hessian of the ring network
  (:math:`2K` Hessian-vector products per row, so :math:`O(K d)`; run where
  :math:`K d \le` ``--max-exact``),
* ``regression``: the regression statistics of ``fp-abc`` (least squares, an MLP on the
  flattened series),

all the energy losses on :class:`~ebm_lfi.energy.ring_nets.RingMarkovNet` (linear read-out,
window monomials: :math:`O(d)` work per row), plus ``ssm-markov``: sliced SM on the order-one
:class:`~ebm_lfi.energy.pooled_nets.MarkovNet` of :math:`K`-vectors, whose window monomials grow
as :math:`K^2` (shown for contrast). :math:`d` is varied through :math:`K` at fixed :math:`T`
and through :math:`T` at fixed :math:`K`; the number of simulations :math:`n` at fixed size.

Each measurement runs in a fresh process (so that its peak resident memory is its own):
simulate :math:`n` series, build and prepare the model, train ``--epochs`` epochs (no
validation split), and report the fastest epoch after the first (the least disturbed by other
work on the machine) and the process's peak resident set size (on CUDA:
``torch.cuda.max_memory_allocated``). The slope of log(seconds) against log(d), fitted over all
sizes, is printed per loss (1 means linear).

Usage::

    python scripts/bench_cost.py                 # small: n = 512, d from 120 to 4800
    python scripts/bench_cost.py --large         # and the large size on 10^4 simulations
    python scripts/bench_cost.py --num-simulations 2048 --device cuda
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import numpy as np

LOSSES = ("ssm", "dsm", "sm", "regression", "ssm-markov")


def squared_error(model, y, u):
    """The least-squares loss of the regression statistics."""
    return (model(y) - u).square().sum(-1).mean()


def measure(
    loss: str,
    T: int,
    K: int,
    n: int,
    batch: int,
    device: str,
    threads: int,
    seed: int,
    epochs: int,
) -> dict:
    """One measurement, run in a fresh process."""
    import torch

    from ebm_lfi.benchmarks.lorenz96 import Lorenz96Simulator
    from ebm_lfi.energy.model import ExpFamEBM
    from ebm_lfi.losses.score_matching import (
        DenoisingScoreMatching,
        ScoreMatching,
        SlicedScoreMatching,
    )
    from ebm_lfi.methods.baselines import PosteriorMeanRegressor
    from ebm_lfi.training.loop import train

    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    low, high = np.array([1.4, 0.0, 1.5, 0.0]), np.array([2.2, 1.0, 2.5, 1.0])
    theta_np = low + (high - low) * rng.random((n, 4))
    x_np = Lorenz96Simulator(K, T)(theta_np, [np.random.default_rng([seed, i]) for i in range(n)])
    theta = torch.as_tensor(theta_np, dtype=torch.float32)
    x = torch.as_tensor(x_np, dtype=torch.float32)
    torch.manual_seed(seed)
    if loss == "regression":
        model = PosteriorMeanRegressor((T, K), 4, "mlp")
        model.x_transform.fit(x)
        model.theta_transform.fit(theta)
        data, objective = (model.x_transform(x), model.theta_transform(theta)), squared_error
    else:
        structure = "markov" if loss == "ssm-markov" else "ring"
        model = ExpFamEBM.default((T, K), 4, 8, structure=structure).prepare(theta, x)
        objective = {
            "ssm": SlicedScoreMatching(),
            "ssm-markov": SlicedScoreMatching(),
            "dsm": DenoisingScoreMatching(0.1),
            "sm": ScoreMatching(),
        }[loss]
        data = (model.transform_x(x), theta)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    config = {
        "epochs": epochs,
        "batch_size": batch,
        "validation_fraction": 0.0,
        "patience": None,
        "scheduler": None,
    }
    history = train(model, objective, *data, config=config, seed=seed, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "loss": loss,
        "T": T,
        "K": K,
        "d": T * K,
        "n": n,
        "seconds": float(history["seconds"].iloc[1:].min()),
        "peak_mb": peak,
        "finite": bool(np.isfinite(history["train_loss"]).all()),
    }


def run(jobs: list[tuple], args: argparse.Namespace) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    rows = []
    for job in jobs:
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            row = pool.submit(
                measure, *job, args.batch_size, args.device, args.threads, args.seed, args.epochs
            ).result()
        rows.append(row)
        print(
            f"  {row['loss']:<11} T={row['T']:<4} K={row['K']:<3} d={row['d']:<5} "
            f"n={row['n']:<5} {row['seconds']:8.3f} s/epoch  peak {row['peak_mb']:7.0f} MB",
            flush=True,
        )
    return rows


def slope(rows: list[dict], key: str) -> float:
    x = np.log([r[key] for r in rows])
    y = np.log([r["seconds"] for r in rows])
    return float(np.polyfit(x, y, 1)[0]) if len(set(x)) > 1 else math.nan


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-simulations", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--epochs",
        type=int,
        default=4,
        help="epochs per measurement (the fastest after the first counts)",
    )
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    parser.add_argument(
        "--max-exact",
        type=int,
        default=8000,
        help="exact SM costs 2K Hessian-vector products of size d: run it where K d <= this",
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help="also train the large size (T = 120, K = 40) on 10^4 simulations, SSM and DSM",
    )
    parser.add_argument(
        "--sizes",
        default="30x8,30x16,30x32,15x8,60x8,120x8,120x40",
        help="comma-separated TxK sizes for the sweep in d",
    )
    parser.add_argument(
        "--simulations",
        default="256,512,1024,2048",
        help="comma-separated n for the sweep in the number of simulations (at 45x8)",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but CUDA is not available", file=sys.stderr)
            return 2
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    counts = [int(v) for v in args.simulations.split(",")]
    start = time.perf_counter()
    print(
        f"cost per epoch, n = {args.num_simulations}, batch {args.batch_size}, "
        f"device {args.device}, {args.threads} thread(s); pid {os.getpid()}"
    )
    print("sweep in d = T K:")
    jobs = [
        (loss, T, K, args.num_simulations)
        for loss in args.losses
        for T, K in sizes
        if loss != "sm" or K * T * K <= args.max_exact
    ]
    d_rows = run(jobs, args)
    print("sweep in n (T = 45, K = 8):")
    n_rows = run([("ssm", 45, 8, n) for n in counts] + [("dsm", 45, 8, n) for n in counts], args)
    print("\nlog-log slopes of seconds per epoch (1 = linear):")
    print(f"  {'loss':<11} {'in d (all)':>10} {'in d (T)':>9} {'in d (K)':>9} {'in n':>6}")
    base_K = Counter(K for _, K in sizes).most_common(1)[0][0]
    base_T = Counter(T for T, _ in sizes).most_common(1)[0][0]
    for loss in args.losses:
        rows = [r for r in d_rows if r["loss"] == loss]
        in_t = [r for r in rows if r["K"] == base_K]
        in_k = [r for r in rows if r["T"] == base_T]
        in_n = [r for r in n_rows if r["loss"] == loss]
        print(
            f"  {loss:<11} {slope(rows, 'd'):10.2f} {slope(in_t, 'd'):9.2f} "
            f"{slope(in_k, 'd'):9.2f} {slope(in_n, 'n') if in_n else math.nan:6.2f}"
        )
    if args.large:
        print("large size, n = 10^4:")
        large = argparse.Namespace(**{**vars(args), "epochs": 2})
        d_rows += run([(loss, 120, 40, 10_000) for loss in ("ssm", "dsm")], large)
    largest = [r for r in d_rows if r["d"] == max(r["d"] for r in d_rows)]
    for r in largest:
        print(
            f"largest size d = {r['d']}: {r['loss']} peak {r['peak_mb']:.0f} MB, "
            f"{r['seconds']:.2f} s/epoch for n = {r['n']}"
        )
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
