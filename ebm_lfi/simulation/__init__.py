r"""Running the user's simulator: :class:`Simulator` (seeding, batching), the checks of its
outputs (:class:`SimulationError`), and :func:`simulate` / :func:`simulate_at`
(prior-predictive pairs, or simulations at given parameters, optionally on an executor, with a
policy for failures)."""

from .outcomes import SimulationError
from .simulate import SimulationInfo, simulate, simulate_at
from .simulator import Simulator

__all__ = ["Simulator", "SimulationError", "SimulationInfo", "simulate", "simulate_at"]
