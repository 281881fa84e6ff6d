r"""The auxiliary draw of the exchange sampler: draws from an unnormalised exponential family.

The model is :math:`p(y \mid \theta) \propto \exp(\eta(\theta)^\top s(y) + b(y))`, given by
anything with the methods of :class:`ExponentialFamily` (a structural protocol: the samplers
never import the model). The exchange step (:func:`~ebm_lfi.samplers.mcmc.exchange.exchange_mcmc`)
and its check (:func:`~ebm_lfi.samplers.mcmc.inner_check.inner_chain_check`) need, for each chain,
:math:`s(y')` of a draw :math:`y' \sim p(\cdot \mid \theta')`. :func:`auxiliary_statistics`
provides it in one of two ways, for all chains as one batch:

* **Inner MCMC** (Pacchiardi & Dutta 2022): ``steps`` MALA (autograd score) or random-walk steps
  of the kernels of :mod:`ebm_lfi.samplers.mcmc.kernels` on :math:`\exp(\eta(\theta')^\top s(y) +
  b(y))`, started at the observation :math:`y_o`; the draw is only approximately from the model.
  With ``bridging`` :math:`K > 0` it is followed by :math:`K` kernel steps through the geometric
  bridge :math:`f_k \propto f(\cdot; \theta')^{1 - \beta_k} f(\cdot; \theta)^{\beta_k}`,
  :math:`\beta_k = k / (K + 1)` (Murray et al. 2006, §3), and the statistics are averaged along
  it, :math:`\frac{1}{K + 1} \sum_{k=0}^{K} s(x_k)`.
* **Exact Gaussian draw** (:func:`gaussian_draw`): if the log-density is quadratic in :math:`y`,
  :math:`f(y) = \frac12 y^\top H y + g^\top y + \text{const}`, the model at :math:`\theta'` is
  :math:`\mathcal N(P^{-1} g, P^{-1})` with :math:`P = -H` wherever :math:`P` is positive
  definite; :math:`g` and :math:`H` are read off by :mod:`torch.func` at :math:`y = 0`. They are
  linear in the natural parameters, :math:`H(\theta) = \sum_j \eta_j(\theta) A_j + A_b` and
  :math:`g(\theta) = \sum_j \eta_j(\theta) a_j + a_b` (:math:`A_j, a_j` the Hessian and
  gradient at 0 of the quadratic statistic :math:`s_j`, :math:`A_b, a_b` those of the rest),
  so :func:`quadratic_form` reads these off once and each draw combines them: a sum of
  :math:`k + 1` matrices per chain instead of :math:`d` backward passes through the network
  (on MA(2)'s 100-step series, 400 chains: 0.08 s a draw instead of 0.50 s). Where the
  precision is banded, as for the Markov networks (a window of :math:`r + 1` steps couples
  points at most :math:`r` steps apart), the form records the bandwidth and the draw
  factorises the precision in blocks (:func:`_banded_draw`): on AR(2) (order 2, 100 steps, 400
  chains) 9 ms a draw instead of 48 ms, the same draws up to rounding.

References:
    | MCMC for doubly-intractable distributions (Murray et al., 2006)
    | https://arxiv.org/abs/1206.6848

    | Score Matched Neural Exponential Families for Likelihood-Free Inference
      (Pacchiardi & Dutta, 2022) https://arxiv.org/abs/2012.10903
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.func import grad, vjp, vmap

from .kernels import mala_init, mala_step, random_walk_init, random_walk_step

__all__ = [
    "ExponentialFamily",
    "QuadraticForm",
    "auxiliary_statistics",
    "gaussian_draw",
    "quadratic_form",
]


@runtime_checkable
class ExponentialFamily(Protocol):
    r"""What the exchange sampler needs from a model (e.g. ``ExpFamEBM``).

    ``natural_parameters(theta)`` maps :math:`(n, p) \to (n, k)`, ``statistics_y(y)`` maps
    :math:`(n, *y) \to (n, k)` and ``log_unnormalized_y(y, theta)`` maps
    :math:`(n, *y), (n, p) \to (n,)` as :math:`\eta(\theta)^\top s(y) + b(y)`.

    Optional: ``log_unnormalized_y_at(theta)``, the function :math:`y \mapsto
    \eta(\theta)^\top s(y) + b(y)` with :math:`\eta(\theta)` computed once
    (:meth:`~ebm_lfi.energy.model.ExpFamEBM.log_unnormalized_y_at`), which the inner chain then
    evaluates at each of its steps in place of ``log_unnormalized_y``.
    """

    def natural_parameters(self, theta: Tensor) -> Tensor:
        r"""Natural parameters :math:`\eta(\theta)`.

        Arguments:
            theta: Parameters, shape :math:`(n, p)`.

        Returns:
            :math:`\eta(\theta)`, shape :math:`(n, k)`.
        """
        ...

    def statistics_y(self, y: Tensor) -> Tensor:
        r"""Statistics :math:`s(y)` of (transformed) data.

        Arguments:
            y: Data, shape :math:`(n, *y)`.

        Returns:
            :math:`s(y)`, shape :math:`(n, k)`.
        """
        ...

    def log_unnormalized_y(self, y: Tensor, theta: Tensor) -> Tensor:
        r"""Unnormalised log-density :math:`\eta(\theta)^\top s(y) + b(y)`.

        Must be differentiable in ``y`` by :mod:`torch.autograd` (the MALA kernel) and by
        :mod:`torch.func` (the ``"gaussian"`` kernel, see :func:`gaussian_draw`).

        Arguments:
            y: Data, shape :math:`(n, *y)`.
            theta: Parameters, shape :math:`(n, p)`.

        Returns:
            The unnormalised log-densities, shape :math:`(n,)`.
        """
        ...


class QuadraticForm(NamedTuple):
    r"""The log-density of a family quadratic in :math:`y` as linear in the natural
    parameters: :math:`H(\theta) = \sum_j \eta_j(\theta) A_j + A_b` and
    :math:`g(\theta) = \sum_j \eta_j(\theta) a_j + a_b` (see :func:`quadratic_form`).

    Attributes:
        hessians: :math:`A_j`, shape :math:`(k, d, d)`.
        gradients: :math:`a_j`, shape :math:`(k, d)`.
        base_hessian: :math:`A_b`, shape :math:`(d, d)`.
        base_gradient: :math:`a_b`, shape :math:`(d,)`.
        bandwidth: The largest :math:`|i - j|` of a nonzero entry of any :math:`A_j` or
            :math:`A_b` (``None``: not known, the precision is treated as dense).
    """

    hessians: Tensor
    gradients: Tensor
    base_hessian: Tensor
    base_gradient: Tensor
    bandwidth: int | None = None


def _gradient_and_hessian(fn, theta_rows: int, like: Tensor) -> tuple[Tensor, Tensor]:
    r"""The gradient :math:`(r, d)` and the Hessian :math:`(r, d, d)` at :math:`y = 0` of
    ``fn(z) -> (r,)`` for ``z`` of shape :math:`(r, *y)` (one function per row)."""
    shape, d = like.shape, like.numel()
    zero = torch.zeros((theta_rows, *shape), dtype=like.dtype, device=like.device)
    basis = torch.eye(d, dtype=like.dtype, device=like.device).reshape(d, 1, *shape)
    grad_sum = grad(lambda z: fn(z).sum())
    # reverse over reverse: the gradient at 0 and its pullback, mapped over the basis, give the
    # rows e_i^T H. (Forward over reverse, the jvp of the gradient, gives its columns H e_i, the
    # same numbers bit for bit on the models here, but torch runs each elementwise product of
    # the backward pass under forward-mode AD through its Python reference implementations:
    # two to ten times slower.)
    with torch.no_grad():
        g, pullback = vjp(grad_sum, zero)  # g: (r, *y)
        (vh,) = vmap(pullback)(basis.expand(d, theta_rows, *shape))  # (d, r, *y)
    return g.reshape(theta_rows, d), vh.reshape(d, theta_rows, d).permute(1, 2, 0)


def quadratic_form(family: ExponentialFamily, theta: Tensor, like: Tensor) -> QuadraticForm:
    r"""Read off a family quadratic in :math:`y` as a :class:`QuadraticForm`, once.

    The statistics' parts :math:`A_j, a_j` come from ``statistics_y`` at :math:`y = 0`; the
    rest, :math:`A_b, a_b` (the base measure's), from the full log-density at the first row of
    ``theta`` minus the statistics' parts there.

    Arguments:
        family: Provides ``natural_parameters``, ``statistics_y`` and ``log_unnormalized_y``,
            quadratic in :math:`y`.
        theta: Parameters, shape :math:`(c, p)` (only the first row is used).
        like: A point shaped like one data point, :math:`(*y)`.

    Returns:
        The :class:`QuadraticForm`, to pass to :func:`gaussian_draw`.
    """
    theta0 = theta[:1]
    with torch.no_grad():
        k = family.natural_parameters(theta0).shape[1]
    gradients, hessians = [], []
    for j in range(k):
        g_j, h_j = _gradient_and_hessian(lambda z, j=j: family.statistics_y(z)[:, j], 1, like)
        gradients.append(g_j[0])
        hessians.append(h_j[0])
    a, A = torch.stack(gradients), torch.stack(hessians)
    g0, h0 = _gradient_and_hessian(lambda z: family.log_unnormalized_y(z, theta0), 1, like)
    with torch.no_grad():
        eta0 = family.natural_parameters(theta0)[0]
    base_gradient = g0[0] - eta0 @ a
    base_hessian = h0[0] - torch.einsum("j,jab->ab", eta0, A)
    # symmetric parts, once: every precision combined from them is symmetric bit for bit
    A = 0.5 * (A + A.transpose(1, 2))
    base_hessian = 0.5 * (base_hessian + base_hessian.T)
    rows, columns = ((A != 0).any(0) | (base_hessian != 0)).nonzero(as_tuple=True)
    bandwidth = int((rows - columns).abs().max()) if rows.numel() else 0
    return QuadraticForm(A, a, base_hessian, base_gradient, bandwidth)


_BANDED_FROM = 200_000
"""The blocks pay from about this many chains times d² (measured with one thread, float32,
bandwidth 2: 20 chains of d = 100 1.2 ms a draw against 1.4 ms dense, 400 chains of d = 30
2.6 against 3.9 ms; below it the Python loop over the blocks costs more: 20 chains of d = 50
0.8 against 0.4 ms, 400 chains of d = 20 1.6 against 1.2 ms)."""


def _block_parts(matrices: Tensor, size: int, count: int) -> tuple[Tensor, Tensor]:
    r"""The diagonal blocks :math:`(\dots, m, B, B)` of matrices :math:`(\dots, mB, mB)` and the
    blocks below them :math:`(\dots, m - 1, B, B)` (rows of block :math:`i + 1`, columns of
    block :math:`i`)."""
    blocks = matrices.reshape(*matrices.shape[:-2], count, size, count, size)
    diagonal = torch.diagonal(blocks, dim1=-4, dim2=-2).movedim(-1, -3)
    below = torch.diagonal(blocks, offset=-1, dim1=-4, dim2=-2).movedim(-1, -3)
    return diagonal, below


def _banded_draw(form: QuadraticForm, eta: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    r"""The draws :math:`P^{-1} g + L^{-\top} z` (:math:`P = L L^\top`) of a form whose
    precision vanishes more than ``form.bandwidth`` off the diagonal, in blocks.

    Cut into diagonal blocks of size :math:`B \ge` ``bandwidth`` (at least :math:`\sqrt d`; the
    last one padded with an identity block) the precision is block tridiagonal: with diagonal
    blocks :math:`D_m` and blocks :math:`E_m` below them, its Cholesky factor has diagonal
    blocks :math:`L_m` and blocks :math:`F_m` below them,

    .. math:: F_m = E_m L_{m-1}^{-\top}, \qquad L_m L_m^\top = D_m - F_m F_m^\top

    (Golub & Van Loan, *Matrix Computations*, §4.5), and :math:`L^{-\top}(L^{-1} g + z)` is one
    block forward and one block backward substitution: :math:`O(d B^2)` operations per chain
    instead of the :math:`O(d^3)` of a dense factorisation, the same draws up to rounding. A
    precision is positive definite exactly when every :math:`D_m - F_m F_m^\top` is.

    Returns:
        The draws :math:`(c, d)` and a boolean :math:`(c,)`, ``True`` where the precision is
        positive definite (elsewhere the draws mean nothing).
    """
    c, d = z.shape
    size = max(int(form.bandwidth), math.isqrt(d - 1) + 1)
    count = -(-d // size)
    pad = count * size - d
    hessians = torch.nn.functional.pad(form.hessians, (0, pad, 0, pad))
    base = torch.nn.functional.pad(form.base_hessian, (0, pad, 0, pad))
    base[d:, d:] -= torch.eye(pad, dtype=base.dtype, device=base.device)  # a unit precision
    h_diagonal, h_below = _block_parts(hessians, size, count)
    b_diagonal, b_below = _block_parts(base, size, count)
    diagonal = -(torch.einsum("cj,jmab->cmab", eta, h_diagonal) + b_diagonal)
    below = -(torch.einsum("cj,jmab->cmab", eta, h_below) + b_below)
    g = torch.nn.functional.pad(eta @ form.gradients + form.base_gradient, (0, pad))
    g = g.reshape(c, count, size, 1)
    z = torch.nn.functional.pad(z, (0, pad)).reshape(c, count, size, 1)
    ok = torch.ones(c, dtype=torch.bool, device=z.device)
    eye = torch.eye(size, dtype=z.dtype, device=z.device)
    factors, lower, forward = [], [], []
    for m in range(count):
        block, rhs = diagonal[:, m], g[:, m]
        if m:
            f = torch.linalg.solve_triangular(
                factors[-1].transpose(1, 2), below[:, m - 1], upper=True, left=False
            )
            block = block - f @ f.transpose(1, 2)
            rhs = rhs - f @ forward[-1]
            lower.append(f)
        factor, info = torch.linalg.cholesky_ex(block)
        failed = info != 0
        if bool(failed.any()):  # carried on with an identity block; the draw is dropped
            ok &= ~failed
            factor = torch.where(failed[:, None, None], eye, factor)
        factors.append(factor)
        forward.append(torch.linalg.solve_triangular(factor, rhs, upper=False))
    draws = [None] * count
    for m in reversed(range(count)):
        rhs = forward[m] + z[:, m]
        if m + 1 < count:
            rhs = rhs - lower[m].transpose(1, 2) @ draws[m + 1]
        draws[m] = torch.linalg.solve_triangular(factors[m].transpose(1, 2), rhs, upper=True)
    return torch.cat(draws, dim=1)[:, :d, 0], ok


def gaussian_draw(
    family: ExponentialFamily,
    theta: Tensor,
    like: Tensor,
    generator: torch.Generator,
    form: QuadraticForm | None = None,
) -> Tensor:
    r"""Exact draws from a family whose log-density is quadratic in :math:`y`.

    If :math:`f(y) = \frac12 y^\top H y + g^\top y + \text{const}` (a linear read-out of
    degree-≤2 monomials), the model at :math:`\theta` is :math:`\mathcal N(P^{-1} g, P^{-1})`
    with :math:`P = -H`, provided :math:`P` is positive definite. :math:`H` and :math:`g` are read
    off the gradient and the vector-Hessian products at :math:`y = 0`.

    Arguments:
        family: Provides ``log_unnormalized_y`` (and ``natural_parameters`` with ``form``).
        theta: Parameters, shape :math:`(c, p)`.
        like: A point shaped like one data point, :math:`(*y)` (dtype, device, shape).
        generator: Random generator.
        form: The family's :class:`QuadraticForm` (:func:`quadratic_form`): :math:`H` and
            :math:`g` are then combined from it instead of read off the network, and a banded
            :math:`P` is factorised in blocks (:func:`_banded_draw`) where that pays
            (:data:`_BANDED_FROM`).

    Returns:
        Draws, shape :math:`(c, *y)`; rows whose :math:`P` is not positive definite (the model
        is not normalisable there) are NaN, so that the exchange step rejects them.
    """
    c, shape, d = theta.shape[0], like.shape, like.numel()
    banded = (
        form is not None
        and form.bandwidth is not None
        and 2 * form.bandwidth < d
        and c * d * d >= _BANDED_FROM
    )
    if form is None:
        g, hessian = _gradient_and_hessian(lambda z: family.log_unnormalized_y(z, theta), c, like)
        precision = -hessian  # (c, d, d), columns as H e_i
        precision = 0.5 * (precision + precision.transpose(1, 2))
    else:
        with torch.no_grad():  # the form's parts are symmetric (see quadratic_form)
            eta = family.natural_parameters(theta)  # (c, k)
            if not banded:
                g = eta @ form.gradients + form.base_gradient
                # -(sum_j eta_j A_j + A_b) in one matrix product
                precision = torch.addmm(
                    form.base_hessian.reshape(1, d * d),
                    eta,
                    form.hessians.reshape(-1, d * d),
                    beta=-1,
                    alpha=-1,
                ).reshape(c, d, d)
    if banded:
        z = torch.randn((c, d), generator=generator, dtype=like.dtype, device=like.device)
        with torch.no_grad():
            draws, ok = _banded_draw(form, eta, z)
    else:
        factor, info = torch.linalg.cholesky_ex(precision)
        ok = info == 0
        if not bool(ok.all()):
            eye = torch.eye(d, dtype=like.dtype, device=like.device)
            factor = torch.where(ok[:, None, None], factor, eye)
        mean = torch.cholesky_solve(g.reshape(c, d, 1), factor)[..., 0]
        z = torch.randn((c, d, 1), generator=generator, dtype=like.dtype, device=like.device)
        noise = torch.linalg.solve_triangular(factor.transpose(1, 2), z, upper=True)[..., 0]
        draws = mean + noise
    draws = torch.where(ok[:, None], draws, torch.full_like(draws, torch.nan))
    return draws.reshape(c, *shape)


def auxiliary_statistics(
    family: ExponentialFamily,
    y_start: Tensor,
    theta_new: Tensor,
    theta_old: Tensor,
    kernel: str,
    steps: int,
    bridging: int,
    step_size: float,
    generator: torch.Generator,
    form: QuadraticForm | None = None,
) -> tuple[Tensor, float]:
    r"""Statistics of the auxiliary draw (averaged along the bridge) and inner acceptance
    (``form``: the family's :class:`QuadraticForm` for the ``"gaussian"`` kernel)."""
    if kernel == "gaussian":
        y = gaussian_draw(family, theta_new, y_start[0], generator, form)
        improper = torch.isnan(y.reshape(y.shape[0], -1)).any(dim=1)
        with torch.no_grad():
            stats = family.statistics_y(torch.nan_to_num(y))
        return torch.where(improper[:, None], torch.full_like(stats, torch.nan), stats), 1.0
    init, step = (
        (mala_init, mala_step) if kernel == "mala" else (random_walk_init, random_walk_step)
    )

    at = getattr(family, "log_unnormalized_y_at", None)  # eta(theta_new) computed once
    if at is not None:
        target = at(theta_new)
    else:

        def target(y: Tensor) -> Tensor:
            return family.log_unnormalized_y(y, theta_new)

    state = init(y_start, target)
    rate = 0.0
    for _ in range(steps):
        state, info = step(state, target, step_size, generator=generator)
        rate += float(info.acceptance_rate.mean())
    x = state.position
    with torch.no_grad():
        stats = family.statistics_y(x)
    for k in range(1, bridging + 1):
        beta = k / (bridging + 1)

        def bridge(y: Tensor, beta: float = beta) -> Tensor:
            return (1 - beta) * family.log_unnormalized_y(
                y, theta_new
            ) + beta * family.log_unnormalized_y(y, theta_old)

        x = step(init(x, bridge), bridge, step_size, generator=generator)[0].position
        with torch.no_grad():
            stats = stats + family.statistics_y(x)
    return stats / (bridging + 1), rate / steps
