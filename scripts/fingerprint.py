r"""Fingerprints of seeded results: every registered method, fitted and sampled with fixed seeds
on small benchmark problems, plus ``el.infer`` and an SMC-ABC run.

Refactors that move code must not change a seeded number. Run this before and after and compare::

    python scripts/fingerprint.py --save before.json          # on the old tree
    python scripts/fingerprint.py --compare before.json       # on the new tree

Each row is the SHA-256 of the posterior samples (and weights) as float64 bytes, with their mean
for a readable check. Only the public top-level API is used, so the script runs on any layout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

import numpy as np
import torch

import ebm_lfi as el

FAST = {"training": {"epochs": 3, "patience": None}}
SELECT = {"selection": {"epochs": 1, "train_size": 300, "validation_size": 300}}
ABC = {"abc": {"num_reference": 3000}}
EXCHANGE = {"exchange": {"num_chains": 4, "burn_in": 20, "check_inner": 0}}
POTENTIAL = {"mcmc": {"num_chains": 4, "burn_in": 30}}


def cases() -> list[tuple[str, str, str, dict]]:
    """(label, task, method, options) for every registered method and a few paths beside."""
    rows = []
    for task in ("ma2", "gaussian"):
        for name in ("sm-abc", "ssm-abc", "dsm-abc", "nce-abc", "cnce-abc"):
            rows.append((f"{task}/{name}", task, name, {**FAST, **ABC, "num_statistics": 2}))
        for name in ("sm-exchange", "ssm-exchange", "dsm-exchange"):
            opts = {**FAST, **EXCHANGE, "num_statistics": 2}
            rows.append((f"{task}/{name}", task, name, opts))
        rows.append((f"{task}/nce", task, "nce", {**FAST, **POTENTIAL, "num_statistics": 2}))
        rows.append((f"{task}/fp-abc", task, "fp-abc", {**FAST, **ABC}))
        rows.append((f"{task}/rejection-abc", task, "rejection-abc", dict(ABC)))
    rows.append(("ma2/ssm-abc auto", "ma2", "ssm-abc", {**FAST, **ABC, **SELECT}))
    rows.append(("gaussian/ssm-abc auto", "gaussian", "ssm-abc", {**FAST, **ABC, **SELECT}))
    smc = {"abc": {"sampler": "smc", "num_particles": 200, "max_simulations": 3000}}
    rows.append(("ma2/ssm-abc smc", "ma2", "ssm-abc", {**FAST, **smc, "num_statistics": 2}))
    return rows


def digest(post) -> tuple[str, float]:
    h = hashlib.sha256()
    samples = np.asarray(post.samples, dtype=np.float64)
    h.update(samples.tobytes())
    if post.weights is not None:
        h.update(np.asarray(post.weights, dtype=np.float64).tobytes())
    return h.hexdigest()[:16], float(samples.mean())


def run(selected: str | None) -> dict[str, list]:
    torch.set_num_threads(1)
    out: dict[str, list] = {}
    for label, task_name, name, options in cases():
        if selected and selected not in label:
            continue
        start = time.perf_counter()
        task = el.benchmarks.get(task_name)
        theta, x = el.simulate(task.simulator, task.prior, 1500, seed=1)
        method = el.methods.get(name, prior=task.prior, simulator=task.simulator, **options)
        method.fit(theta, x, seed=2)
        post = method.posterior(task.observation(0), num_samples=200, seed=3)
        out[label] = list(digest(post))
        print(
            f"{label:28s} {out[label][0]}  mean {out[label][1]:+.6f}  "
            f"({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    if not selected or "infer" in selected:
        task = el.benchmarks.get("ma2")
        post = el.infer(
            task.simulator,
            task.prior,
            task.observation(1),
            method="ssm-abc",
            num_simulations=4500,  # the total: 1500 to train, 3000 for the explicit table
            seed=4,
            num_statistics=2,
            **FAST,
            **ABC,
        )
        out["ma2/infer"] = list(digest(post))
        print(f"{'ma2/infer':28s} {out['ma2/infer'][0]}", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--save", help="write the fingerprints to this JSON file")
    parser.add_argument("--compare", help="compare with the fingerprints in this JSON file")
    parser.add_argument("--only", help="run the cases whose label contains this string")
    args = parser.parse_args()
    result = run(args.only)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(result, f, indent=1)
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
        changed = [k for k in result if k in before and before[k][0] != result[k][0]]
        print(f"\n{len(result) - len(changed)} of {len(result)} identical; changed: {changed}")
        return 1 if changed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
