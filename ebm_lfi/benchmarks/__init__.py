r"""Benchmark tasks with exact likelihoods and reference posteriors.

:func:`get` returns a :class:`Task` (prior, simulator, exact ``log_likelihood``, sufficient
statistics where the model is an exponential family, and the stored observations, true
parameters and reference posterior samples from the package's data directory
``ebm_lfi/benchmarks/data``, installed with it); :func:`available` lists the names. The data
are rebuilt from fixed seeds by ``python -m ebm_lfi.benchmarks.reference``.
"""

from .task import Task, data_directory
from .tasks import available, get

__all__ = ["Task", "available", "data_directory", "get"]
