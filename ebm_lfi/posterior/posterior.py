r"""The result of an inference method: a (weighted) sample from the posterior.

A :class:`Posterior` holds :math:`n` draws :math:`\theta_i \in \mathbb{R}^p`, optionally with
importance or ABC weights :math:`w_i \ge 0` (normalised, :math:`\sum_i w_i = 1`) or arranged as
:math:`c` MCMC chains of :math:`d` draws each. Every summary (mean, covariance, quantiles,
effective sample size) treats the sample as the weighted empirical measure
:math:`\sum_i w_i \delta_{\theta_i}` (uniform weights when unweighted); the formulas, and the
checks of the arguments, are in :mod:`ebm_lfi.posterior.stats`.

It converts to a :class:`pandas.DataFrame` and an :class:`arviz.InferenceData`, draws pair
plots (:mod:`ebm_lfi.posterior.plotting`), and saves to a ``.npz`` file with JSON metadata that
loads without pickle (:mod:`ebm_lfi.posterior.io`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .io import read_npz, write_npz
from .stats import (
    check_names,
    check_samples,
    check_weights,
    kish_ess,
    normalised_weights,
    weighted_cov,
    weighted_mean,
    weighted_quantile,
)

__all__ = ["Posterior"]

logger = logging.getLogger(__name__)

_RESERVED_COLUMNS = ("chain", "draw", "weight")


class Posterior:
    r"""A (weighted) posterior sample with parameter names and diagnostics.

    Arguments:
        samples: Draws, shape :math:`(n, p)`. May be omitted when ``chains`` is given.
        weights: Non-negative weights of the draws, shape :math:`(n,)` (or :math:`(c, d)` with
            chains); normalised to sum to one. ``None`` for an unweighted sample.
        parameter_names: Names of the :math:`p` parameters, default ``theta_1, ..., theta_p``.
        chains: MCMC draws, shape :math:`(c, d, p)` for :math:`c` chains of :math:`d` draws.
            ``samples`` is then the chains flattened chain by chain, shape :math:`(c d, p)`.
        diagnostics: Whatever the method reports (simulations used, acceptance rate, ESS,
            wall time, ...), kept as a dictionary.
        method: Name of the method that produced the sample.

    The draws keep their dtype and device (integers become the default float dtype).

    Example:
        >>> post = Posterior(torch.tensor([[0.0, 1.0], [2.0, 3.0]]), parameter_names=["a", "b"])
        >>> post.mean()
        tensor([1., 2.])
        >>> list(post.to_pandas().columns)
        ['a', 'b']
    """

    def __init__(
        self,
        samples: Any = None,
        weights: Any = None,
        parameter_names: Sequence[str] | None = None,
        chains: Any = None,
        diagnostics: dict[str, Any] | None = None,
        method: str | None = None,
    ):
        samples_t, chain_t = check_samples(samples, chains)
        weights_t = check_weights(weights, samples_t, chain_t)
        names = check_names(parameter_names, samples_t.shape[1])

        if diagnostics is not None and not isinstance(diagnostics, dict):
            raise TypeError(f"diagnostics must be a dict, got {type(diagnostics).__name__}")
        if method is not None and not isinstance(method, str):
            raise TypeError(f"method must be a string, got {type(method).__name__}")

        self._samples = samples_t
        self._chains = chain_t
        self._weights = weights_t
        self._names = names
        self.diagnostics: dict[str, Any] = dict(diagnostics or {})
        self.method = method

    # ------------------------------------------------------------------ data
    @property
    def samples(self) -> Tensor:
        r"""The draws, shape :math:`(n, p)` (chains flattened chain by chain)."""
        return self._samples

    @property
    def chains(self) -> Tensor | None:
        r"""The draws as chains, shape :math:`(c, d, p)`, or ``None``."""
        return self._chains

    @property
    def weights(self) -> Tensor | None:
        r"""Normalised weights, shape :math:`(n,)`, or ``None`` when unweighted."""
        return self._weights

    @property
    def parameter_names(self) -> list[str]:
        """Names of the parameters (a copy)."""
        return list(self._names)

    @property
    def num_parameters(self) -> int:
        r"""Number of parameters :math:`p`."""
        return int(self._samples.shape[1])

    @property
    def num_samples(self) -> int:
        r"""Number of draws :math:`n`."""
        return int(self._samples.shape[0])

    def __len__(self) -> int:
        return self.num_samples

    @property
    def effective_sample_size(self) -> float:
        r"""Kish's effective sample size :math:`1 / \sum_i w_i^2`; :math:`n` when unweighted.

        It measures the loss from unequal weights only; it does not account for the
        autocorrelation of MCMC chains (see ``to_arviz()`` and ``arviz.ess`` for that).
        """
        if self._weights is None:
            return float(self.num_samples)
        return kish_ess(self._weights)

    def _normalised_weights(self) -> Tensor:
        return normalised_weights(self._samples, self._weights)

    # ------------------------------------------------------------- summaries
    def mean(self) -> Tensor:
        r"""Weighted mean, shape :math:`(p,)`."""
        return weighted_mean(self._samples, self._normalised_weights())

    def cov(self) -> Tensor:
        r"""Weighted covariance, shape :math:`(p, p)`.

        Uses the unbiased reliability-weights normalisation :math:`1 - \sum_i w_i^2` (equal to
        ``numpy.cov(samples.T, aweights=weights)``); NaN when fewer than two draws carry weight.
        """
        return weighted_cov(self._samples, self._normalised_weights())

    def std(self) -> Tensor:
        r"""Weighted standard deviation, shape :math:`(p,)`: the root of ``cov()``'s diagonal."""
        return torch.diagonal(self.cov()).sqrt()

    def quantile(self, q: float | Sequence[float] | Tensor) -> Tensor:
        r"""Per-parameter (weighted) quantiles by the inverted empirical CDF.

        For each parameter, :math:`Q(q)` is the smallest draw whose cumulative weight (draws
        sorted) reaches :math:`q`; draws with zero weight are ignored. Without weights this is
        ``numpy.quantile(..., method="inverted_cdf")``.

        Arguments:
            q: Probability or probabilities in :math:`[0, 1]`, scalar or shape :math:`(k,)`.

        Returns:
            Shape :math:`(p,)` for a scalar ``q``, :math:`(k, p)` otherwise.
        """
        return weighted_quantile(self._samples, self._normalised_weights(), q)

    def sample(
        self,
        num_samples: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Draw rows with replacement: by weight when weighted, uniformly otherwise.

        Arguments:
            num_samples: Number of draws :math:`N`.
            seed: Seed of a fresh generator; ignored when ``generator`` is given. With neither,
                torch's global generator is used (not reseeded).
            generator: A ``torch.Generator`` on the samples' device.

        Returns:
            Draws, shape :math:`(N, p)`.
        """
        num_samples = int(num_samples)
        if num_samples < 0:
            raise ValueError(f"num_samples must be non-negative, got {num_samples}")
        if generator is None and seed is not None:
            generator = torch.Generator(device=self._samples.device).manual_seed(int(seed))
        idx = torch.multinomial(
            self._normalised_weights().double(),
            num_samples,
            replacement=True,
            generator=generator,
        )
        return self._samples[idx]

    def summary(self, quantiles: Sequence[float] = (0.05, 0.5, 0.95)) -> Any:
        r"""A :class:`pandas.DataFrame` with one row per parameter: mean, std and quantiles."""
        import pandas as pd

        table = {"mean": self.mean().cpu().numpy(), "std": self.std().cpu().numpy()}
        values = self.quantile(list(quantiles)).cpu().numpy()
        for q, row in zip(quantiles, values):
            table[f"q{100 * q:g}"] = row
        return pd.DataFrame(table, index=pd.Index(self._names, name="parameter"))

    # ----------------------------------------------------------- conversions
    def to_pandas(self) -> Any:
        r"""The draws as a :class:`pandas.DataFrame`.

        Columns: ``chain`` and ``draw`` (integers) first when chains exist, then one column per
        parameter name, then ``weight`` when weighted. One row per draw, in ``samples`` order.
        """
        import pandas as pd

        names = self._names
        clash = [c for c in _RESERVED_COLUMNS if c in names]
        if clash:
            raise ValueError(f"parameter names {clash} clash with the DataFrame's own columns")
        data: dict[str, Any] = {}
        if self._chains is not None:
            c, d = self._chains.shape[:2]
            data["chain"] = np.repeat(np.arange(c), d)
            data["draw"] = np.tile(np.arange(d), c)
        values = self._samples.cpu().numpy()
        for j, name in enumerate(names):
            data[name] = values[:, j]
        if self._weights is not None:
            data["weight"] = self._weights.cpu().numpy()
        return pd.DataFrame(data)

    def to_arviz(self, *, resample: bool = True, seed: int = 0) -> Any:
        r"""The draws as an :class:`arviz.InferenceData` with a ``posterior`` group.

        Each parameter becomes a variable of dimensions ``(chain, draw)``: :math:`(c, d)` with
        chains, :math:`(1, n)` without. ArviZ ignores weights, so a weighted sample is by
        default resampled first: :math:`n` draws with replacement by weight, with ``seed``,
        stored as one chain; the attributes ``resampled_from_weighted = 1`` and
        ``resample_seed`` say so. With ``resample=False`` the draws are kept as they are, the
        weights go to the ``sample_stats`` group as the variable ``weight``, and
        ``weighted = 1`` is set in the attributes: arviz's summaries then ignore the weights.

        The attributes (of the ``InferenceData`` and of its ``posterior`` group) also hold
        ``method`` and the scalar (number or string) diagnostics.

        Arguments:
            resample: Whether to resample a weighted sample to an unweighted one.
            seed: Seed of that resampling.

        Returns:
            An ``arviz.InferenceData``.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # arviz's refactoring notice
            import arviz as az

        attrs: dict[str, Any] = {"ebm_lfi_num_samples": self.num_samples}
        if self.method is not None:
            attrs["method"] = self.method
        for key, value in self.diagnostics.items():
            if isinstance(value, (bool, np.bool_)):
                attrs[str(key)] = int(value)
            elif isinstance(value, (int, float, str, np.integer, np.floating)):
                attrs[str(key)] = value
        sample_stats = None
        if self._weights is not None and resample:
            values = self.sample(self.num_samples, seed=seed).cpu().numpy()[None]
            attrs["resampled_from_weighted"] = 1
            attrs["resample_seed"] = int(seed)
        elif self._chains is not None:
            values = self._chains.cpu().numpy()
        else:
            values = self._samples.cpu().numpy()[None]
        if self._weights is not None and not resample:
            attrs["weighted"] = 1
            sample_stats = {"weight": self._weights.cpu().numpy().reshape(values.shape[:2])}
        posterior = {name: values[..., j] for j, name in enumerate(self._names)}
        return az.from_dict(
            posterior=posterior,
            sample_stats=sample_stats,
            attrs=dict(attrs),
            posterior_attrs=dict(attrs),
        )

    # ------------------------------------------------------------------ plot
    def plot(
        self,
        reference: Any = None,
        path: str | os.PathLike | None = None,
        *,
        bins: int = 30,
        labels: Sequence[str] | None = None,
        label: str | None = None,
        reference_label: str = "reference",
        truth: Any = None,
        max_points: int = 2000,
        seed: int = 0,
        figsize: tuple[float, float] | None = None,
    ) -> Any:
        r"""Pair plot: weighted histograms on the diagonal, scatter plots below it.

        A thin wrapper of :func:`ebm_lfi.posterior.plotting.pair_plot` (see there for what is
        drawn).
        The figure is built with :class:`matplotlib.figure.Figure` directly (no ``pyplot``),
        so it neither needs a display nor changes matplotlib's global state; it renders with
        the Agg canvas when saved.

        Arguments:
            reference: Optional reference sample, shape :math:`(m, p)`, or another
                :class:`Posterior` (its weights are used), drawn in a second colour.
            path: If given, the figure is saved there (format from the extension).
            bins: Number of histogram bins.
            labels: Axis labels, default the parameter names.
            label: Legend entry of this posterior, default the method name or "posterior".
            reference_label: Legend entry of the reference.
            truth: Optional true parameter, shape :math:`(p,)`, marked by lines.
            max_points: At most this many points per scatter plot (resampled by weight, with
                ``seed``).
            seed: Seed of that resampling.
            figsize: Figure size in inches, default :math:`2.2 p` square.

        Returns:
            The :class:`matplotlib.figure.Figure`.
        """
        from .plotting import pair_plot  # matplotlib's stack only when a plot is drawn

        reference_weights = None
        if isinstance(reference, Posterior):
            reference, reference_weights = reference.samples, reference.weights
        return pair_plot(
            self._samples,
            self._weights,
            self._names if labels is None else labels,
            reference=reference,
            truth=truth,
            path=path,
            reference_weights=reference_weights,
            bins=bins,
            label=label or self.method or "posterior",
            reference_label=reference_label,
            max_points=max_points,
            seed=seed,
            figsize=figsize,
        )

    # --------------------------------------------------------------- storage
    def save(self, path: str | os.PathLike) -> None:
        r"""Save to a ``.npz`` file (exactly at ``path``) that :meth:`load` reads back.

        Arrays (samples, weights, array-valued diagnostics) are stored in their dtype; names,
        method, chain shape and the other diagnostics go to a JSON string (the format is
        described in :mod:`ebm_lfi.posterior.io`). Diagnostics may be numbers, strings,
        ``None``, lists / dicts of those, numpy arrays, torch tensors or pandas DataFrames of
        numeric columns; any other value is skipped with a warning.
        """
        write_npz(
            path,
            samples=self._samples,
            weights=self._weights,
            parameter_names=self._names,
            method=self.method,
            chains_shape=None if self._chains is None else list(self._chains.shape),
            diagnostics=self.diagnostics,
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, device: torch.device | str | None = None
    ) -> Posterior:
        r"""Load a posterior written by :meth:`save` (no pickle involved).

        Arguments:
            path: The file.
            device: Where to put the tensors, default the CPU.

        Returns:
            The :class:`Posterior`.
        """
        fields = read_npz(path, device=device)
        post = cls(**fields)
        post._weights = fields["weights"]  # validated by cls(); keep the stored values bit for bit
        return post

    def __repr__(self) -> str:
        head = [f"method={self.method!r}", f"num_samples={self.num_samples}"]
        if self._chains is not None:
            head.append(f"chains={self._chains.shape[0]}x{self._chains.shape[1]}")
        if self._weights is not None:
            head.append(f"weighted, ess={self.effective_sample_size:.1f}")
        mean, std = self.mean().cpu().tolist(), self.std().cpu().tolist()
        lines = [f"  {name}: {m:.4g} ± {s:.3g}" for name, m, s in zip(self._names, mean, std)]
        if len(lines) > 12:
            lines = lines[:10] + [f"  ... ({len(lines) - 10} more parameters)"]
        return f"Posterior({', '.join(head)},\n" + "\n".join(lines) + "\n)"
