r"""MCMC: random-walk and MALA kernels as pure ``init`` / ``step`` pairs (:mod:`.kernels`), their
burn-in adaptation (:mod:`.adaptation`), the :func:`sample_mcmc` driver, convergence diagnostics
(:func:`effective_sample_size`, split :func:`rhat`), :func:`sample_potential` on a tractable
posterior potential (or :func:`sample_tempered`, tempered SMC from the prior, on one with
separated modes), and :func:`exchange_mcmc` on an :class:`ExponentialFamily` with
:func:`inner_chain_check`, and :class:`ModelChains`, the negatives of maximum likelihood."""

from .adaptation import AdaptationState, adaptation_init, adaptation_update
from .diagnostics import effective_sample_size, rhat
from .driver import MCMCResult, sample_mcmc
from .exchange import ExchangeResult, exchange_mcmc
from .exchange_auxiliary import ExponentialFamily
from .inner_check import InnerChainCheck, inner_chain_check
from .kernels import (
    MALAState,
    MCMCInfo,
    RWState,
    mala_init,
    mala_step,
    random_walk_init,
    random_walk_step,
)
from .model_chains import ModelChains
from .potential import PotentialResult, sample_potential
from .tempering import TemperedResult, sample_tempered

__all__ = [
    "AdaptationState",
    "ExchangeResult",
    "ExponentialFamily",
    "InnerChainCheck",
    "MALAState",
    "MCMCInfo",
    "MCMCResult",
    "ModelChains",
    "PotentialResult",
    "RWState",
    "TemperedResult",
    "adaptation_init",
    "adaptation_update",
    "effective_sample_size",
    "exchange_mcmc",
    "inner_chain_check",
    "mala_init",
    "mala_step",
    "random_walk_init",
    "random_walk_step",
    "rhat",
    "sample_mcmc",
    "sample_potential",
    "sample_tempered",
]
