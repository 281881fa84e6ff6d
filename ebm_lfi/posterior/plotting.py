r"""Pair plots of (weighted) samples, to look at a posterior or compare two sample sets.

A pair plot of :math:`n` draws :math:`\theta_i \in \mathbb{R}^p` with weights :math:`w_i`
(normalised, :math:`\sum_i w_i = 1`; uniform when unweighted) is a :math:`p \times p` grid:

* on the diagonal, the weighted histogram of coordinate :math:`k` as a density,
  :math:`\hat f_k(b) = \sum_{i : \theta_{ik} \in b} w_i / |b|` for each bin :math:`b`;
* below it, at row :math:`k` and column :math:`l < k`, the scatter plot of
  :math:`(\theta_{il}, \theta_{ik})` for at most ``max_points`` draws, resampled by weight
  (with replacement) when weighted so that point density reflects the weighted measure;
* above it, nothing.

A reference sample is drawn over it in a second colour, and a true parameter as black lines.
The figure is built from :class:`matplotlib.figure.Figure` directly, without ``pyplot``, so
it needs no display and leaves matplotlib's global state alone. matplotlib is imported only
when a plot is drawn, and this module only when :meth:`ebm_lfi.Posterior.plot`, which
delegates here, is called.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .stats import as_real_tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["pair_plot"]


def pair_plot(
    samples: Any,
    weights: Any = None,
    parameter_names: Sequence[str] | None = None,
    reference: Any = None,
    truth: Any = None,
    path: str | os.PathLike | None = None,
    *,
    reference_weights: Any = None,
    bins: int = 30,
    label: str = "samples",
    reference_label: str = "reference",
    max_points: int = 2000,
    seed: int = 0,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    r"""Pair plot: weighted histograms on the diagonal, scatter plots below it.

    Arguments:
        samples: Draws, shape :math:`(n, p)` (or :math:`(n,)` for one parameter); a tensor
            on any device or an array.
        weights: Non-negative weights of the draws, shape :math:`(n,)`, or ``None``.
        parameter_names: Axis labels, :math:`p` of them; default ``theta_1, ..., theta_p``.
        reference: Optional second sample, shape :math:`(m, p)` (or :math:`(m,)`), drawn as
            outlines in a second colour.
        truth: Optional true parameter, shape :math:`(p,)`, marked by black lines.
        path: If given, the figure is saved there (format from the extension).
        reference_weights: Weights of ``reference``, shape :math:`(m,)`, or ``None``.
        bins: Number of histogram bins.
        label: Legend entry of ``samples``.
        reference_label: Legend entry of ``reference``.
        max_points: At most this many points per scatter plot (resampled by weight, with
            ``seed``).
        seed: Seed of that resampling (a fresh numpy generator; no global state is touched).
        figsize: Figure size in inches, default :math:`2.2 p + 0.6` square.

    Returns:
        The :class:`matplotlib.figure.Figure`, with :math:`p^2` axes (those above the diagonal
        switched off) and a legend when a reference or a truth is drawn.

    Raises:
        ValueError: If shapes disagree, values are not finite or weights are invalid.
        TypeError: If an input is not a real-valued array or tensor.

    Example:
        >>> import torch
        >>> fig = pair_plot(torch.randn(100, 2), parameter_names=["a", "b"])
        >>> len(fig.axes)
        4
    """
    from matplotlib.figure import Figure

    values = _as_matrix(samples, "samples")
    n, p = values.shape
    if parameter_names is None:
        parameter_names = [f"theta_{i + 1}" for i in range(p)]
    labels = [str(s) for s in parameter_names]
    if len(labels) != p:
        raise ValueError(f"{len(labels)} labels for {p} parameters")
    sets = [(values, _as_weights(weights, n, "weights"), label, "C0")]
    if reference is not None:
        ref = _as_matrix(reference, "reference", p=p)
        ref_w = _as_weights(reference_weights, ref.shape[0], "reference_weights")
        sets.append((ref, ref_w, reference_label, "C1"))
    elif reference_weights is not None:
        raise ValueError("reference_weights is given without a reference")
    truth_np = None
    if truth is not None:
        truth_np = _as_array(truth, "truth").reshape(-1)
        if truth_np.shape != (p,):
            raise ValueError(f"truth must have shape ({p},), got {truth_np.shape}")

    size = figsize or (2.2 * p + 0.6, 2.2 * p + 0.6)
    fig = Figure(figsize=size, layout="constrained")
    axes = np.atleast_2d(fig.subplots(p, p, squeeze=False))
    rng = np.random.default_rng(seed)
    for values, w, name, colour in sets:
        n = values.shape[0]
        if w is not None or n > max_points:
            idx = rng.choice(n, size=min(n, max_points), replace=w is not None, p=w)
            points = values[idx]
        else:
            points = values
        for i in range(p):
            axes[i, i].hist(
                values[:, i],
                bins=bins,
                weights=w,
                density=True,
                histtype="stepfilled" if colour == "C0" else "step",
                alpha=0.6 if colour == "C0" else 1.0,
                color=colour,
                linewidth=1.5,
                label=name,
            )
            for j in range(i):
                axes[i, j].scatter(
                    points[:, j], points[:, i], s=2, alpha=0.3, color=colour, rasterized=True
                )
    for i in range(p):
        for j in range(p):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            if truth_np is not None:
                ax.axvline(truth_np[j], color="k", linewidth=1)
                if j < i:
                    ax.axhline(truth_np[i], color="k", linewidth=1)
            if i == p - 1:
                ax.set_xlabel(labels[j])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i])
            if i == j:
                ax.set_yticks([])
    handles, names = axes[0, 0].get_legend_handles_labels()
    if len(sets) > 1 or truth_np is not None:
        fig.legend(handles, names, loc="outside upper right")
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100)
    return fig


def _as_array(a: Any, name: str) -> np.ndarray:
    r"""``a`` as a float64 numpy array on the CPU; real numbers only."""
    return as_real_tensor(a, name).cpu().double().numpy()


def _as_matrix(a: Any, name: str, p: int | None = None) -> np.ndarray:
    r"""A sample as a finite float64 array of shape :math:`(n, p)`; 1-d means :math:`p = 1`."""
    x = _as_array(a, name)
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    expected = "(n, p)" if p is None else f"(m, {p})"
    if x.ndim != 2 or 0 in x.shape or (p is not None and x.shape[1] != p):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    return x


def _as_weights(w: Any, n: int, name: str) -> np.ndarray | None:
    r"""Weights as a float64 array of shape :math:`(n,)` summing to one, or ``None``."""
    if w is None:
        return None
    w = _as_array(w, name)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(w.shape)}")
    if not np.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"{name} must be finite, non-negative and not all zero")
    return w / w.sum()
