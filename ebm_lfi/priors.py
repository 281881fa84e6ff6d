r"""Priors over the simulator parameters :math:`\theta`.

Any :class:`torch.distributions.Distribution` with ``sample`` and ``log_prob`` over a
vector :math:`\theta \in \mathbb{R}^p` is accepted as a prior: sbi's ``BoxUniform`` and
``MultipleIndependent`` included, and a one-parameter distribution of ``batch_shape (1,)`` as
sbi writes it (:func:`validate_prior`). :func:`coordinate_bounds` reads the bounds of each
parameter from the support (:func:`support_bounds`: the same in float64, for the samplers).
:func:`prior_log_prob` is the log-density every sampler uses (:math:`-\infty` off the support,
never an error) and :func:`prior_sample` a seeded draw that leaves the global RNG alone.
:class:`BoxUniform` is our own uniform prior on a box; it carries the parameter names so that
results can become named DataFrame columns.

**The bijection** :math:`\theta \leftrightarrow \mathbb{R}^p` (:class:`SupportBijection`),
which every sampler that works in an unbounded space uses (the regression adjustment of ABC,
MCMC on a tractable potential): :math:`\theta = g(u)` acts per coordinate on the support
:math:`(l_j, h_j)`,

.. math:: g_j(u_j) = \begin{cases}
    l_j + (h_j - l_j)\, \sigma(u_j) & \text{box } [l_j, h_j], \\
    l_j + e^{u_j} & \text{lower bound only}, \\
    h_j - e^{u_j} & \text{upper bound only}, \\
    u_j & \text{unbounded},
    \end{cases}

with :math:`\sigma` the logistic function, so :math:`g^{-1}` is the logit of
:math:`(\theta - l) / (h - l)`, :math:`\log(\theta - l)`, :math:`\log(h - \theta)` or the
identity, and

.. math:: \log |g_j'(u_j)| = \begin{cases}
    \log (h_j - l_j) + \log \sigma(u_j) + \log \sigma(-u_j) & \text{box}, \\
    u_j & \text{one bound}, \\
    0 & \text{unbounded},
    \end{cases}

the term that turns a density of :math:`\theta` into one of :math:`u`:
:math:`\log f_u(u) = \log f(g(u)) + \sum_j \log |g_j'(u_j)|`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, Independent, Uniform, constraints

__all__ = [
    "BoxUniform",
    "SupportBijection",
    "coordinate_bounds",
    "parameter_names",
    "prior_bounds",
    "prior_dim",
    "prior_log_prob",
    "prior_sample",
    "support_bounds",
    "validate_prior",
]


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
    r"""Check that ``prior`` is a torch distribution over vectors and return it.

    A distribution over one parameter written the way sbi asks for it, with
    ``batch_shape (1,)`` and ``event_shape ()`` (e.g. ``Uniform(torch.zeros(1), torch.ones(1))``),
    is accepted and returned as ``Independent(prior, 1)``, a distribution over vectors of shape
    :math:`(1,)` whose ``log_prob`` has shape :math:`(n,)`; so is a scalar distribution
    (``Gamma(2.0, 1.0)``), expanded to ``batch_shape (1,)`` first.

    Raises:
        TypeError: If ``prior`` is not a :class:`torch.distributions.Distribution`.
        ValueError: If it is not over vectors of shape :math:`(p,)`.
    """
    if not isinstance(prior, Distribution):
        raise TypeError(
            "prior must be a torch.distributions.Distribution (e.g. el.BoxUniform), "
            f"got {type(prior).__name__}"
        )
    if tuple(prior.batch_shape) == (1,) and tuple(prior.event_shape) == ():
        return Independent(prior, 1)
    if tuple(prior.batch_shape) == () and tuple(prior.event_shape) == ():
        try:  # a scalar distribution, Gamma(2.0, 1.0): one parameter
            return Independent(prior.expand((1,)), 1)
        except NotImplementedError:
            pass  # a distribution that cannot be expanded: the error below
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


def prior_dim(prior: Distribution) -> int:
    """Number of parameters :math:`p` of a (validated) prior."""
    return int(validate_prior(prior).event_shape[0])


def parameter_names(prior: Distribution | None, dim: int | None = None) -> list[str]:
    """Names of the parameters: the prior's own if it has them, else ``theta_1, ...``."""
    names = getattr(prior, "parameter_names", None)
    if names is not None:
        return list(names)
    if dim is None:
        dim = prior_dim(prior)
    return [f"theta_{i + 1}" for i in range(dim)]


def coordinate_bounds(prior: Distribution) -> tuple[Tensor, Tensor]:
    r"""Lower and upper bound of each parameter, ``-inf`` / ``+inf`` where the support is open.

    Reads uniform distributions (:class:`BoxUniform`, sbi's ``BoxUniform``,
    ``Independent(Uniform)``) and support constraints with bounds (``interval``,
    ``greater_than``, ``positive``, ``less_than``, ...), through ``independent`` wrappers and
    concatenations (``constraints.cat``, the support of sbi's ``MultipleIndependent``); an
    unrecognised support counts as unbounded.

    Arguments:
        prior: A prior over vectors of shape :math:`(p,)`.

    Returns:
        ``(low, high)``, each of shape :math:`(p,)`, in the dtype of the bounds (else of the
        prior's mean) and on their device.
    """
    prior = validate_prior(prior)
    p = int(prior.event_shape[0])
    base = prior
    while isinstance(base, Independent):
        base = base.base_dist
    if isinstance(base, Uniform):
        low, high = base.low.reshape(-1), base.high.reshape(-1)
        return low.expand(p).clone(), high.expand(p).clone()
    like = _tensor_bound(prior.support)
    if like is None:
        try:
            like = prior.mean
        except NotImplementedError:
            like = torch.empty(0)
    low, high = _constraint_bounds(prior.support, p)
    return (
        torch.as_tensor(low, dtype=like.dtype, device=like.device),
        torch.as_tensor(high, dtype=like.dtype, device=like.device),
    )


def prior_bounds(prior: Distribution) -> tuple[Tensor, Tensor] | None:
    """Lower and upper bounds of a box-shaped prior support, each of shape ``(p,)``.

    Works for :class:`BoxUniform`, sbi's ``BoxUniform``, ``Independent(Uniform)``, sbi's
    ``MultipleIndependent`` of bounded distributions and any prior whose support is an interval
    (e.g. ``Independent(Beta)``); ``None`` unless every parameter is bounded on both sides
    (see :func:`coordinate_bounds` for the per-parameter bounds).
    """
    low, high = coordinate_bounds(prior)
    if not bool(torch.isfinite(low).all() and torch.isfinite(high).all()):
        return None
    return low, high


def support_bounds(prior: Distribution, dim: int) -> tuple[Tensor, Tensor]:
    r"""Per-coordinate lower and upper bounds of a prior's support, ``±inf`` where open.

    The bounds of :func:`coordinate_bounds` (boxes, support constraints with bounds,
    ``independent`` wrappers and concatenations; an unrecognised support counts as unbounded),
    in float64 on the CPU.

    Arguments:
        prior: The prior over :math:`(p,)` vectors.
        dim: The number of parameters :math:`p`.

    Returns:
        ``(low, high)``, each of shape :math:`(p,)`, float64 on the CPU.

    Example:
        >>> low, high = support_bounds(torch.distributions.Exponential(torch.ones(1)), 1)
        >>> low, high
        (tensor([0.], dtype=torch.float64), tensor([inf], dtype=torch.float64))
    """
    low, high = coordinate_bounds(prior)
    return (
        low.detach().to("cpu", torch.float64).reshape(-1).expand(dim).clone(),
        high.detach().to("cpu", torch.float64).reshape(-1).expand(dim).clone(),
    )


INTERIOR_EDGE = 1e-6
"""How far inside a finite bound :meth:`SupportBijection.interior` moves a point on it (relative
to the box width, or to ``max(1, |bound|)`` for a one-sided bound)."""


class SupportBijection:
    r"""The per-coordinate bijection :math:`\theta = g(u)` between :math:`\mathbb{R}^p` and the
    support :math:`\prod_j (l_j, h_j)` of a prior (see the module docstring for the map).

    :meth:`forward` is :math:`g^{-1}` (support to :math:`\mathbb{R}`), :meth:`inverse` is
    :math:`g`, :meth:`log_abs_det_jacobian` is :math:`\log |g_j'(u_j)|` per coordinate.
    Points on a finite bound (where :math:`g^{-1}` is infinite) are first moved inside by
    ``tiny`` (relative to the box width, or to :math:`\max(1, |l_j|, |h_j|)` for a one-sided
    bound), and :meth:`inverse` clamps onto :math:`[l, h]` what rounding pushes past a bound.

    Arguments:
        low: Lower bounds, shape :math:`(p,)`, ``-inf`` where open.
        high: Upper bounds, shape :math:`(p,)`, ``+inf`` where open.
        tiny: How far inside a finite bound :meth:`forward` moves a point on it.

    Example:
        >>> g = SupportBijection(torch.tensor([0.0, 0.0]), torch.tensor([1.0, math.inf]))
        >>> u = g.forward(torch.tensor([[0.5, 1.0]]))
        >>> u
        tensor([[0., 0.]])
        >>> g.inverse(u), g.log_abs_det_jacobian(u)
        (tensor([[0.5000, 1.0000]]), tensor([[-1.3863,  0.0000]]))
    """

    def __init__(self, low: Tensor, high: Tensor, tiny: float = 0.0):
        self.low, self.high, self.tiny = low, high, tiny
        lo_ok, hi_ok = torch.isfinite(low), torch.isfinite(high)
        self.box, self.lower, self.upper = lo_ok & hi_ok, lo_ok & ~hi_ok, ~lo_ok & hi_ok
        self.width = torch.where(self.box, high - low, torch.ones_like(low))
        self.low0 = torch.where(lo_ok, low, torch.zeros_like(low))
        self.high0 = torch.where(hi_ok, high, torch.zeros_like(high))

    @classmethod
    def from_prior(
        cls,
        prior: Distribution,
        tiny: float = 0.0,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> SupportBijection:
        r"""The bijection of a prior's support (:func:`support_bounds`).

        Arguments:
            prior: A prior over vectors of shape :math:`(p,)`.
            tiny: See the class.
            dtype, device: Of the bounds, hence of the computations.
        """
        low, high = support_bounds(prior, prior_dim(prior))
        return cls(low.to(dtype=dtype, device=device), high.to(dtype=dtype, device=device), tiny)

    @classmethod
    def interior(
        cls,
        prior: Distribution,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> SupportBijection:
        r"""The bijection of a prior's support that moves points on a finite bound
        :data:`INTERIOR_EDGE` (or four machine epsilons of ``dtype``, if more) inside, as the
        samplers need for starting points or draws that may sit on a bound."""
        tiny = max(INTERIOR_EDGE, 4 * torch.finfo(dtype).eps)
        return cls.from_prior(prior, tiny, dtype=dtype, device=device)

    def forward(self, theta: Tensor) -> Tensor:
        r""":math:`u = g^{-1}(\theta)`, shape :math:`(*, p)` to the same shape."""
        frac = ((theta - self.low0) / self.width).clamp(self.tiny, 1.0 - self.tiny)
        scale = torch.maximum(self.low0.abs(), self.high0.abs()).clamp_min(1.0)
        above = (theta - self.low0).clamp_min(self.tiny * scale)
        below = (self.high0 - theta).clamp_min(self.tiny * scale)
        u = torch.where(self.box, torch.logit(frac), theta)
        u = torch.where(self.lower, torch.log(above), u)
        return torch.where(self.upper, torch.log(below), u)

    def inverse(self, u: Tensor) -> Tensor:
        r""":math:`\theta = g(u)`, shape :math:`(*, p)` to the same shape, inside :math:`[l, h]`."""
        theta = torch.where(self.box, self.low0 + self.width * torch.sigmoid(u), u)
        theta = torch.where(self.lower, self.low0 + torch.exp(u), theta)
        theta = torch.where(self.upper, self.high0 - torch.exp(u), theta)
        return torch.minimum(torch.maximum(theta, self.low), self.high)

    def log_abs_det_jacobian(self, u: Tensor) -> Tensor:
        r"""Per-coordinate :math:`\log |g_j'(u_j)|` of :math:`\theta = g(u)`.

        Arguments:
            u: Unbounded values, shape :math:`(*, p)`.

        Returns:
            The log-derivatives, shape of ``u`` (sum over the last axis for the
            log-determinant).
        """
        box = torch.log(self.width) + F.logsigmoid(u) + F.logsigmoid(-u)
        one_sided = self.lower | self.upper
        return torch.where(self.box, box, torch.where(one_sided, u, torch.zeros_like(u)))


def _tensor_bound(constraint: object) -> Tensor | None:
    """A tensor among the bounds of ``constraint`` (for their dtype and device), if any."""
    while hasattr(constraint, "base_constraint"):
        constraint = constraint.base_constraint
    if isinstance(constraint, constraints._Cat):
        found = (_tensor_bound(c) for c in constraint.cseq)
        return next((t for t in found if t is not None), None)
    for name in ("lower_bound", "upper_bound"):
        bound = getattr(constraint, name, None)
        if isinstance(bound, Tensor):
            return bound
    return None


def _constraint_bounds(constraint: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate bounds, shape ``(n,)``, of a support constraint over ``n`` values."""
    while hasattr(constraint, "base_constraint"):
        constraint = constraint.base_constraint
    if isinstance(constraint, constraints._Cat):
        lengths = list(constraint.lengths)
        if sum(lengths) == n and len(lengths) == len(constraint.cseq):
            parts = [_constraint_bounds(c, m) for c, m in zip(constraint.cseq, lengths)]
            return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
    bounds = []
    for name, fill in (("lower_bound", -math.inf), ("upper_bound", math.inf)):
        bound = getattr(constraint, name, None)
        if isinstance(bound, Tensor):
            bound = bound.detach().cpu().double().numpy()
        bound = np.asarray(fill if bound is None else bound, dtype=np.float64).reshape(-1)
        if bound.size not in (1, n):
            bound = np.full(1, fill)  # bounds of an unexpected shape: treated as open
        bounds.append(np.broadcast_to(bound, (n,)).copy())
    return bounds[0], bounds[1]
