r"""ebm_lfi: likelihood-free inference with energy-based exponential-family models.

Fit :math:`\log \tilde p(x \mid \theta) = \eta(\theta)^\top s(x) + b(x)` to simulations by
score matching, then infer with ABC on the learned statistics or exchange MCMC
(Pacchiardi & Dutta, JMLR 2022, arXiv:2012.10903).
"""

from . import benchmarks, diagnostics, losses, methods, metrics, samplers
from .energy.model import ExpFamEBM
from .infer import infer
from .posterior.posterior import Posterior
from .priors import BoxUniform
from .simulation.simulate import SimulationInfo, simulate
from .simulation.simulator import SimulationError, Simulator
from .training.config import TrainConfig
from .training.loop import TrainingError, train

__all__ = [
    "BoxUniform",
    "Simulator",
    "simulate",
    "SimulationError",
    "SimulationInfo",
    "ExpFamEBM",
    "TrainConfig",
    "TrainingError",
    "train",
    "Posterior",
    "infer",
    "benchmarks",
    "diagnostics",
    "losses",
    "methods",
    "metrics",
    "samplers",
]
__version__ = "0.1.0"
