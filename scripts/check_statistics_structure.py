r"""How much of :math:`\theta` the learned statistics carry, per network structure.

Problem: :math:`\theta \sim U(-3, 3)^2` and :math:`x` = 10 draws of :math:`N(\theta, I_2)`
flattened to 20 numbers (the layout a user gets by stacking draws without saying so). The
sufficient statistics are the two coordinate means :math:`\bar x_1, \bar x_2`; a model of the
right exponential family has :math:`s(x)` affine in them. For each structure and seed, an
``ssm`` energy method is fitted (``EnergyFit.fit``, default training) on ``--simulations``
pairs, and on fresh simulations each mean is regressed linearly on :math:`(s(x), 1)`; the table
gives the :math:`R^2` of both regressions (1 = the statistic is recovered) and the number
:math:`k` of statistics used. The ``reshaped`` row reads the flat data as the draws of the
layout :func:`~ebm_lfi.methods.reshape.choose_layout` picks (as ``auto`` does) with the
exchangeable network.

    python scripts/check_statistics_structure.py --seeds 0 1 --simulations 5000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from ebm_lfi.methods.fit import EnergyFit
from ebm_lfi.methods.reshape import ReshapedFit, candidate_layouts, choose_layout

DRAWS, P = 10, 2
CONFIGS = (
    ("mlp", 2),
    ("mlp", 4),
    ("mlp", 6),
    ("mlp", "auto"),
    ("auto", "auto"),
    ("reshaped", "auto"),
)


def problem(
    n: int, seed: int
) -> tuple[torch.distributions.Distribution, torch.Tensor, torch.Tensor]:
    r"""The prior and ``n`` pairs :math:`(\theta, x)`, ``x`` of shape ``(n, 20)``."""
    prior = torch.distributions.Independent(
        torch.distributions.Uniform(torch.full((P,), -3.0), torch.full((P,), 3.0)), 1
    )
    generator = torch.Generator().manual_seed(seed)
    theta = -3.0 + 6.0 * torch.rand(n, P, generator=generator)
    x = theta[:, None, :] + torch.randn(n, DRAWS, P, generator=generator)
    return prior, theta, x.reshape(n, DRAWS * P)


def r_squared(statistics: np.ndarray, target: np.ndarray) -> float:
    r""":math:`R^2` of the least-squares regression of ``target`` on ``(statistics, 1)``."""
    design = np.c_[statistics, np.ones(len(target))]
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(1.0 - np.mean((design @ coef - target) ** 2) / np.var(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--simulations", type=int, default=5000)
    parser.add_argument("--test", type=int, default=2000, help="fresh simulations for R²")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        prior, theta, x = problem(args.simulations, seed)
        _, _, x_test = problem(args.test, 10_000 + seed)
        means = x_test.reshape(-1, DRAWS, P).mean(dim=1).numpy()
        for structure, k in CONFIGS:
            tick = time.perf_counter()
            if structure == "reshaped":  # the layout auto tries: flat x read as (m, d) draws
                layout, _ = choose_layout(prior, theta, x, candidate_layouts((DRAWS * P,)))
                method = ReshapedFit(EnergyFit(prior, structure="iid", num_statistics=k), layout)
            else:
                method = EnergyFit(prior, structure=structure, num_statistics=k)
            method.fit(theta, x, seed=seed)
            s = method.statistics(x_test).double().numpy()
            chosen = method.diagnostics
            label = chosen["structure"] + (f"({chosen['order']})" if "order" in chosen else "")
            label += f" {tuple(chosen['layout'])}" if "layout" in chosen else ""
            rows.append(
                {
                    "structure": structure,
                    "k": k,
                    "seed": seed,
                    "chosen": f"{label}, k={chosen['num_statistics']}",
                    **{f"R2 mean{j + 1}": r_squared(s, means[:, j]) for j in range(P)},
                    "seconds": time.perf_counter() - tick,
                }
            )
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1))
    table = pd.DataFrame(rows)
    print()
    print(table.to_string(index=False, float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
