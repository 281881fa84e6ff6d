r"""Private helpers: seeded prior draws and a prior log-density that is ``-inf`` off support."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = ["prior_log_prob", "prior_sample"]


def prior_sample(prior: Distribution, n: int, generator: torch.Generator) -> Tensor:
    r"""Draws :math:`(n, p)` prior samples reproducibly from ``generator``.

    torch distributions draw from the global RNG, so the draw runs inside
    :func:`torch.random.fork_rng` seeded from ``generator``; the global state is restored.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return prior.sample((n,))


def prior_log_prob(prior: Distribution, theta: Tensor) -> Tensor:
    r"""Prior log-density of :math:`(n, p)` parameters, ``-inf`` outside the support.

    Distributions that validate their arguments raise outside the support; here such rows
    are evaluated at a valid stand-in and then set to ``-inf``.
    """
    support = getattr(prior, "support", None)
    try:
        inside = support.check(theta) if support is not None else None
    except NotImplementedError:
        inside = None
    if inside is None or bool(inside.all()):
        logp = prior.log_prob(theta)
    elif not bool(inside.any()):
        return theta.new_full(theta.shape[:1], -torch.inf)
    else:
        stand_in = theta[inside.nonzero()[0, 0]]
        safe = torch.where(inside[:, None], theta, stand_in)
        logp = prior.log_prob(safe)
        logp = torch.where(inside, logp, torch.full_like(logp, -torch.inf))
    return torch.nan_to_num(
        logp.to(theta.dtype), nan=-torch.inf, posinf=torch.inf, neginf=-torch.inf
    )
