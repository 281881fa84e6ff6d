"""Score matching as ABC at any tolerance: one denoising fit, the ABC posterior at several.

Data: m = 10 draws N(mu, 1), mu ~ Uniform(-5, 5). Denoising score matching with noise sigma fits
the ABC likelihood with a Gaussian kernel of bandwidth sigma (on the standardised data); trained
over sigma in [0.05, 1], one fit gives every tolerance, and ``posterior(x_o, tolerance=sigma)``
samples it by exchange MCMC, without rejecting anything. Here that ABC posterior is known in
closed form, N(mean(x_o), (1 + (a sigma)^2) / m) with a the standardisation scale, and the figure
draws each sampled posterior over it.

    python examples/abc_tolerance.py --out outputs/abc_tolerance
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import ebm_lfi as el  # noqa: E402

M = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/abc_tolerance")
    parser.add_argument("--num-simulations", type=int, default=20_000)
    parser.add_argument("--tolerances", type=float, nargs="+", default=[0.05, 0.2, 0.5, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    prior = el.BoxUniform(torch.tensor([-5.0]), torch.tensor([5.0]))
    g = torch.Generator().manual_seed(args.seed)
    theta = torch.rand(args.num_simulations, 1, generator=g, dtype=torch.float64) * 10 - 5
    x = theta + torch.randn(args.num_simulations, M, generator=g, dtype=torch.float64)
    method = el.methods.get(
        "dsm-exchange",
        prior=prior,
        structure="iid",
        num_statistics=2,
        network={"embedding": 0},
        training={"epochs": 100},
        exchange={"check_inner": 0},
    ).fit(theta, x, seed=args.seed)
    x_o = torch.tensor([0.3, -0.5, 1.2, 0.8, 0.1, 1.1, -0.2, 0.4, 0.9, 0.0], dtype=torch.float64)
    scale = float(method.model.x_transform.standardize.std.reshape(-1)[0])

    fig, axes = plt.subplots(1, len(args.tolerances), figsize=(3.2 * len(args.tolerances), 2.8))
    print(f"{'tolerance':>9} {'sd sampled':>10} {'sd exact':>8} {'W2':>6} {'R-hat':>6}")
    for ax, tol in zip(axes, args.tolerances):
        post = method.posterior(x_o, 4000, seed=args.seed + 1, tolerance=tol)
        sd = math.sqrt((1 + (scale * tol) ** 2) / M)
        exact = x_o.mean() + sd * torch.randn(4000, 1, generator=g, dtype=torch.float64)
        w2 = el.metrics.wasserstein2(post.samples, exact)
        rhat = max(post.diagnostics["rhat"])
        print(f"{tol:>9.2f} {float(post.samples.std()):>10.3f} {sd:>8.3f} {w2:>6.3f} {rhat:>6.3f}")
        grid = torch.linspace(float(x_o.mean()) - 4 * sd, float(x_o.mean()) + 4 * sd, 200)
        density = torch.exp(-0.5 * ((grid - x_o.mean()) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
        ax.hist(post.samples[:, 0].numpy(), bins=40, density=True, alpha=0.5, label="sampled")
        ax.plot(grid.numpy(), density.numpy(), "k", lw=1.2, label="closed form")
        ax.set_title(f"tolerance {tol:g}: W2 {w2:.3f}", fontsize=9)
        ax.set_xlabel("mu")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tolerances.png", dpi=120)
    print(f"wrote {out / 'tolerances.png'}")


if __name__ == "__main__":
    main()
