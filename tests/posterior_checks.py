r"""Checks that a posterior sample has the location and the width of a reference posterior.

A wrong posterior is most often wrong in one of three ways: it ignores the data (about the
prior), it is too wide or too narrow, or it is shifted. :func:`assert_matches` tests the two
moments that expose them, per parameter, in units of the reference posterior sd :math:`s`:

* **shift** :math:`|\bar\theta - m| / s`, the distance of the sample mean from the reference
  mean :math:`m`;
* **width** :math:`|\hat s / s - 1|`, the error of the sample sd :math:`\hat s`.

Each must stay below an allowed error (``shift``, ``width``: the accuracy a method must reach,
its approximation error at a finite budget included) plus ``z`` standard errors of the
estimate. For :math:`n` effective draws (Kish's :math:`n = 1 / \sum_i w_i^2` for weights, the
effective sample size for MCMC) the sample mean has a standard error of :math:`s / \sqrt n`,
and the sample sd one of :math:`s \sqrt{(\kappa - 1) / (4 n)}`, :math:`\kappa` the kurtosis
(:math:`1 / \sqrt{2n}` for a Gaussian, :math:`\kappa = 3`; the sample's kurtosis is used,
floored at 3). When the reference is itself a sample of :math:`n_r` draws, its error adds:
:math:`1/n \to 1/n + 1/n_r`. With ``z = 4`` an exact sample fails with probability below
:math:`10^{-4}` per figure (and the tests are seeded, so they never flake).

The defaults, ``shift = 0.25`` and ``width = 0.15``, are half the errors the suite must catch:
a posterior shifted by half a posterior sd, or 30 % too wide. With 1,000 independent draws and
a closed-form reference the tolerances come to :math:`0.25 + 4/\sqrt{1000} = 0.38` and
:math:`0.15 + 4/\sqrt{2000} = 0.24`, so those errors fail by 3.9 and 2.7 standard errors;
:func:`corrupt` makes them from exact draws for the negative controls, which every test that
uses these checks keeps next to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import Tensor

__all__ = [
    "CORRUPTIONS",
    "SHIFT",
    "WIDTH",
    "Z",
    "Moments",
    "assert_matches",
    "assert_catches",
    "assert_contraction",
    "corrupt",
    "effective_size",
    "moments",
]

SHIFT = 0.25  # allowed |mean - reference mean| / reference sd
WIDTH = 0.15  # allowed |sd / reference sd - 1|
Z = 4.0  # standard errors on top of the allowed error

CORRUPTIONS = ("wide", "shifted", "prior")
"""The wrong posteriors of the negative controls (see :func:`corrupt`)."""


class Moments(NamedTuple):
    """Per-parameter mean, sd and kurtosis of a (weighted) sample, and its effective size."""

    mean: Tensor  # (p,)
    sd: Tensor  # (p,)
    kurtosis: Tensor  # (p,)
    ess: float


def _as_tensor(values) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach().cpu().double()
    return torch.from_numpy(np.array(values, dtype=np.float64))  # a copy: pyabc's are read-only


def _as_2d(samples) -> Tensor:
    samples = _as_tensor(samples)
    return samples[:, None] if samples.ndim == 1 else samples


def moments(samples, weights=None, ess: float | None = None) -> Moments:
    r"""Mean, sd and kurtosis per parameter of ``samples`` :math:`(n, p)` (optionally
    weighted), and the effective sample size: ``ess`` if given (e.g. an MCMC estimate), else
    Kish's :math:`1 / \sum_i w_i^2` of the normalised weights (:math:`n` without weights)."""
    x = _as_2d(samples)
    if weights is None:
        w = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64)
    else:
        w = _as_tensor(weights)
        w = w / w.sum()
    mean = w @ x
    centred = x - mean
    var = w @ centred**2
    kurtosis = (w @ centred**4) / var.clamp_min(1e-300) ** 2
    if ess is None:
        ess = float(1.0 / (w**2).sum())
    return Moments(mean, var.sqrt(), kurtosis, float(ess))


def effective_size(post) -> float:
    r"""Effective sample size of an :class:`~ebm_lfi.Posterior`: Kish's for weighted draws,
    the smallest MCMC estimate (``diagnostics["ess"]``) for chains, the kernel ESS of the kept
    ABC samples when they were resampled to equal weights, else the number of draws."""
    n = len(post.samples)
    if post.weights is not None:
        return moments(post.samples, post.weights).ess
    diagnostics = post.diagnostics or {}
    for key in ("ess", "kernel_ess"):
        value = diagnostics.get(key)
        if value is not None:
            return float(min(n, min(torch.as_tensor(value, dtype=torch.float64).reshape(-1))))
    return float(n)


def _reference_moments(reference, reference_ess: float | None) -> Moments:
    if isinstance(reference, Moments):
        return reference
    if isinstance(reference, torch.distributions.Distribution):
        mean = reference.mean.detach().double().reshape(-1)
        sd = reference.stddev.detach().double().reshape(-1)
        return Moments(mean, sd, torch.full_like(mean, 3.0), math.inf)
    if isinstance(reference, tuple) and len(reference) == 2:  # closed form (mean, sd)
        mean = torch.as_tensor(reference[0]).double().reshape(-1)
        sd = torch.as_tensor(reference[1]).double().reshape(-1).expand_as(mean)
        return Moments(mean, sd, torch.full_like(mean, 3.0), math.inf)
    return moments(reference, ess=reference_ess)


def assert_matches(
    samples,
    reference,
    *,
    weights=None,
    ess: float | None = None,
    reference_ess: float | None = None,
    shift: float = SHIFT,
    width: float = WIDTH,
    z: float = Z,
    names: Sequence[str] | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Assert that ``samples`` have the location and width of ``reference``, per parameter.

    Arguments:
        samples: Posterior draws, shape :math:`(n, p)` (or :math:`(n,)`).
        reference: The reference posterior: a sample :math:`(n_r, p)`, a torch distribution
            with ``mean`` and ``stddev`` (a closed form), a ``(mean, sd)`` pair, or
            :class:`Moments`.
        weights: Optional weights of ``samples``, shape :math:`(n,)`.
        ess: Effective sample size of ``samples`` (default: Kish's, or :math:`n`); pass the
            MCMC estimate for correlated draws.
        reference_ess: The same for a reference sample (default: its size).
        shift: Allowed :math:`|\bar\theta - m| / s`.
        width: Allowed :math:`|\hat s / s - 1|`.
        z: Standard errors allowed on top.
        names: Parameter names for the message.

    Returns:
        The shifts and the sd ratios :math:`\hat s / s`, shape :math:`(p,)` each.

    Raises:
        AssertionError: naming the parameters, figures and tolerances that failed.
    """
    got = moments(samples, weights, ess)
    ref = _reference_moments(reference, reference_ess)
    if got.mean.shape != ref.mean.shape:
        raise ValueError(
            f"samples have {got.mean.numel()} parameters, reference {ref.mean.numel()}"
        )
    inverse_n = 1.0 / got.ess + (0.0 if math.isinf(ref.ess) else 1.0 / ref.ess)
    kurtosis = torch.maximum(got.kurtosis, torch.full_like(got.kurtosis, 3.0))
    shifts = (got.mean - ref.mean) / ref.sd
    ratios = got.sd / ref.sd
    shift_tol = shift + z * math.sqrt(inverse_n)
    width_tol = width + z * ((kurtosis - 1) / 4 * inverse_n).sqrt()
    names = list(names) if names is not None else [f"theta_{j + 1}" for j in range(len(shifts))]
    problems = [
        f"{name}: mean shifted by {float(s):+.3f} posterior sd (allowed {shift_tol:.3f})"
        for name, s in zip(names, shifts)
        if abs(float(s)) > shift_tol
    ]
    problems += [
        f"{name}: sd ratio {float(r):.3f} (allowed 1 +- {float(t):.3f})"
        for name, r, t in zip(names, ratios, width_tol)
        if abs(float(r) - 1) > float(t)
    ]
    assert not problems, f"posterior differs from the reference (ess {got.ess:.0f}): " + "; ".join(
        problems
    )
    return shifts, ratios


def assert_contraction(
    posterior_sd, prior_sd, expected, *, width: float = WIDTH, z: float = Z
) -> Tensor:
    r"""Assert that posteriors are as narrow as the exact ones, on average over observations.

    The **contraction** :math:`c_j = \overline{\mathrm{sd}}(\theta_j \mid x_i) /
    \mathrm{sd}_\pi(\theta_j)`, averaged over the observations :math:`x_i` of a calibration run
    (what :attr:`~ebm_lfi.diagnostics.SBCResult.contraction` reports), must be within
    ``width`` of the exact posterior's :math:`c^*_j` (relative), plus ``z`` standard errors of
    the average (the sd over observations of the per-observation sds, over :math:`\sqrt N`).
    Calibration cannot see what this sees: prior draws have uniform ranks and
    :math:`c = 1`, and a posterior 30 % too wide has :math:`c = 1.3 c^*`.

    Arguments:
        posterior_sd: Per-observation posterior sds, shape :math:`(N, p)`.
        prior_sd: Prior sds, shape :math:`(p,)` or a number.
        expected: The exact posterior's contraction :math:`c^*`, shape :math:`(p,)` or a number.
        width: Allowed relative error of :math:`c`.
        z: Standard errors allowed on top.

    Returns:
        The contraction :math:`c`, shape :math:`(p,)`.
    """
    sd = torch.as_tensor(posterior_sd).detach().cpu().double()
    prior_sd = torch.as_tensor(prior_sd, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    contraction = sd.mean(0) / prior_sd
    se = sd.std(0) / math.sqrt(sd.shape[0]) / prior_sd
    ratio, tolerance = contraction / expected, width + z * se / expected
    assert bool(((ratio - 1).abs() <= tolerance).all()), (
        f"contraction {contraction.tolist()} against the exact {expected.tolist()}: ratio "
        f"{ratio.tolist()}, allowed 1 +- {tolerance.tolist()}"
    )
    return contraction


def corrupt(samples, kind: str, prior_samples=None) -> Tensor:
    r"""A wrong posterior made from exact ``samples`` :math:`(n, p)`, for negative controls:
    ``"wide"``, 1.3 times as wide about the sample mean; ``"shifted"``, moved by half the
    sample sd; ``"prior"``, ``prior_samples`` (a posterior that ignores the data)."""
    x = _as_2d(samples)
    if kind == "wide":
        mean = x.mean(0)
        return mean + 1.3 * (x - mean)
    if kind == "shifted":
        return x + 0.5 * x.std(0)
    if kind == "prior":
        if prior_samples is None:
            raise ValueError("corrupt(..., 'prior') needs prior_samples")
        return _as_2d(prior_samples)
    raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")


def assert_catches(check, exact, prior_samples=None, kinds: Sequence[str] = CORRUPTIONS) -> None:
    r"""Negative controls of ``check`` (a callable of draws :math:`(n, p)` that raises
    ``AssertionError`` on a wrong posterior): it passes the ``exact`` draws and fails each
    corruption of them in ``kinds`` (:func:`corrupt`; ``"prior"`` uses ``prior_samples``)."""
    check(exact)
    for kind in kinds:
        try:
            check(corrupt(exact, kind, prior_samples))
        except AssertionError:
            continue
        pytest.fail(f"the check passed a {kind} posterior: it has no power against it")
