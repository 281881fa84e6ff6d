r"""The density posterior stage (``*-mdn``): a conditional density of :math:`\theta` given the
learned statistics, fitted on the training pairs.

The ABC stage reads the statistics :math:`s(x)` of a fit through a tolerance: it keeps the
few training pairs whose statistics are nearest the observation's, and the posterior is
blurred by how far those are (at :math:`10^4` simulations, the nearest 2.5–10 %). This stage
uses every pair instead. It fits a mixture density network (Bishop 1994), a mixture of
:math:`K` Gaussians whose weights, means and Cholesky factors are functions of the
statistics,

.. math:: q(u \mid s) = \sum_{k=1}^{K} w_k(s)\, \mathcal{N}\big(u;\ \mu_k(s),\
    L_k(s) L_k(s)^\top\big),

by maximum likelihood on the pairs :math:`(u_i, s(x_i))`, where :math:`u = g^{-1}(\theta)` is
:math:`\theta` in the unbounded coordinates of the prior's support
(:class:`~ebm_lfi.priors.SupportBijection`, so that every draw is inside it). The parameters
of the training pairs are prior draws, so :math:`q(u \mid s(x_o))` estimates the posterior of
:math:`u` given the statistics; it is the posterior given :math:`x_o` where the statistics are
sufficient (neural posterior estimation with a mixture density, Papamakarios & Murray 2016, on
the statistics of the energy fit). Its draws are exact draws of the fitted mixture: no
simulation, no chains, no tolerance. Statistics and :math:`u` are standardised on the
training pairs; training is :func:`~ebm_lfi.training.loop.train` (Adam, early stopping on a
held-out part of the pairs, the best weights kept).

In ``auto`` (the route ``mdn``, on the fit whose ABC route scored best), at :math:`10^4`
simulations with seed 0: C2ST 0.580 on the integer counts of ``tests/user_problems.py`` (the
ABC route of the same fit 0.627, sbi's NPE on the raw data 0.624), 0.597 on its flat iid draws
(0.592, 0.592), 0.515 on sbibm's two_moons (0.786, 0.539), 0.719 on MA(2) (0.770 for the best
ABC route, 0.909); over ten observations of the counts 0.597 against 0.616 for the ABC route,
or 0.623 with another seed of the density: its training varies from seed to seed. Its
posteriors are a little too wide (sd 1.12 times the exact one on both user problems), and the
components that serve other statistics leave a little mass far out, which W2 sees more than
C2ST (``docs/benchmarks.md``, "A density of the parameters given the statistics").

References:
    | Mixture density networks (Bishop, 1994)
    | https://publications.aston.ac.uk/id/eprint/373/

    | Fast ε-free inference of simulation models with Bayesian conditional density
      estimation (Papamakarios & Murray, NeurIPS 2016) https://arxiv.org/abs/1605.06376
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor, nn

from ..priors import SupportBijection
from ..training.config import TrainConfig
from ..training.loop import train
from .common import NotFittedError, as_config, batched
from .method import Draws, FitStage

__all__ = ["DensityConfig", "DensityStage", "MixtureDensity"]

_LOG_2PI = math.log(2 * math.pi)


def _default_training() -> dict:
    return {"validation_fraction": 0.1}


@dataclass(frozen=True)
class DensityConfig:
    r"""Settings of the mixture density on the statistics.

    Arguments:
        components: Gaussians in the mixture, :math:`K`.
        hidden: Width of the two hidden layers (tanh).
        training: :class:`~ebm_lfi.training.config.TrainConfig` fields of its fit (Adam,
            mini-batches of 256, early stopping); by default those of ``TrainConfig`` with a
            tenth of the pairs held out for early stopping.
    """

    components: int = 5
    hidden: int = 64
    training: dict = field(default_factory=_default_training)

    def __post_init__(self):
        for name in ("components", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.training, TrainConfig):
            training = {f.name: getattr(self.training, f.name) for f in fields(TrainConfig)}
            object.__setattr__(self, "training", training)
        if not isinstance(self.training, dict):
            raise TypeError(f"training must be a dict or a TrainConfig, got {self.training!r}")
        TrainConfig(**self.training)  # checked now, not at the first fit


class MixtureDensity(nn.Module):
    r"""A mixture of :math:`K` full-covariance Gaussians over :math:`\mathbb{R}^p` whose
    weights, means and Cholesky factors are an MLP of a conditioning vector of size :math:`k`.

    Arguments:
        num_inputs: :math:`k`, the size of the conditioning vector.
        num_outputs: :math:`p`, the dimension of the modelled variable.
        components: :math:`K`.
        hidden: Width of the two hidden layers.

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> q = MixtureDensity(3, 2, components=4)
        >>> q.log_prob(torch.zeros(5, 2), torch.zeros(5, 3)).shape
        torch.Size([5])
        >>> q.sample(torch.zeros(1, 3), 7, torch.Generator().manual_seed(0)).shape
        torch.Size([7, 2])
    """

    def __init__(self, num_inputs: int, num_outputs: int, *, components: int = 5, hidden: int = 64):
        super().__init__()
        p, k = num_outputs, components
        self.num_outputs, self.components = p, k
        self.body = nn.Sequential(
            nn.Linear(num_inputs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.logits = nn.Linear(hidden, k)
        self.means = nn.Linear(hidden, k * p)
        self.factors = nn.Linear(hidden, k * p * (p + 1) // 2)
        self.register_buffer("rows", torch.tril_indices(p, p)[0], persistent=False)
        self.register_buffer("cols", torch.tril_indices(p, p)[1], persistent=False)

    def mixture(self, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""Log-weights :math:`(n, K)`, means :math:`(n, K, p)` and lower-triangular Cholesky
        factors of the covariances :math:`(n, K, p, p)` (positive diagonal) given ``s``
        :math:`(n, k)`."""
        n, p, k = s.shape[0], self.num_outputs, self.components
        h = self.body(s)
        log_w = torch.log_softmax(self.logits(h), dim=-1)
        mean = self.means(h).view(n, k, p)
        flat = self.factors(h).view(n, k, -1)
        lower = flat.new_zeros(n, k, p, p)
        lower[:, :, self.rows, self.cols] = flat
        diagonal = nn.functional.softplus(torch.diagonal(lower, dim1=-2, dim2=-1)) + 1e-3
        return log_w, mean, torch.tril(lower, -1) + torch.diag_embed(diagonal)

    def log_prob(self, u: Tensor, s: Tensor) -> Tensor:
        r""":math:`\log q(u_i \mid s_i)`, shape :math:`(n,)`, for ``u`` :math:`(n, p)` and
        ``s`` :math:`(n, k)`."""
        log_w, mean, lower = self.mixture(s)
        diff = (u[:, None, :] - mean)[..., None]
        z = torch.linalg.solve_triangular(lower, diff, upper=False)[..., 0]
        log_det = torch.log(torch.diagonal(lower, dim1=-2, dim2=-1)).sum(-1)
        log_normal = -0.5 * (z**2).sum(-1) - log_det - 0.5 * self.num_outputs * _LOG_2PI
        return torch.logsumexp(log_w + log_normal, dim=-1)

    @torch.no_grad()
    def sample(self, s: Tensor, num_samples: int, generator: torch.Generator) -> Tensor:
        r"""``num_samples`` draws of :math:`u` given one conditioning vector ``s`` :math:`(1, k)`
        (random numbers from ``generator``, on the CPU), shape :math:`(n, p)`."""
        log_w, mean, lower = (t[0].cpu() for t in self.mixture(s))
        weights = log_w.exp()
        component = torch.multinomial(weights, num_samples, replacement=True, generator=generator)
        noise = torch.randn(num_samples, self.num_outputs, generator=generator, dtype=mean.dtype)
        draws = mean[component] + (lower[component] @ noise[:, :, None])[..., 0]
        return draws.to(s.device)


def _negative_log_likelihood(model: MixtureDensity, u: Tensor, s: Tensor) -> Tensor:
    return -model.log_prob(u, s).mean()


class DensityStage:
    r"""Draws the posterior from a mixture density of :math:`\theta` given the statistics of
    a fit (see the module docstring).

    Arguments:
        config: A :class:`DensityConfig` or a dict of its fields (default: its defaults).
        progress: Show a progress bar while the density trains.

    :meth:`prepare` trains the density on the fit's statistics of the training pairs (its
    ``seed`` seeds the training; ``None``: 0, so that a stage prepared twice is the same);
    :meth:`sample` draws from it at the observation's statistics.
    """

    def __init__(self, config: DensityConfig | dict | None = None, *, progress: bool = False):
        self.config = as_config(config, DensityConfig, "config")
        self.progress = progress
        self.density: MixtureDensity | None = None
        self.history = None

    def prepare(
        self, fit: FitStage, theta: Tensor, x: Tensor, *, seed: int | None = None
    ) -> DensityStage:
        """Train the density on the statistics of the training pairs.

        Arguments:
            fit: The fitted fit stage: its ``prior`` and ``statistics`` are used.
            theta, x: Prior-predictive pairs (the training set).
            seed: Seed of the training (``None``: 0).

        Returns:
            The stage itself, ready to sample.
        """
        cfg = self.config
        start = time.process_time()
        self.prior, self.statistics = fit.prior, fit.statistics
        with torch.no_grad():
            stats = batched(self.statistics, x).detach()
        dtype, device = stats.dtype, stats.device
        self.bijection = SupportBijection.interior(self.prior, dtype=dtype, device=device)
        u = self.bijection.forward(theta.to(dtype=dtype, device=device))
        self.s_mean, self.s_sd = stats.mean(0), _spread(stats)
        self.u_mean, self.u_sd = u.mean(0), _spread(u)
        u, stats = (u - self.u_mean) / self.u_sd, (stats - self.s_mean) / self.s_sd
        torch_seed = 0 if seed is None else int(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            density = MixtureDensity(
                stats.shape[1], u.shape[1], components=cfg.components, hidden=cfg.hidden
            ).to(dtype=dtype, device=device)
        self.history = train(
            density,
            _negative_log_likelihood,
            u,
            stats,
            config=cfg.training,
            seed=torch_seed,
            progress=self.progress,
        )
        self.density = density.eval()
        self.seconds = time.process_time() - start
        return self

    def sample(self, x_o: Tensor, num_samples: int, *, seed: int | None = None) -> Draws:
        r"""``num_samples`` draws of the density at the statistics of ``x_o``.

        Arguments:
            x_o: One observation, shaped like one simulation (checked by the method).
            num_samples: Draws.
            seed: Seed of the draws (``None``: from torch's global generator).
        """
        if self.density is None:
            raise NotFittedError("DensityStage: call prepare(fit, theta, x) first")
        start = time.perf_counter()
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            s_o = (self.statistics(x_o[None]) - self.s_mean) / self.s_sd
            u = self.density.sample(s_o, num_samples, generator) * self.u_sd + self.u_mean
        diagnostics = {
            "sampler": "mixture density",
            "simulations": 0,
            "components": self.config.components,
            "density_epochs": int(self.history.attrs["best_epoch"]),
            "density_loss": float(self.history.attrs["best_loss"]),
            "density_seconds": self.seconds,
            "seconds": time.perf_counter() - start,
        }
        return Draws(self.bijection.inverse(u), None, None, diagnostics)


def _spread(values: Tensor) -> Tensor:
    """Per-column standard deviations, 1 where a column is constant."""
    if values.shape[0] < 2:
        return torch.ones_like(values[0])
    sd = values.std(0)
    return torch.where(sd > 0, sd, torch.ones_like(sd))
