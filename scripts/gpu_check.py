r"""The large Lorenz96 fit and one posterior on a GPU, and the speed-up over the CPU (issue 19).

Run by ``scripts/gpu_check.sh`` (which refuses to start without CUDA). Steps, each timed:

1. simulate :math:`n = 10^4` pairs of the ``lorenz96`` task (:math:`d = 4800`), seed 0;
2. fit ``ssm-abc`` (sliced SM, the ring network, :math:`k = 8` statistics) with
   ``device="cuda"`` for ``--epochs`` epochs;
3. the same fit on the CPU for ``--cpu-epochs`` epochs (all cores), and the speed-up in seconds
   per epoch (median over epochs after the first);
4. one posterior (observation 0, ABC on the training pairs) from the CUDA fit, and the energy
   and kernel scores of its posterior predictive (``--predictive`` simulations).

``--device cpu`` with small sizes runs the same code on a machine without a GPU (a dry run of
the script's logic, not a measurement).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import ebm_lfi as el
from ebm_lfi.benchmarks.lorenz96 import KERNEL_BANDWIDTH
from ebm_lfi.diagnostics.predictive import predictive_scores


def fit(task, theta, x, device: str, epochs: int, seed: int):
    """A timed ``ssm-abc`` fit; returns the method, the wall time and the epoch times."""
    method = el.methods.get(
        "ssm-abc",
        prior=task.prior,
        structure="ring",
        num_statistics=2 * task.dim,
        training={"epochs": epochs, "batch_size": 256, "patience": None},
        device=device,
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    method.fit(theta, x, seed=seed)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    epochs_s = list(method.fit_stage.history["seconds"])
    return method, seconds, epochs_s


def per_epoch(times: list[float]) -> float:
    """Median seconds per epoch, leaving out the first (warm-up) when there are more."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--task", default="lorenz96")
    parser.add_argument("--num-simulations", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--cpu-epochs", type=int, default=3)
    parser.add_argument("--predictive", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available; run scripts/gpu_check.sh on a GPU machine")
        return 2
    start = time.perf_counter()
    task = el.benchmarks.get(args.task)
    print(f"task {task.name}: x {task.x_shape}, d = {task.x_shape[0] * task.x_shape[1]}")
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"CPU threads: {torch.get_num_threads()}")

    t0 = time.perf_counter()
    theta, x = el.simulate(task.simulator, task.prior, args.num_simulations, seed=args.seed)
    theta, x = theta.float(), x.float()
    print(f"simulate {args.num_simulations}: {time.perf_counter() - t0:.1f} s")

    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    method, seconds, gpu_epochs = fit(task, theta, x, args.device, args.epochs, args.seed)
    model = method.fit_stage.model
    assert next(model.parameters()).device.type == torch.device(args.device).type
    history = method.fit_stage.history
    print(
        f"fit on {args.device}: {seconds:.1f} s for {len(history)} epochs "
        f"({per_epoch(gpu_epochs):.3f} s/epoch), final train loss "
        f"{history['train_loss'].iloc[-1]:.2f}, val loss {history['val_loss'].iloc[-1]:.2f}"
    )
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"peak GPU memory allocated: {peak:.2f} GiB")

    _, cpu_seconds, cpu_epochs = fit(task, theta, x, "cpu", args.cpu_epochs, args.seed)
    print(
        f"same fit on cpu: {cpu_seconds:.1f} s for {args.cpu_epochs} epochs "
        f"({per_epoch(cpu_epochs):.3f} s/epoch)"
    )
    speedup = per_epoch(cpu_epochs) / per_epoch(gpu_epochs)
    print(f"speed-up per epoch ({args.device} over cpu): {speedup:.1f}x")

    t0 = time.perf_counter()
    x_o = task.observation(0)
    post = method.posterior(x_o, num_samples=1000, seed=args.seed)
    print(
        f"posterior of observation 0 on {args.device}: {time.perf_counter() - t0:.1f} s, "
        f"samples on {post.samples.device}, mean {post.mean().cpu().numpy().round(3)}, "
        f"truth {task.true_parameters(0).numpy().round(3)}"
    )
    t0 = time.perf_counter()
    scores = predictive_scores(
        post,
        task.simulator,
        x_o,
        bandwidth=KERNEL_BANDWIDTH[task.name],
        num_simulations=args.predictive,
        seed=args.seed,
    )
    print(
        f"posterior predictive ({args.predictive} simulations, {time.perf_counter() - t0:.1f} s):"
        f" energy score {scores.energy:.1f}, kernel score {scores.kernel:.2f}"
    )
    print(f"gpu_check done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
