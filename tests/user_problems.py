r"""Two simulators as a new user writes them, each with its exact posterior on a grid.

* **Counts** (``COUNTS``): an outbreak observed as :math:`T = 20` daily case counts,
  :math:`y_t \sim \mathrm{Poisson}(a\, e^{r t})`, :math:`t = 1, \dots, T`, with
  :math:`\theta = (\log a, r) \sim U([0, 2] \times [-0.1, 0.2])`. Integer-valued output: score
  matching has no density to fit unless the counts are dequantised.
* **Flat draws** (``FLAT``): 20 iid draws of a 2-D location model with Student-t(3) noise,
  :math:`x_j = \mu + \varepsilon_j`, :math:`\mu \sim U([-3, 3]^2)`, returned *flat* as 40
  numbers (the layout a user gets from ``.reshape(-1)``), so nothing says they are draws.

Both likelihoods are tractable, so the posterior of an observation is computed on a grid:
:func:`grid_posterior` evaluates the log likelihood on a coarse grid over the prior box,
refines it on the box that holds the mass (the posterior can be far narrower than the prior)
and draws from the piecewise-constant density, uniformly inside each cell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats

import ebm_lfi as el

__all__ = ["Problem", "COUNTS", "FLAT", "PROBLEMS", "grid_posterior"]

DAYS = 20
DRAWS = 20


def counts_simulator(theta, rng):
    """Daily case counts of an outbreak growing exponentially: ``(20,)`` integers (as floats)."""
    log_a, r = float(theta[0]), float(theta[1])
    t = np.arange(1, DAYS + 1)
    return rng.poisson(np.exp(log_a + r * t)).astype(np.float64)


def counts_log_likelihood(grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Log likelihood of the counts ``x (20,)`` at parameters ``grid (n, 2)``."""
    t = np.arange(1, DAYS + 1)
    rate = np.exp(grid[:, :1] + grid[:, 1:2] * t)
    return stats.poisson.logpmf(x[None, :], rate).sum(1)


def flat_simulator(theta, rng):
    """20 draws of a 2-D location model with Student-t(3) noise, returned flat: ``(40,)``."""
    mu = np.asarray(theta, dtype=np.float64)
    return (mu[None, :] + rng.standard_t(3, size=(DRAWS, 2))).reshape(-1)


def flat_log_likelihood(grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Log likelihood of the flat draws ``x (40,)`` at locations ``grid (n, 2)``."""
    d = x.reshape(DRAWS, 2)
    return stats.t.logpdf(d[None, :, :] - grid[:, None, :], 3).sum((1, 2))


class Problem(NamedTuple):
    """A simulator, its prior and its log likelihood ``(grid (n, p), x) -> (n,)``."""

    name: str
    simulator: Callable
    prior: torch.distributions.Distribution
    log_likelihood: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def observation(self, seed: int) -> tuple[np.ndarray, torch.Tensor]:
        """A true parameter drawn from the prior and its simulation, both from ``seed``."""
        rng = np.random.default_rng(seed)
        low, high = (b.numpy() for b in _box(self.prior))
        theta = low + (high - low) * rng.random(low.shape[0])
        return theta, torch.as_tensor(self.simulator(theta, rng))

    def reference(self, x_o, num_samples: int = 2000, seed: int = 0) -> torch.Tensor:
        """Draws from the exact posterior of ``x_o`` (see :func:`grid_posterior`)."""
        return grid_posterior(self.log_likelihood, self.prior, x_o, num_samples, seed=seed)


COUNTS = Problem(
    "counts", counts_simulator, el.BoxUniform([0.0, -0.1], [2.0, 0.2]), counts_log_likelihood
)
FLAT = Problem("flat", flat_simulator, el.BoxUniform([-3.0, -3.0], [3.0, 3.0]), flat_log_likelihood)
PROBLEMS = {p.name: p for p in (COUNTS, FLAT)}


def _box(prior) -> tuple[torch.Tensor, torch.Tensor]:
    base = prior.base_dist
    return base.low.double(), base.high.double()


def _grid(low: np.ndarray, high: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    axes = [np.linspace(lo, hi, size + 1) for lo, hi in zip(low, high)]
    centres = [(a[1:] + a[:-1]) / 2 for a in axes]
    points = np.stack(np.meshgrid(*centres, indexing="ij"), -1).reshape(-1, len(low))
    return points, (high - low) / size


def grid_posterior(
    log_likelihood: Callable[[np.ndarray, np.ndarray], np.ndarray],
    prior,
    x_o,
    num_samples: int = 2000,
    *,
    size: int = 200,
    seed: int = 0,
) -> torch.Tensor:
    r"""Draws from the posterior of a uniform prior on a box, computed on a grid.

    A first ``size``-per-axis grid over the prior box locates the cells holding all but
    :math:`10^{-9}` of the mass; a second grid of the same size on their bounding box (one
    coarse cell wider on each side, clipped to the prior) gives the density, from which cells
    are drawn and a point uniformly inside each.

    Arguments:
        log_likelihood: ``(grid (n, p), x) -> (n,)``.
        prior: A :class:`~ebm_lfi.BoxUniform`.
        x_o: The observation.
        num_samples: Draws returned.
        size: Grid points per axis.
        seed: Seed of the draws.

    Returns:
        Draws, shape ``(num_samples, p)``, float64.
    """
    x = np.asarray(x_o, dtype=np.float64)
    low, high = (b.numpy() for b in _box(prior))
    points, width = _grid(low, high, size)
    lp = log_likelihood(points, x)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    order = np.argsort(w)
    keep = order[np.cumsum(w[order]) > 1e-9]
    low = np.maximum(low, points[keep].min(0) - width)
    high = np.minimum(high, points[keep].max(0) + width)
    points, width = _grid(low, high, size)
    lp = log_likelihood(points, x)
    w = np.exp(lp - lp.max())
    w /= w.sum()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(points), size=num_samples, p=w)
    jitter = (rng.random((num_samples, len(low))) - 0.5) * width
    return torch.as_tensor(points[idx] + jitter)
