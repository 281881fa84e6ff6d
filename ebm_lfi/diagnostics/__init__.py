r"""Checks of a posterior approximation: calibration over the prior and fit to one observation.

* :func:`sbc`: simulation-based calibration (Talts et al. 2018): ranks of true parameters
  among posterior draws, their uniformity tests, rank histograms and expected coverage of
  central and highest-density credible regions (:class:`SBCResult`).
* :func:`predictive_check`: posterior predictive checks of an observation with user, learned
  or default statistics (:class:`PredictiveCheck`).
* :func:`predictive_scores`: energy and kernel scores of the posterior predictive of a series
  (:class:`PredictiveScores`), where no reference posterior exists.

MCMC convergence diagnostics (:math:`\hat R`, effective sample size) live in
:mod:`ebm_lfi.samplers.mcmc.diagnostics`.
"""

from .coverage import coverage_band, expected_coverage, plot_coverage
from .predictive import (
    PredictiveCheck,
    PredictiveScores,
    default_statistics,
    predictive_check,
    predictive_scores,
)
from .ranks import density_rank, marginal_ranks, split_density_rank, uniformity_table
from .sbc import sbc
from .sbc_result import SBCResult

__all__ = [
    "sbc",
    "SBCResult",
    "predictive_check",
    "PredictiveCheck",
    "default_statistics",
    "predictive_scores",
    "PredictiveScores",
    "expected_coverage",
    "coverage_band",
    "plot_coverage",
    "marginal_ranks",
    "density_rank",
    "split_density_rank",
    "uniformity_table",
]
