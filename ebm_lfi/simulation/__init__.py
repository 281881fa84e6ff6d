r"""Running the user's simulator: :class:`Simulator` (seeding, batching, failure policy) and
:func:`simulate` / :func:`simulate_at` (prior-predictive pairs, or simulations at given
parameters, optionally on an executor)."""

from .simulate import SimulationInfo, simulate, simulate_at
from .simulator import SimulationError, Simulator

__all__ = ["Simulator", "SimulationError", "SimulationInfo", "simulate", "simulate_at"]
