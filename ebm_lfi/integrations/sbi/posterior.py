r"""Our posteriors where sbi expects one: :class:`SBIPosterior`.

sbi's analysis and diagnostics tools (``sbi.analysis.pairplot``, ``sbi.diagnostics.run_sbc``)
take a posterior object with ``sample(sample_shape, x=...)``, ``sample_batched``,
``set_default_x`` and, where a density exists, ``log_prob``. :class:`SBIPosterior` gives any
fitted ebm_lfi method that interface.

References:
    | sbi: A toolkit for simulation-based inference (Tejero-Cantero et al., 2020)
    | https://doi.org/10.21105/joss.02505
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...methods.common import NotFittedError
from ...methods.exchange_stage import ExchangeStage
from ...samplers.abc.rejection import systematic_resample

__all__ = ["SBIPosterior"]


class SBIPosterior:
    r"""One of our methods behind sbi's posterior interface.

    ``sample((n,), x=x_o)`` returns :math:`n` unweighted draws from ``method.posterior(x_o)``:
    weighted samples (ABC) are resampled systematically, then shuffled; more unweighted draws
    than :math:`n` (MCMC chains rounded up) are subsampled at random, fewer resampled with
    replacement. Draws are float32, as sbi's. ``log_prob`` exists where the method has a
    density: the ``nce`` ratio posterior, known up to an additive constant (it warns so, as
    sbi's MCMC posteriors do); ABC and exchange posteriors raise :class:`NotImplementedError`.

    Randomness: each call draws its seed from ``seed`` (a fixed sequence of calls then repeats
    exactly) or, with ``seed=None``, from torch's global RNG, as sbi's own posteriors do, so
    that ``torch.manual_seed`` (e.g. inside ``run_sbc``) makes runs repeatable.

    Arguments:
        method: A fitted method (``fit`` then ``posterior(x_o, num_samples, seed=)``).
        default_x: The observation used when ``x`` is not passed (see :meth:`set_default_x`).
        seed: Root seed of the calls, or ``None``.
        num_samples: Draws asked of ``method.posterior`` per call (default: as many as
            requested). Set it when a request can exceed what the method gives, e.g. the size
            of an ABC reference table; the draws are then resampled with replacement.
        posterior_options: Further keywords of ``method.posterior`` (e.g. ``tolerance``).

    Example:
        >>> posterior = SBIPosterior(method, default_x=x_o)  # doctest: +SKIP
        >>> fig, axes = sbi.analysis.pairplot(posterior.sample((1000,)))  # doctest: +SKIP
        >>> ranks, dap = sbi.diagnostics.run_sbc(theta, x, posterior, 200)  # doctest: +SKIP
    """

    def __init__(
        self,
        method: Any,
        default_x: Any = None,
        *,
        seed: int | None = None,
        num_samples: int | None = None,
        posterior_options: dict | None = None,
    ):
        if num_samples is not None and (isinstance(num_samples, bool) or int(num_samples) < 1):
            raise ValueError(f"num_samples must be None or a positive integer, got {num_samples}")
        if not callable(getattr(method, "posterior", None)):
            raise TypeError(f"method must have a posterior method, got {type(method).__name__}")
        self.method = method
        self.posterior_options = dict(posterior_options or {})
        self.seed = seed
        self.num_samples = None if num_samples is None else int(num_samples)
        self._calls = 0
        self.last_posterior = None
        self._x: Tensor | None = None
        if default_x is not None:
            self.set_default_x(default_x)

    def __repr__(self) -> str:
        name = getattr(self.method, "name", type(self.method).__name__)
        return f"SBIPosterior({name}, default_x={'set' if self._x is not None else None})"

    # ------------------------------------------------------------------ observations
    def _x_shape(self) -> tuple[int, ...]:
        model = getattr(self.method, "model", None)
        shape = getattr(self.method, "x_shape", None) or getattr(model, "x_shape", None)
        if shape is None:
            raise NotFittedError(f"{type(self.method).__name__} is not fitted: call .fit first")
        return tuple(shape)

    def _one_x(self, x: Any) -> Tensor:
        """One observation of shape ``x_shape`` (a batch axis of 1 or flattening accepted)."""
        x = torch.as_tensor(x)
        shape = self._x_shape()
        if x.numel() != math.prod(shape):
            raise ValueError(
                f"x must be one observation of shape {shape} (a leading batch axis of 1 or a "
                f"flattened x is accepted), got shape {tuple(x.shape)}; use sample_batched "
                "for several observations"
            )
        return x.reshape(shape)

    @property
    def default_x(self) -> Tensor | None:
        """The observation used when ``x`` is not passed, shape ``(1, *x_shape)`` as in sbi."""
        return None if self._x is None else self._x[None]

    def set_default_x(self, x: Any) -> SBIPosterior:
        """Set the default observation (chainable)."""
        self._x = self._one_x(x)
        return self

    def _x_else_default(self, x: Any) -> Tensor:
        if x is not None:
            return self._one_x(x)
        if self._x is None:
            raise ValueError("no x given and no default set: pass x=... or set_default_x(x)")
        return self._x

    # ------------------------------------------------------------------ sampling
    def _next_seed(self) -> int:
        if self.seed is None:
            return int(torch.randint(0, 2**62, (1,)))
        seq = np.random.SeedSequence(self.seed, spawn_key=(self._calls,))
        self._calls += 1
        return int(seq.generate_state(1, np.uint64)[0] % 2**62)

    def _draws(self, x_o: Tensor, n: int) -> Tensor:
        """Exactly ``n`` unweighted draws ``(n, p)`` for one observation."""
        seed = self._next_seed()
        asked = n if self.num_samples is None else self.num_samples
        post = self.method.posterior(x_o, num_samples=asked, seed=seed, **self.posterior_options)
        self.last_posterior = post
        samples = post.samples.detach()
        generator = torch.Generator().manual_seed(seed + 1)
        m = samples.shape[0]
        if post.weights is not None:
            idx = systematic_resample(post.weights.cpu(), n, generator=generator)
            idx = idx[torch.randperm(n, generator=generator)]
        elif m > n:
            idx = torch.randperm(m, generator=generator)[:n]
        elif m < n:
            idx = torch.randint(0, m, (n,), generator=generator)
        else:
            idx = torch.arange(n)
        return samples[idx.to(samples.device)].cpu().to(torch.float32)

    def sample(
        self,
        sample_shape: Sequence[int] | torch.Size = (),
        x: Any = None,
        show_progress_bars: bool = False,
    ) -> Tensor:
        r"""Draws from the posterior given ``x`` (default: :attr:`default_x`).

        Arguments:
            sample_shape: Shape of the draws, e.g. ``(1000,)``; ``()`` gives one draw.
            x: The observation, shape ``x_shape`` or ``(1, *x_shape)`` or flattened.
            show_progress_bars: Accepted for sbi compatibility; the method's ``progress``
                flag decides.

        Returns:
            Draws, shape :math:`(*\text{sample\_shape}, p)`, float32.
        """
        shape = torch.Size(sample_shape)
        draws = self._draws(self._x_else_default(x), max(1, shape.numel()))
        return draws.reshape(*shape, draws.shape[-1])

    def sample_batched(
        self,
        sample_shape: Sequence[int] | torch.Size,
        x: Any,
        show_progress_bars: bool = False,
    ) -> Tensor:
        r"""Draws for each of a batch of observations (one posterior call each).

        Arguments:
            sample_shape: Shape of the draws per observation.
            x: Observations, shape :math:`(B, *x_{shape})` or flattened :math:`(B, d)`.
            show_progress_bars: Accepted for sbi compatibility.

        Returns:
            Draws, shape :math:`(*\text{sample\_shape}, B, p)`, float32.
        """
        shape = torch.Size(sample_shape)
        xs = torch.as_tensor(x)
        if xs.ndim < 1 or xs.shape[0] == 0:
            raise ValueError(f"x must be a batch (B, *x_shape), got shape {tuple(xs.shape)}")
        draws = torch.stack([self._draws(self._one_x(x_i), max(1, shape.numel())) for x_i in xs])
        return draws.permute(1, 0, 2).reshape(*shape, xs.shape[0], draws.shape[-1])

    # ------------------------------------------------------------------ densities
    def potential(self, theta: Any, x: Any = None, track_gradients: bool = False) -> Tensor:
        r"""The unnormalised log posterior of ``theta`` :math:`(n, p)` or :math:`(p,)`, shape
        :math:`(n,)`; only for methods with a tractable posterior potential (``nce``).

        Raises:
            NotImplementedError: For ABC and exchange methods, saying why.
        """
        log_potential = getattr(self.method, "log_potential", None)
        if log_potential is None:
            raise NotImplementedError(self._no_density_reason())
        x_o = self._x_else_default(x)
        model = self.method.model
        theta = torch.as_tensor(theta, dtype=model.dtype, device=model.device)
        theta = theta.reshape(-1, theta.shape[-1])
        with torch.set_grad_enabled(track_gradients):
            values = log_potential(x_o)(theta)
        return values if track_gradients else values.detach()

    def log_prob(self, theta: Any, x: Any = None, track_gradients: bool = False) -> Tensor:
        r"""Log posterior density of ``theta``, up to an additive constant (it warns so, as
        sbi's MCMC posteriors do); see :meth:`potential`.

        Raises:
            NotImplementedError: For ABC and exchange methods, saying why.
        """
        if getattr(self.method, "log_potential", None) is None:
            raise NotImplementedError(self._no_density_reason())
        warnings.warn(
            "the log-probability is unnormalized: the nce posterior potential is known up to "
            "an additive constant",
            stacklevel=2,
        )
        return self.potential(theta, x, track_gradients)

    def _no_density_reason(self) -> str:
        name = getattr(self.method, "name", type(self.method).__name__)
        if isinstance(getattr(self.method, "posterior_stage", None), ExchangeStage):
            return (
                f"{name}: the exchange posterior pi(theta) exp(eta(theta)^T s(y_o)) / Z(theta) "
                "involves the intractable normaliser Z(theta) of the energy model, so its "
                "density cannot be evaluated; exchange MCMC samples it without it. Use "
                ".sample(), or the 'nce' method (a tractable posterior potential)."
            )
        return (
            f"{name}: an ABC posterior is a (weighted) sample from the kernel-smoothed "
            "posterior, with no density to evaluate. Use .sample(), the 'nce' method (a "
            "tractable posterior potential), or sbi's NPE with "
            "ebm_lfi.integrations.sbi.posterior_estimator(method)."
        )
