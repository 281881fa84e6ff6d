r"""Sequential rounds: simulate where the posterior is, refit, repeat.

Every method draws its training :math:`\theta` from the prior. For a narrow posterior most of
those simulations land where the posterior has no mass. In rounds, the budget of
:math:`N` simulations is split into :math:`R` parts; round 1 draws from the prior, round
:math:`r > 1` from a proposal built on the posterior of round :math:`r - 1`, and the method is
refitted on all the pairs simulated so far, its posterior drawn again.

**Which methods are valid in rounds** (:data:`ROUND_METHODS`). A fit of the *likelihood*
:math:`p(x \mid \theta)` does not depend on where the training :math:`\theta` come from:
score matching, maximum likelihood and the exchange surrogate fit :math:`p(x \mid \theta)` at
each :math:`\theta`, so pairs from any proposal need no correction (``ml``, ``*-exchange``).
Neither does the NCE ratio with shuffled parameters as negatives: with pairs from
:math:`r(\theta) p(x \mid \theta)` the optimal logit is :math:`\log p(x \mid \theta) - \log
\tilde p(x)`, :math:`\tilde p` the pooled marginal of :math:`x`, absorbed by the
:math:`\theta`-free term :math:`d(x)`, so :math:`\eta(\theta)^\top s + c(\theta)` still gives
the posterior potential with the true prior (``nce``). The energy ABC methods (``*-abc``) use
the training pairs as their reference table: drawn from proposals, the table gets the
importance weights :math:`\pi(\theta_i) / \bar r(\theta_i)`, :math:`\bar r = \sum_r (n_r /
N)\, r_r` the mixture of all rounds' proposals in proportion to their draws (the balance
heuristic of multiple importance sampling, Veach & Guibas 1995), which multiply the ABC kernel
weights (:attr:`~ebm_lfi.methods.abc_stage.ABCStage.training_weights`). The baselines
(``rejection-abc``, ``fp-abc``) are not offered rounds.

**Proposal.** A defensive mixture: with probability ``defensive`` (0.1) a prior draw, otherwise
a draw of the last posterior (resampled by its weights) moved by a Gaussian kernel with the
posterior's covariance times the squared Scott factor :math:`n^{-2/(p + 4)}`, so that the
proposal covers the posterior's tails; the prior component keeps every region of the
support reachable, which a fit of :math:`p(x \mid \theta)` needs to stay sane where a later
posterior (or the MCMC over it) might wander. Draws outside the prior's support are drawn
again (up to 100 times, then replaced by prior draws), so every training :math:`\theta` lies
in the support; the truncated kernel's density divides by its mass inside the support, measured
with 4 000 draws (:class:`DefensiveProposal`).

**Budget.** :func:`round_budgets` splits the training simulations evenly (the first rounds take
the remainder); ``diagnostics["total_simulations"]`` of the final posterior counts all rounds,
and ``diagnostics["rounds"]`` gives, per round, its simulations and the width (posterior sd
per parameter) of the posterior drawn after it.

**How many rounds** (:func:`default_rounds`): one for methods that are not valid in rounds;
otherwise one round per 250 simulations, between 1 and 8. Measured with ``nce`` on the narrow
problem of ``tests/test_rounds.py`` (posterior sd 0.1 on a prior of width 10, at the edge of the
support; C2ST against exact draws, lower is better):

==========  =======  =======  =======  =======  =======
budget      1 round  2        4        8        ``default_rounds``
==========  =======  =======  =======  =======  =======
1 000       0.98              0.90              4
2 000       0.96     0.90     0.84     0.74     8
8 000       0.96     0.80     0.67     0.57     8
==========  =======  =======  =======  =======  =======

More rounds helped down to 250 simulations per round; the cap of 8 bounds the cost, since
every round refits the method on all the pairs so far (8 rounds took about four times the
time of one at 8 000 simulations). On a posterior about as wide as the prior, rounds gain
nothing and cost the refits: pass ``rounds=1`` there.

The loop, written out for a user who wants to control it::

    theta, x = el.simulate(simulator, prior, n_1, seed=0)
    for r in range(R):
        method.fit(all_theta, all_x, seed=r)
        post = method.posterior(x_o, seed=r)
        theta = proposal_sample(prior, post, n_{r+1}, generator)
        x = el.simulate_at(simulator, theta, seed=r)

References:
    | Fast epsilon-free inference of simulation models with Bayesian conditional density
      estimation (Papamakarios & Murray, 2016) https://arxiv.org/abs/1605.06376

    | Maximum Likelihood Learning of Unnormalized Models for Simulation-Based Inference
      (Glaser et al., 2023) https://arxiv.org/abs/2210.14756
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, MultivariateNormal

from ..posterior.posterior import Posterior
from ..priors import prior_log_prob, prior_sample
from ..simulation.simulate import simulate, simulate_at
from .abc_stage import ABCStage

__all__ = [
    "ROUND_METHODS",
    "default_rounds",
    "round_budgets",
    "DefensiveProposal",
    "proposal_sample",
    "importance_weights",
    "run_rounds",
]

ROUND_METHODS = (
    "ml",
    "nce",
    "ml-exchange",
    "sm-exchange",
    "ssm-exchange",
    "dsm-exchange",
    "sm-abc",
    "ssm-abc",
    "dsm-abc",
    "nce-abc",
    "cnce-abc",
    "ml-abc",
)
"""Registered methods valid in rounds: fits that do not depend on the proposal of the training
parameters, and the energy ABC methods with importance weights on their table."""

_SIMULATIONS_PER_ROUND = 250
_MAX_ROUNDS = 8
_REDRAWS = 100


def default_rounds(method: str, num_simulations: int) -> int:
    r"""The default number of rounds: 1 for a method not in :data:`ROUND_METHODS`, else
    ``num_simulations // 250`` clipped to :math:`[1, 8]` (see the module docstring).

    Example:
        >>> default_rounds("nce", 10_000), default_rounds("nce", 1_000)
        (8, 4)
        >>> default_rounds("fp-abc", 10_000)
        1
    """
    if method not in ROUND_METHODS:
        return 1
    return int(min(_MAX_ROUNDS, max(1, num_simulations // _SIMULATIONS_PER_ROUND)))


def round_budgets(num_simulations: int, rounds: int) -> list[int]:
    r"""``num_simulations`` split into ``rounds`` near-equal parts (the first take the rest).

    Example:
        >>> round_budgets(1_001, 3)
        [334, 334, 333]
    """
    if rounds < 1 or num_simulations < 2 * rounds:
        raise ValueError(
            f"need rounds >= 1 and at least 2 simulations per round, got {rounds} rounds for "
            f"{num_simulations} simulations"
        )
    base, rest = divmod(int(num_simulations), int(rounds))
    return [base + (r < rest) for r in range(rounds)]


class DefensiveProposal:
    r"""The proposal of a round: :math:`r(\theta) = \alpha\, \pi(\theta) + (1 - \alpha)\,
    k(\theta)`, :math:`k` a Gaussian kernel density on the last posterior's draws truncated to
    the prior's support (see the module docstring).

    Arguments:
        prior: The prior.
        post: The last posterior (samples and optional weights, :math:`(n, p)`).
        defensive: The prior's share :math:`\alpha`.
        generator: Source of the draws that measure the kernel's mass inside the support.
    """

    def __init__(
        self,
        prior: Distribution,
        post: Posterior,
        defensive: float = 0.1,
        generator: torch.Generator | None = None,
    ):
        if not 0 < defensive <= 1:
            raise ValueError(f"defensive must be in (0, 1], got {defensive}")
        self.prior, self.defensive = prior, float(defensive)
        self.dtype = post.samples.dtype
        self.samples = post.samples.detach().cpu().double()
        n, p = self.samples.shape
        w = post.weights
        self.weights = torch.full((n,), 1.0 / n) if w is None else w.detach().cpu().double()
        self.weights = self.weights / self.weights.sum()
        mean = (self.weights[:, None] * self.samples).sum(0)
        centred = self.samples - mean
        cov = (self.weights[:, None] * centred).T @ centred
        scott = n ** (-2.0 / (p + 4))
        jitter = 1e-12 * cov.diagonal().mean().clamp_min(1e-300) * torch.eye(p, dtype=cov.dtype)
        self.scale_tril = torch.linalg.cholesky(scott * cov + jitter)
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        probe = self._kernel(4_000, generator)
        inside = torch.isfinite(prior_log_prob(prior, probe.to(self.dtype))).double().mean()
        self.log_inside = float(torch.log(inside.clamp_min(1.0 / 4_000)))

    def _kernel(self, m: int, generator: torch.Generator) -> Tensor:
        rows = torch.multinomial(self.weights.float(), m, replacement=True, generator=generator)
        noise = torch.randn(m, self.samples.shape[1], generator=generator, dtype=torch.float64)
        return self.samples[rows] + noise @ self.scale_tril.T

    def sample(self, num: int, generator: torch.Generator) -> Tensor:
        r"""``num`` draws, all inside the prior's support, shape :math:`(num, p)`."""
        p = self.samples.shape[1]
        from_prior = torch.rand(num, generator=generator) < self.defensive
        out = torch.empty(num, p, dtype=torch.float64)
        out[from_prior] = prior_sample(self.prior, int(from_prior.sum()), generator).double().cpu()
        todo = (~from_prior).nonzero().reshape(-1)
        for _ in range(_REDRAWS):  # the kernel truncated to the support, by rejection
            if len(todo) == 0:
                break
            draws = self._kernel(len(todo), generator)
            inside = torch.isfinite(prior_log_prob(self.prior, draws.to(self.dtype)))
            out[todo[inside]] = draws[inside]
            todo = todo[~inside]
        if len(todo):
            out[todo] = prior_sample(self.prior, len(todo), generator).double().cpu()
        return out.to(self.dtype)

    def log_prob(self, theta: Tensor) -> Tensor:
        r""":math:`\log r(\theta)` of parameters inside the support, shape :math:`(m,)`."""
        theta = theta.detach().cpu().double()
        kernel = MultivariateNormal(self.samples, scale_tril=self.scale_tril)
        log_k = torch.logsumexp(kernel.log_prob(theta[:, None, :]) + self.weights.log(), dim=1)
        log_prior = prior_log_prob(self.prior, theta.to(self.dtype)).double().cpu()
        return torch.logaddexp(
            math.log(self.defensive) + log_prior,
            math.log1p(-self.defensive) + log_k - self.log_inside
            if self.defensive < 1
            else torch.full_like(log_k, -math.inf),
        )


def proposal_sample(
    prior: Distribution,
    post: Posterior,
    num: int,
    generator: torch.Generator,
    defensive: float = 0.1,
) -> Tensor:
    r"""``num`` draws of the :class:`DefensiveProposal` on ``post``, inside the prior's support.

    Arguments:
        prior: The prior.
        post: The last posterior (samples and optional weights, :math:`(n, p)`).
        num: Draws wanted.
        generator: Source of randomness.
        defensive: Probability of a prior draw.

    Returns:
        Parameters, shape :math:`(num, p)`, in the dtype of the posterior's samples.
    """
    return DefensiveProposal(prior, post, defensive, generator).sample(num, generator)


def importance_weights(
    prior: Distribution,
    theta: Tensor,
    proposals: list[DefensiveProposal | None],
    budgets: list[int],
) -> Tensor:
    r"""Weights :math:`\pi(\theta_i) / \bar r(\theta_i)` of pairs pooled over rounds, with
    :math:`\bar r = \sum_r (n_r / N)\, r_r` the mixture of the rounds' proposals (``None``:
    the prior) in proportion to their draws; normalised to mean 1, shape :math:`(N,)`."""
    log_prior = prior_log_prob(prior, theta).detach().cpu().double()
    total = float(sum(budgets))
    parts = []
    for proposal, n in zip(proposals, budgets):
        log_r = log_prior if proposal is None else proposal.log_prob(theta)
        parts.append(math.log(n / total) + log_r)
    log_w = log_prior - torch.logsumexp(torch.stack(parts), dim=0)
    w = torch.exp(log_w - log_w.max())
    return (w / w.mean()).to(theta.dtype)


def run_rounds(
    method: Any,
    simulator: Any,
    prior: Distribution,
    x_o: Any,
    *,
    num_simulations: int,
    rounds: int,
    num_samples: int = 1_000,
    seed: int | None = None,
    defensive: float = 0.1,
    progress: bool = False,
    simulation_options: dict | None = None,
) -> Posterior:
    r"""Fit ``method`` in ``rounds`` sequential rounds for one observation.

    Arguments:
        method: An unfitted method whose fit is valid in rounds (e.g. ``el.methods.get("nce",
            prior=prior)``; its ``name`` must be in :data:`ROUND_METHODS`).
        simulator: The simulator.
        prior: The prior.
        x_o: The observation.
        num_simulations: Total training simulations, split by :func:`round_budgets`.
        rounds: Number of rounds (1: one fit on prior draws).
        num_samples: Posterior draws of each round.
        seed: Root seed.
        defensive: Prior share of the proposal (see :func:`proposal_sample`).
        progress: Show progress bars of the simulations.
        simulation_options: Extra keywords of the simulations (``executor``, ``batch_size``).

    Returns:
        The posterior after the last round; its ``diagnostics["rounds"]`` lists each round's
        ``simulations`` and posterior ``width`` (sd per parameter), and
        ``diagnostics["total_simulations"]`` counts the simulations of all rounds (training
        and what each round's posterior stage simulated).
    """
    name = getattr(method, "name", type(method).__name__)
    if rounds > 1 and name not in ROUND_METHODS:
        raise ValueError(
            f"method {name!r} is not valid in sequential rounds (its fit or its ABC table "
            f"depends on the proposal); use one of {', '.join(ROUND_METHODS)} or rounds=1"
        )
    options = dict(simulation_options or {})
    if options.get("on_error", "raise") != "raise":
        raise ValueError("sequential rounds simulate at given parameters: use on_error='raise'")
    options.pop("on_error", None)
    options.pop("max_failure_rate", None)
    budgets = round_budgets(num_simulations, rounds)
    seeds = np.random.SeedSequence(seed).generate_state(3 * rounds + 1, dtype=np.uint32)
    generator = torch.Generator().manual_seed(int(seeds[-1]))
    start = time.perf_counter()
    thetas: list[Tensor] = []
    xs: list[Tensor] = []
    history: list[dict] = []
    post: Posterior | None = None
    stage_simulations = 0  # what the posterior stages simulated (exchange: inner-chain checks)
    proposals: list[DefensiveProposal | None] = []
    abc = isinstance(getattr(method, "posterior_stage", None), ABCStage)
    for r, budget in enumerate(budgets):
        sim_seed, fit_seed, post_seed = (int(s) for s in seeds[3 * r : 3 * r + 3])
        if post is None:
            proposals.append(None)
            theta, x = simulate(
                simulator, prior, budget, seed=sim_seed, progress=progress, **options
            )
        else:
            proposals.append(DefensiveProposal(prior, post, defensive, generator))
            theta = proposals[-1].sample(budget, generator)
            x = simulate_at(simulator, theta, seed=sim_seed, **options)
        thetas.append(theta)
        xs.append(x.to(theta.dtype))
        if abc and r > 0:  # the training pairs are the ABC table: weight them by prior/proposal
            pooled = torch.cat(thetas)
            weights = importance_weights(prior, pooled, proposals, budgets[: r + 1])
            method.posterior_stage.training_weights = weights.to(pooled.device)
        method.fit(torch.cat(thetas), torch.cat(xs), seed=fit_seed)
        post = method.posterior(x_o, num_samples=num_samples, seed=post_seed)
        stage_simulations += int(post.diagnostics.get("simulations", 0) or 0)
        history.append(
            {
                "round": r + 1,
                "simulations": int(budget),
                "proposal": "prior" if r == 0 else f"posterior + {defensive:g} prior",
                "width": post.std().detach().cpu().double().tolist(),
            }
        )
    total = int(sum(budgets))
    post.diagnostics["rounds"] = history
    post.diagnostics["training_simulations"] = total
    post.diagnostics["simulations"] = total + stage_simulations
    post.diagnostics["total_simulations"] = total + stage_simulations
    post.diagnostics["total_seconds"] = time.perf_counter() - start
    return post
