r"""Simulation-based calibration (SBC): is a posterior approximation calibrated on average?

For :math:`i = 1, \dots, N`: draw :math:`\theta^*_i \sim \pi`, simulate
:math:`x^*_i \sim p(x \mid \theta^*_i)`, draw :math:`L` times from the posterior given
:math:`x^*_i`, and rank :math:`\theta^*_i` among the draws (:mod:`ebm_lfi.diagnostics.ranks`).
Since :math:`\int p(\theta \mid x)\, p(x \mid \theta^*)\, \pi(\theta^*)\, dx\, d\theta^* =
\pi(\theta)`, the ranks are uniform on :math:`\{0, \dots, L\}` for the exact posterior; a
:math:`\cup`-shaped histogram reveals an overconfident posterior, a :math:`\cap`-shaped one an
underconfident one, a slope a bias (Talts et al. 2018). The same run gives the expected
coverage of central and highest-density credible regions (:mod:`ebm_lfi.diagnostics.coverage`).

The posterior comes from a fitted ebm_lfi method (``method.posterior(x, num_samples,
seed=...)``; amortised methods reuse their fit, others, such as SMC-ABC, rerun per observation)
or from a callable ``fn(x, num_samples, seed)`` returning draws :math:`(L, p)` or a
:class:`~ebm_lfi.Posterior`. A weighted posterior, or one with a number of draws other than
:math:`L`, is brought to :math:`L` draws by resampling (by weight, with replacement) or
subsampling (without replacement). Ranks assume roughly independent draws: thin MCMC output to
about its effective sample size first, or autocorrelation shows up as a :math:`\cup` shape.
Density ranks of weighted samples, or of draws with repeats (ABC's resampling), use the split
estimator :func:`~ebm_lfi.diagnostics.ranks.split_density_rank`.

Next to the calibration, the result reports the **contraction** (mean posterior sd over prior
sd, :attr:`~ebm_lfi.diagnostics.SBCResult.contraction`), and :func:`sbc` raises a
:class:`~ebm_lfi.methods.checks.PosteriorWarning` when it exceeds 0.9 for every parameter:
draws from the prior pass SBC exactly, so "calibrated" says nothing about a posterior that
learned nothing. The warnings of the single posteriors are silenced during the run.

Reproducibility. The root seed :math:`s` defines ``numpy.random.SeedSequence(s)``; its child 0
seeds :func:`ebm_lfi.simulate`, child :math:`(1, i)` the posterior draws of observation
:math:`i` and child :math:`(2, i)` the resampling and tie-breaking of observation :math:`i`.
Results thus do not depend on the executor or on how observations are batched.

References:
    | Validating Bayesian Inference Algorithms with Simulation-Based Calibration
    | (Talts et al., 2018)
    | https://arxiv.org/abs/1804.06788
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from ..methods.checks import CONTRACTION_THRESHOLD, PosteriorWarning, prior_std
from ..posterior.posterior import Posterior
from ..priors import parameter_names, prior_dim, validate_prior
from ..progress import progress_bar
from ..simulation.simulate import simulate
from ..simulation.simulator import Simulator, root_entropy
from .ranks import density_rank, fractional, marginal_ranks, split_density_rank
from .sbc_result import RankOutcome, SBCResult

__all__ = [
    "sbc",
]

logger = logging.getLogger(__name__)

_MAX_TASKS = 32  # default number of tasks submitted to an executor


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _child_seed(entropy: int, *key: int) -> int:
    seq = np.random.SeedSequence(entropy, spawn_key=key)
    return int(seq.generate_state(1, np.uint32)[0])


class _Source:
    """A posterior provider: a fitted method, or a callable ``fn(x, num_samples, seed)``."""

    def __init__(self, obj: Any):
        method = getattr(obj, "posterior", None)
        if callable(method):
            self.fn, self.name = method, type(obj).__name__
        elif callable(obj):
            self.fn, self.name = obj, getattr(obj, "__name__", type(obj).__name__)
        else:
            raise TypeError(
                "method_or_posterior_fn must be a fitted ebm_lfi method (with .posterior) or a "
                f"callable fn(x, num_samples, seed), got {type(obj).__name__}"
            )
        try:
            param = inspect.signature(self.fn).parameters.get("seed")
        except (TypeError, ValueError):
            param = None
        self.seed_keyword = param is not None and param.kind == inspect.Parameter.KEYWORD_ONLY

    def __call__(self, x: Tensor, num_samples: int, seed: int) -> Any:
        if self.seed_keyword:
            return self.fn(x, num_samples, seed=seed)
        return self.fn(x, num_samples, seed)


def _as_sample(out: Any, p: int, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    r"""The output of a posterior provider as draws :math:`(n, p)` and weights or ``None``."""
    weights = None
    if isinstance(out, Posterior):
        samples, weights = out.samples, out.weights
    else:
        samples = out
    try:
        draws = torch.as_tensor(samples).detach().cpu().double().numpy()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"posterior {name!r} must return a Posterior or draws of shape (num_samples, {p}), "
            f"got {type(out).__name__}"
        ) from err
    if draws.ndim == 1 and p == 1:
        draws = draws[:, None]
    if draws.ndim != 2 or draws.shape[1] != p or draws.shape[0] < 1:
        raise ValueError(
            f"posterior {name!r} returned draws of shape {tuple(draws.shape)}, "
            f"expected (num_samples, {p})"
        )
    if not np.isfinite(draws).all():
        raise ValueError(f"posterior {name!r} returned NaN or infinite draws")
    if weights is not None:
        weights = weights.detach().cpu().double().numpy()
        weights = weights / weights.sum()
    return draws, weights


def _to_num_samples(
    draws: np.ndarray, weights: np.ndarray | None, num_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    r"""Exactly :math:`L` draws: resampled by weight (with replacement) when weighted or too
    few, subsampled (without replacement) when too many; and whether they were changed."""
    n = len(draws)
    if weights is not None:
        return draws[rng.choice(n, num_samples, replace=True, p=weights)], True
    if n == num_samples:
        return draws, False
    return draws[rng.choice(n, num_samples, replace=n < num_samples)], True


def _has_repeats(draws: np.ndarray) -> bool:
    return len(np.unique(draws, axis=0)) < len(draws)


def _run_chunk(
    source: _Source,
    xs: Tensor,
    thetas: np.ndarray,
    indices: Sequence[int],
    num_samples: int,
    entropy: int,
    hpd: bool,
) -> list[RankOutcome]:
    """Executor entry point (module level, so that it pickles): SBC for some observations."""
    p = thetas.shape[1]
    outcomes = []
    for x, truth, i in zip(xs, thetas, indices):
        with warnings.catch_warnings():  # reported once for the run, as the contraction
            warnings.simplefilter("ignore", PosteriorWarning)
            out = source(x, num_samples, _child_seed(entropy, 1, int(i)))
        rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(2, int(i))))
        sample, weights = _as_sample(out, p, source.name)
        draws, resampled = _to_num_samples(sample, weights, num_samples, rng)
        ranks = marginal_ranks(draws, truth, rng)
        hpd_rank = -1
        if hpd and (weights is not None or _has_repeats(draws)):
            hpd_rank = split_density_rank(sample, weights, truth, num_samples, rng)
        elif hpd:
            hpd_rank = density_rank(draws, truth, rng)
        both = fractional(np.append(ranks, hpd_rank), num_samples, rng)
        std = draws.std(axis=0, ddof=1) if num_samples > 1 else np.zeros(p)
        outcomes.append(
            RankOutcome(ranks, both[:p], hpd_rank, float(both[p]), draws.mean(0), std, resampled)
        )
    return outcomes


def sbc(
    method_or_posterior_fn: Any | Callable[..., Any],
    prior: Distribution,
    simulator: Simulator | Callable[..., Any],
    *,
    num_observations: int = 200,
    num_samples: int = 100,
    seed: int | None = 0,
    executor: Any = None,
    progress: bool = False,
    hpd: bool = True,
    batch_size: int | None = None,
    on_error: str = "raise",
) -> SBCResult:
    r"""Simulation-based calibration of a posterior approximation (Talts et al. 2018).

    Arguments:
        method_or_posterior_fn: A fitted ebm_lfi method (its ``posterior(x, num_samples,
            seed=...)`` is called), or a callable ``fn(x, num_samples, seed)`` of one
            observation :math:`x` (shape ``x_shape``) returning draws of shape
            :math:`(L, p)` or a :class:`~ebm_lfi.Posterior` (weights are resampled).
        prior: The prior :math:`\pi` the posterior assumes (a torch distribution over
            :math:`(p,)`).
        simulator: The simulator, as for :func:`ebm_lfi.simulate`.
        num_observations: Number :math:`N` of calibration pairs :math:`(\theta^*, x^*)`.
        num_samples: Number :math:`L` of posterior draws per observation.
        seed: Root seed (non-negative int); ``None`` draws a fresh one (kept in the result).
        executor: A :class:`concurrent.futures.Executor` (thread or process pool, a Dask
            client's ``get_executor()``) to simulate and draw posteriors in parallel, or
            ``None``. With processes, the method or callable must pickle. Results do not
            depend on it.
        progress: Show progress bars.
        hpd: Also compute the joint density ranks (highest-density coverage); costs
            :math:`O(L^2 p)` per observation.
        batch_size: Observations per task submitted to ``executor`` (default: about 32 tasks).
        on_error: ``"raise"`` or ``"drop"``: the policy for failed simulations of the
            calibration pairs (see :func:`ebm_lfi.simulate`; a dropped one is replaced by a
            fresh prior draw, so the ranks test the posterior on the prior restricted to the
            parameters where the simulator works).

    Returns:
        An :class:`SBCResult`, with the contraction next to the calibration.

    Example:
        >>> prior = torch.distributions.Independent(
        ...     torch.distributions.Normal(torch.zeros(1), torch.ones(1)), 1)
        >>> def exact(x, num_samples, seed):  # x ~ N(theta, 1): posterior N(x / 2, 1 / 2)
        ...     g = torch.Generator().manual_seed(seed)
        ...     return x / 2 + torch.randn(num_samples, 1, generator=g) / 2**0.5
        >>> result = sbc(exact, prior, lambda t, rng: t.numpy() + rng.normal(size=1),
        ...              num_observations=50, num_samples=20)
        >>> result.ranks.shape
        torch.Size([50, 1])
    """
    started = time.perf_counter()
    prior = validate_prior(prior)
    p = prior_dim(prior)
    source = _Source(method_or_posterior_fn)
    n = _positive_int(num_observations, "num_observations")
    num_samples = _positive_int(num_samples, "num_samples")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (with a submit method), "
            f"got {type(executor).__name__}"
        )
    entropy = root_entropy(seed)
    theta, x = simulate(
        simulator,
        prior,
        n,
        seed=_child_seed(entropy, 0),
        executor=executor,
        progress=progress,
        on_error=on_error,
    )
    thetas = theta.detach().cpu().double().numpy()
    outcomes: list[RankOutcome | None] = [None] * n
    with progress_bar(total=n, enabled=progress, desc="SBC", unit="obs") as bar:
        if executor is None:
            for i in range(n):
                outcomes[i] = _run_chunk(
                    source, x[i : i + 1], thetas[i : i + 1], [i], num_samples, entropy, hpd
                )[0]
                bar.update(1)
        else:
            size = batch_size or max(1, math.ceil(n / _MAX_TASKS))
            size = _positive_int(size, "batch_size")
            futures = {}
            for start in range(0, n, size):
                stop = min(n, start + size)
                future = executor.submit(
                    _run_chunk,
                    source,
                    x[start:stop],
                    thetas[start:stop],
                    list(range(start, stop)),
                    num_samples,
                    entropy,
                    hpd,
                )
                futures[future] = start
            for future in as_completed(futures):
                chunk = future.result()
                start = futures[future]
                outcomes[start : start + len(chunk)] = chunk
                bar.update(len(chunk))
    result = SBCResult(
        theta=theta,
        x=x,
        outcomes=outcomes,
        num_samples=num_samples,
        parameter_names=parameter_names(prior, p),
        seed=entropy,
        seconds=time.perf_counter() - started,
        hpd=hpd,
        prior_std=prior_std(prior),
    )
    contraction = result.contraction
    if bool((contraction > CONTRACTION_THRESHOLD).all()):
        figures = ", ".join(f"{name} {value:.2f}" for name, value in contraction.items())
        warnings.warn(
            f"sbc: the posterior is about the prior on average (mean posterior sd / prior sd: "
            f"{figures}); calibration says nothing about such a posterior: prior draws are "
            "calibrated too",
            PosteriorWarning,
            stacklevel=2,
        )
    if result.num_resampled:
        logger.info(
            "sbc: resampled or subsampled the posterior to %d draws for %d of %d observations",
            num_samples,
            result.num_resampled,
            n,
        )
    return result
