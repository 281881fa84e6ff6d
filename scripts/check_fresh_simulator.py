r"""The defaults on a simulator none of the library's choices were tuned on, against its exact
posterior: 12 draws of a 2-D Gaussian with correlated noise, returned flat as 24 numbers.

:math:`\mu \sim U([-2, 2]^2)`, :math:`x_j = \mu + L \varepsilon_j` with
:math:`L L^\top = \Sigma = \begin{pmatrix} 1 & 0.8 \\ 0.8 & 1 \end{pmatrix}`, :math:`j = 1..12`.
The exact posterior is :math:`N(\bar x, \Sigma / 12)` truncated to the box (drawn by
rejection). Prints C2ST to it for ``el.infer`` with its defaults (``auto``), ``nce`` and sbi's
NPE at the same total budget, per observation, and the route ``auto`` chose::

    python scripts/check_fresh_simulator.py --budgets 1000 10000 --observations 2

sbi is needed for the NPE column (``scripts/sbi_baselines.py``, sbi's defaults; "—" without
sbi).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

import ebm_lfi as el

DRAWS = 12
SIGMA = np.array([[1.0, 0.8], [0.8, 1.0]])
CHOL = np.linalg.cholesky(SIGMA)
PRIOR = el.BoxUniform([-2.0, -2.0], [2.0, 2.0])


def simulator(theta, rng):
    """12 draws of a 2-D Gaussian around ``theta`` with correlated noise, flat: ``(24,)``."""
    mu = np.asarray(theta, dtype=np.float64)
    return (mu + rng.standard_normal((DRAWS, 2)) @ CHOL.T).reshape(-1)


def exact_posterior(x_o, num_samples: int, seed: int) -> torch.Tensor:
    """Draws of :math:`N(\\bar x, \\Sigma / 12)` restricted to the prior box, by rejection."""
    mean = np.asarray(x_o, dtype=np.float64).reshape(DRAWS, 2).mean(0)
    rng = np.random.default_rng(seed)
    out = []
    while sum(len(o) for o in out) < num_samples:
        draws = mean + rng.standard_normal((4 * num_samples, 2)) @ (CHOL.T / np.sqrt(DRAWS))
        out.append(draws[np.all(np.abs(draws) <= 2.0, axis=1)])
    return torch.as_tensor(np.concatenate(out)[:num_samples])


def draws(post, seed: int) -> torch.Tensor:
    """1,000 unweighted draws of a posterior (weighted ones resampled, as the benchmarks do)."""
    return post.sample(1000, seed=seed) if post.weights is not None else post.samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", nargs="+", type=int, default=[1_000, 10_000])
    parser.add_argument("--observations", type=int, default=2)
    args = parser.parse_args()
    print(f"{'n':>6} {'obs':>3} {'auto':>6} {'route':>22} {'nce':>6} {'npe':>6}  seconds")
    for n in args.budgets:
        theta, x = el.simulate(simulator, PRIOR, n, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            auto = el.methods.get("auto", prior=PRIOR).fit(theta, x, seed=0)
            auto_seconds = time.perf_counter() - start
            nce = el.methods.get("nce", prior=PRIOR).fit(theta, x, seed=0)
        columns = ["route", "layout", "score", "diff", "diff_se", "rhat", "note"]
        print(f"auto at n={n}:\n{auto.table[columns].to_string()}", flush=True)
        try:
            from sbi_baselines import NPEBaseline

            npe = NPEBaseline(PRIOR).fit(theta, x, seed=0)
        except ImportError:
            npe = None
        for i in range(args.observations):
            rng = np.random.default_rng(200 + i)  # the true mu and its data, seeded
            x_o = torch.as_tensor(simulator(rng.uniform(-2.0, 2.0, size=2), rng))
            reference = exact_posterior(x_o, 1000, seed=i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                posts = [m.posterior(x_o, 1000, seed=i) for m in (auto, nce, npe) if m]
            scores = [f"{el.metrics.c2st(draws(p, i).double(), reference):.3f}" for p in posts]
            scores += ["—"] * (3 - len(scores))
            print(
                f"{n:>6} {i:>3} {scores[0]:>6} {auto.chosen:>22} {scores[1]:>6} {scores[2]:>6}"
                f"  auto fit {auto_seconds:.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
