r"""pyabc plug-in (imported on demand: ``import ebm_lfi`` needs no pyabc).

:class:`EBMSumstat`: learned statistics as a pyabc ``Sumstat`` (``sumstat``). :class:`TorchPrior`,
:class:`SimulatorModel`, :func:`data_to_x`: our prior and simulator as pyabc's, and pyabc's data
as one :math:`x` (``problem``). :func:`history_to_posterior`: a pyabc ``History`` as a
:class:`~ebm_lfi.Posterior` (``history``).
"""

from .history import history_to_posterior, open_history
from .problem import SimulatorModel, TorchPrior, data_to_x
from .sumstat import EBMSumstat

__all__ = [
    "EBMSumstat",
    "TorchPrior",
    "SimulatorModel",
    "data_to_x",
    "history_to_posterior",
    "open_history",
]
