"""End-to-end benchmark against Pacchiardi & Dutta (JMLR 2022), printing a table.

For each task: 2x10^4 training simulations (20 % of them held out for early stopping and model
choice), the methods with their *default* options (architecture and number of statistics chosen
by held-out score-matching loss, ABC by rejection on one amortised reference table of 10^5
simulations with the automatic acceptance rule and regression adjustment), exchange MCMC with
the same fits, and two yardsticks in the same run:

* ``true-stats-abc`` (oracle): the same ABC on the true sufficient statistics where the task has
  them (beta, gamma, gaussian, ar2): how much the learned statistics lose;
* ``npe`` / ``nre``: sbi's NPE (default flow) and NRE (NRE-B, slice-sampled) on the raw data,
  same training simulations: what a user would otherwise pick (``scripts/sbi_baselines.py``).

The training families: ``sm``/``ssm``/``dsm`` (score matching; ``dsm`` noise-conditional over
tolerances 0.05-1, ``dsm-exchange`` sampling the ABC posterior at the lowest one by exchange
MCMC), ``nce`` (ratio posterior sampled by MCMC on its potential), ``nce-abc`` and ``cnce-abc``
(ABC on NCE / conditional-NCE statistics). Contrastive fits get ``--epochs-contrastive`` epochs
(their epochs are cheaper and carry less signal each; early stopping applies to all).

Reports, per method, the median over observations of the 2-Wasserstein distance to the reference
posterior, of the RMSE between posterior mean and reference posterior mean, and the wall time per
observation (the fit's time is listed separately: it is paid once for all observations).

    python scripts/bench_paper.py --num-obs 20 --out outputs/bench_paper
    python scripts/bench_paper.py --num-train 10000 --methods nce nre npe  # NCE vs NRE at 10^4
    python scripts/bench_paper.py --tasks ar2 --methods ssm-abc --num-reference 0  # equal budget
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

import ebm_lfi as el
from ebm_lfi.methods import EnergyExchange

sys.path.insert(0, str(Path(__file__).parent))
from sbi_baselines import NPEBaseline, NREBaseline  # noqa: E402

PAPER = {  # medians read off the paper's figures (W2 to the reference posterior)
    "beta": {
        "sm-abc": 0.12,
        "ssm-abc": 0.10,
        "sm-exchange": 0.16,
        "ssm-exchange": 0.13,
        "fp-abc": 0.31,
    },
    "gamma": {
        "sm-abc": 0.14,
        "ssm-abc": 0.13,
        "sm-exchange": 0.17,
        "ssm-exchange": 0.22,
        "fp-abc": 0.20,
    },
    "gaussian": {
        "sm-abc": 0.6,
        "ssm-abc": 0.6,
        "sm-exchange": 1.4,
        "ssm-exchange": 2.2,
        "fp-abc": 3.5,
    },
    "ar2": {
        "sm-abc": 0.04,
        "ssm-abc": 0.03,
        "sm-exchange": 0.12,
        "ssm-exchange": 0.16,
        "fp-abc": 0.02,
    },
    "ma2": {
        "sm-abc": 0.14,
        "ssm-abc": 0.10,
        "sm-exchange": 0.19,
        "ssm-exchange": 0.17,
        "fp-abc": 0.07,
    },
}


def run_task(name: str, args) -> list[dict]:
    task = el.benchmarks.get(name)
    seed = args.seed
    theta, x = el.simulate(task.simulator, task.prior, args.num_train, seed=seed)
    smc = name in args.smc_tasks
    reference = None  # --num-reference 0: the training pairs are the ABC table (equal budget)
    if not smc and args.num_reference > 0:
        reference = el.simulate(task.simulator, task.prior, args.num_reference, seed=seed + 1)
    abc_options = {"sampler": "smc", "max_simulations": args.num_reference} if smc else None
    training = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": 1e-3,
        "patience": args.patience,
    }
    common = dict(
        prior=task.prior,
        simulator=task.simulator,
        reference=reference,
        abc=abc_options,
        num_statistics=args.num_statistics.get(name, "auto"),
        structure=args.structure.get(name, "auto"),
        x_support=task.x_support,
        training=training,
    )
    fits: dict[str, tuple] = {}
    wanted = set(args.methods)

    def fit(row: str, factory, **options) -> None:
        """Fit ``factory(**options)`` on the training set, timed, as ``row``."""
        start = time.perf_counter()
        fits[row] = (factory(**options).fit(theta, x, seed=seed), time.perf_counter() - start)

    contrastive = {**common, "training": {**training, "epochs": args.epochs_contrastive}}
    for loss in ("sm", "ssm", "dsm"):  # the -exchange twin reuses the -abc fit
        if {f"{loss}-abc", f"{loss}-exchange"} & wanted:
            fit(f"{loss}-abc", el.methods.get, name=f"{loss}-abc", **common)
            abc, fit_seconds = fits[f"{loss}-abc"]
            exchange = EnergyExchange.from_fitted(abc, exchange=args.exchange)
            exchange.name = f"{loss}-exchange"
            fits[f"{loss}-exchange"] = (exchange, fit_seconds)
    for name_ in sorted({"nce-abc", "cnce-abc"} & wanted):
        fit(name_, el.methods.get, name=name_, **contrastive)
    if "nce" in wanted:
        options = {k: v for k, v in contrastive.items() if k not in ("reference", "abc")}
        fit("nce", el.methods.get, name="nce", **options)
    if "fp-abc" in wanted:
        options = {k: v for k, v in common.items() if k not in ("num_statistics", "structure")}
        # the regression baseline keeps the networks it was benchmarked with
        options |= {"structure": "iid" if task.structure == "iid" else "mlp"}
        options |= {"network": {"hidden": (64, 64)}}
        fit("fp-abc", el.methods.get, name="fp-abc", **options)
    if "true-stats-abc" in wanted and task.sufficient_statistics(x[:2]) is not None:
        options = dict(prior=task.prior, simulator=task.simulator, reference=reference)
        options |= dict(abc=abc_options, statistics=task.sufficient_statistics)
        fit("true-stats-abc", el.methods.get, name="rejection-abc", **options)
    for name_, baseline in (("npe", NPEBaseline), ("nre", NREBaseline)):
        if name_ in wanted:
            fit(name_, baseline, prior=task.prior)
    for method_name, (method, _) in fits.items():
        diag = getattr(method, "diagnostics", None)
        if isinstance(diag, dict) and "selection" in diag:
            print(f"{name} {method_name}: model choice\n{diag['selection'].to_string()}")

    rows = []
    for method_name, (method, fit_seconds) in fits.items():
        if method_name not in wanted:
            continue
        for i in range(args.num_obs):
            start = time.perf_counter()
            post = method.posterior(task.observation(i), num_samples=1000, seed=i)
            seconds = time.perf_counter() - start
            ref = task.reference_posterior(i)
            ref = ref[torch.randperm(ref.shape[0], generator=torch.Generator().manual_seed(i))]
            ref = ref[: args.reference_samples]
            rows.append(
                {
                    "task": name,
                    "method": method_name,
                    "obs": i,
                    "w2": el.metrics.wasserstein2(post.samples, ref, post.weights),
                    "rmse": el.metrics.posterior_mean_rmse(post.samples, ref, post.weights),
                    "seconds": seconds,
                    "fit_seconds": fit_seconds,
                    "outer_acceptance": post.diagnostics.get("outer_acceptance"),
                    "rhat_max": max(post.diagnostics.get("rhat", [float("nan")])),
                    "epochs": post.diagnostics.get("training_epochs"),
                }
            )
            print(
                f"{name:>8} {method_name:>14} obs {i:>3}: W2 {rows[-1]['w2']:.3f} "
                f"({seconds:.1f} s)",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["beta", "gamma", "gaussian", "ar2", "ma2"])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["ssm-abc", "ssm-exchange", "fp-abc", "true-stats-abc", "npe"],
    )
    parser.add_argument("--num-obs", type=int, default=20)
    parser.add_argument("--num-train", type=int, default=20_000)
    parser.add_argument(
        "--num-reference",
        type=int,
        default=100_000,
        help="simulations of the explicit ABC reference table (the paper's budget); 0: none, "
        "the training pairs are the table (equal total budget)",
    )
    parser.add_argument("--reference-samples", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=30, help="score-matching fits")
    parser.add_argument(
        "--epochs-contrastive",
        type=int,
        default=150,
        help="NCE / CNCE fits (cheaper epochs, weaker signal per epoch; early stopping applies)",
    )
    parser.add_argument("--patience", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--burn-in", type=int, default=200)
    parser.add_argument("--inner-steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/bench_paper")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--smc-tasks",
        nargs="*",
        default=[],
        help="tasks whose ABC runs SMC-ABC (budget --num-reference per observation) instead of "
        "rejection on a reference table",
    )
    parser.add_argument(
        "--structure",
        nargs="*",
        default=[],
        metavar="TASK=S",
        help="fixed statistics network per task (default: 'auto', chosen by held-out loss)",
    )
    parser.add_argument(
        "--num-statistics",
        nargs="*",
        default=[],
        metavar="TASK=K",
        help="number of learned statistics per task (default: 'auto', by held-out loss)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.num_statistics = {k: int(v) for k, v in (a.split("=") for a in args.num_statistics)}
    args.structure = dict(a.split("=") for a in args.structure)
    args.exchange = {
        "num_chains": args.chains,
        "burn_in": args.burn_in,
        "inner_steps": args.inner_steps,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.tasks:
        rows += run_task(name, args)
        pd.DataFrame(rows).to_csv(out / "per_observation.csv", index=False)
    df = pd.DataFrame(rows)
    table = (
        df.groupby(["task", "method"], sort=False)
        .agg(
            w2_median=("w2", "median"),
            rmse_median=("rmse", "median"),
            sec_per_obs=("seconds", "median"),
            fit_sec=("fit_seconds", "first"),
            epochs=("epochs", "first"),
            rhat_max=("rhat_max", "median"),
            n_obs=("obs", "count"),
        )
        .reset_index()
    )
    table["paper_w2"] = [PAPER.get(t, {}).get(m) for t, m in zip(table.task, table.method)]
    table["at_or_below_paper"] = [
        None if pd.isna(p) else bool(w <= p) for w, p in zip(table.w2_median, table.paper_w2)
    ]
    table.to_csv(out / "summary.csv", index=False)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
