r"""Priors over the simulator parameters :math:`\theta`.

Any :class:`torch.distributions.Distribution` with ``sample`` and ``log_prob`` over a
vector :math:`\theta \in \mathbb{R}^p` is accepted as a prior (sbi's ``BoxUniform`` included).
:class:`BoxUniform` is our own uniform prior on a box; it carries the parameter names so that
results can become named DataFrame columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Uniform

__all__ = ["BoxUniform", "parameter_names", "prior_bounds", "validate_prior", "prior_dim"]


class BoxUniform(Independent):
    r"""Uniform prior on the box :math:`\prod_i [\text{low}_i, \text{high}_i]`.

    Arguments:
        low: Lower bounds, shape :math:`(p,)`.
        high: Upper bounds, shape :math:`(p,)`, each strictly above ``low``.
        parameter_names: Optional names of the :math:`p` parameters.

    Example:
        >>> prior = BoxUniform(low=[-1.0, 0.0], high=[1.0, 1.0], parameter_names=["a", "b"])
        >>> prior.sample((3,)).shape
        torch.Size([3, 2])
        >>> prior.parameter_names
        ['a', 'b']
    """

    def __init__(
        self,
        low: Sequence[float] | Tensor,
        high: Sequence[float] | Tensor,
        parameter_names: Sequence[str] | None = None,
        dtype: torch.dtype | None = None,
    ):
        low_t = torch.as_tensor(low, dtype=dtype or torch.get_default_dtype())
        high_t = torch.as_tensor(high, dtype=low_t.dtype)
        if low_t.ndim != 1 or high_t.shape != low_t.shape:
            raise ValueError(
                f"low and high must be 1-D of equal length, got shapes "
                f"{tuple(low_t.shape)} and {tuple(high_t.shape)}"
            )
        if not bool((high_t > low_t).all()):
            bad = torch.nonzero(high_t <= low_t).flatten().tolist()
            raise ValueError(f"high must exceed low in every coordinate; fails at {bad}")
        super().__init__(Uniform(low_t, high_t), 1)
        self.low, self.high = low_t, high_t
        if parameter_names is not None:
            parameter_names = [str(n) for n in parameter_names]
            if len(parameter_names) != low_t.numel():
                raise ValueError(
                    f"{len(parameter_names)} parameter names for {low_t.numel()} parameters"
                )
        self.parameter_names = parameter_names

    def log_prob(self, value: Tensor) -> Tensor:
        """Log density; ``-inf`` outside the box (instead of raising)."""
        value = torch.as_tensor(value, dtype=self.low.dtype)
        inside = ((value >= self.low) & (value <= self.high)).all(-1)
        logp = -torch.log(self.high - self.low).sum()
        return torch.where(inside, logp, torch.full_like(inside, -torch.inf, dtype=value.dtype))

    def __repr__(self) -> str:
        return f"BoxUniform(low={self.low.tolist()}, high={self.high.tolist()})"


def validate_prior(prior: object) -> Distribution:
    """Check that ``prior`` is a torch distribution over vectors and return it."""
    if not isinstance(prior, Distribution):
        raise TypeError(
            "prior must be a torch.distributions.Distribution (e.g. el.BoxUniform), "
            f"got {type(prior).__name__}"
        )
    shape = tuple(prior.batch_shape) + tuple(prior.event_shape)
    if len(shape) != 1:
        raise ValueError(
            "prior must be over a vector theta of shape (p,); got batch_shape "
            f"{tuple(prior.batch_shape)} and event_shape {tuple(prior.event_shape)}"
        )
    return prior


def prior_dim(prior: Distribution) -> int:
    """Number of parameters :math:`p` of a (validated) prior."""
    validate_prior(prior)
    return int((tuple(prior.batch_shape) + tuple(prior.event_shape))[0])


def parameter_names(prior: Distribution | None, dim: int | None = None) -> list[str]:
    """Names of the parameters: the prior's own if it has them, else ``theta_1, ...``."""
    names = getattr(prior, "parameter_names", None)
    if names is not None:
        return list(names)
    if dim is None:
        dim = prior_dim(prior)
    return [f"theta_{i + 1}" for i in range(dim)]


def prior_bounds(prior: Distribution) -> tuple[Tensor, Tensor] | None:
    """Lower and upper bounds of a box-shaped prior support, or ``None`` if unbounded.

    Works for :class:`BoxUniform`, sbi's ``BoxUniform`` and ``Independent(Uniform)``.
    """
    base = prior
    while isinstance(base, Independent):
        base = base.base_dist
    if isinstance(base, Uniform):
        return base.low.reshape(-1), base.high.reshape(-1)
    support = getattr(prior, "support", None)
    lb = getattr(getattr(support, "base_constraint", support), "lower_bound", None)
    ub = getattr(getattr(support, "base_constraint", support), "upper_bound", None)
    if isinstance(lb, Tensor) and isinstance(ub, Tensor):
        return lb.reshape(-1), ub.reshape(-1)
    return None
