r"""ebm_lfi: likelihood-free inference with energy-based exponential-family models.

Fit :math:`\log \tilde p(x \mid \theta) = \eta(\theta)^\top s(x) + b(x)` to simulations by
score matching, then infer with ABC on the learned statistics or exchange MCMC
(Pacchiardi & Dutta, JMLR 2022, arXiv:2012.10903).

The names below are loaded on first use (PEP 562), so that ``import ebm_lfi`` and the
command line's ``--help`` do not pay for torch, the diagnostics or the plotting stack until
they are needed; ``ebm_lfi.benchmarks`` and the other subpackages likewise.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_NAMES = {
    "BoxUniform": ".priors",
    "Simulator": ".simulation.simulator",
    "simulate": ".simulation.simulate",
    "SimulationError": ".simulation.outcomes",
    "SimulationInfo": ".simulation.simulate",
    "ExpFamEBM": ".energy.model",
    "TrainConfig": ".training.config",
    "TrainingError": ".training.loop",
    "train": ".training.loop",
    "Posterior": ".posterior.posterior",
    "infer": ".infer",
}
_SUBPACKAGES = ("benchmarks", "diagnostics", "losses", "methods", "metrics", "samplers")

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

if TYPE_CHECKING:
    from . import benchmarks, diagnostics, losses, methods, metrics, samplers
    from .energy.model import ExpFamEBM
    from .infer import infer
    from .posterior.posterior import Posterior
    from .priors import BoxUniform
    from .simulation.outcomes import SimulationError
    from .simulation.simulate import SimulationInfo, simulate
    from .simulation.simulator import Simulator
    from .training.config import TrainConfig
    from .training.loop import TrainingError, train


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """This package's module type: a loaded submodule does not hide a function of its name.

    Importing the submodule ``ebm_lfi.infer`` (as the doctests and ``from ebm_lfi.infer
    import ...`` do) sets the attribute ``ebm_lfi.infer``; the function keeps the name.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _NAMES:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
