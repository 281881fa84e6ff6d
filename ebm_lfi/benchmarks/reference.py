r"""Reference posteriors from the exact likelihood on a refined grid; rebuilds the data files.

For a task with prior :math:`\mathcal{U}(B)` on a box :math:`B \subset \mathbb{R}^p` and
observation :math:`x_o`, the posterior density is :math:`\propto p(x_o \mid \theta)` on
:math:`B`. :func:`grid_posterior_samples` draws from it in two stages:

1. evaluate :math:`\ell(\theta) = \log p(x_o \mid \theta)` at the centres of a coarse grid of
   :math:`c^p` cells over :math:`B`;
2. keep the cells with :math:`\ell \geq \max \ell - \delta` (:math:`\delta = 30` nats, i.e.
   a relative density of :math:`10^{-13}`), take the box enclosing them, widen it by a margin
   of coarse cells (clipped to :math:`B`) and lay a fine grid of :math:`f^p` cells over it;
3. draw cells with probability :math:`\propto e^{\ell(\text{centre})}` and jitter each draw
   uniformly within its cell.

The result is an exact sample from the piecewise-constant approximation of the posterior on
the fine grid; the fine cells are a small fraction of the posterior's spread, so the
approximation error is negligible next to Monte-Carlo error at :math:`10^4` samples.

Running ``python -m ebm_lfi.benchmarks.reference`` regenerates every task's
``<name>.npz`` (observations, true parameters, quantised samples) plus ``manifest.json`` and
``README.md`` in the data directory (:func:`~ebm_lfi.benchmarks.task.data_directory`, the
package's ``ebm_lfi/benchmarks/data`` unless ``--out`` or ``$EBM_LFI_DATA`` names another), from
the fixed seeds of the tasks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..progress import progress_bar
from .task import DATA_FORMAT_VERSION, Task, data_directory, quantize
from .tasks import available, get

__all__ = [
    "grid_posterior_samples",
    "build_task_data",
    "draw_observations",
    "reference_samples",
    "write_task_data",
    "content_hash",
    "main",
]

logger = logging.getLogger(__name__)

COARSE = 200
FINE = 500
DROP = 30.0
MARGIN = 2
NUM_SAMPLES = 10_000
_CHUNK = 1 << 17


def _cell_centres(low: np.ndarray, high: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres of a regular grid of ``cells`` per dimension, shape ``(cells**p, p)``, and widths."""
    width = (high - low) / cells
    axes = [lo + (np.arange(cells) + 0.5) * w for lo, w in zip(low, width)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=-1), width


def _evaluate(log_density: Callable[[Tensor], Tensor], points: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(points), _CHUNK):
        chunk = torch.as_tensor(points[start : start + _CHUNK], dtype=torch.float64)
        out.append(log_density(chunk).detach().to(torch.float64).cpu().numpy())
    values = np.concatenate(out)
    values[np.isnan(values)] = -np.inf
    return values


def grid_posterior_samples(
    log_density: Callable[[Tensor], Tensor],
    low: Sequence[float],
    high: Sequence[float],
    num_samples: int,
    *,
    rng: np.random.Generator,
    coarse: int = COARSE,
    fine: int = FINE,
    drop: float = DROP,
    margin: int = MARGIN,
) -> tuple[np.ndarray, dict[str, float]]:
    r"""Sample a density on a box by a coarse-then-fine grid (see the module docstring).

    Arguments:
        log_density: Unnormalised log-density, ``(n, p)`` float64 tensor to ``(n,)``.
        low: Lower corner of the box, length :math:`p`.
        high: Upper corner of the box, length :math:`p`.
        num_samples: Number of samples :math:`m`.
        rng: Source of the cell draws and jitter.
        coarse: Coarse cells per dimension.
        fine: Fine cells per dimension, over the refined box.
        drop: Cells whose log-density is more than ``drop`` below the maximum are discarded.
        margin: Coarse cells added on each side of the refined box.

    Returns:
        Samples, shape :math:`(m, p)` float64, and a dict of diagnostics: the refined box's
        share of the prior volume (``volume_fraction``) and the largest probability of any
        fine cell on a face of the refined box that lies inside the prior box
        (``edge_mass``, which should be negligible).
    """
    low_a, high_a = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    centres, width = _cell_centres(low_a, high_a, coarse)
    ell = _evaluate(log_density, centres)
    top = ell.max()
    if not np.isfinite(top):
        raise ValueError("log_density is -inf or NaN on every coarse cell of the box")
    p = len(low_a)
    idx = np.stack(np.unravel_index(np.nonzero(ell >= top - drop)[0], (coarse,) * p), axis=-1)
    lo_i = np.maximum(idx.min(0) - margin, 0)
    hi_i = np.minimum(idx.max(0) + 1 + margin, coarse)
    sub_low, sub_high = low_a + lo_i * width, low_a + hi_i * width

    centres, fine_width = _cell_centres(sub_low, sub_high, fine)
    ell = _evaluate(log_density, centres)
    prob = np.exp(ell - ell.max())
    prob /= prob.sum()

    grid = prob.reshape((fine,) * p)
    edge = 0.0
    for d in range(p):
        if lo_i[d] > 0:
            edge = max(edge, float(np.take(grid, 0, axis=d).max()))
        if hi_i[d] < coarse:
            edge = max(edge, float(np.take(grid, fine - 1, axis=d).max()))

    cells = rng.choice(len(prob), size=num_samples, p=prob)
    samples = centres[cells] + (rng.random((num_samples, p)) - 0.5) * fine_width
    info = {
        "volume_fraction": float(np.prod((sub_high - sub_low) / (high_a - low_a))),
        "edge_mass": edge,
    }
    return samples, info


def _streams(task: Task) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence(task.seed).spawn(3)


def draw_observations(
    task: Task, num_observations: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    r"""The task's true parameters and observations, from its seed.

    ``SeedSequence(task.seed).spawn(3)`` gives the streams of the true parameters (drawn
    uniformly from the prior box), of the simulations (spawned once more, one child per
    observation) and of the reference sampling (likewise). Observation ``i`` depends on its own
    children only, so the first :math:`N` observations do not depend on ``num_observations``.

    Arguments:
        task: The task.
        num_observations: Number :math:`N` of observations (default: ``task.num_observations``).

    Returns:
        ``theta`` :math:`(N, p)` and ``x`` :math:`(N, *x\_shape)`, float64 numpy arrays.
    """
    n = task.num_observations if num_observations is None else int(num_observations)
    low, high = np.asarray(task.low, dtype=np.float64), np.asarray(task.high, dtype=np.float64)
    ss_theta, ss_sim, _ = _streams(task)
    theta = low + (high - low) * np.random.default_rng(ss_theta).random((n, task.dim))
    x = task.simulate_fn(theta, [np.random.default_rng(s) for s in ss_sim.spawn(n)])
    return theta, np.asarray(x, dtype=np.float64)


def reference_samples(
    task: Task,
    x: np.ndarray,
    index: int,
    *,
    num_samples: int = NUM_SAMPLES,
    coarse: int = COARSE,
    fine: int = FINE,
) -> tuple[np.ndarray, dict[str, float]]:
    r"""Reference posterior samples for observation ``x``, seeded as observation ``index``.

    Arguments:
        task: The task.
        x: The observation, shape ``x_shape``.
        index: Its index, which selects the child seed of the reference stream.
        num_samples: Number of samples :math:`m`.
        coarse: Coarse grid cells per dimension.
        fine: Fine grid cells per dimension.

    Returns:
        Samples :math:`(m, p)` float64 and the diagnostics of :func:`grid_posterior_samples`.
    """
    _, _, ss_ref = _streams(task)
    # The index-th child of the reference stream, as ss_ref.spawn(N)[index] for any N > index.
    seq = np.random.SeedSequence(
        ss_ref.entropy, spawn_key=(*ss_ref.spawn_key, index), pool_size=ss_ref.pool_size
    )
    x_t = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    return grid_posterior_samples(
        lambda th: task.log_likelihood(th, x_t),
        task.low,
        task.high,
        num_samples,
        rng=np.random.default_rng(seq),
        coarse=coarse,
        fine=fine,
    )


def build_task_data(
    task: Task,
    *,
    num_observations: int | None = None,
    num_samples: int = NUM_SAMPLES,
    coarse: int = COARSE,
    fine: int = FINE,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    r"""Draw a task's true parameters, observations and reference posteriors from its seed.

    See :func:`draw_observations` and :func:`reference_samples` for the seeding.

    Arguments:
        task: The task.
        num_observations: Number of observations (default: ``task.num_observations``).
        num_samples: Reference samples per observation.
        coarse: Coarse grid cells per dimension.
        fine: Fine grid cells per dimension.
        progress: Show a progress bar.

    Returns:
        Arrays ``theta`` :math:`(N, p)`, ``x`` :math:`(N, *x\_shape)` (float64), ``reference``
        :math:`(N, m, p)` (uint16 codes, see :func:`~ebm_lfi.benchmarks.task.quantize`),
        ``low``, ``high`` :math:`(p,)`, ``seed``, ``format_version``, and diagnostics
        ``volume_fraction`` and ``edge_mass`` :math:`(N,)`. A task without a likelihood
        (:attr:`~ebm_lfi.benchmarks.task.Task.has_reference_posterior` false) gets no
        ``reference`` nor grid diagnostics, and its ``x`` is stored in float32.
    """
    theta, x = draw_observations(task, num_observations)
    n = len(theta)
    if not task.has_reference_posterior:
        return {
            "theta": theta,
            "x": x.astype(np.float32),
            "low": np.asarray(task.low, dtype=np.float64),
            "high": np.asarray(task.high, dtype=np.float64),
            "seed": np.asarray(task.seed),
            "format_version": np.asarray(DATA_FORMAT_VERSION),
        }
    low, high = np.asarray(task.low, dtype=np.float64), np.asarray(task.high, dtype=np.float64)
    codes = np.empty((n, num_samples, task.dim), dtype=np.uint16)
    volume, edge = np.empty(n), np.empty(n)
    for i in progress_bar(range(n), enabled=progress, desc=task.name):
        samples, info = reference_samples(
            task, x[i], i, num_samples=num_samples, coarse=coarse, fine=fine
        )
        codes[i] = quantize(samples, low, high)
        volume[i], edge[i] = info["volume_fraction"], info["edge_mass"]
    return {
        "theta": theta,
        "x": x,
        "reference": codes,
        "low": low,
        "high": high,
        "seed": np.asarray(task.seed),
        "format_version": np.asarray(DATA_FORMAT_VERSION),
        "volume_fraction": volume,
        "edge_mass": edge,
    }


def content_hash(data: dict[str, np.ndarray]) -> str:
    r"""SHA-256 over the arrays ``theta``, ``x`` and ``reference`` (bytes, in that order; a
    task without a reference posterior hashes ``theta`` and ``x``)."""
    h = hashlib.sha256()
    for key in ("theta", "x", "reference"):
        if key not in data:
            continue
        h.update(np.ascontiguousarray(data[key]).tobytes())
    return h.hexdigest()


def write_task_data(task: Task, directory: Path | str, **options) -> dict[str, object]:
    r"""Build a task's data with :func:`build_task_data` and save ``<directory>/<name>.npz``.

    Returns:
        The task's manifest entry (seed, sizes, grid, hash, timing, diagnostics).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = build_task_data(task, **options)
    seconds = time.perf_counter() - start
    path = directory / f"{task.name}.npz"
    np.savez_compressed(path, **data)
    entry = {
        "file": path.name,
        "description": task.description,
        "parameter_names": list(task.parameter_names),
        "prior_low": list(task.low),
        "prior_high": list(task.high),
        "x_shape": list(task.x_shape),
        "seed": task.seed,
        "num_observations": int(data["theta"].shape[0]),
    }
    if "reference" not in data:  # observations only (no tractable posterior)
        entry.update(num_samples=0, x_dtype="float32", content_sha256=content_hash(data))
    else:
        entry.update(
            num_samples=int(data["reference"].shape[1]),
            grid={
                "coarse": options.get("coarse", COARSE),
                "fine": options.get("fine", FINE),
                "drop": DROP,
                "margin": MARGIN,
            },
            content_sha256=content_hash(data),
            max_edge_mass=float(data["edge_mass"].max()),
        )
    entry.update(bytes=path.stat().st_size, seconds=round(seconds, 1))
    return entry


_README = """\
# Benchmark data

Generated by `python -m ebm_lfi.benchmarks.reference` (deterministic: fixed seeds). Do not
edit by hand. `manifest.json` lists, per task, the seed, sizes, grid settings, a content hash
and the build time.

## Files
`<task>.npz` (numpy `savez_compressed`), one per task:

| key | shape | dtype | meaning |
|---|---|---|---|
| `theta` | (100, p) | float64 | true parameters, drawn uniformly from the prior box |
| `x` | (100, *x_shape) | float64 | observations simulated at `theta` |
| `reference` | (100, 10000, p) | uint16 | reference posterior samples, quantised in the box |
| `low`, `high` | (p,) | float64 | the prior box |
| `seed`, `format_version` | () | int | root seed, data format version (1) |
| `volume_fraction`, `edge_mass` | (100,) | float64 | grid diagnostics (see below) |

Decode samples with `low + (code + 0.5) * (high - low) / 65536` (error below
`(high - low) / 131072`), or use `ebm_lfi.benchmarks.get(name).reference_posterior(i)`.

## Seeds
`numpy.random.SeedSequence(seed).spawn(3)` gives three streams: true parameters
(`default_rng(child).random((100, p))` mapped to the box), simulations (spawned again, one
Generator per observation, passed to the task's batched simulator) and reference sampling
(one Generator per observation). Seeds: beta 1001, gamma 1002, gaussian 1003, ar2 1004,
ma2 1005, lorenz96 1006, lorenz96-small 1007.

## Tasks without a likelihood (lorenz96, lorenz96-small)
The stochastic Lorenz96 model has no tractable likelihood, so its files hold `theta`
(float64), `x` (float32, shape (100, T, K)), `low`, `high`, `seed` and `format_version` only:
no `reference`, `volume_fraction` or `edge_mass`. The observations are drawn as above (the
first two streams); row i's innovations are `default_rng(child_i).standard_normal((T, K))`
(see `ebm_lfi.benchmarks.lorenz96`), simulated in float64 and rounded to float32.

## Method
Uniform prior times the exact likelihood. Stage 1: log-likelihood at the centres of a
200 x 200 grid over the prior box. Stage 2: the box enclosing all cells within 30 nats of the
maximum, widened by 2 coarse cells (clipped to the prior), carries a 500 x 500 grid; 10,000
cells are drawn with probability proportional to the likelihood at their centres and jittered
uniformly within the cell. `volume_fraction` is the refined box's share of the prior volume;
`edge_mass` the largest probability of a fine cell on a face of the refined box that lies
inside the prior (negligible when the refinement encloses all the mass).

Conventions: AR(2) starts at x_0 = x_-1 = 0 and its likelihood is the product of the
conditionals; MA(2) draws the pre-sample innovations e_-1, e_0 ~ N(0, 1) (the stationary
Gaussian vector) and its likelihood uses the banded Cholesky factor of its covariance.
"""


def main(argv: Sequence[str] | None = None) -> int:
    r"""Command line: regenerate the data directory (all tasks by default)."""
    parser = argparse.ArgumentParser(
        prog="python -m ebm_lfi.benchmarks.reference",
        description="Regenerate benchmark observations and reference posteriors.",
    )
    parser.add_argument("--tasks", nargs="+", default=available(), choices=available())
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: the package's data directory, or $EBM_LFI_DATA)",
    )
    parser.add_argument("--num-samples", type=int, default=NUM_SAMPLES)
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads while building (default 1: the work is many small vectorised "
        "steps, which extra threads slow down on a busy machine; 0 keeps torch's setting)",
    )
    args = parser.parse_args(argv)
    previous_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        _build(args)
    finally:
        torch.set_num_threads(previous_threads)
    return 0


def _build(args: argparse.Namespace) -> None:
    out = args.out if args.out is not None else data_directory()
    manifest_path = out / "manifest.json"
    manifest: dict[str, object] = {}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
    entries = dict(manifest.get("tasks", {}))
    for name in args.tasks:
        entry = write_task_data(
            get(name), out, num_samples=args.num_samples, progress=args.progress
        )
        entries[name] = entry
        print(f"{name}: {entry['bytes'] / 1e6:.2f} MB in {entry['seconds']} s")
    manifest = {
        "format_version": DATA_FORMAT_VERSION,
        "generator": "python -m ebm_lfi.benchmarks.reference",
        "tasks": {k: entries[k] for k in available() if k in entries},
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.md").write_text(_README)


if __name__ == "__main__":
    raise SystemExit(main())
