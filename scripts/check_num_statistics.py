r"""Does the smallest number of statistics, :math:`k = p`, cost the score-matching fits?

The model choice (:func:`~ebm_lfi.training.selection.select_model`) tries :math:`k` in
``SelectionConfig.k_factors`` times the number :math:`p` of parameters and keeps the smallest
within two standard errors of the best held-out score-matching loss. That loss is dominated by
the base measure :math:`b(x)` and barely sees whether :math:`\eta(\theta)^\top s(x)` carries
:math:`\theta`; with :math:`k = p` the bilinear coupling may sit at a saddle that a few more
statistics escape (on ``linear``, five coefficients of a regression at 10³ simulations, the
default :math:`k = 5` left the ABC posterior 2.6 times too wide, :math:`k = 10` 1.2 times).

For each problem and budget the same pairs (seed 0) are fitted with ``ssm-abc`` (or the
methods named) under each set of factors, and the posteriors of two observations are scored by
C2ST to the exact or reference posterior; the table gives the chosen :math:`k`, C2ST per
observation and their mean, the posterior sd over the reference's (mean over parameters) and
the regression adjustment's mean :math:`R^2`::

    python scripts/check_num_statistics.py --problems linear regression weibull dose counts \
        flat ar2 ma2 --budgets 1000 10000 --factors 1,2,3 2,3
    python scripts/check_num_statistics.py --problems linear --fixed 5 10 15 --seeds 0 1 2

(``--fixed``: the number of statistics fixed instead of searched; ``--seeds``: seeds of the
fits, the simulations stay those of seed 0.)

Problems: those of ``scripts/check_fresh.py`` and of ``scripts/bench_generic.py`` (the
user problems ``counts`` and ``flat``, the paper's ``ar2`` and ``ma2``; sbibm's tasks if
installed).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import ebm_lfi as el

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_generic  # noqa: E402


def score(method, observed) -> tuple[list[float], list[float], list[float]]:
    """C2ST, sd over the reference's sd (mean over parameters) and mean adjustment R² of the
    posterior of each observation (1,000 draws, resampled where weighted)."""
    scores, ratios, r2 = [], [], []
    for x_o, reference in observed:
        post = method.posterior(x_o, 1_000, seed=0)
        draws = post.sample(1_000, seed=0) if post.weights is not None else post.samples
        draws, reference = draws.double(), reference.double()
        scores.append(el.metrics.c2st(draws, reference, seed=0))
        ratios.append(float((draws.std(0) / reference.std(0)).mean()))
        r2.append(float(np.mean(post.diagnostics.get("adjustment_r2", [np.nan]))))
    return scores, ratios, r2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["linear", "regression"])
    parser.add_argument("--budgets", nargs="+", type=int, default=[1_000])
    parser.add_argument("--methods", nargs="+", default=["ssm-abc"])
    parser.add_argument(
        "--factors", nargs="+", default=["1,2,3", "2,3"], help="k_factors, comma-separated"
    )
    parser.add_argument(
        "--fixed", nargs="+", type=int, default=[], help="fixed k instead of the search"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the fits")
    args = parser.parse_args(argv)
    settings = [("factors", f) for f in args.factors] if not args.fixed else []
    settings += [("k", str(k)) for k in args.fixed]
    torch.set_num_threads(1)
    header = "problem     n      method    seed  setting  k    fit s  C2ST (obs 1, 2)  mean"
    print(header + "   sd ratio  R2")
    for name in args.problems:
        prior, simulator, observed = bench_generic.problem_and_observations(name)
        for budget in args.budgets:
            theta, x = el.simulate(simulator, prior, budget, seed=0)
            for method_name, seed, (kind, value) in itertools.product(
                args.methods, args.seeds, settings
            ):
                if kind == "k":
                    options = {"num_statistics": int(value)}
                else:
                    options = {"selection": {"k_factors": tuple(map(int, value.split(",")))}}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    start = time.process_time()
                    method = el.methods.get(method_name, prior=prior, **options)
                    method.fit(theta, x, seed=seed)
                    seconds = time.process_time() - start
                    scores, ratios, r2 = score(method, observed)
                k = method.fit_stage.diagnostics.get("num_statistics")
                setting = value if kind == "factors" else "k"
                print(
                    f"{name:10s}  {budget:5d}  {method_name:8s}  {seed:4d}  {setting:7s}  "
                    f"{k!s:3s}  {seconds:5.0f}  {scores[0]:.3f} / {scores[1]:.3f}    "
                    f"{np.mean(scores):.3f}  {np.mean(ratios):6.2f}   {np.mean(r2):.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
