r"""What each training criterion costs in efficiency, on an exact exponential family.

The family: :math:`x \mid \theta \sim \mathcal N(\theta, 1)`, :math:`\theta \sim U(-2, 2)`,
written (after the data and parameter standardisation of :class:`~ebm_lfi.ExpFamEBM`) as
:math:`\log p(y \mid t) = \eta(t)^\top s(y) - \log Z` with fixed statistics
:math:`s(y) = (y, y^2)` and linear natural parameters :math:`\eta(t) = W t + b` to learn, so
that each criterion estimates the same four numbers. Only the :math:`\theta`-dependent part
:math:`W = (W_1, W_2)` is identified by every criterion (NCE's ratio absorbs :math:`b` in its
:math:`\theta`-free term); the truth is :math:`W_1 = s_\theta s_x`, :math:`W_2 = 0`.

For each budget and seed, fresh pairs are simulated and each criterion fits :math:`W, b`
from the same start with the same optimiser: exact score matching (SM), sliced (SSM),
denoising at a fixed noise :math:`\sigma = 0.1` of the standardised data (DSM: it fits the
smoothed density, so :math:`W` is biased toward the smoothed family's), NCE (ratio with
shuffled parameters), conditional NCE, and maximum likelihood with MCMC negatives (ML). The
exact maximum-likelihood estimate (Newton's method on the known log-normaliser) is the
reference: its spread is the Cramér–Rao floor. The table gives, per criterion, the bias and
the standard deviation over seeds of :math:`W_1` and :math:`W_2` and their RMSE relative to
the exact MLE's (efficiency = (RMSE_MLE / RMSE)^2).

    python scripts/bench_efficiency.py                          # 1000 and 4000 pairs, 8 seeds
    python scripts/bench_efficiency.py --budgets 1000 --seeds 4 --figure docs/efficiency.png
"""

from __future__ import annotations

import argparse
import math
import time

import pandas as pd
import torch
from torch import nn

from ebm_lfi.energy.mlp import MLP
from ebm_lfi.energy.model import ExpFamEBM
from ebm_lfi.losses.maximum_likelihood import MaximumLikelihood
from ebm_lfi.losses.nce import NCE, ConditionalNCE
from ebm_lfi.losses.score_matching import (
    DenoisingScoreMatching,
    ScoreMatching,
    SlicedScoreMatching,
)
from ebm_lfi.samplers.mcmc.model_chains import ModelChains
from ebm_lfi.training.loop import train

DT = torch.float64
CRITERIA = ("SM", "SSM", "DSM", "NCE", "CNCE", "ML")


class Quadratic(nn.Module):
    """s(y) = (y, y^2), b(y) = 0."""

    def forward(self, y):
        return torch.cat([y, y**2, torch.zeros_like(y)], 1)


class Linear(nn.Module):
    """eta(t) = W t + b, and a head c(t) for the ratio criteria."""

    def __init__(self):
        super().__init__()
        self.eta = nn.Linear(1, 2)
        self.c = MLP(1, 1, (16,), "silu")
        with torch.no_grad():
            self.eta.weight.zero_()
            self.eta.bias.copy_(torch.tensor([0.0, -0.5]))

    def forward(self, t):
        return torch.cat([self.eta(t), self.c(t)], 1)


def log_normalizer(eta):
    e1, e2 = eta[:, 0], eta[:, 1]
    return -(e1**2) / (4 * e2) + 0.5 * torch.log(math.pi / -e2)


def exact_mle(y, t):
    def nll(w):
        eta = torch.stack([w[0] * t + w[1], w[2] * t + w[3]], 1)
        return -(eta[:, 0] * y + eta[:, 1] * y**2 - log_normalizer(eta)).sum()

    w = torch.tensor([0.0, 0.0, 0.0, -0.5], dtype=DT)
    for _ in range(100):
        g = torch.autograd.functional.jacobian(nll, w)
        step = torch.linalg.solve(torch.autograd.functional.hessian(nll, w), g)
        while w[3] - step[3] >= 0 or (w[2] - step[2]) * t.abs().max() >= -(w[3] - step[3]):
            step = step / 2
        w = w - step
        if step.abs().max() < 1e-12:
            break
    return w


def make_loss(name):
    return {
        "SM": ScoreMatching,
        "SSM": SlicedScoreMatching,
        "DSM": lambda: DenoisingScoreMatching(0.1),
        "NCE": NCE,
        "CNCE": lambda: ConditionalNCE(0.5),
        "ML": lambda: MaximumLikelihood(ModelChains(steps=5)),
    }[name]()


def fit_once(n, seed, criteria, epochs):
    gen = torch.Generator().manual_seed(seed)
    theta = 4 * torch.rand(n, 1, generator=gen, dtype=DT) - 2
    x = theta + torch.randn(n, 1, generator=gen, dtype=DT)
    rows = []
    truth = None
    for name in ("MLE",) + tuple(criteria):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = ExpFamEBM(
                Quadratic(),
                Linear(),
                x_shape=(1,),
                theta_dim=1,
                num_statistics=2,
                tails="none",
                normalizer=True,
                marginal_net=MLP(2, 1, (16,), "silu"),
            ).to(DT)
        model.prepare(theta, x)
        y = model.transform_x(x)
        t = model.theta_transform(theta)[:, 0]
        if truth is None:
            s_x = model.x_transform.standardize.std.item()
            s_t = model.theta_transform.std.item()
            truth = (s_t * s_x, 0.0)
        start = time.perf_counter()
        if name == "MLE":
            w = exact_mle(y[:, 0], t)
            w1, w2 = float(w[0]), float(w[2])
        else:
            data = (y, theta, torch.arange(n)) if name == "ML" else (y, theta)
            config = {"epochs": epochs, "batch_size": 200, "lr": 0.05, "gamma": 0.95}
            config.update(patience=None, validation_fraction=0.0)
            train(model, make_loss(name), *data, config=config, seed=seed)
            lin = model.natural_net.eta
            w1, w2 = (float(v) for v in lin.weight.detach()[:, 0])
        rows.append(
            {
                "n": n,
                "seed": seed,
                "criterion": name,
                "err_W1": w1 - truth[0],
                "err_W2": w2 - truth[1],
                "seconds": time.perf_counter() - start,
            }
        )
    return rows


def summarise(frame):
    out = []
    for (n, name), g in frame.groupby(["n", "criterion"], sort=False):
        row = {"n": n, "criterion": name}
        for k in ("W1", "W2"):
            e = g[f"err_{k}"]
            row[f"bias {k}"] = e.mean()
            row[f"sd {k}"] = e.std()
            row[f"rmse {k}"] = (e**2).mean() ** 0.5
        row["seconds"] = g["seconds"].mean()
        out.append(row)
    table = pd.DataFrame(out)
    for k in ("W1", "W2"):
        ref = table[table.criterion == "MLE"].set_index("n")[f"rmse {k}"]
        table[f"efficiency {k}"] = (table.n.map(ref) / table[f"rmse {k}"]) ** 2
    return table


def figure(frame, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(frame.n.unique())
    fig, axes = plt.subplots(1, len(budgets), figsize=(4.5 * len(budgets), 3.4), squeeze=False)
    names = list(dict.fromkeys(frame.criterion))
    for ax, n in zip(axes[0], budgets):
        sub = frame[frame.n == n]
        ax.boxplot([sub[sub.criterion == c]["err_W1"] for c in names])
        ax.set_xticks(range(1, len(names) + 1), names)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_title(f"{n} pairs: error of W1 over seeds")
        ax.set_ylabel("fitted - true W1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--figure", default=None, help="path of a PNG box plot of the errors")
    args = parser.parse_args(argv)
    rows = []
    for n in args.budgets:
        for seed in range(args.seeds):
            rows += fit_once(n, seed, args.criteria, args.epochs)
    frame = pd.DataFrame(rows)
    table = summarise(frame)
    pd.set_option("display.width", 200)
    print(table.to_markdown(index=False, floatfmt=".3f"))
    if args.figure:
        figure(frame, args.figure)


if __name__ == "__main__":
    main()
