r"""Samplers of the posterior stage, which never import the model (structural protocols only).

:mod:`ebm_lfi.samplers.abc`: rejection ABC on a reference table, SMC-ABC, the scaling of the ABC
distance and the regression adjustment. :mod:`ebm_lfi.samplers.mcmc`: MCMC kernels as pure
``init`` / ``step`` pairs, the driver, convergence diagnostics, MCMC on a tractable potential,
and exchange MCMC with its inner chain.
"""

from . import abc, mcmc

__all__ = ["abc", "mcmc"]
