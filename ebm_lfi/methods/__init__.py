r"""Inference methods behind one interface: ``fit(theta, x, seed=...)`` then
``posterior(x_o, num_samples=..., seed=...)`` returning an :class:`~ebm_lfi.Posterior`.

A method is a fit stage plus a posterior stage (:mod:`ebm_lfi.methods.method`). Build one by
name with :func:`get`; :func:`available` lists them (without importing torch: the names below
are loaded on first use). ``auto`` (:class:`AutoMethod`, the default of
:func:`ebm_lfi.infer`) fits several and keeps the best by a held-out posterior score
(:mod:`ebm_lfi.methods.scoring`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .registry import available, get, register

# public name -> the module that defines it
_NAMES = {
    "Method": ".method",
    "Draws": ".method",
    "FitStage": ".method",
    "PosteriorStage": ".method",
    "EnergyFit": ".fit",
    "make_loss": ".fit",
    "ABCConfig": ".abc_stage",
    "ABCStage": ".abc_stage",
    "ExchangeConfig": ".exchange_stage",
    "ExchangeStage": ".exchange_stage",
    "PotentialConfig": ".potential_stage",
    "PotentialStage": ".potential_stage",
    "DensityConfig": ".density_stage",
    "DensityStage": ".density_stage",
    "EnergyABC": ".energy_methods",
    "EnergyDensity": ".energy_methods",
    "EnergyExchange": ".energy_methods",
    "RatioPosterior": ".energy_methods",
    "FixedStatistics": ".baselines",
    "RegressionFit": ".baselines",
    "RejectionABC": ".baselines",
    "RegressionABC": ".baselines",
    "PosteriorMeanRegressor": ".baselines",
    "NotFittedError": ".common",
    "PosteriorWarning": ".checks",
    "AutoMethod": ".auto",
    "AutoConfig": ".auto",
    "ReshapedFit": ".reshape",
    "energy_score": ".scoring",
    "heldout_score": ".scoring",
}

__all__ = [
    "available",
    "get",
    "register",
    "Method",
    "Draws",
    "FitStage",
    "PosteriorStage",
    "EnergyFit",
    "ABCConfig",
    "ABCStage",
    "ExchangeConfig",
    "ExchangeStage",
    "PotentialConfig",
    "PotentialStage",
    "DensityConfig",
    "DensityStage",
    "EnergyABC",
    "EnergyDensity",
    "EnergyExchange",
    "RatioPosterior",
    "FixedStatistics",
    "RegressionFit",
    "RejectionABC",
    "RegressionABC",
    "PosteriorMeanRegressor",
    "NotFittedError",
    "PosteriorWarning",
    "make_loss",
    "AutoMethod",
    "AutoConfig",
    "ReshapedFit",
    "energy_score",
    "heldout_score",
]

if TYPE_CHECKING:
    from .abc_stage import ABCConfig, ABCStage
    from .auto import AutoConfig, AutoMethod
    from .baselines import (
        FixedStatistics,
        PosteriorMeanRegressor,
        RegressionABC,
        RegressionFit,
        RejectionABC,
    )
    from .checks import PosteriorWarning
    from .common import NotFittedError
    from .density_stage import DensityConfig, DensityStage
    from .energy_methods import EnergyABC, EnergyDensity, EnergyExchange, RatioPosterior
    from .exchange_stage import ExchangeConfig, ExchangeStage
    from .fit import EnergyFit, make_loss
    from .method import Draws, FitStage, Method, PosteriorStage
    from .potential_stage import PotentialConfig, PotentialStage
    from .reshape import ReshapedFit
    from .scoring import energy_score, heldout_score


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
