r"""Scoring a posterior on held-out simulated pairs with a strictly proper scoring rule.

A posterior approximation :math:`q(\cdot \mid x)` is judged by how well it predicts the
parameter that generated :math:`x`, on pairs :math:`(\theta_i, x_i)` drawn from the prior
predictive and not used to fit it. With a scoring rule :math:`S(q, \theta)` (lower is
better), the expected score

.. math:: \mathcal{S}(q) = \mathbb{E}_{x}\, \mathbb{E}_{\theta \mid x}\,
    S\big(q(\cdot \mid x), \theta\big) \approx \frac1m \sum_{i=1}^m S\big(q(\cdot \mid x_i),
    \theta_i\big)

is minimised by the true posterior :math:`q = p(\cdot \mid x)` when :math:`S` is strictly
proper, whatever produced :math:`q`: a score-matching fit, a ratio, ABC, exchange or potential
MCMC, a reshaped or dequantised data layout. It thus compares what the losses that fit the
models cannot compare with one another (a held-out score-matching loss ranks score-matching
fits of one continuous data set only).

**The energy score** (Gneiting & Raftery 2007), in prior-standardised units
:math:`z = \theta / \sigma_\pi` (:math:`\sigma_\pi` the prior standard deviation per
coordinate, so that no parameter dominates by its units):

.. math:: \mathrm{ES}(q, \theta) = \mathbb{E}_q \|Z - z\| - \tfrac12\, \mathbb{E}_q \|Z - Z'\|,
    \qquad Z, Z' \overset{iid}{\sim} q,

strictly proper for distributions with a finite first moment, and computed from samples alone
(no density is needed, so every route can be scored). From :math:`n` draws with normalised
weights :math:`w_j` the first term is :math:`\sum_j w_j \|z_j - z\|` and the second the
unbiased pair estimate :math:`\sum_{j \ne l} w_j w_l \|z_j - z_l\| / (1 - \sum_j w_j^2)`
(:math:`1 / (n(n-1))` for equal weights). For reference: the score of a point mass at the
truth is 0; a posterior equal to the prior scores about :math:`0.5\,\sqrt{p}` for a box
prior in :math:`p` dimensions.

**Comparisons.** Candidates scored on the same pairs are compared by the paired differences
of their per-pair scores, whose standard error is far smaller than that of each mean (the
pair-to-pair spread cancels): :func:`paired_difference`. An expensive candidate (MCMC) can
be scored on the first :math:`m' < m` pairs only and compared on those with a cheap one
scored on all :math:`m`.

The same pairs also give what a warning needs: the **contraction** of each posterior (its
standard deviation over the prior's, per parameter: near 1 when the data say nothing) and the
**coverage** of its central 90 % intervals.

References:
    | Strictly Proper Scoring Rules, Prediction, and Estimation (Gneiting & Raftery, 2007)
    | https://doi.org/10.1198/016214506000001437

Example:
    >>> import torch
    >>> draws = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    >>> good = energy_score(draws, torch.zeros(2))
    >>> wide = energy_score(3 * draws, torch.zeros(2))
    >>> bool(good < wide)
    True
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..priors import prior_dim, prior_sample
from .common import spawn_seeds

__all__ = [
    "HeldoutScore",
    "energy_score",
    "heldout_score",
    "paired_difference",
    "prior_scale",
]

_CENTRAL = 0.9  # the central interval whose coverage is reported


def energy_score(
    samples: Tensor,
    theta: Tensor,
    *,
    weights: Tensor | None = None,
    scale: Tensor | None = None,
) -> Tensor:
    r"""The energy score of (weighted) posterior draws against the true parameter.

    Arguments:
        samples: Draws, shape :math:`(n, p)`, or one set per observation :math:`(m, n, p)`.
        theta: The true parameter, shape :math:`(p,)` (or :math:`(m, p)`).
        weights: Non-negative weights of the draws, shape :math:`(n,)` (or :math:`(m, n)`);
            ``None`` for equal weights. Normalised here.
        scale: Divides every coordinate before the distances, shape :math:`(p,)` (e.g.
            :func:`prior_scale`); ``None``: raw units.

    Returns:
        The score (lower is better), a scalar (or shape :math:`(m,)`).
    """
    samples = torch.as_tensor(samples)
    if not samples.is_floating_point():
        samples = samples.to(torch.get_default_dtype())
    single = samples.ndim == 2
    if samples.ndim not in (2, 3):
        raise ValueError(f"samples must have shape (n, p) or (m, n, p), got {tuple(samples.shape)}")
    if single:
        samples = samples[None]
    m, n, p = samples.shape
    theta = torch.as_tensor(theta, dtype=samples.dtype, device=samples.device)
    if tuple(theta.shape) not in ((p,), (m, p)) or (single and theta.ndim == 2 and m != 1):
        raise ValueError(f"theta must have shape ({p},) or ({m}, {p}), got {tuple(theta.shape)}")
    theta = theta.reshape(m, p)
    if weights is None:
        w = samples.new_full((m, n), 1.0 / n)
    else:
        w = torch.as_tensor(weights, dtype=samples.dtype, device=samples.device).reshape(-1, n)
        if w.shape[0] != m or bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise ValueError(
                f"weights must be finite, non-negative, of shape ({n},) or ({m}, {n}), got "
                f"{tuple(torch.as_tensor(weights).shape)}"
            )
        w = w / w.sum(-1, keepdim=True)
    if scale is not None:
        scale = torch.as_tensor(scale, dtype=samples.dtype, device=samples.device)
        samples, theta = samples / scale, theta / scale
    to_truth = (samples - theta[:, None, :]).norm(dim=-1)  # (m, n)
    first = (w * to_truth).sum(-1)
    between = torch.cdist(samples, samples)  # (m, n, n), zero on the diagonal
    pair_mass = (1 - w.square().sum(-1)).clamp_min(torch.finfo(samples.dtype).tiny)
    second = torch.einsum("mi,mij,mj->m", w, between, w) / pair_mass
    out = first - 0.5 * second
    return out[0] if single else out


def prior_scale(prior: Distribution, theta: Tensor | None = None, *, seed: int = 0) -> Tensor:
    r"""The prior standard deviation of each parameter, the unit of the energy score.

    Arguments:
        prior: The prior over :math:`(p,)`.
        theta: Draws from the prior (e.g. the training parameters) to estimate it from;
            ``None``: the prior's own ``stddev`` where it has one, else 10,000 seeded draws.
        seed: Seed of those draws.

    Returns:
        Shape :math:`(p,)`, positive (a coordinate with no spread gets 1).
    """
    if theta is None:
        try:
            sd = torch.as_tensor(prior.stddev).reshape(-1)
            if sd.numel() != prior_dim(prior) or not bool(torch.isfinite(sd).all()):
                raise NotImplementedError
        except (NotImplementedError, AttributeError):
            generator = torch.Generator().manual_seed(seed)
            sd = prior_sample(prior, 10_000, generator).std(0)
    else:
        sd = torch.as_tensor(theta).std(0)
    return torch.where(sd > 0, sd, torch.ones_like(sd))


class HeldoutScore(NamedTuple):
    r"""A posterior scored on held-out pairs.

    Attributes:
        scores: The energy score of each pair, shape :math:`(m,)` (lower is better).
        contraction: Posterior standard deviation over the prior's, shape :math:`(m, p)`.
        covered: Whether :math:`\theta_i` lies in the central 90 % interval of its
            posterior, per parameter, shape :math:`(m, p)`.
        seconds: CPU time this process (all its threads) spent drawing and scoring: unlike
            wall-clock time, other processes' load does not inflate it, so that ``auto``'s
            cost rules compare like with like on a busy machine.
        rhat: The largest split :math:`\hat R` over the parameters of each pair's chains,
            shape :math:`(m,)` (``nan`` where the posterior has no chains).
    """

    scores: Tensor
    contraction: Tensor
    covered: Tensor
    seconds: float
    rhat: Tensor | None = None

    @property
    def mean(self) -> float:
        """The mean score."""
        return float(self.scores.mean())

    @property
    def se(self) -> float:
        """The standard error of the mean score (``nan`` for one pair)."""
        m = self.scores.numel()
        return float(self.scores.std() / math.sqrt(m)) if m > 1 else math.nan

    def summary(self) -> dict:
        """Mean score, its standard error, pairs, mean contraction and coverage per parameter."""
        return {
            "score": self.mean,
            "se": self.se,
            "pairs": int(self.scores.numel()),
            "contraction": self.contraction.mean(0).tolist(),
            "coverage_90": self.covered.to(torch.float64).mean(0).tolist(),
        }


def heldout_score(
    method: Any,
    theta: Tensor,
    x: Tensor,
    *,
    num_samples: int = 200,
    scale: Tensor | None = None,
    seed: int | None = 0,
    batch: bool = False,
    first_pair: int = 0,
    **options: Any,
) -> HeldoutScore:
    r"""Score a fitted method's posteriors on held-out pairs :math:`(\theta_i, x_i)`.

    Arguments:
        method: Anything with ``posterior(x_o, num_samples, seed=...)`` returning a
            :class:`~ebm_lfi.Posterior` (a fitted method), not fitted on these pairs.
        theta: True parameters, shape :math:`(m, p)`, drawn from the prior.
        x: Their simulations, shape :math:`(m, *x_{shape})`.
        num_samples: Posterior draws per pair.
        scale: Prior standard deviations (the score's units), shape :math:`(p,)`; ``None``:
            from ``method.prior`` (:func:`prior_scale`).
        seed: Root seed: pair :math:`i` is drawn with the seed
            ``SeedSequence(seed).spawn`` child :math:`i`, so a subset of the first pairs
            scores the same as in the full run.
        batch: Draw every pair's posterior with one call of ``method.posteriors`` (see
            :meth:`~ebm_lfi.methods.method.Method.posteriors`: one batch of chains for the
            exchange stage); ``seed`` then seeds the batch as a whole, so the first pairs of
            a larger batch do not score the same.
        first_pair: The index of the first of these pairs in a larger set scored with the
            same ``seed`` (not batched): pair :math:`i` here is drawn with child
            :math:`\text{first\_pair} + i`, so that scoring pairs :math:`k, \dots, m - 1`
            of a set with ``first_pair=k`` gives their scores in the whole set's run.
        options: Further keywords of ``method.posterior``.

    Returns:
        A :class:`HeldoutScore`.
    """
    theta = torch.as_tensor(theta)
    if theta.ndim != 2 or theta.shape[0] != len(x) or theta.shape[0] < 1:
        raise ValueError(
            f"theta must have shape (m, p) with m >= 1 rows like x, got {tuple(theta.shape)} "
            f"and {len(x)} simulations"
        )
    start = time.process_time()
    if scale is None:
        scale = prior_scale(method.prior)
    scale = torch.as_tensor(scale, dtype=torch.float64)
    m = theta.shape[0]
    if batch:
        if first_pair:
            raise ValueError("first_pair needs batch=False (a batch is seeded as a whole)")
        posteriors = method.posteriors(x, num_samples, seed=seed, **options)
    else:
        seeds = spawn_seeds(seed, first_pair + m)[first_pair:]
        posteriors = (
            method.posterior(x[i], num_samples, seed=seeds[i], **options) for i in range(m)
        )
    scores, contraction, covered, rhat = [], [], [], []
    for i, post in enumerate(posteriors):
        chains_rhat = post.diagnostics.get("rhat")
        found = chains_rhat is not None and len(chains_rhat) > 0
        rhat.append(float(torch.as_tensor(chains_rhat).max()) if found else math.nan)
        samples = post.samples.detach().to("cpu", torch.float64)
        weights = post.weights
        weights = None if weights is None else weights.detach().to("cpu", torch.float64)
        truth = theta[i].detach().to("cpu", torch.float64)
        scores.append(energy_score(samples, truth, weights=weights, scale=scale))
        contraction.append(post.std().detach().to("cpu", torch.float64) / scale)
        tail = (1 - _CENTRAL) / 2
        lo, hi = post.quantile([tail, 1 - tail]).detach().to("cpu", torch.float64)
        covered.append((truth >= lo) & (truth <= hi))
    return HeldoutScore(
        torch.stack(scores),
        torch.stack(contraction),
        torch.stack(covered),
        time.process_time() - start,
        torch.tensor(rhat, dtype=torch.float64),
    )


def paired_difference(a: HeldoutScore | Tensor, b: HeldoutScore | Tensor) -> tuple[float, float]:
    r"""Mean and standard error of the per-pair score differences ``a - b``.

    Both were scored on the same pairs in the same order; where one was scored on fewer
    (the first :math:`m'`), the comparison uses those.

    Returns:
        ``(mean, se)``; negative means ``a`` scores better.
    """
    sa = a.scores if isinstance(a, HeldoutScore) else torch.as_tensor(a)
    sb = b.scores if isinstance(b, HeldoutScore) else torch.as_tensor(b)
    m = min(sa.numel(), sb.numel())
    d = (sa[:m] - sb[:m]).to(torch.float64)
    se = float(d.std() / math.sqrt(m)) if m > 1 else math.nan
    return float(d.mean()), se
