r"""Samplers: ABC on learned statistics, MCMC kernels and exchange MCMC.

``abc``: :class:`StatisticScaler`, :func:`rejection_abc`, :func:`smc_abc`. ``mcmc``:
random-walk and MALA kernels as pure ``init`` / ``step`` pairs and the :func:`sample_mcmc`
driver. ``exchange``: :func:`exchange_mcmc`. ``diagnostics``: :func:`effective_sample_size`
and split :func:`rhat`.
"""

from .abc import RejectionABCResult, SMCABCResult, StatisticScaler, rejection_abc, smc_abc
from .diagnostics import effective_sample_size, rhat
from .exchange import ExchangeResult, ExponentialFamily, exchange_mcmc
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

__all__ = [
    "ExchangeResult",
    "ExponentialFamily",
    "MALAState",
    "MCMCInfo",
    "MCMCResult",
    "RWState",
    "RejectionABCResult",
    "SMCABCResult",
    "StatisticScaler",
    "effective_sample_size",
    "exchange_mcmc",
    "mala_init",
    "mala_step",
    "random_walk_init",
    "random_walk_step",
    "rejection_abc",
    "rhat",
    "sample_mcmc",
    "smc_abc",
]
