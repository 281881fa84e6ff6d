r"""Lorenz96 benchmark: posterior-predictive energy and kernel scores of ABC on learned vs
regression statistics (issue 19; Pacchiardi & Dutta, 2022, Sec. 6.3).

For each method: one fit on ``--num-simulations`` pairs (seed 0; 20 % held out for early
stopping, 10 % for NPE), then for each of the first ``--num-obs`` stored observations a posterior
of 1000 samples (weighted draws of rejection ABC on the training pairs with automatic acceptance
and regression adjustment for the ``*-abc`` methods, MCMC or flow draws otherwise),
``--predictive`` simulations from it, and their energy and kernel scores against the observation
(:func:`ebm_lfi.diagnostics.predictive.predictive_scores`, per time step summed, lower is
better, the kernel bandwidth of the paper). Methods:

* ``ssm-abc``: sliced score matching on the ring network (:math:`k = 8` statistics by default,
  ``--num-statistics``);
* ``ssm-abc-ring-learned``: the same with 16 learned window features (a 32-unit network on each
  window) and an outer network of 64 units;
* ``ssm-abc-markov``: sliced SM on the paper's kind of network, order-one Markov over time on
  :math:`K`-vectors with learned window features and an outer network;
* ``nce``: noise-contrastive estimation of a ratio model with the ring network, posterior by
  MALA on its potential (the library's defaults: 20 chains, 500 warm-up steps);
* ``auto``: the library's default route choice (``el.methods.get("auto")``) given the ring
  network and :math:`k`;
* ``npe``: sbi's NPE (masked autoregressive flow) with a 1-D convolutional embedding over time
  (sites as channels) trained jointly, at most ``--npe-epochs`` epochs (sbi's early stopping,
  20 epochs' patience, otherwise);
* ``fp-abc``: ABC on the regression statistics :math:`\hat{\mathbb{E}}[\theta \mid x]`
  (Fearnhead & Prangle; an MLP on the flattened series);
* ``prior``: the prior predictive, a yardstick that any informative posterior beats.

Prints one table (median scores over observations, fit and posterior seconds, median Kish ESS
of the posterior draws) and, for each method, its mean paired difference to ``fp-abc`` (with its
standard error) and the fraction of observations on which it scores lower.

    python scripts/bench_lorenz96.py                              # lorenz96-small, 10 obs
    python scripts/bench_lorenz96.py --num-simulations 10000 --num-obs 20 --num-statistics 4 \
        --methods ssm-abc fp-abc nce npe auto --csv l96_k4_20obs.csv
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

import ebm_lfi as el
from ebm_lfi.benchmarks.lorenz96 import KERNEL_BANDWIDTH
from ebm_lfi.diagnostics.predictive import predictive_scores

sys.path.insert(0, str(Path(__file__).parent))
from sbi_baselines import NPEBaseline  # noqa: E402


class SeriesEmbedding(nn.Module):
    r"""NPE's embedding of a flattened :math:`(T, K)` series: the :math:`K` sites as channels of
    two 1-D convolutions over time (kernel 5, 32 channels, ReLU), averaged over blocks of time
    down to ``bins`` steps, then a 64-unit layer to ``output_dim`` features."""

    def __init__(self, x_shape: tuple[int, int], output_dim: int = 20, bins: int = 9):
        super().__init__()
        self.x_shape = tuple(x_shape)
        channels = 32
        self.convolutions = nn.Sequential(
            nn.Conv1d(self.x_shape[1], channels, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 5, padding=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(bins),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * bins, 64), nn.ReLU(), nn.Linear(64, output_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        series = x.reshape(x.shape[0], *self.x_shape).transpose(1, 2)  # (n, K, T)
        return self.head(self.convolutions(series))


class SeriesNPE(NPEBaseline):
    """sbi's NPE (masked autoregressive flow) with :class:`SeriesEmbedding` trained jointly,
    at most ``max_epochs`` epochs (sbi's early stopping otherwise)."""

    name = "npe"

    def __init__(self, prior, x_shape, *, max_epochs: int):
        super().__init__(prior, train_options={"max_num_epochs": max_epochs})
        self.x_shape = x_shape

    def _trainer(self):
        from sbi.inference import NPE
        from sbi.neural_nets import posterior_nn

        builder = posterior_nn("maf", embedding_net=SeriesEmbedding(self.x_shape))
        return functools.partial(NPE, density_estimator=builder)


# the library's methods: registry name and options beyond prior, k and training
_LEARNED_WINDOWS = {"embedding": 16, "window_hidden": (32,), "hidden": (64,)}
_MARKOV = {"order": 1, "embedding": 16, "hidden": (64,), "window_hidden": (64,)}
LIBRARY_METHODS = {
    "ssm-abc": ("ssm-abc", {"structure": "ring"}),
    "ssm-abc-ring-learned": ("ssm-abc", {"structure": "ring", "network": _LEARNED_WINDOWS}),
    "ssm-abc-markov": ("ssm-abc", {"structure": "markov", "network": _MARKOV}),
    "nce": ("nce", {"structure": "ring"}),
    "auto": ("auto", {"structure": "ring"}),
    "fp-abc": ("fp-abc", {}),
}


def fit_epochs(method) -> int | None:
    """The epochs an energy fit ran (early stopping or the ``--epochs`` cap); ``None`` for the
    methods without a training history."""
    history = getattr(getattr(method, "fit_stage", None), "history", None)
    return None if history is None else len(history)


def make_method(name: str, task, epochs: int, k: int, npe_epochs: int):
    if name == "npe":
        return SeriesNPE(task.prior, task.x_shape, max_epochs=npe_epochs)
    if name not in LIBRARY_METHODS:
        raise ValueError(
            f"unknown method {name!r}; known: npe, prior, {', '.join(LIBRARY_METHODS)}"
        )
    registered, options = LIBRARY_METHODS[name]
    if registered != "fp-abc":
        options = {**options, "num_statistics": k}
    training = {"epochs": epochs, "batch_size": 128}
    return el.methods.get(registered, prior=task.prior, training=training, **options)


def write_csv(per_obs: dict, path: str) -> None:
    """One row per observation, an energy and a kernel column per method."""
    frame = pd.DataFrame(
        {
            f"{name} {score}": values[j]
            for name, values in per_obs.items()
            for j, score in enumerate(("energy", "kernel"))
        }
    )
    frame.index.name = "observation"
    frame.to_csv(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="lorenz96-small")
    parser.add_argument("--num-simulations", type=int, default=4000)
    parser.add_argument("--num-obs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--npe-epochs", type=int, default=200)
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
        fit_seconds, post_seconds, ess, energy, kernel = 0.0, [], [], [], []
        if name != "prior":
            k = args.num_statistics or 2 * task.dim
            method = make_method(name, task, args.epochs, k, args.npe_epochs)
            t0 = time.perf_counter()
            method.fit(theta, x, seed=0)
            fit_seconds = time.perf_counter() - t0
            if name == "auto":  # the routes it scored and why it chose one
                columns = ["route", "fit", "score", "se", "diff", "diff_se", "chosen", "note"]
                print(method.table[columns].to_string(), flush=True)
        for i in range(args.num_obs):
            x_o = task.observation(i)
            t0 = time.perf_counter()
            if name == "prior":
                post = el.Posterior(task.prior.sample((1000,)))
            else:
                post = method.posterior(x_o, num_samples=1000, seed=i)
            post_seconds.append(time.perf_counter() - t0)
            # weighted (ABC) or equally weighted (MCMC, flow) draws: the scores resample by
            # the weights, and Kish's ESS says how many distinct draws the weights leave
            ess.append(post.effective_sample_size)
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
                "Kish ESS (median)": round(float(np.median(ess))),
                "epochs": None if name == "prior" else fit_epochs(method),
            }
        )
        if name == "auto":
            rows[-1]["method"] = f"auto ({method.chosen})"
        print(
            f"  {name}: energy {rows[-1]['energy (median)']:.1f}, kernel "
            f"{rows[-1]['kernel (median)']:.2f}, fit {fit_seconds:.0f} s",
            flush=True,
        )
        if args.csv:  # after each method, so that an interrupted run keeps what it finished
            write_csv(per_obs, args.csv)
    table = pd.DataFrame(rows).set_index("method")
    with pd.option_context(
        "display.width", 140, "display.max_columns", None, "display.float_format", "{:.3f}".format
    ):
        print(table)
    if "fp-abc" in per_obs:
        for name in [m for m in per_obs if m not in ("fp-abc", "prior")]:
            for j, score in enumerate(("energy", "kernel")):
                diff = per_obs[name][j] - per_obs["fp-abc"][j]
                se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.nan
                print(
                    f"{name} - fp-abc ({score}): mean paired difference {diff.mean():+.2f} "
                    f"(se {se:.2f}); lower on {np.mean(diff < 0):.0%} of observations"
                )
    if args.csv:
        print(f"per-observation scores written to {args.csv}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
