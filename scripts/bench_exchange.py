r"""Run time of exchange MCMC on the product's target case: a neural family on 100-D data.

The family is an MLP exponential family, :math:`\log \tilde p(y \mid \theta) = \eta(\theta)^\top
s(y) - \lVert y \rVert^2 / 2` with :math:`s` and :math:`\eta` small SiLU networks (random
weights, seeded), so the auxiliary draw has no closed form and runs the MALA inner chain. The
sampler runs 100 chains for ``--burn-in`` plus ``--num-samples`` outer steps (30 inner MALA
steps each) on a box prior, on one torch thread, and the script prints the seconds, the outer
acceptance and the effective sample size per parameter. Timings are for comparing runs on one
machine (run it twice, before and after a change), not a promise:

    python scripts/bench_exchange.py
    python scripts/bench_exchange.py --dim 400 --chains 50
"""

from __future__ import annotations

import argparse
import time

import torch

from ebm_lfi.samplers.mcmc.exchange import exchange_mcmc


class NeuralFamily(torch.nn.Module):
    """An exponential family with network statistics and natural parameters."""

    def __init__(self, d: int, p: int, k: int = 4, width: int = 64):
        super().__init__()
        act = torch.nn.SiLU
        self.s = torch.nn.Sequential(
            torch.nn.Linear(d, width), act(), torch.nn.Linear(width, width), act(),
            torch.nn.Linear(width, k),
        )  # fmt: skip
        self.eta = torch.nn.Sequential(torch.nn.Linear(p, width), act(), torch.nn.Linear(width, k))

    def natural_parameters(self, theta):
        return self.eta(theta)

    def statistics_y(self, y):
        return self.s(y)

    def log_unnormalized_y(self, y, theta):
        return (self.eta(theta) * self.s(y)).sum(-1) - 0.5 * (y**2).sum(-1)


def box(theta):
    """Log-density of U[0, 1]^p up to a constant."""
    inside = ((theta >= 0) & (theta <= 1)).all(-1)
    return torch.where(inside, 0.0, -torch.inf)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=100, help="data dimension")
    parser.add_argument("--params", type=int, default=2, help="parameter dimension")
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--burn-in", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    family = NeuralFamily(args.dim, args.params).requires_grad_(False)
    g = torch.Generator().manual_seed(args.seed)
    y_obs = torch.randn(args.dim, generator=g)
    theta0 = torch.rand((args.chains, args.params), generator=g)
    start = time.perf_counter()
    result = exchange_mcmc(
        family,
        box,
        y_obs,
        theta0,
        num_samples=args.num_samples,
        burn_in=args.burn_in,
        seed=args.seed,
    )
    seconds = time.perf_counter() - start
    if not bool(torch.isfinite(result.chains).all()):
        raise SystemExit("non-finite chains")
    print(
        f"neural family d={args.dim}, p={args.params}: {args.chains} chains x "
        f"({args.burn_in} + {args.num_samples}) steps in {seconds:.2f} s on 1 thread; outer "
        f"acceptance {float(result.outer_acceptance.mean()):.3f}; ESS "
        f"{result.ess.round().tolist()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
