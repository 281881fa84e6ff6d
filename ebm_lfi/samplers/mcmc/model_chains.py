r"""Chains that draw from a conditional energy model: the negatives of maximum likelihood.

For an unnormalised conditional density :math:`p_w(y \mid \theta) \propto \exp f_w(y, \theta)`
the gradient of the log-likelihood of a pair :math:`(\theta_i, y_i)` is

.. math:: \nabla_w \log p_w(y_i \mid \theta_i) = \nabla_w f_w(y_i, \theta_i)
    - \mathbb{E}_{y' \sim p_w(\cdot \mid \theta_i)}\big[\nabla_w f_w(y', \theta_i)\big],

and the expectation is estimated with *negatives* :math:`y'_i` drawn by MCMC from the current
model at the same :math:`\theta_i` (Robbins–Monro stochastic approximation: Younes 1989,
Tieleman 2008). :class:`ModelChains` runs those chains, one per row of a mini-batch, with the
MALA kernel of :mod:`ebm_lfi.samplers.mcmc.kernels` (the score :math:`\nabla_y f` comes from
autograd):

* **persistent** (default): one chain per *training pair*, kept between visits of the row and
  continued under the updated weights (persistent contrastive divergence, Tieleman 2008). The
  chain of a row starts at its data point the first time the row is seen. Because the weights
  change slowly, the chains stay close to the current model with a few steps per visit;
* **short-run** (``persistent=False``, or when the caller gives no row index): each chain
  starts at the data point and runs ``steps`` steps (contrastive divergence, Hinton 2002),
  a biased estimate when the chains do not reach the model.

**Step size.** One step size :math:`h` for all chains, adapted after every step by the
Robbins–Monro rule of :func:`~ebm_lfi.samplers.mcmc.adaptation.robbins_monro` toward the target
acceptance (0.574, optimal for MALA, Roberts & Rosenthal 1998). The model moves during
training, so the gain is not allowed to decay below that of update 100
(:math:`101^{-0.6} \approx 0.06`): the rule keeps tracking the acceptance instead of freezing.

**Divergence.** A model that stops being normalisable in :math:`y` (e.g. a quadratic
coefficient of the wrong sign) sends its chains to infinity, and their gradients then blow up
the fit. After each visit, a chain whose position or log-density is not finite, or that left
the box :math:`|y_j| \le` ``divergence_bound`` (the data are standardised, so the bound is in
units of their spread), is counted as *divergent* and restarted at its data point. A model
whose energies blow up can also trap its chains instead: every proposal is rejected and the
adapted step size collapses; a step size below ``min_step_size`` marks the chains as *stuck*.
The counts are data, in :attr:`ModelChains.diagnostics`: ``divergent`` chain visits,
``divergent_fraction`` of all visits, ``stuck``, and ``diverged`` when the fraction exceeds
``max_divergent_fraction`` or the chains are stuck (the fit then cannot be trusted).

References:
    | Parametric inference for imperfectly observed Gibbsian fields (Younes, 1989)
      https://doi.org/10.1007/BF00333148

    | Training restricted Boltzmann machines using approximations to the likelihood gradient
      (Tieleman, 2008) https://doi.org/10.1145/1390156.1390290

    | Optimal scaling of discrete approximations to Langevin diffusions (Roberts & Rosenthal,
      1998) https://doi.org/10.1111/1467-9868.00123
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .adaptation import robbins_monro
from .kernels import mala_init, mala_step

__all__ = ["ModelChains"]

_GAIN_FLOOR = 100  # the Robbins–Monro counter is capped here: a gain of 101^-0.6 ~ 0.06


class ModelChains:
    r"""MALA chains over :math:`y` targeting :math:`\exp f(y, \theta_i)`, one per row.

    Arguments:
        steps: MALA steps per visit of a row.
        persistent: Keep one chain per training pair between visits (needs the row index);
            otherwise start every visit at the data point (short-run, contrastive divergence).
        step_size: Initial MALA step size :math:`h` (standardised units).
        target_acceptance: Acceptance rate the step size is adapted toward.
        divergence_bound: A chain whose position leaves :math:`|y_j| \le` this bound, or whose
            position or log-density is not finite, is divergent (counted, restarted).
        max_divergent_fraction: Fraction of divergent visits above which
            ``diagnostics["diverged"]`` is ``True``.
        min_step_size: Adapted step size below which the chains are stuck (and
            ``diagnostics["diverged"]`` is ``True``).

    Example:
        >>> chains = ModelChains(steps=20, persistent=False)
        >>> f = lambda y, theta: -0.5 * ((y - theta) ** 2).sum(-1)  # N(theta, 1)
        >>> theta = torch.zeros(500, 1)
        >>> with torch.random.fork_rng():
        ...     _ = torch.manual_seed(0)
        ...     y_neg = chains(f, torch.full((500, 1), 3.0), theta)
        >>> bool(y_neg.mean().abs() < 0.5), chains.diagnostics["divergent"]
        (True, 0)
    """

    def __init__(
        self,
        steps: int = 5,
        persistent: bool = True,
        *,
        step_size: float = 0.1,
        target_acceptance: float = 0.574,
        divergence_bound: float = 50.0,
        max_divergent_fraction: float = 0.01,
        min_step_size: float = 1e-4,
    ):
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        for name, value in (("step_size", step_size), ("divergence_bound", divergence_bound)):
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not 0 < target_acceptance < 1:
            raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance}")
        if not 0 <= max_divergent_fraction <= 1:
            raise ValueError(
                f"max_divergent_fraction must be in [0, 1], got {max_divergent_fraction}"
            )
        self.steps = steps
        self.persistent = bool(persistent)
        self.initial_step_size = float(step_size)
        self.target_acceptance = float(target_acceptance)
        self.divergence_bound = float(divergence_bound)
        self.max_divergent_fraction = float(max_divergent_fraction)
        self.min_step_size = float(min_step_size)
        self.reset()

    def reset(self) -> ModelChains:
        """Forget the chains, the adapted step size and the counts (a new fit)."""
        self.log_step_size = math.log(self.initial_step_size)
        self.positions: Tensor | None = None  # (N, *event), the persistent chains
        self.started: Tensor | None = None  # (N,) bool, rows whose chain exists
        self.updates = 0  # step-size updates
        self.visits = 0  # chain visits (rows x calls)
        self.divergent = 0
        self.acceptance = math.nan  # mean acceptance of the last visit
        return self

    @property
    def step_size(self) -> float:
        """The current MALA step size :math:`h`."""
        return math.exp(self.log_step_size)

    @property
    def diagnostics(self) -> dict:
        """What the chains did: visits, divergent visits (count, fraction), ``stuck``,
        ``diverged``, the last acceptance rate and the adapted step size."""
        fraction = self.divergent / self.visits if self.visits else 0.0
        stuck = self.visits > 0 and self.step_size < self.min_step_size
        return {
            "persistent": self.persistent,
            "steps": self.steps,
            "visits": self.visits,
            "divergent": self.divergent,
            "divergent_fraction": fraction,
            "stuck": stuck,
            "diverged": fraction > self.max_divergent_fraction or stuck,
            "acceptance": self.acceptance,
            "step_size": self.step_size,
        }

    def _starts(self, y: Tensor, index: Tensor | None) -> Tensor:
        """Where the chains of this batch start: the persistent state, or the data."""
        if not self.persistent or index is None:
            return y
        size = int(index.max()) + 1
        if self.positions is None or self.positions.shape[1:] != y.shape[1:]:
            self.positions = y.new_zeros((size, *y.shape[1:]))
            self.started = torch.zeros(size, dtype=torch.bool, device=y.device)
        elif size > self.positions.shape[0]:  # rows beyond those seen so far
            grow = size - self.positions.shape[0]
            self.positions = torch.cat([self.positions, y.new_zeros((grow, *y.shape[1:]))])
            self.started = torch.cat([self.started, self.started.new_zeros(grow)])
        self.positions = self.positions.to(y)
        self.started = self.started.to(y.device)
        seen = self.started[index].reshape(-1, *(1,) * (y.ndim - 1))
        return torch.where(seen, self.positions[index], y)

    @torch.no_grad()
    def __call__(
        self,
        log_prob: Callable[[Tensor, Tensor], Tensor],
        y: Tensor,
        theta: Tensor,
        index: Tensor | None = None,
    ) -> Tensor:
        r"""Negatives :math:`y'_i \approx p(\cdot \mid \theta_i)`, one per row, detached.

        Arguments:
            log_prob: The unnormalised log-density ``log_prob(y, theta) -> (n,)``, rows
                independent, differentiable in ``y``.
            y: The data of the batch, shape :math:`(n, *event)` (the starts of new chains and
                of restarted divergent ones).
            theta: The parameters of the batch, shape :math:`(n, p)`.
            index: Row indices of the batch in the training set, shape :math:`(n,)` (needed
                for persistent chains; without it the chains are short-run).

        Returns:
            The negatives, shape :math:`(n, *event)`.
        """
        y = y.detach()
        if index is not None:
            index = index.reshape(-1).long().to(y.device)
            if index.shape[0] != y.shape[0]:
                raise ValueError(f"index has {index.shape[0]} rows, y has {y.shape[0]}")

        def target(position: Tensor) -> Tensor:
            return log_prob(position, theta)

        state = mala_init(self._starts(y, index), target)
        for _ in range(self.steps):
            state, info = mala_step(state, target, self.step_size)
            acceptance = float(info.acceptance_rate.mean())
            if math.isfinite(acceptance):
                t = min(self.updates, _GAIN_FLOOR)
                self.log_step_size = robbins_monro(
                    self.log_step_size, acceptance, self.target_acceptance, t
                )
                self.updates += 1
            self.acceptance = acceptance
        position = state.position
        flat = position.reshape(position.shape[0], -1)
        bad = ~torch.isfinite(flat).all(1) | ~torch.isfinite(state.log_prob)
        bad |= flat.abs().nan_to_num(math.inf).amax(1) > self.divergence_bound
        position = torch.where(bad.reshape(-1, *(1,) * (y.ndim - 1)), y, position)
        self.visits += int(y.shape[0])
        self.divergent += int(bad.sum())
        if self.persistent and index is not None:
            self.positions[index] = position
            self.started[index] = True
        return position.detach()
