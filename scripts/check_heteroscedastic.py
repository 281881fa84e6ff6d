r"""Does the heteroscedastic correction of the ABC regression adjustment help, and at how many
kept table entries? On the ABC routes of one ``auto`` fit (its statistics; the table is its
training pairs), C2ST to the exact posterior of two observations, with the adjustment's
residuals rescaled to their spread at the observation (``ABCConfig(heteroscedastic=True)``,
Blum & François 2010, both regressions linear) and without (the default), at 1, 2 and 4 times
the ``auto_num_accepted`` rate::

    python scripts/check_heteroscedastic.py --problem counts --budget 10000
    python scripts/check_heteroscedastic.py --problem betabinomial --budget 2000

Problems: ``counts`` and ``flat`` (``tests/user_problems.py``, observations of seeds 100 and
101), ``weibull``, ``modes`` and ``betabinomial`` (``scripts/check_fresh.py``). Simulations and
the fit with seed 0, 1,000 draws per posterior.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

import ebm_lfi as el
from ebm_lfi.methods.abc_stage import ABCStage
from ebm_lfi.methods.method import Method
from ebm_lfi.samplers.abc.rejection import auto_num_accepted

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
import bench_generic  # noqa: E402
import check_fresh  # noqa: E402
import user_problems  # noqa: E402

FACTORS = (1, 2, 4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    choices = [*user_problems.PROBLEMS, *check_fresh.PROBLEMS]
    parser.add_argument("--problem", default="counts", choices=choices)
    parser.add_argument("--budget", type=int, default=10_000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    prior, simulator, observations = bench_generic.problem_and_observations(args.problem)
    theta, x = el.simulate(simulator, prior, args.budget, seed=0)
    method = el.methods.get("auto", prior=prior)
    start = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method.fit(theta, x, seed=0)
    print(
        f"{args.problem}, {args.budget} simulations: auto chose {method.chosen} "
        f"({time.process_time() - start:.0f} CPU-s)"
    )
    print(method.table[["route", "score", "se", "num_accepted", "chosen"]].to_string())
    print("\nC2ST (observations 1 / 2, mean)")
    print(f"{'route':18s} {'kept':>5s}   {'adjustment':22s} {'heteroscedastic':22s} change")
    for route, fitted in method.routes.items():
        if not isinstance(fitted.posterior_stage, ABCStage):
            continue
        fit, config = fitted.fit_stage, fitted.posterior_stage.config
        rate = auto_num_accepted(fit.training_data[0].shape[0], theta.shape[1])
        for factor in FACTORS:
            means, cells = [], []
            for heteroscedastic in (False, True):
                stage = ABCStage(
                    replace(config, num_accepted=factor * rate, heteroscedastic=heteroscedastic)
                )
                variant = Method(fit, stage).prepare(seed=0)
                scores = []
                for x_o, reference in observations:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        post = variant.posterior(x_o, 1000, seed=0)
                    scores.append(check_fresh.c2st(post, reference))
                means.append(sum(scores) / len(scores))
                cells.append(f"{scores[0]:.3f} / {scores[1]:.3f}, {means[-1]:.3f}")
            print(
                f"{route:18s} {factor * rate:5d}   {cells[0]:22s} {cells[1]:22s} "
                f"{means[1] - means[0]:+.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
