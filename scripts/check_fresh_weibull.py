r"""A second simulator none of the defaults were tuned on: 20 Weibull lifetimes.

:math:`\theta = (k, \lambda) \sim U([0.5, 3] \times [0.5, 2])`, :math:`x_j = \lambda\, W_j`,
:math:`W_j` Weibull of shape :math:`k`, :math:`j = 1..20`, returned as a vector of 20 positive
numbers. The exact posterior is computed on a 400 × 400 grid of :math:`(k, \lambda)` (the
likelihood :math:`\prod_j \frac{k}{\lambda} (x_j/\lambda)^{k-1} e^{-(x_j/\lambda)^k}`) and drawn
with uniform jitter inside the cells. For each budget, ``auto`` (``el.methods.get("auto")``)
and ``nce`` are fitted on the same pairs (seed 0), once with the defaults and once with
``training={"epochs": 200}`` (the schedule before ``TrainConfig.min_steps``), and their
posteriors (1,000 draws) scored by C2ST on observations simulated with seeds 100 and 101::

    python scripts/check_fresh_weibull.py --budgets 1000 10000
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

import ebm_lfi as el

PRIOR = el.BoxUniform([0.5, 0.5], [3.0, 2.0])
DRAWS = 20
SCHEDULES = {"default": None, "epochs=200": {"epochs": 200}}


def simulator(theta, rng):
    """20 lifetimes, Weibull of shape ``theta[0]`` and scale ``theta[1]``."""
    shape, scale = float(theta[0]), float(theta[1])
    return scale * rng.weibull(shape, size=DRAWS)


def exact_posterior(x_o: np.ndarray, num_samples: int, seed: int) -> torch.Tensor:
    """Draws of the posterior of ``x_o`` from a 400 × 400 grid over the prior box."""
    ks = np.linspace(0.5, 3.0, 400)
    ls = np.linspace(0.5, 2.0, 400)
    k, lam = np.meshgrid(ks, ls, indexing="ij")
    x = np.asarray(x_o, dtype=np.float64)
    log_lik = (
        DRAWS * np.log(k)
        - DRAWS * k * np.log(lam)
        + (k - 1) * np.log(x).sum()
        - ((x[None, None, :] / lam[..., None]) ** k[..., None]).sum(-1)
    )
    p = np.exp(log_lik - log_lik.max()).ravel()
    rng = np.random.default_rng(seed)
    idx = rng.choice(p.size, size=num_samples, p=p / p.sum())
    dk, dl = ks[1] - ks[0], ls[1] - ls[0]
    draws = np.stack(
        [
            k.ravel()[idx] + rng.uniform(-dk / 2, dk / 2, num_samples),
            lam.ravel()[idx] + rng.uniform(-dl / 2, dl / 2, num_samples),
        ],
        axis=1,
    )
    return torch.as_tensor(draws)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", nargs="+", type=int, default=[1_000, 10_000])
    parser.add_argument("--methods", nargs="+", default=["auto", "nce"])
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    observations = []
    for seed in (100, 101):
        _, x_o = el.simulate(simulator, PRIOR, 1, seed=seed)
        observations.append((x_o[0], exact_posterior(x_o[0].numpy(), 2_000, seed)))
    print("budget  schedule    method  chose                  fit s   C2ST (obs 100, 101)  mean")
    for budget in args.budgets:
        theta, x = el.simulate(simulator, PRIOR, budget, seed=0)
        for schedule in args.schedules:
            for name in args.methods:
                options = {} if SCHEDULES[schedule] is None else {"training": SCHEDULES[schedule]}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    start = time.perf_counter()
                    method = el.methods.get(name, prior=PRIOR, **options).fit(theta, x, seed=0)
                    seconds = time.perf_counter() - start
                    scores = []
                    for x_o, reference in observations:
                        post = method.posterior(x_o, 1_000, seed=0)
                        draws = (
                            post.sample(1_000, seed=0) if post.weights is not None else post.samples
                        )
                        scores.append(el.metrics.c2st(draws.double(), reference.double(), seed=0))
                chose = getattr(method, "chosen", "") or ""
                print(
                    f"{budget:6d}  {schedule:10s}  {name:6s}  {chose:21s}  {seconds:5.0f}   "
                    f"{scores[0]:.3f} / {scores[1]:.3f}        {np.mean(scores):.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
