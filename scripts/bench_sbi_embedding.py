"""NPE with our learned statistics as its embedding net, against NPE on the raw series.

At one simulation budget N per task, every variant sees the same N simulations:

* ``npe-raw``: sbi's NPE (default masked autoregressive flow) on the raw series
  (``scripts/sbi_baselines.py``);
* ``npe-frozen``: the same NPE with our ``ssm-abc`` statistics network as a frozen embedding
  net (``ebm_lfi.integrations.sbi.posterior_estimator``), the ssm fit made on the same N;
* ``npe-finetuned``: the same, the embedding fine-tuned by NPE's loss;
* ``ssm-abc``: our own posterior from that fit, rejection ABC with regression adjustment whose
  reference table is the same N simulations (no further simulation).

Reports, per task and variant, the median over observations of the 2-Wasserstein distance to the
reference posterior and the wall time (fits, the ssm fit included for the embedding variants,
plus sampling), prints the table and writes it with the per-observation rows as CSV.

    python scripts/bench_sbi_embedding.py --tasks ma2 ar2 --simulations 10000 --observations 5 \
        --seed 0 --out outputs/bench_sbi_embedding
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import pandas as pd
import torch

import ebm_lfi as el
from ebm_lfi.integrations.sbi import posterior_estimator

sys.path.insert(0, str(Path(__file__).parent))
from sbi_baselines import NPEBaseline  # noqa: E402


class EmbeddedNPE(NPEBaseline):
    """sbi's NPE with our statistics network as embedding net (fit and sampling as NPEBaseline)."""

    def __init__(self, prior, method, *, trainable: bool, name: str):
        super().__init__(prior)
        self.method, self.trainable, self.name = method, trainable, name

    def _trainer(self):
        from sbi.inference import NPE

        builder = posterior_estimator(self.method, "maf", trainable=self.trainable)
        return functools.partial(NPE, density_estimator=builder)


def run_task(name: str, args) -> list[dict]:
    task = el.benchmarks.get(name)
    theta, x = el.simulate(task.simulator, task.prior, args.simulations, seed=args.seed)
    start = time.perf_counter()
    ssm = el.methods.get(
        "ssm-abc",
        prior=task.prior,
        simulator=task.simulator,
        reference=(theta, x),  # the same N simulations serve as the ABC reference table
        x_support=task.x_support,
        training={"epochs": args.epochs, "patience": args.patience},
    ).fit(theta, x, seed=args.seed)
    ssm_seconds = time.perf_counter() - start
    chosen = {k: v for k, v in ssm.diagnostics.items() if k != "selection"}
    print(f"{name}: ssm-abc fit {ssm_seconds:.0f} s, model {chosen}", flush=True)
    variants = {
        "npe-raw": NPEBaseline(task.prior),
        "npe-frozen": EmbeddedNPE(task.prior, ssm, trainable=False, name="npe-frozen"),
        "npe-finetuned": EmbeddedNPE(task.prior, ssm, trainable=True, name="npe-finetuned"),
        "ssm-abc": ssm,
    }
    rows = []
    for variant, method in variants.items():
        if variant not in args.variants:
            continue
        fit_seconds = ssm_seconds  # the embedding variants build on the ssm fit
        if variant != "ssm-abc":
            start = time.perf_counter()
            method.fit(theta, x, seed=args.seed)
            fit_seconds = time.perf_counter() - start + (variant != "npe-raw") * ssm_seconds
        for i in range(args.observations):
            start = time.perf_counter()
            post = method.posterior(task.observation(i), num_samples=args.samples, seed=i)
            seconds = time.perf_counter() - start
            ref = task.reference_posterior(i)
            ref = ref[torch.randperm(ref.shape[0], generator=torch.Generator().manual_seed(i))]
            w2 = el.metrics.wasserstein2(post.samples, ref[: args.samples], post.weights)
            rows.append(
                {
                    "task": name,
                    "variant": variant,
                    "obs": i,
                    "w2": w2,
                    "fit_seconds": fit_seconds,
                    "sample_seconds": seconds,
                    "epochs": post.diagnostics.get("training_epochs"),
                }
            )
            print(f"{name:>5} {variant:>14} obs {i}: W2 {w2:.3f} ({seconds:.1f} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["ma2", "ar2"])
    parser.add_argument(
        "--variants", nargs="+", default=["npe-raw", "npe-frozen", "npe-finetuned", "ssm-abc"]
    )
    parser.add_argument("--simulations", type=int, default=10_000, help="budget N per task")
    parser.add_argument("--observations", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1_000, help="posterior and reference")
    parser.add_argument("--epochs", type=int, default=30, help="score-matching fit")
    parser.add_argument("--patience", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default="outputs/bench_sbi_embedding")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name in args.tasks:
        rows += run_task(name, args)
        pd.DataFrame(rows).to_csv(out / "per_observation.csv", index=False)
    df = pd.DataFrame(rows)
    df["seconds"] = df["fit_seconds"] + df.groupby(["task", "variant"])["sample_seconds"].transform(
        "sum"
    )
    table = (
        df.groupby(["task", "variant"], sort=False)
        .agg(
            median_w2=("w2", "median"),
            seconds=("seconds", "first"),
            epochs=("epochs", "first"),
            n_obs=("obs", "count"),
        )
        .reset_index()
    )
    table.to_csv(out / "summary.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for task_name, group in table.groupby("task", sort=False):
        w2 = dict(zip(group.variant, group.median_w2))
        if "npe-raw" not in w2:
            continue
        for variant in ("npe-frozen", "npe-finetuned"):
            if variant in w2:
                verdict = "beats" if w2[variant] < w2["npe-raw"] else "does not beat"
                print(
                    f"{task_name}: {variant} (median W2 {w2[variant]:.3f}) {verdict} npe-raw "
                    f"({w2['npe-raw']:.3f})"
                )


if __name__ == "__main__":
    main()
