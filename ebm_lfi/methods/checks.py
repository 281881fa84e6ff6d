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
  :math:`c_j` exceeds :data:`CONTRACTION_THRESHOLD` (0.9): the posterior is about the prior,
  which on simulated problems nearly always means statistics that miss :math:`\theta`
  (flattened structured data, a saddle of the fit, integer data fitted by score matching) or a
  simulator whose output does not depend on :math:`\theta`. With an ABC posterior the message
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
  :func:`~ebm_lfi.samplers.mcmc.inner_check.inner_chain_check`): when its auxiliary draws do not
  match simulations at posterior draws, the exchange ratio uses auxiliary data that are not from
  the model, and the posterior is biased.

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
    "prior_std",
    "posterior_problems",
    "warn_problems",
]

CONTRACTION_THRESHOLD = 0.9
"""Posterior sd over prior sd above which, for every parameter, the posterior is about the prior."""

RHAT_THRESHOLD = 1.05
r"""Split :math:`\hat R` above which the chains are taken not to have converged."""

_PRIOR_DRAWS = 10_000  # prior draws for the sd of a prior without a closed form


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
        theta = prior_sample(prior, _PRIOR_DRAWS, torch.Generator().manual_seed(0))
    return theta.detach().to("cpu", torch.float64).std(0)


def _figures(values: Sequence[float], digits: int = 2) -> str:
    """``[0.97, 0.99]``: numbers to ``digits`` decimals."""
    items = ("nan" if not math.isfinite(v) else f"{v:.{digits}f}" for v in map(float, values))
    return "[" + ", ".join(items) + "]"


def posterior_problems(diagnostics: dict[str, Any], parameter_names: Sequence[str]) -> list[str]:
    r"""What the figures of a posterior's ``diagnostics`` say went wrong (see the module
    docstring), one message each; ``[]`` when nothing did.

    Arguments:
        diagnostics: A posterior's diagnostics: ``contraction``, and where present
            ``adjustment_r2``, ``rhat``, ``inner_mixed`` (with ``inner_sd_ratio``, ``inner_z``,
            ``inner_kernel``, ``inner_steps``).
        parameter_names: The names of the parameters, in order.

    Example:
        >>> figures = {"contraction": [0.97, 0.99], "rhat": [1.01, 1.2]}
        >>> [text.split(":")[0] for text in posterior_problems(figures, ["a", "b"])]
        ['the posterior is about the prior', 'R-hat [1.01, 1.20] for (a, b) is above 1.05']
    """
    names = ", ".join(parameter_names)
    problems = []
    contraction = diagnostics.get("contraction")
    if contraction is not None and all(c > CONTRACTION_THRESHOLD for c in contraction):
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
                f"R-hat {_figures(values)} for ({names}) is above {RHAT_THRESHOLD}: the MCMC "
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
        if diagnostics.get("inner_kernel") == "gaussian":
            advice = "the model's exact draws differ from the simulator's: check the fit"
        else:
            steps = diagnostics.get("inner_steps")
            advice = f"raise ExchangeConfig.inner_steps (now {steps}) or check the fit"
        problems.append(
            "the exchange sampler's inner chain has not mixed: its auxiliary statistics do not "
            f"match simulations at posterior draws (spread ratio {ratio}, z {z}); {advice}"
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
