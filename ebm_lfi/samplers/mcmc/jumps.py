r"""Differential-evolution jumps between chains (ter Braak 2006), for posteriors with modes.

A random walk or Langevin kernel whose shape is adapted to the spread of many chains is tuned,
on a posterior of separated or curved modes, to steps that never leave the mode a chain
started in; the share of chains per mode then stays where the starting points put it. A
differential-evolution jump moves a chain at :math:`\theta` by the difference of two other
chains, :math:`\theta' = \theta + \gamma (\theta_i - \theta_j)`, which can carry it to where
another chain is, in another mode.

The chains of a group are split in two halves by the parity of their index and of the step;
the moving half draws its differences from the other half only. Given the other half the
proposal is symmetric (:math:`(i, j)` and :math:`(j, i)` are equally likely), so a Metropolis
acceptance with the target's ratio alone leaves the target invariant for every moving chain;
the other half's states do not depend on the moving half's, so the joint step leaves the
product of the targets over the chains invariant, also when the other half takes its own
(random-walk) step at the same time.

References:
    | A Markov chain Monte Carlo version of the genetic algorithm Differential Evolution
      (ter Braak, 2006), Statistics and Computing 16, 239–249
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["JUMP_NOISE", "de_jumps", "de_sweep"]

JUMP_NOISE = 0.1  # the share of its random-walk noise a jumping chain keeps (exchange)


def de_jumps(
    theta: Tensor, g: int, c: int, t: int, rate: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    r"""Differential-evolution jumps of half of each group's chains at step ``t``.

    The chains of a group whose index has the parity of :math:`t` may jump: with probability
    ``rate`` a chain proposes :math:`\theta + \gamma (\theta_i - \theta_j)`, with
    :math:`i \ne j` two chains of the other half drawn uniformly and :math:`\gamma` 1 or
    :math:`2.38 / \sqrt{2p}` with probability one half each (1 carries a chain from one mode
    to another, as far apart as the two chains are; the other is the optimal scale for a
    Gaussian target).

    Arguments:
        theta: The chains, shape :math:`(g c, p)`, :math:`g` groups of :math:`c \ge 4`
            chains, group by group.
        g, c: The number of groups and of chains per group.
        t: The step (which half moves).
        rate: The probability that a chain of the moving half jumps.
        generator: Random generator.

    Returns:
        Each chain's jump :math:`(g c, p)` (zero where it does not jump) and whether it jumps
        :math:`(g c,)`.
    """
    p = theta.shape[1]
    dtype, device = theta.dtype, theta.device
    index = torch.arange(c, device=device)
    movers, others = index[(index + t) % 2 == 0], index[(index + t) % 2 == 1]
    m, o = movers.numel(), others.numel()
    pool = theta.reshape(g, c, p)[:, others]  # (g, o, p)
    first = torch.randint(o, (g, m), generator=generator, device=device)
    second = (first + torch.randint(1, o, (g, m), generator=generator, device=device)) % o
    diff = pool.gather(1, first[..., None].expand(g, m, p)) - pool.gather(
        1, second[..., None].expand(g, m, p)
    )
    half = torch.rand((g, m), generator=generator, dtype=dtype, device=device) < 0.5
    gamma = torch.where(half, 1.0, 2.38 / math.sqrt(2 * p)).to(dtype)
    on = torch.rand((g, m), generator=generator, dtype=dtype, device=device) < rate
    move = theta.new_zeros(g, c, p)
    move[:, movers] = torch.where(on[..., None], gamma[..., None] * diff, 0.0)
    jumping = torch.zeros(g, c, dtype=torch.bool, device=device)
    jumping[:, movers] = on
    return move.reshape(g * c, p), jumping.reshape(g * c)


def de_sweep(
    state: NamedTuple,
    init: Callable,
    log_prob_fn: Callable[[Tensor], Tensor],
    t: int,
    generator: torch.Generator,
) -> tuple[NamedTuple, int, int]:
    r"""A Metropolis step in which half of the chains (see :func:`de_jumps`) propose a jump.

    Arguments:
        state: A kernel state whose fields have the chains as leading axis, the first its
            ``position`` :math:`(c, d)` and one ``log_prob`` :math:`(c,)`.
        init: The kernel's ``init(position, log_prob_fn)`` (it evaluates the proposals).
        log_prob_fn: The target's log-density.
        t: The step (which half moves).
        generator: Random generator.

    Returns:
        The new state, the number of jumps proposed and the number accepted.
    """
    position = state.position
    c = position.shape[0]
    move, jumping = de_jumps(position, 1, c, t, 1.0, generator)
    proposed = init(position + move, log_prob_fn)
    log_ratio = torch.where(
        jumping, proposed.log_prob - state.log_prob, torch.full_like(state.log_prob, -math.inf)
    )
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    u = torch.rand(c, generator=generator, dtype=position.dtype, device=position.device)
    accepted = torch.log(u) < log_ratio
    new = type(state)(
        *(
            torch.where(accepted.reshape((c,) + (1,) * (a.ndim - 1)), a, b)
            for a, b in zip(proposed, state)
        )
    )
    return new, int(jumping.sum()), int(accepted.sum())
