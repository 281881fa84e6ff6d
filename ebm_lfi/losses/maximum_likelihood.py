r"""Maximum likelihood for the unnormalised conditional family, with a learned normaliser.

**The likelihood term.** For :math:`\log p_w(y \mid \theta) = f_w(y, \theta) - \log
Z_w(\theta)`, :math:`f_w = \eta_w(\theta)^\top s_w(y) + b_w(y)`, the gradient of the average
log-likelihood of the simulated pairs is

.. math:: \nabla_w \frac1n \sum_i \log p_w(y_i \mid \theta_i) = \frac1n \sum_i \Big(
    \nabla_w f_w(y_i, \theta_i) - \mathbb{E}_{p_w(\cdot \mid \theta_i)}\big[\nabla_w
    f_w(y', \theta_i)\big]\Big),

so with *negatives* :math:`y'_i` drawn from the current model at :math:`\theta_i` (by MCMC,
e.g. :class:`~ebm_lfi.samplers.mcmc.model_chains.ModelChains`, handed to the loss by whoever
composes the fit), the surrogate

.. math:: \ell_{\mathrm{ML}} = \frac1n \sum_i \big(f_w(y'_i, \theta_i)
    - f_w(y_i, \theta_i)\big), \qquad y'_i \text{ held fixed},

has minus that gradient in expectation: stochastic gradient descent on it is stochastic
approximation of the maximum-likelihood estimate (Younes 1989). Its *value* is not a
log-likelihood (it hovers about 0 when the model fits), so it is never used to compare models.

**The normaliser head.** The posterior potential :math:`\log \pi(\theta) + \eta(\theta)^\top
s(y_o) + c(\theta)` needs :math:`c(\theta) = -\log Z_w(\theta)` up to a constant. It is fitted
alongside, by noise-contrastive ratio estimation on the same pairs with the logit

.. math:: r(y, \theta) = \bar\eta(\theta)^\top \bar s(y) + c(\theta) + g(\bar s(y)),

where the bars mean the likelihood fit's :math:`\eta, s` with their gradients stopped, so that
only :math:`c` and :math:`g` learn from it (:class:`~ebm_lfi.losses.nce.NCE`: positives
:math:`(\theta_i, y_i)`, negatives :math:`(\theta_j, y_i)`). Why this is right: when the fitted
family holds, :math:`\log p(y \mid \theta) - \log p(y) = \eta^\top s(y) - \log Z(\theta) -
G(s(y))` with :math:`\log Z` the family's log-normaliser *without* the base measure's
:math:`y`-only part (:math:`p(y) = e^{b(y)} \int e^{\eta^\top s - \log Z} \pi\, d\theta`, so
:math:`b` cancels and the rest of :math:`\log p(y)` is a function :math:`G` of :math:`s(y)`).
The NCE optimum is therefore :math:`c(\theta) = -\log Z_w(\theta) + \text{const}`. Alternatives
considered: estimating :math:`\log Z_w(\theta)` from the MCMC negatives (ratios
:math:`\mathbb{E}_{p(\cdot\mid\theta)} e^{(\eta(\theta') - \eta(\theta))^\top s}` between
parameters, whose variance explodes as the parameters move apart), or NCE of the model's own
chains against a fixed reference density (it inherits every bias of the chains); a third is
the regression below (the normaliser after training). The contrast on the simulated pairs uses
no chain at all, and where the family is misspecified it gives the best ratio correction the
fitted statistics allow (a correction of the true ratio, not the model's normaliser). Both
terms are trained together; their optima coincide, so sharing the natural-parameter network's
trunk between :math:`\eta` and :math:`c` costs nothing at the optimum (away from it, the two
pull the trunk apart: see the warm start below).

**The normaliser after training.** The NCE head above is right only when the fitted family
holds. Where it does not, its optimum is the best correction of the *true* log-ratio that the
fixed :math:`\eta, s` allow, which can be far from the *model's* :math:`-\log Z_w(\theta)`; the
posterior potential then mixes two different models. On sbibm's two_moons (1 000 pairs, a
2-D :math:`x` whose :math:`\log Z_w` was computed on a grid, ``scripts/check_ml_normalizer.py``)
the head's :math:`c + \log Z_w` varied by 133 nats over the prior box (sd 26; :math:`\log Z_w`
itself: sd 48) and the posterior was the prior's C2ST or worse (1.00, 0.98), while the model's
own likelihood, normalised on the grid, gave 0.82 and 0.80 (0.55 and 0.51 at 10 000 pairs).
So after training, :meth:`MaximumLikelihood.fit_normalizer` replaces the head by a separate
network (``normalizer_net`` of the model) fitted to the model's own normaliser by
*thermodynamic integration as a regression*: the identity

.. math:: \nabla_\theta \log Z_w(\theta) = J_\eta(\theta)^\top\,
    \mathbb{E}_{p_w(\cdot \mid \theta)}[s(y)]

holds for any :math:`\eta, s` (no assumption on the data), and the expectation is the average of
:math:`s` over many states of the fit's own chains at each training :math:`\theta_i` (continued
from where training left them, after a further burn-in at the final weights); :math:`c` is
then fitted by least squares of :math:`\nabla_\theta c(\theta_i) + J_\eta(\theta_i)^\top
\bar s_i` over the training parameters, with Huber's loss beyond a tenth of the median target
norm: a few chains do not mix (two_moons, 10 000 pairs: the chain means' target was off by
5.4 at the median and 1 200 at the 99th percentile, against a median target norm of 250, all
in one corner of the box), and with squares those few rows moved the whole fit (2 000
regression steps: :math:`c + \log Z_w` sd 19 over the box, against 1.5 with Huber and 1.8 with
the grid's exact expectations; what is left is the regression's own error, sd 1.1 after 6 000
steps, and it matters where :math:`\log Z_w` spans 1 000 nats as there). It costs a few
hundred sampler steps per training pair and one small regression, and it inherits only the
chains' bias (which the likelihood fit has anyway). The one-draw version of this
regression, *during* training with :math:`c` on the shared trunk, was measured and dropped:
on the conjugate posterior of ``tests/test_ml.py`` (3 000 pairs, 60 epochs) its C2ST was
0.62 to 0.66 over three sampling seeds without early stopping and 0.81 to 0.85 with it,
against 0.58 with NCE (the NCE head remains the training-time normaliser, and the held-out
score of model choice).

**Warm start.** From a random initialisation the model is far from the data, its chains wander
over a density much wider than the data's conditional spread, and the likelihood gradient,
small and noisy, took hundreds of epochs to learn the dependence on :math:`\theta` (linear
Gaussian, 3 000 pairs: after 60 epochs the statistics explained 96% and 2% of the two true
ones). The fit therefore first trains the same family with a cheap consistent loss (sliced
score matching, ``warm_start``) and then runs maximum likelihood from there, as a one-step
estimator improves a consistent one toward the efficient MLE; the chains then start near the
model (same example: 86% and 95%, against 9% and 87% for the warm start alone). A warm start
that also fitted :math:`c` was worse (C2ST 0.75 against 0.58): the NCE term pulls the trunk that
:math:`c` shares with :math:`\eta`.

**Validation.** In evaluation mode (the training loop's validation pass, model choice by
:meth:`MaximumLikelihood.heldout`) the loss is the NCE loss of the full logit :math:`r`
without stopped gradients: a proper score of the fitted ratio, and so of the posterior
potential, lower for a better fit whatever the architecture.

The model must be a ratio model (``ExpFamEBM(normalizer=True)``, see
:attr:`MaximumLikelihood.model_options`).

References:
    | Parametric inference for imperfectly observed Gibbsian fields (Younes, 1989)
      https://doi.org/10.1007/BF00333148

    | Maximum Likelihood Learning of Unnormalized Models for Simulation-Based Inference
      (Glaser, Arbel, Hromadka, Doucet & Gretton, 2023) https://arxiv.org/abs/2210.14756

    | Noise-contrastive estimation (Gutmann & Hyvärinen, 2010)
      https://proceedings.mlr.press/v9/gutmann10a.html
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..energy.mlp import MLP
from ..energy.nets import frozen
from .nce import NCE
from .score_matching import check_batch

__all__ = ["ExactLikelihood", "MaximumLikelihood", "NegativeSampler"]

_HUBER = 0.1  # threshold of the normaliser's robust regression, in median target norms

NegativeSampler = Callable[..., Tensor]
r"""``negatives(log_prob, y, theta, index) -> y'``: one draw :math:`y'_i \approx
p(\cdot \mid \theta_i)` per row, detached; ``log_prob(y, theta) -> (n,)`` is the model's
:math:`f`, ``index`` the rows' indices in the training set or ``None``."""


class _Ratio:
    r"""The logit :math:`\eta(\theta)^\top s(y) + c(\theta) + g(s(y))` of a ratio model, as
    :class:`~ebm_lfi.losses.nce.NCE` reads it; with ``stop`` the gradients of
    :math:`\eta, s` are stopped (only :math:`c` and :math:`g` learn)."""

    has_normalizer = True

    def __init__(self, model: nn.Module, stop: bool):
        self.model, self.stop = model, stop

    def log_ratio_y(self, y: Tensor, theta: Tensor, index: Tensor) -> Tensor:
        model = self.model
        s = model.statistics_y(y)
        eta, c = model.natural_and_normalizer(theta)
        if self.stop:
            s, eta = s.detach(), eta.detach()
        g = model.marginal_net(s).reshape(s.shape[0]) if model.marginal_net is not None else 0.0
        return (eta[index] * s).sum(-1) + c[index] + g


class MaximumLikelihood(nn.Module):
    r"""Maximum-likelihood surrogate with MCMC negatives, plus the NCE fit of :math:`c(\theta)`.

    Arguments:
        negatives: The sampler of negatives (see :data:`NegativeSampler`), e.g.
            :class:`~ebm_lfi.samplers.mcmc.model_chains.ModelChains`.
        num_negatives: Shuffled pairings per row of the normaliser's NCE term (almost free:
            the statistics are computed once per row; 16 gave a closer conjugate posterior
            than 4, C2ST 0.58 against 0.60).
        normalizer_weight: Weight of the normaliser's NCE term (positive).
        regularization: Weight :math:`\alpha` of :math:`\alpha\,(f(y)^2 + f(y')^2)`, which
            keeps the energies of order one (0: none).
        warm_start: A loss of the same family that the fit trains with before maximum
            likelihood (e.g. :class:`~ebm_lfi.losses.score_matching.SlicedScoreMatching`), or
            ``None``; see the module docstring.
        normalizer_fit: After training, fit :math:`c(\theta)` to the model's own normaliser
            (:meth:`fit_normalizer`, called by the fit stage); ``False`` keeps the NCE head.
        normalizer_burn_in: Sampler calls at the final weights before the chain averages of
            :meth:`fit_normalizer` start.
        normalizer_draws: Sampler calls whose states are averaged (one state per call).
        normalizer_iterations: Gradient steps of the regression of :meth:`fit_normalizer`.

    Called as ``loss(model, y, theta, index=None)``; ``index`` (the rows' indices in the
    training set) lets persistent chains follow each training pair. :attr:`indexed` tells
    the fit to pass it.

    Example:
        >>> from ebm_lfi.energy.model import ExpFamEBM
        >>> model = ExpFamEBM.default((3,), theta_dim=2, hidden=(8,), normalizer=True)
        >>> start_at_data = lambda log_prob, y, theta, index: y  # a (useless) sampler
        >>> MaximumLikelihood(start_at_data)(model, torch.randn(5, 3), torch.rand(5, 2)).shape
        torch.Size([])
    """

    model_options = {"normalizer": True}
    indexed = True

    def __init__(
        self,
        negatives: NegativeSampler,
        *,
        num_negatives: int = 16,
        normalizer_weight: float = 1.0,
        regularization: float = 0.0,
        warm_start: Callable | None = None,
        normalizer_fit: bool = True,
        normalizer_burn_in: int = 20,
        normalizer_draws: int = 40,
        normalizer_iterations: int = 4000,
    ):
        super().__init__()
        if not callable(negatives):
            raise TypeError(f"negatives must be callable, got {type(negatives).__name__}")
        if not normalizer_weight > 0 or not regularization >= 0:
            raise ValueError(
                "normalizer_weight must be > 0 and regularization >= 0, got "
                f"{normalizer_weight}, {regularization}"
            )
        counts = (normalizer_burn_in, normalizer_draws, normalizer_iterations)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in counts) or (
            normalizer_burn_in < 0 or normalizer_draws < 1 or normalizer_iterations < 1
        ):
            raise ValueError(
                "normalizer_burn_in must be an int >= 0, normalizer_draws and "
                f"normalizer_iterations ints >= 1, got {counts}"
            )
        self.normalizer_fit = bool(normalizer_fit)
        self.normalizer_burn_in = normalizer_burn_in
        self.normalizer_draws = normalizer_draws
        self.normalizer_iterations = normalizer_iterations
        self.negatives = negatives
        self.contrast = NCE(num_negatives)
        self.normalizer_weight = float(normalizer_weight)
        self.regularization = float(regularization)
        self.warm_start = warm_start

    @property
    def diagnostics(self) -> dict[str, Any]:
        """What the sampler of negatives reports (e.g. divergent chains), or ``{}``."""
        return dict(getattr(self.negatives, "diagnostics", {}) or {})

    def reset(self) -> MaximumLikelihood:
        """Forget the sampler's state (persistent chains), before a new fit."""
        reset = getattr(self.negatives, "reset", None)
        if callable(reset):
            reset()
        return self

    def forward(
        self,
        model: nn.Module,
        y: Tensor,
        theta: Tensor,
        index: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""
        Arguments:
            model: A ratio model (``ExpFamEBM(normalizer=True)``).
            y: Transformed data, shape :math:`(n, *x_{shape})`.
            theta: Parameters, shape :math:`(n, p)`.
            index: Indices of the rows in the training set, shape :math:`(n,)`, or ``None``.
            generator: Generator of the NCE pairings (default: global).

        Returns:
            In training mode, a scalar whose gradient is that of the ML surrogate plus the
            weighted NCE term of :math:`c`, and whose value is that NCE term (the surrogate's
            value means nothing, see the module docstring), so that the training loss is a
            score of the current ratio logit; in evaluation mode the NCE loss of the full
            ratio logit.
        """
        if not getattr(model, "has_normalizer", False):
            raise ValueError(
                "MaximumLikelihood needs a ratio model: build ExpFamEBM with normalizer=True"
            )
        y, theta = check_batch(y, theta)
        if not model.training:
            return self.contrast.per_row(_Ratio(model, stop=False), y, theta, generator).mean()
        y_neg = self.negatives(model.log_unnormalized_y, y, theta, index).detach()
        if y_neg.shape != y.shape:
            raise ValueError(f"negatives have shape {tuple(y_neg.shape)}, y {tuple(y.shape)}")
        f = model.log_unnormalized_y(torch.cat([y, y_neg]), torch.cat([theta, theta]))
        f_data, f_model = f[: y.shape[0]], f[y.shape[0] :]
        surrogate = (f_model - f_data).mean()
        if self.regularization:
            surrogate = surrogate + self.regularization * (f_data**2 + f_model**2).mean()
        nce = self.contrast.per_row(_Ratio(model, stop=True), y, theta, generator).mean()
        # The value is the NCE loss of the ratio logit; the gradient adds the ML surrogate's.
        return self.normalizer_weight * nce + (surrogate - surrogate.detach())

    def heldout(self, model: nn.Module, y: Tensor, theta: Tensor, seed: int = 0) -> Tensor:
        r"""Per-row held-out NCE loss of the ratio logit with fixed pairings (to compare
        models, shape :math:`(n,)`)."""
        generator = torch.Generator(device=y.device).manual_seed(seed)
        y, theta = check_batch(y, theta)
        with torch.no_grad():
            return self.contrast.per_row(_Ratio(model, stop=False), y, theta, generator)

    def fit_normalizer(
        self,
        model: nn.Module,
        y: Tensor,
        theta: Tensor,
        *,
        seed: int | None = None,
        batch_size: int = 1024,
        regression_batch: int = 256,
        hidden: tuple[int, ...] = (64, 64),
    ) -> nn.Module | None:
        r"""Fit :math:`c(\theta) = -\log Z_w(\theta) + \text{const}` of a trained model to
        its own normaliser (thermodynamic integration as a regression, see the module
        docstring) and install it as ``model.normalizer_net``.

        Arguments:
            model: The trained ratio model (``ExpFamEBM(normalizer=True)``).
            y: The transformed training data, shape :math:`(n, *x_{shape})` (where new chains
                start).
            theta: The training parameters, shape :math:`(n, p)`.
            seed: Seed of the regression's initialisation and mini-batches (the chains use
                torch's global generator, as in training).
            batch_size: Rows per sampler call.
            regression_batch: Rows per regression step (a step differentiates the network
                twice, so its cost grows with the rows; 256 matched 1,024 on the normaliser of
                two_moons at a third of the time).
            hidden: Hidden widths of the normaliser network (an MLP on the standardised
                :math:`\theta`).

        Returns:
            The installed normaliser network, or ``None`` when ``normalizer_fit`` is off (the
            model is then unchanged).
        """
        if not self.normalizer_fit:
            return None
        if not getattr(model, "has_normalizer", False):
            raise ValueError("fit_normalizer needs a ratio model (ExpFamEBM normalizer=True)")
        y, theta = check_batch(y, theta)
        n = y.shape[0]
        index = torch.arange(n, device=y.device)
        was_training = model.training
        model.eval()
        try:
            with frozen(model):
                mean_s = torch.zeros(n, model.num_statistics, dtype=y.dtype, device=y.device)
                for call in range(self.normalizer_burn_in + self.normalizer_draws):
                    for rows in index.split(batch_size):
                        state = self.negatives(model.log_unnormalized_y, y[rows], theta[rows], rows)
                        if call >= self.normalizer_burn_in:
                            with torch.no_grad():
                                mean_s[rows] += model.statistics_y(state.detach())
                mean_s /= self.normalizer_draws
                # the regression target -J_eta(theta_i)^T E[s | theta_i], one backward pass
                with torch.enable_grad():
                    t = theta.detach().clone().requires_grad_(True)
                    (grad,) = torch.autograd.grad((model.natural_parameters(t) * mean_s).sum(), t)
                target = -grad.detach()
                # in units of the median target, so that the Huber threshold is relative
                scale = float(target.norm(dim=1).median()) or 1.0
                generator = torch.Generator(device="cpu")
                if seed is None:
                    generator.seed()
                else:
                    generator.manual_seed(int(seed) + 7_777)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
                    net = MLP(theta.shape[1], 1, hidden, "silu").to(device=y.device, dtype=y.dtype)
                optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
                schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
                    optimizer, self.normalizer_iterations
                )
                standardize = model.theta_transform
                with torch.enable_grad():
                    for _ in range(self.normalizer_iterations):
                        rows = torch.randint(n, (min(n, regression_batch),), generator=generator)
                        t = theta[rows].detach().clone().requires_grad_(True)
                        c = net(standardize(t)).sum()
                        (grad_c,) = torch.autograd.grad(c, t, create_graph=True)
                        r = (grad_c - target[rows] / scale).norm(dim=1)
                        loss = torch.where(r < _HUBER, 0.5 * r**2, _HUBER * (r - 0.5 * _HUBER))
                        loss = loss.mean()
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                        schedule.step()
                with torch.no_grad():  # fold the scale into the last layer
                    last = net.net[-1]
                    last.weight.mul_(scale)
                    last.bias.mul_(scale)
                for p in net.parameters():
                    p.requires_grad_(False)
        finally:
            model.train(was_training)
        model.normalizer_net = net
        return net


class ExactLikelihood(nn.Module):
    r"""Maximum likelihood where the normaliser is exact: the mean negative log-likelihood
    :math:`-\frac1n \sum_i \big(\eta(\theta_i)^\top s(y_i) + b(y_i) + c(\theta_i)\big)` of a
    model whose :math:`c(\theta) = -\log Z(\theta)` is exact (``model.exact_normalizer``: the
    Gaussian family of :mod:`~ebm_lfi.energy.gaussian_nets`). No sampler: the gradient is that
    of the log-likelihood itself, and the value (in training and validation alike) is the
    held-out negative log-likelihood, a proper score of the fitted likelihood.

    Example:
        >>> from ebm_lfi.energy.model import ExpFamEBM
        >>> model = ExpFamEBM.default((2,), theta_dim=1, structure="gaussian")
        >>> ExactLikelihood()(model, torch.randn(5, 2), torch.rand(5, 1)).shape
        torch.Size([])
    """

    model_options = {"normalizer": True}

    def forward(self, model: nn.Module, y: Tensor, theta: Tensor) -> Tensor:
        r"""
        Arguments:
            model: A model with an exact normaliser (``model.exact_normalizer``).
            y: Transformed data, shape :math:`(n, *x_{shape})`.
            theta: Parameters, shape :math:`(n, p)`.

        Returns:
            The mean negative log-likelihood, a scalar.
        """
        return self.per_row(model, y, theta).mean()

    def per_row(self, model: nn.Module, y: Tensor, theta: Tensor) -> Tensor:
        r"""The negative log-likelihood of each row, shape :math:`(n,)`."""
        if not getattr(model, "exact_normalizer", False):
            raise ValueError(
                "ExactLikelihood needs a model with an exact normaliser (structure='gaussian'); "
                "for other models use MaximumLikelihood (loss='ml')"
            )
        y, theta = check_batch(y, theta)
        return -(model.log_unnormalized_y(y, theta) + model.normalizer(theta))

    def heldout(self, model: nn.Module, y: Tensor, theta: Tensor, seed: int = 0) -> Tensor:
        r"""Per-row held-out negative log-likelihood (to compare models), shape :math:`(n,)`."""
        with torch.no_grad():
            return self.per_row(model, y, theta)
