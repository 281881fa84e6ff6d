r"""Does a posterior say that it failed? The figures every posterior reports about its own
quality, and the warning that makes a failure loud.

A method that gets the statistics, the sampler or the fit wrong rarely fails with an error: it
returns a posterior, often one about as wide as the prior. :class:`~ebm_lfi.methods.Method`
therefore reads, for every posterior it draws, the following figures, keeps them in
``post.diagnostics`` and raises a :class:`PosteriorWarning` (a ``UserWarning``) naming them when
one of them says that the posterior cannot be trusted:

* **Contraction** :math:`c_j = \mathrm{sd}_q(\theta_j \mid x_o) / \mathrm{sd}_\pi(\theta_j)`
  (``diagnostics["contraction"]``). By the law of total variance,
  :math:`\mathbb{E}_x[\mathrm{Var}(\theta_j \mid x)] = \mathrm{Var}_\pi(\theta_j) -
  \mathrm{Var}_x(\mathbb{E}[\theta_j \mid x])`, so :math:`c_j` is about 1 when the data carry
  no information about :math:`\theta_j` and below 1 on average otherwise. Warning when every
  :math:`c_j` exceeds :data:`CONTRACTION_THRESHOLD` (0.9) less twice its standard error and
  every prior coverage (``diagnostics["prior_coverage"]``, :func:`prior_coverage`: the share of
  a parameter's prior range that holds 90 % of the posterior's mass) exceeds
  :data:`COVERAGE_THRESHOLD` (0.6; a posterior of separated modes spread over the prior keeps
  the prior's sd and is informative all the same): the posterior is about the prior, which
  on simulated problems nearly always means statistics that miss :math:`\theta` (flattened
  structured data, a saddle of the fit, integer data fitted by score matching) or a simulator
  whose output does not depend on :math:`\theta`. The standard error
  :math:`c_j / \sqrt{2 n_e}` is that of a standard deviation estimated from :math:`n_e`
  effective draws (Gaussian case), with :math:`n_e` the kernel ESS of an ABC posterior, the
  smallest MCMC ESS, or the number of kept entries (:func:`effective_draws`): a posterior
  resampled from a hundred kept table entries has a sampling error of about 7 % in its
  :math:`c_j`, and an uninformative one must not pass as informative by that noise. With an
  ABC posterior the message
  also gives the regression-adjustment :math:`R^2` (``diagnostics["adjustment_r2"]``, the
  weighted share of the kept parameters' variance explained linearly by the statistics,
  :mod:`~ebm_lfi.samplers.abc.adjustment`). A low :math:`R^2` alone is not a failure: within a
  narrow tolerance little of the posterior's spread is explained by the statistics even when
  they are informative (0.12 for :math:`\mu` of the ``gaussian`` task, whose posterior was
  right), so it is reported, not tested.
* **Convergence** of MCMC chains: split :math:`\hat R` (``diagnostics["rhat"]``, Vehtari et al.
  2021) above :data:`RHAT_THRESHOLD` (1.05) for some parameter: the chains disagree, and the
  draws are not yet from the target.
* **The chains of a maximum-likelihood fit** (``diagnostics["chains"]``,
  :class:`~ebm_lfi.samplers.mcmc.model_chains.ModelChains`): when too many of the MCMC chains
  that draw the fit's negatives diverged, the fitted model is likely not normalisable.
* **The exchange sampler's inner chain** (``diagnostics["inner_mixed"]``,
  :func:`~ebm_lfi.samplers.mcmc.inner_check.inner_chain_check`): when its auxiliary draws differ
  from those of a ten times longer chain, the exchange ratio uses auxiliary data that are not
  from the model, and the posterior is biased.
* **Point masses in the data of an exchange posterior** (``diagnostics["point_masses"]``,
  found by the fit, :func:`~ebm_lfi.methods.fit.point_masses`): the exchange sampler reads a
  density of :math:`x`, which data with atoms (exact zeros, values at a detection limit,
  counts beside continuous values) do not have there; its posterior was far off on such data
  where the ABC routes of the same fit were not. Warned whether or not a simulator checked the
  inner chain.
* **The model against the simulator** at posterior draws (``diagnostics["inner_fits"]``, the
  same check): when the model's draws (the longer chain's, or the exact ones) differ from
  simulations there beyond sampling error and by more than a quarter of a standard deviation
  or a quarter of the spread, the likelihood the exchange sampler uses is off where it matters.

The messages are also kept in ``diagnostics["warnings"]`` (so that a saved summary shows them).
Silence them with ``warnings.simplefilter("ignore", PosteriorWarning)``.

References:
    | Rank-normalization, folding, and localization: an improved :math:`\hat R` for assessing
      convergence of MCMC (Vehtari, Gelman, Simpson, Carpenter & Bürkner, 2021)
      https://arxiv.org/abs/1903.08008
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from ..priors import prior_sample

__all__ = [
    "PosteriorWarning",
    "CONTRACTION_THRESHOLD",
    "RHAT_THRESHOLD",
    "COVERAGE_THRESHOLD",
    "PRIOR_DRAWS",
    "prior_std",
    "coverage_edges",
    "prior_coverage",
    "effective_draws",
    "about_the_prior",
    "point_masses_text",
    "posterior_problems",
    "warn_problems",
]

CONTRACTION_THRESHOLD = 0.9
"""Posterior sd over prior sd above which, for every parameter, the posterior is about the prior."""

COVERAGE_THRESHOLD = 0.6
r"""Share of a parameter's prior range (in prior quantiles) holding 90 % of the posterior's mass
at or below which the posterior is not about the prior, whatever its sd
(:func:`prior_coverage`): about 0.9 for the prior itself, 0.8 from a hundred of its draws,
0.40–0.45 for the exact posterior of four modes in the example there."""

_COVERAGE_MASS, _COVERAGE_BINS = 0.9, 20

RHAT_THRESHOLD = 1.05
r"""Split :math:`\hat R` above which the chains are taken not to have converged."""

PRIOR_DRAWS = 10_000
"""Seeded prior draws for the sd of a prior without a closed form, and for the coverage."""


class PosteriorWarning(UserWarning):
    """A posterior that should not be trusted as it is (see :mod:`ebm_lfi.methods.checks`)."""


def prior_std(prior: Distribution, theta: Tensor | None = None) -> Tensor:
    r"""Standard deviation of each parameter under the prior, shape :math:`(p,)`, float64.

    The prior's own ``stddev`` where it has a finite one; otherwise that of ``theta`` (prior
    draws :math:`(n, p)`, e.g. the training parameters), else of 10⁴ seeded prior draws (the
    global RNG is not touched).

    Example:
        >>> from ebm_lfi.priors import BoxUniform
        >>> prior_std(BoxUniform([0.0, 0.0], [1.0, 12.0]))
        tensor([0.2887, 3.4641], dtype=torch.float64)
    """
    try:
        sd = torch.as_tensor(prior.stddev, dtype=torch.float64).reshape(-1).cpu()
        right_size = theta is None or sd.numel() == theta.shape[-1]
        if right_size and bool(torch.isfinite(sd).all()) and bool((sd > 0).all()):
            return sd
    except (NotImplementedError, AttributeError, RuntimeError, TypeError, ValueError):
        pass
    if theta is None or theta.shape[0] < 2:
        theta = prior_sample(prior, PRIOR_DRAWS, torch.Generator().manual_seed(0))
    return theta.detach().to("cpu", torch.float64).std(0)


def _figures(values: Sequence[float], digits: int = 2) -> str:
    """``[0.97, 0.99]``: numbers to ``digits`` decimals."""
    items = ("nan" if not math.isfinite(v) else f"{v:.{digits}f}" for v in map(float, values))
    return "[" + ", ".join(items) + "]"


def coverage_edges(prior_draws: Tensor) -> Tensor:
    r"""The edges of the prior-quantile bins of :func:`prior_coverage`, shape :math:`(19, p)`,
    float64: a value lies in bin :math:`b \ge k` (of 20 equal bins of its prior quantile
    :math:`u = \hat F_j(\theta_j)`, the share of ``prior_draws`` strictly below it) exactly when
    it is above edge :math:`k`. A method computes them once from :data:`PRIOR_DRAWS` seeded
    prior draws (the training parameters of sequential rounds are not from the prior) and
    keeps them for all its posteriors.

    Arguments:
        prior_draws: Draws of the prior :math:`(m, p)`.

    Example:
        >>> coverage_edges(torch.arange(40.0).reshape(40, 1)).flatten()[:3]
        tensor([1., 3., 5.], dtype=torch.float64)
    """
    draws = prior_draws.detach().to("cpu", torch.float64)
    draws = draws.reshape(draws.shape[0], -1)
    m = draws.shape[0]
    # the bin of a value with `below` draws under it: floor(20 * below / m), in float64
    below = torch.arange(m + 1, dtype=torch.float64)
    bins = (below / m * _COVERAGE_BINS).long().clamp(0, _COVERAGE_BINS - 1)
    # bin >= k  <=>  below >= first[k]  <=>  the value exceeds the first[k]-th smallest draw
    first = torch.searchsorted(bins, torch.arange(1, _COVERAGE_BINS))
    grid = torch.sort(draws, dim=0).values
    inf = torch.full((1, draws.shape[1]), math.inf, dtype=torch.float64)
    grid = torch.cat([grid, inf])  # a bin no count of draws reaches has an infinite edge
    return grid[torch.where(first > m, m, first - 1)]


def prior_coverage(samples: Tensor, weights: Tensor | None, edges: Tensor) -> list[float]:
    r"""For each parameter, the share of its prior range on which the posterior's mass sits:
    the draws are put in 20 equal bins of their prior quantiles :math:`u = \hat F_j(\theta_j)`
    (the empirical distribution function of prior draws, through the bin ``edges`` of
    :func:`coverage_edges`), and the fewest bins that hold 90 % of the posterior's mass are
    counted, over 20.

    About 0.9 when the posterior is the prior (0.8 from a hundred draws); small when it sits in
    one place or in several. The sd cannot tell the second case: on a posterior of four small
    modes spread over the prior box (:math:`x = (\theta_1\theta_2, \theta_1^2 + \theta_2^2)`
    plus five noisy draws, a flat vector of 10 numbers), the exact posterior's sd / prior sd
    is 0.69–0.77 and its coverage 0.40–0.45 for both parameters.

    Arguments:
        samples: Posterior draws :math:`(n, p)`.
        weights: Their weights :math:`(n,)`, or ``None`` for equal ones.
        edges: The prior's bin edges :math:`(19, p)` (:func:`coverage_edges`).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> edges = coverage_edges(torch.rand(4000, 1, generator=g))  # a U(0, 1) prior
        >>> round(prior_coverage(torch.rand(2000, 1, generator=g), None, edges)[0], 2)
        0.9
        >>> modes = torch.tensor([[0.125], [0.625]]).repeat(500, 1)  # two small modes
        >>> modes = modes + 0.005 * torch.randn(1000, 1, generator=g)
        >>> prior_coverage(modes, None, edges)
        [0.1]
    """
    samples = samples.detach().to("cpu", torch.float64)
    edges = edges.to("cpu", torch.float64).reshape(_COVERAGE_BINS - 1, samples.shape[1])
    n = samples.shape[0]
    w = torch.full((n,), 1.0 / n, dtype=torch.float64) if weights is None else weights
    w = w.detach().to("cpu", torch.float64)
    w = w / w.sum()
    mass_held = torch.tensor(_COVERAGE_MASS - 1e-12, dtype=torch.float64)
    shares = []
    for j in range(samples.shape[1]):
        bins = torch.searchsorted(edges[:, j].contiguous(), samples[:, j].contiguous())
        mass = torch.zeros(_COVERAGE_BINS, dtype=torch.float64).index_add_(0, bins, w)
        held = torch.cumsum(torch.sort(mass, descending=True).values, 0)
        needed = int(torch.searchsorted(held, mass_held)) + 1
        shares.append(min(needed, _COVERAGE_BINS) / _COVERAGE_BINS)
    return shares


def effective_draws(diagnostics: dict[str, Any]) -> float | None:
    r"""The number of effective draws behind a posterior's figures: the kernel ESS of an ABC
    posterior (``kernel_ess``), else the smallest MCMC or importance ESS (``ess``), else the
    number of kept table entries (``num_accepted``), else ``None`` (unknown).

    Example:
        >>> effective_draws({"ess": [310.0, 254.0], "num_samples": 1000})
        254.0
    """
    for key in ("kernel_ess", "ess", "num_accepted"):
        value = diagnostics.get(key)
        if value is None:
            continue
        values = [float(v) for v in torch.as_tensor(value, dtype=torch.float64).reshape(-1)]
        finite = [v for v in values if math.isfinite(v) and v > 0]
        if finite:
            return min(finite)
    return None


def about_the_prior(
    contraction: Sequence[float], draws: float | None, coverage: Sequence[float] | None = None
) -> bool:
    r"""Whether every contraction :math:`c_j` is above :data:`CONTRACTION_THRESHOLD` less
    twice its standard error :math:`c_j / \sqrt{2 n_e}` (``draws``: :math:`n_e`, or ``None``
    for no allowance), and every prior coverage (:func:`prior_coverage`, where given) above
    :data:`COVERAGE_THRESHOLD`: a posterior whose mass sits on a small part of some
    parameter's prior range is informative, in one mode or in several."""

    def low(c: float) -> float:
        se = c / math.sqrt(2.0 * draws) if draws else 0.0
        return CONTRACTION_THRESHOLD - 2.0 * se

    wide = len(contraction) > 0 and all(c > low(c) for c in map(float, contraction))
    spread = coverage is None or all(float(c) > COVERAGE_THRESHOLD for c in coverage)
    return wide and spread


def point_masses_text(atoms: dict[str, Any]) -> str:
    """What the point masses a fit found (:func:`~ebm_lfi.methods.fit.point_masses`) are, in
    words: the largest and how many coordinates have one.

    Example:
        >>> text = point_masses_text({"coordinates": 30, "value": 0.0, "share": 0.507})
        >>> text.split(";")[0]
        'the data have point masses (the value 0 in 51 % of the training values of a coordinate'
    """
    return (
        f"the data have point masses (the value {atoms['value']:g} in "
        f"{100 * atoms['share']:.0f} % of the training values of a coordinate; atoms in "
        f"{atoms['coordinates']} coordinates)"
    )


def posterior_problems(diagnostics: dict[str, Any], parameter_names: Sequence[str]) -> list[str]:
    r"""What the figures of a posterior's ``diagnostics`` say went wrong (see the module
    docstring), one message each; ``[]`` when nothing did.

    Arguments:
        diagnostics: A posterior's diagnostics: ``contraction``, and where present
            ``adjustment_r2``, ``rhat``, ``inner_mixed`` (with ``inner_sd_ratio``, ``inner_z``,
            ``inner_steps``), ``inner_fits`` (with ``inner_fit_sd_ratio``, ``inner_fit_shift``),
            ``point_masses`` (with ``sampler``), and the effective draws (:func:`effective_draws`).
        parameter_names: The names of the parameters, in order.

    Example:
        >>> figures = {"contraction": [0.97, 0.99], "rhat": [1.01, 1.2]}
        >>> [text.split(":")[0] for text in posterior_problems(figures, ["a", "b"])]
        ['the posterior is about the prior', 'R-hat [1.010, 1.200] for (a, b) is above 1.05']
    """
    names = ", ".join(parameter_names)
    problems = []
    contraction = diagnostics.get("contraction")
    coverage = diagnostics.get("prior_coverage")
    if contraction is not None and about_the_prior(
        contraction, effective_draws(diagnostics), coverage
    ):
        r2 = diagnostics.get("adjustment_r2")
        r2_text = ""
        if r2 is not None and any(math.isfinite(v) for v in r2):
            r2_text = f"; regression-adjustment R^2 {_figures(r2)}"
        problems.append(
            f"the posterior is about the prior: posterior sd / prior sd {_figures(contraction)} "
            f"for ({names}){r2_text}. The data (or the statistics learned from them) carry "
            "little information about the parameters at this observation: check that the "
            "simulator's output depends on them, give x its natural shape ((m, d) for m iid "
            "draws, (T,) for a series), use more simulations or another method (e.g. 'nce')"
        )
    rhat = diagnostics.get("rhat")
    if rhat is not None:
        values = [float(v) for v in torch.as_tensor(rhat, dtype=torch.float64).reshape(-1)]
        if any(v > RHAT_THRESHOLD for v in values):
            problems.append(
                f"R-hat {_figures(values, 3)} for ({names}) is above {RHAT_THRESHOLD}: the MCMC "
                "chains have not converged; run longer chains (burn_in, num_samples) or check "
                "the fit"
            )
    chains = diagnostics.get("chains")
    if isinstance(chains, dict) and chains.get("diverged"):
        problems.append(
            "the MCMC chains that drew the negatives of the maximum-likelihood fit diverged "
            f"({chains.get('divergent')} of {chains.get('visits')} chain visits left the data's "
            "range or became non-finite): the fitted model may not be normalisable; lower the "
            "learning rate, add regularization or use more chain steps"
        )
    if diagnostics.get("inner_mixed") is False:
        ratio = _figures(diagnostics.get("inner_sd_ratio", []))
        z = _figures(diagnostics.get("inner_z", []), 1)
        steps = diagnostics.get("inner_steps")
        problems.append(
            "the exchange sampler's inner chain has not mixed: its auxiliary statistics differ "
            f"from those of a ten times longer chain (spread ratio {ratio}, z {z}); raise "
            f"ExchangeConfig.inner_steps (now {steps})"
        )
    atoms = diagnostics.get("point_masses")
    if isinstance(atoms, dict) and diagnostics.get("sampler") == "exchange":
        problems.append(
            f"{point_masses_text(atoms)}: the exchange sampler reads a density of x, which has "
            "none there; use an ABC route (e.g. 'ssm-abc') or 'nce'"
        )
    if diagnostics.get("inner_fits") is False:
        ratio = _figures(diagnostics.get("inner_fit_sd_ratio", []))
        shift = _figures(diagnostics.get("inner_fit_shift", []))
        problems.append(
            "the model's draws differ from the simulator's at posterior draws (spread ratio "
            f"{ratio}, shift {shift} sd): the fitted likelihood is off where the posterior "
            "is; check the fit (more simulations, another structure) or use an ABC route"
        )
    return problems


def _outside_the_package() -> int:
    """The ``stacklevel`` of the innermost caller outside this package (the user's line)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def warn_problems(problems: Sequence[str], method: str | None) -> None:
    """Raise one :class:`PosteriorWarning` per message, prefixed by the method's name and
    attributed to the first line outside ebm_lfi that led here (the user's call)."""
    prefix = f"{method}: " if method else ""
    level = _outside_the_package()
    for problem in problems:
        warnings.warn(prefix + problem, PosteriorWarning, stacklevel=level)
