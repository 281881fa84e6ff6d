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
        if value.ndim == 0 or value.shape[-1] != self.low.numel():
            raise ValueError(
                f"value must have shape (*, {self.low.numel()}), got {tuple(value.shape)}"
            )
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
    if tuple(prior.batch_shape) != () or len(prior.event_shape) != 1:
        hint = ""
        if len(prior.batch_shape) == 1 and tuple(prior.event_shape) == ():
            hint = (
                "; wrap it as torch.distributions.Independent(prior, 1) so that log_prob "
                "sums over the parameters"
            )
        raise ValueError(
            "prior must be over a vector theta of shape (p,) (batch_shape (), event_shape "
            f"(p,)); got batch_shape {tuple(prior.batch_shape)} and event_shape "
            f"{tuple(prior.event_shape)}{hint}"
        )
    return prior


def prior_dim(prior: Distribution) -> int:
    """Number of parameters :math:`p` of a (validated) prior."""
    validate_prior(prior)
    return int(prior.event_shape[0])


def parameter_names(prior: Distribution | None, dim: int | None = None) -> list[str]:
    """Names of the parameters: the prior's own if it has them, else ``theta_1, ...``."""
    names = getattr(prior, "parameter_names", None)
    if names is not None:
        return list(names)
    if dim is None:
        dim = prior_dim(prior)
    return [f"theta_{i + 1}" for i in range(dim)]


def prior_bounds(prior: Distribution) -> tuple[Tensor, Tensor] | None:
    """Lower and upper bounds of a box-shaped prior support, each of shape ``(p,)``.

    Works for :class:`BoxUniform`, sbi's ``BoxUniform``, ``Independent(Uniform)`` and any prior
    whose support is an interval (e.g. ``Independent(Beta)``); ``None`` unless the support is
    bounded on both sides.
    """
    base = prior
    while isinstance(base, Independent):
        base = base.base_dist
    if isinstance(base, Uniform):
        return base.low.reshape(-1), base.high.reshape(-1)
    support = getattr(prior, "support", None)
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    lb = getattr(support, "lower_bound", None)
    ub = getattr(support, "upper_bound", None)
    if lb is None or ub is None:
        return None
    # Bounds may be tensors or Python numbers (e.g. Beta's unit interval): broadcast to (p,).
    p = prior_dim(prior)
    like = next((b for b in (lb, ub) if isinstance(b, Tensor)), None)
    if like is None:
        try:
            like = prior.mean
        except NotImplementedError:
            like = torch.empty(0)
    dtype, device = like.dtype, like.device
    bounds = []
    for bound in (lb, ub):
        bound = torch.as_tensor(bound, dtype=dtype, device=device).reshape(-1)
        bounds.append(bound.expand(p).clone() if bound.numel() == 1 else bound)
    return bounds[0], bounds[1]
