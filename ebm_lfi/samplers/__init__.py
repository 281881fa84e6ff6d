r"""Samplers: ABC on learned statistics, MCMC kernels and exchange MCMC.

``scaler``: :class:`StatisticScaler`, the scaling behind the ABC distance. ``abc``:
:func:`rejection_abc`, :func:`auto_num_accepted`, :func:`systematic_resample` (and re-exports
of the rest). ``smc``: :func:`smc_abc`. ``adjustment``: the local-linear
:func:`regression_adjustment` of accepted ABC samples. ``kernels``: random-walk and MALA
kernels as pure ``init`` / ``step`` pairs; ``mcmc``: the :func:`sample_mcmc` driver. ``exchange``:
:func:`exchange_mcmc` (its auxiliary draw in ``exchange_auxiliary``) and
:func:`inner_chain_check`. ``diagnostics``:
:func:`effective_sample_size` and split :func:`rhat`. ``potential``: :func:`sample_potential`,
MCMC on a tractable posterior potential in an unconstrained parametrisation of the support.
"""

from .abc import RejectionABCResult, auto_num_accepted, rejection_abc, systematic_resample
from .adjustment import (
    AdjustmentResult,
    epanechnikov_weights,
    regression_adjustment,
    support_bounds,
)
from .diagnostics import effective_sample_size, rhat
from .exchange import ExchangeResult, ExponentialFamily, exchange_mcmc
from .inner_check import InnerChainCheck, inner_chain_check
from .mcmc import (
    MALAState,
    MCMCInfo,
    MCMCResult,
    RWState,
    mala_init,
    mala_step,
    random_walk_init,
    random_walk_step,
    sample_mcmc,
)
from .potential import PotentialResult, sample_potential
from .scaler import StatisticScaler
from .smc import SMCABCResult, smc_abc

__all__ = [
    "AdjustmentResult",
    "ExchangeResult",
    "ExponentialFamily",
    "MALAState",
    "MCMCInfo",
    "MCMCResult",
    "PotentialResult",
    "RWState",
    "RejectionABCResult",
    "SMCABCResult",
    "StatisticScaler",
    "auto_num_accepted",
    "effective_sample_size",
    "epanechnikov_weights",
    "exchange_mcmc",
    "sample_potential",
    "InnerChainCheck",
    "inner_chain_check",
    "mala_init",
    "mala_step",
    "random_walk_init",
    "random_walk_step",
    "regression_adjustment",
    "rejection_abc",
    "rhat",
    "sample_mcmc",
    "smc_abc",
    "support_bounds",
    "systematic_resample",
]
