"""Plain against smoothed resampling of the ABC stage, on the same fits and kept samples.

For each problem (``check_fresh.py``'s simulators with exact posteriors: ``dose``, ``weibull``,
``regression``, ...; ``bench_generic.py``'s ``two_moons``, ``counts``, ``flat``, ``ar2``, ...)
and method (``ssm-abc``, ``nce-abc``), one fit with the defaults on the budget's prior
simulations (seed 0), then the posterior of each of two observations drawn twice from the same
kept samples: ``ABCConfig(resample=True)`` (each kept sample repeated, the rule before) and
``resample="smooth"`` (the default: :func:`~ebm_lfi.samplers.abc.smoothing.smoothed_resample`).
C2ST and W2 (1,000 draws) against the exact or reference posterior::

    python scripts/check_smoothing.py --problems dose weibull regression two_moons counts flat

``two_moons`` needs sbibm (``pip install --no-deps sbibm==1.1.0`` plus ``pyro-ppl``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

import ebm_lfi as el

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_generic  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["dose", "weibull", "regression"])
    parser.add_argument("--methods", nargs="+", default=["ssm-abc", "nce-abc"])
    parser.add_argument("--budget", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| problem | method | kept | C2ST repeated | C2ST smoothed | W2 repeated | W2 smoothed |")
    print("|---|---|---|---|---|---|---|")
    for name in args.problems:
        prior, simulator, observed = bench_generic.problem_and_observations(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theta, x = el.simulate(simulator, prior, args.budget, seed=0)
            for method_name in args.methods:
                method = el.methods.get(method_name, prior=prior).fit(theta, x, seed=0)
                cells = {}
                for mode in (True, "smooth"):
                    method.posterior_stage.config = el.methods.ABCConfig(resample=mode)
                    c2st, w2 = [], []
                    for x_o, reference in observed:
                        post = method.posterior(x_o, 1000, seed=0)
                        draws, reference = post.samples.double(), reference.double()
                        c2st.append(el.metrics.c2st(draws, reference, seed=0))
                        w2.append(el.metrics.wasserstein2(draws, reference[:1000]))
                    cells[mode] = (c2st, w2)
                kept = post.diagnostics["num_accepted"]

                def show(values):
                    return " / ".join(f"{v:.3f}" for v in values) + f" ({np.mean(values):.3f})"

                print(
                    f"| {name} | {method_name} | {kept} | {show(cells[True][0])} "
                    f"| {show(cells['smooth'][0])} | {np.mean(cells[True][1]):.3f} "
                    f"| {np.mean(cells['smooth'][1]):.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
