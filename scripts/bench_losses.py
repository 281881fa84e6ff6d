r"""Benchmark the score-matching losses: time per training step (forward, backward, Adam).

Compares, on the same :class:`~ebm_lfi.energy.model.ExpFamEBM` and batch:

* exact score matching (:class:`~ebm_lfi.losses.ScoreMatching`, ``torch.func``
  Hessian-vector products ``vmap``-ed over the basis vectors) against two naive
  nested-autograd versions of the same loss:
  ``naive-kxd`` (for each of the :math:`k + 1` network outputs and each of the :math:`d`
  coordinates one backward pass, as in the reference implementation) and ``naive-d`` (one
  backward pass per coordinate of the scalar energy);
* sliced score matching (:class:`~ebm_lfi.losses.SlicedScoreMatching`) against a plain
  regression (MSE of the statistics onto :math:`\theta`) step of the same statistics network.

and, on MA(2)-shaped data (series of length 100, 2,000 series, batches of 500), the cost of one
epoch for each statistics network: the MLP on the whole series, the exchangeable network and the
Markov network of order 2 (both with their default linear read-out), under sliced SM and exact
SM (the structured networks' exact SM uses their banded Hessian; ``generic`` forces the d basis
vectors).

Usage::

    python scripts/bench_losses.py [--dims 10 50 100] [--batch 128] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from ebm_lfi.energy.model import ExpFamEBM
from ebm_lfi.losses import ScoreMatching, SlicedScoreMatching


def naive_kxd_loss(model: ExpFamEBM, y: Tensor, theta: Tensor) -> Tensor:
    """Exact SM with a backward pass per (network output, coordinate) pair."""
    y = y.detach().requires_grad_(True)
    out = model.statistics_net(y)  # (n, k + 1), last column b
    eta = model.natural_parameters(theta)
    coef = torch.cat([eta, torch.ones_like(eta[:, :1])], dim=1)  # (n, k + 1)
    grad_f = torch.zeros_like(y)
    lap_f = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
    for c in range(out.shape[1]):
        (g,) = torch.autograd.grad(out[:, c].sum(), y, create_graph=True)
        grad_f = grad_f + coef[:, c : c + 1] * g
        for j in range(y.shape[1]):
            (h,) = torch.autograd.grad(g[:, j].sum(), y, create_graph=True)
            lap_f = lap_f + coef[:, c] * h[:, j]
    return (0.5 * grad_f.square().sum(-1) + lap_f).mean()


def naive_d_loss(model: ExpFamEBM, y: Tensor, theta: Tensor) -> Tensor:
    """Exact SM with one backward pass per coordinate of the scalar energy."""
    y = y.detach().requires_grad_(True)
    f = model.log_unnormalized_y(y, theta)
    (g,) = torch.autograd.grad(f.sum(), y, create_graph=True)
    lap = sum(
        torch.autograd.grad(g[:, j].sum(), y, create_graph=True)[0][:, j] for j in range(y.shape[1])
    )
    return (0.5 * g.square().sum(-1) + lap).mean()


def regression_loss(model: ExpFamEBM, y: Tensor, theta: Tensor) -> Tensor:
    """Plain MSE regression of the statistics onto the parameters (k = p)."""
    return (model.statistics_y(y) - theta).square().mean()


def time_step(
    loss: Callable[[ExpFamEBM, Tensor, Tensor], Tensor],
    model: ExpFamEBM,
    y: Tensor,
    theta: Tensor,
    repeats: int,
) -> tuple[float, float]:
    """Median and best seconds of one optimisation step (after one warm-up step)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(repeats + 1):
        if y.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss(model, y, theta).backward()
        opt.step()
        if y.is_cuda:
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def time_epoch(loss, model: ExpFamEBM, y: Tensor, theta: Tensor, batch: int, repeats: int):
    """Median seconds of one epoch (after one warm-up epoch)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        for start in range(0, y.shape[0], batch):
            opt.zero_grad(set_to_none=True)
            loss(model, y[start : start + batch], theta[start : start + batch]).backward()
            opt.step()
        if i > 0:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def structured_table(args, gen: torch.Generator) -> None:
    """Seconds per epoch of each statistics network under SSM and exact SM."""
    n, T, batch = 2000, 100, 500
    y = torch.randn(n, T, generator=gen)
    theta = torch.rand(n, 2, generator=gen)
    nets = {
        "mlp": dict(structure="mlp"),
        "iid": dict(structure="iid"),
        "markov(2)": dict(structure="markov", order=2),
    }
    print(f"\nepoch of {n} series of length {T}, batch {batch}, k = 5: seconds per epoch")
    head = (
        f"{'network':>10} {'SSM':>8} {'SM':>8} {'SM generic':>11} {'SSM/mlp SSM':>12} {'SM/SSM':>7}"
    )
    print(head)
    print("-" * len(head))
    base = None
    for name, cfg in nets.items():
        torch.manual_seed(args.seed)
        model = ExpFamEBM.default((T,), 2, num_statistics=5, **cfg)
        t_ssm = time_epoch(SlicedScoreMatching(), model, y, theta, batch, args.repeats)
        t_sm = time_epoch(ScoreMatching(), model, y, theta, batch, 1)
        generic = ScoreMatching(structured=False)
        t_gen = (
            t_sm if model.hessian_colors is None else time_epoch(generic, model, y, theta, batch, 1)
        )
        base = t_ssm if base is None else base
        print(
            f"{name:>10} {t_ssm:>8.3f} {t_sm:>8.3f} {t_gen:>11.3f} {t_ssm / base:>12.2f} "
            f"{t_sm / t_ssm:>7.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--theta-dim", type=int, default=4)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--structured-only", action="store_true", help="only the per-network epoch table"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(args.seed)
    if args.structured_only:
        structured_table(args, gen)
        return
    rows = []
    for d in args.dims:
        torch.manual_seed(args.seed)  # network initialisation of this script only
        model = ExpFamEBM.default((d,), args.theta_dim, hidden=args.hidden).to(args.device)
        y = torch.randn(args.batch, d, generator=gen).to(args.device)
        theta = torch.rand(args.batch, args.theta_dim, generator=gen).to(args.device)
        sm = ScoreMatching()
        ssm = SlicedScoreMatching()
        t_sm = time_step(sm, model, y, theta, args.repeats)
        t_kxd = time_step(naive_kxd_loss, model, y, theta, args.naive_repeats)
        t_d = time_step(naive_d_loss, model, y, theta, args.naive_repeats)
        t_ssm = time_step(ssm, model, y, theta, args.repeats)
        t_mse = time_step(regression_loss, model, y, theta, args.repeats)
        rows.append((d, t_sm, t_kxd, t_d, t_ssm, t_mse))

    k = args.theta_dim
    print(
        f"batch={args.batch}, k={k}, hidden={args.hidden}, device={args.device}, "
        f"threads={torch.get_num_threads()}; seconds per step (fwd+bwd+Adam)"
    )
    for label, which in (("median", 0), ("best", 1)):
        print(f"\n{label} of {args.repeats} (naive: {args.naive_repeats}) repeats")
        head = (
            f"{'d':>4} {'SM ours':>9} {'naive kxd':>10} {'naive d':>9} {'kxd/ours':>9} "
            f"{'d/ours':>7} {'SSM':>8} {'MSE':>8} {'SSM/MSE':>8}"
        )
        print(head)
        print("-" * len(head))
        for d, *times in rows:
            t_sm, t_kxd, t_d, t_ssm, t_mse = (t[which] for t in times)
            print(
                f"{d:>4} {t_sm:>9.4f} {t_kxd:>10.4f} {t_d:>9.4f} {t_kxd / t_sm:>9.1f} "
                f"{t_d / t_sm:>7.1f} {t_ssm:>8.4f} {t_mse:>8.4f} {t_ssm / t_mse:>8.2f}"
            )
    structured_table(args, gen)


if __name__ == "__main__":
    main()
