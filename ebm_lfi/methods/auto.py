r"""``auto``: fit several routes to the posterior and keep the one that scores best on held-out
simulations.

Which route finds the information in a simulator depends on the simulator: on some problems the
score-matching statistics with ABC are best, on others the NCE ratio sampled by MCMC, the ABC
on NCE statistics, or the exchange sampler on the score-matching fit; on flat data of
exchangeable draws, the statistics of the right layout. The losses that fit these models
cannot compare them with one another (a held-out score-matching loss ranks score-matching fits
of one continuous data set only; on integer data, or at the saddle of flattened draws, it
misleads). What can compare them is the posterior itself: :class:`AutoMethod` holds out a few
of the user's simulated pairs :math:`(\theta_i, x_i)`, fits the candidate routes on the rest,
scores each posterior on the held-out pairs with the energy score
(:mod:`~ebm_lfi.methods.scoring`, a strictly proper scoring rule: in expectation the true
posterior scores best, whatever produced the candidate) and keeps the best.

**Candidates.** Three fits serve five routes: one sliced-score-matching fit
(:class:`~ebm_lfi.methods.fit.EnergyFit`, architecture chosen by held-out SM loss, dequantised
on integer data) gives ``ssm-abc`` (:class:`~ebm_lfi.methods.abc_stage.ABCStage`) and
``ssm-exchange`` (:class:`~ebm_lfi.methods.exchange_stage.ExchangeStage`); one NCE fit gives
``nce`` (:class:`~ebm_lfi.methods.potential_stage.PotentialStage`) and ``nce-abc``; one
least-squares regression of :math:`\theta` on :math:`x` (an MLP on the flat data,
:class:`~ebm_lfi.methods.baselines.RegressionFit`: the statistics of semi-automatic ABC,
Fearnhead & Prangle 2012) gives ``fp-abc``. It costs seconds beside the energy fits, and on
long multivariate series it is the better statistic: on ``lorenz96`` (:math:`d = 4800`, 10⁴
simulations) its ABC posteriors were ahead of those of every energy fit tried
(``docs/benchmarks.md``, issue 19), where nothing else in ``auto`` reads it. A fourth fit,
the learned Gaussian likelihood N(μ(θ), P(θ)⁻¹) of the transformed data by its exact
likelihood, gives ``gaussian`` (:class:`~ebm_lfi.methods.energy_methods.GaussianPosterior`,
scored with tempered SMC of ``AutoConfig.num_samples`` particles on ``mcmc_pairs`` pairs; not
fitted on data of more than :data:`~ebm_lfi.energy.model.GAUSSIAN_MAX_DIM` numbers, whose
d² outputs it cannot afford): where x given θ is near Gaussian it is the best route there is
(SLCP at 10⁴ simulations: C2ST 0.62 against 0.91 for the exchange route ``auto`` chose
without it), where x is skewed, bounded or discrete it is the wrong shape and scores behind.
On request (``AutoConfig.routes``), one maximum-likelihood fit gives ``ml`` and ``ml-abc`` the
same way as NCE (:data:`DEFAULT_ROUTES` leaves them out for their cost). ``mdn`` is a
mixture density of
:math:`\theta` given the statistics (:class:`~ebm_lfi.methods.density_stage.DensityStage`) of
the fit whose ABC route scored best: it reads the same statistics as that route, but fits the
posterior on every training pair instead of keeping the nearest few, so no ABC tolerance widens
it (on the integer counts of ``tests/user_problems.py`` at 10⁴ simulations, C2ST 0.58 against
0.63 for the ABC route of the same NCE fit; ``docs/benchmarks.md``). When :math:`x` is flat and its
length factors into draws (:func:`~ebm_lfi.methods.reshape.candidate_layouts`), two more:
``ssm-abc-reshaped``, ABC on the exchangeable statistics of the layout that pilot score
matching prefers (:func:`~ebm_lfi.methods.reshape.choose_layout`), with its number of
statistics chosen by its own held-out score-matching loss (the flat fit's, found where the
flat search may sit at a saddle, says nothing about it: on 12 draws of a correlated 2-D
Gaussian returned flat, at 10⁴ simulations, the flat fit's :math:`k = 2` gave the reshaped ABC
posterior C2ST 0.73, the :math:`k = 6` of its own choice 0.52) and at most
``reshape_epochs`` epochs, and
``ssm-exchange-reshaped``, the exchange stage on the same fit. They are tried even where the
flat search read x as exchangeable scalars: on the flat draws at 10³ it did, which mixes the
two coordinates of each draw (C2ST 0.86–0.89 for its ``ssm-abc``). (On 10 draws of a 2-D
Gaussian returned flat, the flat search chose a Markov network of order 6 whose statistics
explain 57 % of the variance of the sufficient means, the MLP at most 36 %; the reshaped fit
99.98 %: ``scripts/check_statistics_structure.py``.)

**Cost.** No simulation beyond the user's: the held-out pairs (10 %, at most ``max_heldout``)
come out of the training set. The ABC routes are scored on every held-out pair (a rejection
step on the table each), ``mdn`` too (its density is trained once, then each pair is one
draw of the mixture); ``nce`` on the first ``mcmc_pairs`` with short chains; one exchange
route on the first ``exchange_pairs`` with the chains of its final posterior, all pairs in one
batch of chains (:meth:`~ebm_lfi.methods.exchange_stage.ExchangeStage.sample_many`: 20 pairs
cost a few times one posterior on small models, not twenty). Short chains misjudged it: their
draws are too correlated and too close to their starting points, and the score punishes both.
The exchange stage reads the model whose statistics the ABC route reads, so of ``ssm-exchange``
and ``ssm-exchange-reshaped`` only the one whose fit gave the better ABC posterior is scored
(one batch of chains, not two). It is scored only where a pilot of a few outer steps of the
batch projects its scoring to at most ``exchange_cost`` times the seconds of the score-matching
fits, flat and reshaped, or to at most ``exchange_seconds`` (``costly_exchange=True`` scores it
anyway): an outer step costs an inner MCMC chain or an exact Gaussian draw (a Hessian in the
data) per chain, about a second for 400 chains on MA(2)'s 100-step series. Neither is scored
where the fit found point masses in the data (:func:`~ebm_lfi.methods.fit.point_masses`: exact
zeros, a detection limit, counts beside continuous values): the exchange sampler reads a
density of x that has none there, and on every such simulator tried its posteriors were far off
and scored last. The mean score of a route scored on fewer pairs is estimated by its paired
difference, on those pairs, to the ABC route of the same fit (``ssm-abc`` for a fit without
one) plus that route's mean over all pairs (a control variate: the pair-to-pair spread cancels
in the paired difference, and most between two posteriors of one model). The NCE fit costs less
than the score-matching one (its pilots and epochs are cheaper), the regression of ``fp-abc``
a few seconds (1–5 s at 10⁴ simulations on the problems of ``scripts/bench_generic.py``, 23 s
on Lorenz96's 4,800 numbers). On the two problems of
``tests/test_auto.py`` at 10⁴ simulations (seed 0, one process, CPU seconds, both choosing
``mdn``) the whole cost 1.4 times a single ``ssm-abc`` fit and posterior on the counts (99 s
against 70 s) and 5.2 times on the flat draws (93 s against 18 s: there the stand-alone fit is
quick and sits at the saddle, C2ST 0.94; ``auto`` adds the NCE and reshaped fits, the exchange
route's scoring and the density); measured before ``gaussian`` was a default route, which adds
its fit and scoring on both (about 47 s each at 10⁴, ``docs/benchmarks.md``).

**Choice and output.** The route with the lowest estimated score is kept, or the exchange route
where it ties with that one (``AutoConfig.exchange_tie``: within one paired standard error),
else ``mdn`` where it ties with an ABC route (``AutoConfig.density_tie``); ``gaussian`` only
where it leads every other route by more than ``AutoConfig.gaussian_margin`` (one) paired
standard error. An exchange route
that neither ties nor trails by more than ``AutoConfig.resolve`` (two) standard errors is first
scored on as many pairs again, with the best route on the same pairs, and the choice made again
(its row's ``note`` says so). The chosen route keeps its fit trained on all but the held-out
pairs; its posteriors are those of that route, with ``diagnostics["route"]`` naming it and
``diagnostics["auto"]`` the table of candidates (``route``, ``fit``, ``layout``, ``score``,
``se`` (of the score), ``diff`` and ``diff_se`` (paired difference to the chosen route and its
standard error), ``pairs``, ``contraction`` (mean posterior sd over prior sd), ``rhat`` (median
over the pairs of the largest split :math:`\hat R` of an MCMC route's chains), ``fit_seconds``
(the shared fit's) and ``score_seconds`` (CPU seconds of this process), ``num_accepted`` (the
kept table entries of an ABC route, chosen by the score), ``chosen``, ``tie`` (chosen for a
tie, see ``AutoConfig.exchange_tie``), ``note`` (why a route failed or was not scored)). Every
fitted candidate stays available in :attr:`AutoMethod.routes`. A route whose fit or scoring
fails is reported with its error and never chosen. With fewer than ``10 * min_heldout``
training pairs nothing is held out and ``ssm-abc`` is fitted alone.

References:
    | Strictly Proper Scoring Rules, Prediction, and Estimation (Gneiting & Raftery, 2007)
    | https://doi.org/10.1198/016214506000001437

    | Score Matched Neural Exponential Families for Likelihood-Free Inference
      (Pacchiardi & Dutta, JMLR 2022) https://arxiv.org/abs/2012.10903

    | Constructing summary statistics for approximate Bayesian computation: semi-automatic
      approximate Bayesian computation (Fearnhead & Prangle, JRSS B 2012)
      https://doi.org/10.1111/j.1467-9868.2011.01010.x
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..energy.model import GAUSSIAN_MAX_DIM
from ..posterior.posterior import Posterior
from ..samplers.abc.rejection import auto_num_accepted
from .abc_stage import ABCConfig, ABCStage
from .baselines import RegressionFit
from .checks import point_masses_text
from .common import as_config, check_training_data
from .density_stage import DensityConfig, DensityStage
from .exchange_stage import ExchangeConfig, ExchangeStage
from .fit import EnergyFit
from .method import Method
from .potential_stage import PotentialConfig, PotentialStage
from .reshape import ReshapedFit, candidate_layouts, choose_layout
from .scoring import HeldoutScore, heldout_score, paired_difference, prior_scale

__all__ = ["AutoConfig", "AutoMethod", "ROUTES", "DEFAULT_ROUTES"]

logger = logging.getLogger(__name__)

ROUTES = (
    "ssm-abc",
    "ssm-exchange",
    "nce",
    "nce-abc",
    "fp-abc",
    "mdn",
    "ml",
    "ml-abc",
    "gaussian",
)
DEFAULT_ROUTES = ("ssm-abc", "ssm-exchange", "nce", "nce-abc", "fp-abc", "mdn", "gaussian")
"""The routes tried by default (``gaussian`` only on data of at most
:data:`~ebm_lfi.energy.model.GAUSSIAN_MAX_DIM` numbers). The maximum-likelihood routes (``ml``,
``ml-abc``; one ML fit, warm-started by sliced score matching) are tried only when named in
``AutoConfig.routes``:
their fit costs about four times a sliced score-matching fit (29 s against 8 s for 3,000
pairs), which would take ``auto`` past three times the cost of ``ssm-abc``."""
_POTENTIAL = ("nce", "ml")  # routes drawn by MCMC on the posterior potential
_GAUSSIAN = "gaussian"  # the learned Gaussian likelihood: its fit, and its route by tempered SMC
_RESHAPED_FIT = "ssm-reshaped"  # the score-matching fit on a layout of flat data
_RESHAPED = "ssm-abc-reshaped"
_RESHAPED_EXCHANGE = "ssm-exchange-reshaped"
_EXCHANGE = ("ssm-exchange", _RESHAPED_EXCHANGE)  # scored as one batch of chains
_DENSITY = "mdn"  # a mixture density on the statistics of the fit with the best ABC route
_REGRESSION = "fp"  # the regression of theta on x whose outputs fp-abc reads
_ABC = ("ssm-abc", _RESHAPED, "nce-abc", "ml-abc", "fp-abc")
# the ABC route of the same fit: the control variate of a route scored on fewer pairs
_SIBLING = {
    "ssm-exchange": "ssm-abc",
    _RESHAPED_EXCHANGE: _RESHAPED,
    "nce": "nce-abc",
    "ml": "ml-abc",
}


@dataclass(frozen=True)
class AutoConfig:
    r"""What :class:`AutoMethod` tries and how it scores.

    Arguments:
        routes: The routes among :data:`ROUTES` to try (``ssm-abc`` is always tried: it is
            the reference of the paired comparisons); :data:`DEFAULT_ROUTES` by default.
        reshape: Also try ``ssm-abc`` on exchangeable statistics of a layout of flat data
            (see the module docstring).
        heldout_fraction: Fraction of the pairs held out for scoring.
        max_heldout: At most this many held-out pairs.
        min_heldout: Fewer than this many held-out pairs: no choice, ``ssm-abc`` alone.
        num_samples: Posterior draws per held-out pair.
        mcmc_pairs: Pairs on which ``nce`` is scored.
        exchange_pairs: Pairs on which ``ssm-exchange`` is scored.
        costly_exchange: Score ``ssm-exchange`` whatever its cost.
        exchange_cost: Otherwise, ``ssm-exchange`` is scored when a pilot of a few
            outer steps of the batch projects its scoring on ``exchange_pairs`` pairs to at
            most this multiple of the seconds of the score-matching fits, flat and reshaped
            (the pilot's seconds are spent either way), or at most ``exchange_seconds``. The
            projection is a timing in CPU seconds of this process (all its threads), like
            the fits' seconds it is compared with: other processes' load does not change it
            (with wall-clock seconds, a benchmark run beside a test suite left the exchange
            route of ``gaussian_linear_uniform`` unscored: projected 419 s against 31 s;
            C2ST 0.88 for ``ssm-abc`` instead of 0.52).
        exchange_seconds: Scoring projected to take at most this many seconds is done
            whatever the fits took: at small budgets the fits take seconds and a relative
            limit alone left out the route that was best (two_moons at 10³: 11 s of scoring
            against a 4 s fit; the stand-alone exchange posterior's C2ST 0.62 against
            ``auto``'s 0.90).
        exchange_tie: An exchange route whose paired difference in score to the best route
            is at most this many standard errors is chosen in its place (``-inf``: never),
            ``mdn`` included (on two_moons, ``mdn`` scored best and the exchange route tied
            with it at 10³ and 10⁴ simulations; their C2ST were 0.587 and 0.547 at 10³, 0.515
            and 0.525 at 10⁴; on SLCP at 10³ 0.946 and 0.952).
            Its posterior is the fitted model's own, with no ABC tolerance widening it and no
            table limiting its draws, a difference the energy score on a few dozen pairs can
            rarely resolve: on AR(2) at 10⁴ simulations ``ssm-exchange`` and ``nce-abc``
            scored 0.1753 and 0.1751, while their C2ST to the reference was 0.55 and
            0.60–0.68. The chains' :math:`\hat R` (the table's ``rhat``) does not enter: on
            SLCP at 10⁴, whose posterior has four modes, the reshaped exchange route tied
            with a median :math:`\hat R` of 12.5 over its pairs (chains that stay in their
            modes) and had the best C2ST of every method run there (0.88 against 0.97 for
            the chosen ABC route and 0.96 for sbi's NPE); the final posterior warns about
            its :math:`\hat R`.
        density_tie: Where the best route is an ABC route and no exchange route ties with
            it, ``mdn`` whose paired difference to it is at most this many standard errors is
            chosen in its place (``-inf``: never). It reads the statistics of that route's
            fit without its tolerance, and the energy score on 200 pairs did not resolve the
            difference: at 10⁴ simulations (second seed of ``scripts/bench_generic.py``) it
            put ``mdn`` behind ``nce-abc`` on the integer counts by 0.002 ± 0.004 and behind
            the reshaped ``ssm-abc`` on the flat draws by 0.001 ± 0.003, where their C2ST to
            the exact posterior were 0.58 against 0.64 and 0.58 against 0.61.
        resolve: An exchange route that neither ties with the best route nor trails it by
            more than this many paired standard errors is scored on as many pairs again (and
            the best route with it, where it has fewer), and the choice is made again: the
            comparison with the exchange route is the noisiest of the table and the one it
            left open gets the pairs. On two_moons at 10⁴ simulations the paired difference
            between the exchange route and ``nce`` had a standard error of 0.04 on 40 pairs
            (``scripts/check_score_power.py``), as large as the difference itself (−0.033,
            the exchange posterior scoring as the exact one does), and 20 pairs had ranked
            them the other way (+0.100 ± 0.078). Only where the route's scoring, pairs added,
            stays within the limit of ``exchange_cost`` and ``exchange_seconds`` (on MA(2) at
            10⁴ 20 more pairs cost 97 s). ``resolve`` at or below ``exchange_tie``: never.
        gaussian_margin: ``gaussian`` is chosen only where its paired difference in score
            to every other scored route is below minus this many standard errors (``inf``:
            never); else the best of the others is, with the ties above. Its model is a
            Gaussian in the transformed data, right or wrong in shape whatever the budget,
            and it is scored on ``mcmc_pairs`` pairs only: on SLCP at 10⁴ simulations it led
            by 1.3 standard errors or more and its C2ST was 0.620, against 0.909 for the
            exchange route that took a tie from it without this rule; on Weibull waiting
            times (``scripts/check_fresh.py``), where it is the wrong shape, it led ``mdn`` by
            0.006 (a fifth of a standard error) and its C2ST was 0.742 against 0.601 for the
            route chosen with the margin.
        reshape_epochs: The most training epochs of the reshaped candidate's fit (its
            exchangeable network costs more per epoch than the MLP it competes with).
        accepted_factors: With ``abc.num_accepted="auto"``, each ABC route is scored keeping
            these multiples of the rate :math:`m` of
            :func:`~ebm_lfi.samplers.abc.rejection.auto_num_accepted` (at most a tenth of the
            table), and keeps the best: with informative statistics and the regression
            adjustment a wider tolerance costs little bias and gives more distinct draws,
            with weaker ones it costs more. The number does not grow with the draws asked
            for (as the stage's own ``"auto"`` does): the final posterior is the one scored,
            its draws resampled from the kept, weighted entries.
        scoring_mcmc: The short chains of ``nce`` while scoring
            (:class:`~ebm_lfi.methods.PotentialConfig` fields; not run again for a small
            effective size, ``max_extension=1``, so that scoring costs what was planned).
        scoring_exchange: Changes to the exchange stage's settings while scoring
            (:class:`~ebm_lfi.methods.ExchangeConfig` fields); by default none but
            ``check_inner=0``: the route is scored with the chains of its final posterior,
            all pairs in one batch (:meth:`~ebm_lfi.methods.ExchangeStage.sample_many`).
            Short chains misjudge it: on two_moons at 10⁴ simulations, 8 chains of 25 steps
            after 100 of burn-in ranked it below ``nce`` (energy score 0.493 ± 0.091 against
            0.430 ± 0.045) although its posterior is far closer to the reference (C2ST
            0.53–0.59 against 0.66–0.78).
    """

    routes: tuple[str, ...] = DEFAULT_ROUTES
    reshape: bool = True
    heldout_fraction: float = 0.1
    max_heldout: int = 200
    min_heldout: int = 20
    num_samples: int = 200
    mcmc_pairs: int = 30
    exchange_pairs: int = 20
    costly_exchange: bool = False
    exchange_cost: float = 1.0
    exchange_seconds: float = 20.0
    exchange_tie: float = 1.0
    density_tie: float = 1.0
    resolve: float = 2.0
    gaussian_margin: float = 1.0
    reshape_epochs: int = 30
    accepted_factors: tuple[int, ...] = (1, 2, 4)
    scoring_mcmc: dict = field(
        default_factory=lambda: {"num_chains": 8, "burn_in": 150, "thin": 1, "max_extension": 1}
    )
    scoring_exchange: dict = field(default_factory=lambda: {"check_inner": 0})

    def __post_init__(self):
        unknown = set(self.routes) - set(ROUTES)
        if unknown or not self.routes:
            raise ValueError(f"routes must be a non-empty subset of {ROUTES}, got {self.routes}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if min(self.max_heldout, self.min_heldout, self.num_samples) < 2:
            raise ValueError("max_heldout, min_heldout and num_samples must be at least 2")
        if math.isnan(self.gaussian_margin):
            raise ValueError("gaussian_margin must be a number (inf: never choose gaussian)")
        if min(self.mcmc_pairs, self.exchange_pairs) < 2 or self.reshape_epochs < 1:
            raise ValueError(
                "mcmc_pairs and exchange_pairs must be at least 2, reshape_epochs at least 1"
            )


class AutoMethod(Method):
    r"""The default method: the best of several routes by held-out posterior score.

    Arguments:
        prior: The prior over :math:`\theta`.
        config: An :class:`AutoConfig` or a dict of its fields.
        abc: The ABC stage's :class:`~ebm_lfi.methods.ABCConfig` (or dict) of the ABC
            routes; with ``num_accepted="auto"`` the number of kept entries is chosen by the
            score (see ``AutoConfig.accepted_factors``).
        mcmc: The potential stage's :class:`~ebm_lfi.methods.PotentialConfig` (or dict) for
            the final posterior of ``nce``.
        exchange: The exchange stage's :class:`~ebm_lfi.methods.ExchangeConfig` (or dict)
            for the final posterior of ``ssm-exchange``.
        density: The density stage's :class:`~ebm_lfi.methods.DensityConfig` (or dict) of
            ``mdn``.
        simulator: Accepted for a uniform interface and not used: ``auto`` simulates nothing
            beyond the pairs it is fitted on.
        progress: Show progress bars.
        fit_options: Keywords of every energy fit (``training``, ``selection``, ``network``,
            ``dequantize``, ``device``, ...; see :class:`~ebm_lfi.methods.fit.EnergyFit`).

    After :meth:`fit`, :attr:`chosen` names the route, :attr:`table` holds the candidates
    (see the module docstring) and :attr:`routes` every fitted route as a
    :class:`~ebm_lfi.methods.method.Method`; :meth:`posterior` draws from the chosen one.
    """

    name = "auto"

    def __init__(
        self,
        prior,
        *,
        config: AutoConfig | dict | None = None,
        abc: ABCConfig | dict | None = None,
        mcmc: PotentialConfig | dict | None = None,
        exchange: ExchangeConfig | dict | None = None,
        density: DensityConfig | dict | None = None,
        simulator: Callable | None = None,
        progress: bool = False,
        **fit_options: Any,
    ):
        for key in ("loss", "model"):
            if key in fit_options:
                raise TypeError(f"auto chooses the loss and the model itself; do not pass {key}")
        self.config = as_config(config, AutoConfig, "config")
        self.abc = as_config(abc, ABCConfig, "abc")
        self.mcmc = as_config(mcmc, PotentialConfig, "mcmc")
        self.exchange = as_config(exchange, ExchangeConfig, "exchange")
        self.density = as_config(density, DensityConfig, "density")
        self.progress = progress
        self.fit_options = dict(fit_options)
        self.chosen: str | None = None
        self._leading: str | None = None  # the lowest estimate, gaussian held back or not
        self.table: pd.DataFrame | None = None
        self.routes: dict[str, Method] = {}
        self.num_pairs = 0
        fit = self._energy_fit(prior, "ssm")
        super().__init__(fit, ABCStage(self.abc, progress=progress))

    def _energy_fit(self, prior, loss: str, **options: Any) -> EnergyFit:
        kwargs = {**self.fit_options, **options}
        return EnergyFit(prior, loss=loss, progress=self.progress, **kwargs)

    # ------------------------------------------------------------------ fit and choice
    def split_budget(self, num_simulations: int, num_samples: int = 1000) -> tuple[int, int]:
        """All of the budget trains (``auto`` simulates nothing else)."""
        return int(num_simulations), 0

    def fit(self, theta, x, *, seed: int | None = None) -> AutoMethod:
        r"""Fit the candidate routes on all but a held-out part of the pairs, score them there
        and keep the best.

        Arguments:
            theta: Parameters, shape :math:`(n, p)`, drawn from the prior.
            x: Simulations, shape :math:`(n, *x_{shape})`.
            seed: Root seed of the split, the fits and the scoring.

        Returns:
            The method itself, fitted, drawing from the chosen route.
        """
        cfg = self.config
        prior = self.fit_stage.prior
        theta, x = check_training_data(theta, x, len(self.fit_stage.parameter_names))
        n = theta.shape[0]
        self.num_pairs = n
        self._prepared, self._prior_sd, self._coverage_edges = False, None, None
        self.fit_stage = self._energy_fit(prior, "ssm")
        # a seventh seed leaves the first six as they were (the state is one stream)
        seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(7, np.uint32)]
        split_seed, ssm_seed, nce_seed, layout_seed, score_seed, stage_seed, fp_seed = seeds
        m = min(cfg.max_heldout, int(cfg.heldout_fraction * n))
        self.routes, rows = {}, []
        if m < cfg.min_heldout:
            logger.info("auto: %d pairs are too few to hold some out; ssm-abc alone", n)
            abc = replace(self.abc, num_accepted=self._accepted(n, theta.shape[1])[0])
            self.posterior_stage = ABCStage(abc, progress=self.progress)
            self.fit_stage.fit(theta, x, seed=ssm_seed)
            self.chosen = "ssm-abc"
            self.routes = {"ssm-abc": Method(self.fit_stage, self.posterior_stage)}
            self.table = pd.DataFrame([{**_row("ssm-abc", "ssm", x.shape[1:]), "chosen": True}])
            return self.prepare(seed=stage_seed)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
        held, kept = perm[:m].to(theta.device), perm[m:].to(theta.device)
        theta_h, x_h = theta[held], x[held]
        theta_t, x_t = theta[kept], x[kept]
        scale = prior_scale(prior)
        accepted = self._accepted(theta_t.shape[0], theta.shape[1])
        fits, fit_seconds, fit_errors = self._fit_all(
            theta_t, x_t, ssm_seed, nce_seed, layout_seed, fp_seed
        )
        candidates = self._candidates(fits, accepted)
        scores: dict[str, HeldoutScore] = {}
        kept_entries: dict[str, int | None] = {}
        # the ABC and potential routes first, then mdn (on the fit of the best ABC route),
        # then the exchange routes
        for route in sorted(candidates, key=lambda r: (r in _EXCHANGE, r == _DENSITY)):
            if route == _DENSITY:
                found = self._density_candidate(fits, scores)
                if found is None:
                    rows.append(
                        {**_row(route, "", None), "note": "not scored: no ABC route was scored"}
                    )
                    continue
                candidates[route] = found
            fit_name, variants, pairs = candidates[route]
            row = _row(route, fit_name, _layout(fits.get(fit_name), x.shape[1:]))
            row["fit_seconds"] = fit_seconds.get(fit_name, math.nan)
            try:
                batch = route in _EXCHANGE
                trained = 0.0
                if route == _DENSITY:  # its training is part of its scoring, seeded here
                    start = time.process_time()
                    variants[0][1].prepare(seed=stage_seed)
                    trained = time.process_time() - start
                if batch:
                    note = (
                        _atoms(fits[fit_name])
                        or _weaker_fit(route, scores)
                        or self._exchange_too_costly(variants[0][1], x_h[:pairs], fit_seconds)
                    )
                    if note:
                        rows.append({**row, "note": note})
                        continue
                tried = {
                    entries: self._score(
                        method,
                        theta_h[:pairs],
                        x_h[:pairs],
                        scale,
                        score_seed,
                        batch=batch,
                        prepare=route != _DENSITY,
                    )
                    for entries, method in variants
                }
            except Exception as err:  # noqa: BLE001 - a failed route is reported, not chosen
                logger.warning("auto: route %s failed while scoring: %s", route, err)
                row["note"] = f"{type(err).__name__}: {err}"
            else:
                best = min(tried, key=lambda k: tried[k].mean)
                scores[route], kept_entries[route] = tried[best], best
                row["num_accepted"] = best
                row["score_seconds"] = trained + sum(t.seconds for t in tried.values())
            rows.append(row)
        for fit_name, err in fit_errors.items():
            for route in _routes_of(fit_name, cfg):
                rows.append({**_row(route, fit_name, None), "note": err})
        if not scores:
            raise RuntimeError(
                "auto: every route failed: "
                + "; ".join(f"{r['route']}: {r['note']}" for r in rows if r["note"])
            )
        self._choose(rows, scores)
        limit = math.inf if cfg.costly_exchange else self._exchange_limit(fit_seconds)
        heldout = (theta_h, x_h)
        if self._resolve(rows, scores, candidates, kept_entries, heldout, scale, limit, score_seed):
            self._choose(rows, scores)
        self.routes = {}
        for route, (fit_name, variants, _) in candidates.items():
            if route == _DENSITY and route in scores:  # prepared (trained) for its scoring
                self.routes[route] = variants[0][1]
            elif route in scores:
                self.routes[route] = self._final(route, fits[fit_name], kept_entries[route])
        chosen = self.routes[self.chosen]
        self.fit_stage, self.posterior_stage = chosen.fit_stage, chosen.posterior_stage
        self.routes[self.chosen] = self
        if self.chosen == _DENSITY:  # trained once, with the seed it was scored with
            self._prepared = True
            return self
        return self.prepare(seed=stage_seed)

    def _score(
        self,
        method: Method,
        theta: Tensor,
        x: Tensor,
        scale: Tensor,
        seed: int,
        *,
        batch: bool = False,
        first_pair: int = 0,
        prepare: bool = True,
    ) -> HeldoutScore:
        """One candidate's held-out score (``batch``: all pairs' posteriors in one call;
        ``first_pair``: see :func:`~ebm_lfi.methods.scoring.heldout_score`); its warnings are
        silenced (it is not chosen yet). Nothing random is prepared here: the stages draw no
        table (``prepare=False``: the method is prepared already, as ``mdn``, whose
        preparation trains its density)."""
        if prepare:
            method.prepare()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return heldout_score(
                method,
                theta,
                x,
                num_samples=self.config.num_samples,
                scale=scale,
                seed=seed,
                batch=batch,
                first_pair=first_pair,
            )

    def _exchange_too_costly(self, method: Method, x: Tensor, seconds: dict) -> str | None:
        """Why ``ssm-exchange`` is not scored (a pilot of a few outer steps of the batch
        projects its scoring past ``exchange_cost`` times the SM fit), or ``None``. Exact
        Gaussian auxiliary draws are piloted too: each needs the Hessian of the energy in the
        data, which on 100-dimensional series costs as much as a long inner chain."""
        cfg = self.config
        if cfg.costly_exchange:
            return None
        stage = method.posterior_stage.config
        steps = 4
        pilot = ExchangeStage(replace(stage, burn_in=steps, thin=1, anneal=1))
        pilot = Method(method.fit_stage, pilot).prepare()
        start = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pilot.posteriors(x, stage.num_chains, seed=0)
        per_step = (time.process_time() - start) / (steps + 1)
        full = stage.burn_in + math.ceil(cfg.num_samples / stage.num_chains) * stage.thin
        projected = per_step * full
        limit = self._exchange_limit(seconds)
        if projected <= limit:
            return None
        return (
            f"not scored: scoring its chains on the held-out pairs would take about "
            f"{projected:.0f} s, more than {cfg.exchange_cost:g} times the score-matching fits "
            f"and than {cfg.exchange_seconds:g} s ({limit:.0f} s; see AutoConfig.exchange_cost "
            f"and exchange_seconds)"
        )

    def _exchange_limit(self, seconds: dict) -> float:
        """The seconds an exchange route's scoring may take (see ``AutoConfig.exchange_cost``
        and ``exchange_seconds``), from the fits' seconds."""
        cfg = self.config
        fits = seconds.get("ssm", math.inf) + seconds.get(_RESHAPED_FIT, 0)
        return max(cfg.exchange_cost * fits, cfg.exchange_seconds)

    def _accepted(self, table_size: int, num_parameters: int) -> list[int]:
        """The numbers of kept table entries the ABC routes try (see :class:`AutoConfig`)."""
        if self.abc.num_accepted != "auto":
            return [min(table_size, int(self.abc.num_accepted))]
        rate = min(table_size, auto_num_accepted(table_size, num_parameters))
        cap = max(rate, table_size // 10)
        return sorted({min(cap, f * rate) for f in self.config.accepted_factors})

    def _fit_all(
        self,
        theta: Tensor,
        x: Tensor,
        ssm_seed: int,
        nce_seed: int,
        layout_seed: int,
        fp_seed: int,
    ) -> tuple[dict, dict, dict]:
        """The fits the routes need, their seconds, and the errors of those that failed."""
        cfg = self.config
        prior = self.fit_stage.prior
        fits, seconds, errors = {}, {}, {}
        needed = {"ssm"} | {name for name in ("nce", "ml", _GAUSSIAN) if _routes_of(name, cfg)}
        for name in ("ssm", "nce", "ml", _GAUSSIAN):
            if name not in needed:
                continue
            if name == _GAUSSIAN and (d := math.prod(x.shape[1:])) > GAUSSIAN_MAX_DIM:
                errors[name] = (
                    f"not fitted: {d} numbers per simulation, more than "
                    f"GAUSSIAN_MAX_DIM = {GAUSSIAN_MAX_DIM}"
                )
                continue
            start = time.process_time()
            try:
                if name == "ssm":
                    fit = self.fit_stage
                elif name == _GAUSSIAN:
                    fit = self._energy_fit(prior, "exact-ml", structure="gaussian")
                else:
                    fit = self._energy_fit(prior, name)
                fits[name] = fit.fit(theta, x, seed=ssm_seed if name == "ssm" else nce_seed)
            except Exception as err:  # noqa: BLE001 - reported in the table
                if name == "ssm":
                    raise
                logger.warning("auto: the %s fit failed: %s", name, err)
                errors[name] = f"{type(err).__name__}: {err}"
            seconds[name] = time.process_time() - start
        layouts = candidate_layouts(tuple(x.shape[1:]))
        ssm = fits["ssm"]
        if cfg.reshape and layouts:
            start = time.process_time()
            try:
                layout, table = choose_layout(
                    prior,
                    theta,
                    x,
                    layouts,
                    config=ssm.selection,
                    dequantized=ssm.dequantized,
                    seed=layout_seed,
                )
                epochs = cfg.reshape_epochs
                if ssm.training.epochs is not None:
                    epochs = min(ssm.training.epochs, epochs)
                options = {
                    "structure": "iid",
                    "num_statistics": "auto",
                    "training": replace(ssm.training, epochs=epochs),
                }
                fit = ReshapedFit(self._energy_fit(prior, "ssm", **options), layout)
                fits[_RESHAPED_FIT] = fit.fit(theta, x, seed=layout_seed)
                fit.layout_table = table
            except Exception as err:  # noqa: BLE001 - reported in the table
                logger.warning("auto: the reshaped fit failed: %s", err)
                errors[_RESHAPED_FIT] = f"{type(err).__name__}: {err}"
            seconds[_RESHAPED_FIT] = time.process_time() - start
        if "fp-abc" in cfg.routes:
            start = time.process_time()
            try:
                fit = RegressionFit(
                    prior,
                    training=self.fit_options.get("training"),
                    device=self.fit_options.get("device", "cpu"),
                    progress=self.progress,
                )
                fits[_REGRESSION] = fit.fit(theta, x, seed=fp_seed)
            except Exception as err:  # noqa: BLE001 - reported in the table
                logger.warning("auto: the regression fit failed: %s", err)
                errors[_REGRESSION] = f"{type(err).__name__}: {err}"
            seconds[_REGRESSION] = time.process_time() - start
        return fits, seconds, errors

    def _candidates(
        self, fits: dict, accepted: list[int]
    ) -> dict[str, tuple[str, list[tuple[int | None, Method]], int]]:
        """Route -> (its fit, the variants that draw it for scoring, pairs to score): the ABC
        routes at each number of kept entries, the potential routes once with short chains,
        ``ssm-exchange`` once with its final chains. A fresh stage for each, since the stages
        keep their tables."""
        cfg = self.config
        m = cfg.max_heldout
        out: dict[str, tuple[str, list[tuple[int | None, Method]], int]] = {}

        def abc(fit) -> list[tuple[int | None, Method]]:
            return [(k, Method(fit, ABCStage(replace(self.abc, num_accepted=k)))) for k in accepted]

        def exchange(fit) -> list[tuple[int | None, Method]]:
            stage = ExchangeStage(replace(self.exchange, **cfg.scoring_exchange))
            return [(None, Method(fit, stage))]

        if "ssm" in fits:
            out["ssm-abc"] = ("ssm", abc(fits["ssm"]), m)
            if "ssm-exchange" in cfg.routes:
                out["ssm-exchange"] = ("ssm", exchange(fits["ssm"]), cfg.exchange_pairs)
        if _RESHAPED_FIT in fits:
            out[_RESHAPED] = (_RESHAPED_FIT, abc(fits[_RESHAPED_FIT]), m)
            if "ssm-exchange" in cfg.routes:
                variants = exchange(fits[_RESHAPED_FIT])
                out[_RESHAPED_EXCHANGE] = (_RESHAPED_FIT, variants, cfg.exchange_pairs)
        for name in _POTENTIAL:  # nce, ml: a potential route and an ABC route per fit
            if name not in fits:
                continue
            if name in cfg.routes:
                stage = PotentialStage(cfg.scoring_mcmc)
                out[name] = (name, [(None, Method(fits[name], stage))], cfg.mcmc_pairs)
            if f"{name}-abc" in cfg.routes:
                out[f"{name}-abc"] = (name, abc(fits[name]), m)
        if _REGRESSION in fits:
            out["fp-abc"] = (_REGRESSION, abc(fits[_REGRESSION]), m)
        if _GAUSSIAN in fits:
            stage = PotentialStage({"sampler": "smc", "particles": cfg.num_samples})
            out[_GAUSSIAN] = (_GAUSSIAN, [(None, Method(fits[_GAUSSIAN], stage))], cfg.mcmc_pairs)
        if _DENSITY in cfg.routes:  # its fit is known once the ABC routes are scored
            out[_DENSITY] = ("", [], m)
        return out

    def _density_candidate(
        self, fits: dict, scores: dict[str, HeldoutScore]
    ) -> tuple[str, list[tuple[int | None, Method]], int] | None:
        """The ``mdn`` candidate: the density stage on the fit whose ABC route scored best
        (its statistics carry the most for a rejection step, and the density reads the same
        statistics), unprepared (its training is timed and seeded where it is scored);
        ``None`` where no ABC route was scored."""
        scored = [r for r in _ABC if r in scores]
        if not scored:
            return None
        best = min(scored, key=lambda r: scores[r].mean)
        fit_name = {"ssm-abc": "ssm", _RESHAPED: _RESHAPED_FIT}.get(best, best[: -len("-abc")])
        stage = DensityStage(self.density, progress=self.progress)
        method = Method(fits[fit_name], stage, name=_DENSITY)
        return fit_name, [(None, method)], self.config.max_heldout

    def _choose(self, rows: list[dict], scores: dict[str, HeldoutScore]) -> None:
        """Fill the table and set :attr:`chosen`: the lowest score, each estimated as the mean
        of the ABC route of the same fit (``ssm-abc`` where there is none) over all pairs plus
        the paired difference on the route's pairs; then, where an exchange route ties with
        it, that route (see ``AutoConfig.exchange_tie``), else, where the lowest is an ABC
        route and ``mdn`` ties with it, ``mdn`` (``AutoConfig.density_tie``)."""
        estimate = {}
        for route, score in scores.items():
            reference = scores.get(_SIBLING.get(route, ""), scores.get("ssm-abc"))
            if reference is None or reference is score:
                estimate[route] = score.mean
            else:
                estimate[route] = reference.mean + paired_difference(score, reference)[0]
        finite = {r: v for r, v in estimate.items() if math.isfinite(v)}
        if not finite:
            raise RuntimeError("auto: no route has a finite held-out score")
        cfg = self.config
        lowest = self._leading = min(finite, key=finite.get)
        held_back = None
        if lowest == _GAUSSIAN and len(finite) > 1:
            held_back = self._gaussian_behind(scores, finite)
            if held_back is not None:
                del finite[_GAUSSIAN]
                lowest = min(finite, key=finite.get)
        self.chosen, tie = lowest, False
        # a tie goes to an exchange route, else from an ABC route to mdn
        ties = [(r, cfg.exchange_tie) for r in _EXCHANGE]
        if lowest in _ABC:
            ties.append((_DENSITY, cfg.density_tie))
        for route, allowed in ties:
            if route == lowest or route not in finite:
                continue
            diff, se = paired_difference(scores[route], scores[lowest])
            if diff <= allowed * se:
                self.chosen, tie = route, True
                logger.info(
                    "auto: %s ties with %s (paired difference %.3f ± %.3f): chose %s",
                    route,
                    lowest,
                    diff,
                    se,
                    route,
                )
                break
        best = scores[self.chosen]
        for row in rows:
            score = scores.get(row["route"])
            if score is None:
                continue
            diff, diff_se = paired_difference(score, best)
            row.update(
                score=estimate[row["route"]],
                se=score.se,
                diff=0.0 if row["route"] == self.chosen else diff,
                diff_se=0.0 if row["route"] == self.chosen else diff_se,
                pairs=int(score.scores.numel()),
                contraction=float(score.contraction.mean()),
                rhat=_median_rhat(score),
                chosen=row["route"] == self.chosen,
            )
            row["tie"] = tie and row["route"] == self.chosen
            if row["route"] == _GAUSSIAN:  # why it is held back, or no note
                row["note"] = held_back
        self.table = pd.DataFrame(rows).sort_values("score", na_position="last")
        self.table = self.table.reset_index(drop=True)
        logger.info("auto: chose %s\n%s", self.chosen, self.table.to_string())

    def _gaussian_behind(self, scores: dict[str, HeldoutScore], finite: dict) -> str | None:
        """Why ``gaussian``, the lowest, is not chosen: a route it does not lead by more than
        ``AutoConfig.gaussian_margin`` paired standard errors; ``None`` where it leads all."""
        margin = self.config.gaussian_margin
        for route in finite:
            if route == _GAUSSIAN:
                continue
            diff, se = paired_difference(scores[_GAUSSIAN], scores[route])
            if not diff < -margin * se:
                return (
                    f"not chosen: lowest, but ahead of {route} by only {-diff:.3f} ± {se:.3f} "
                    f"(paired; AutoConfig.gaussian_margin)"
                )
        return None

    def _resolve(
        self,
        rows: list[dict],
        scores: dict[str, HeldoutScore],
        candidates: dict,
        kept: dict,
        heldout: tuple[Tensor, Tensor],
        scale: Tensor,
        limit: float,
        seed: int = 0,
    ) -> bool:
        """Score an exchange route the first choice left open on as many pairs again, and the
        best route with it where it has fewer (see ``AutoConfig.resolve``), where its scoring
        stays within ``limit`` seconds in all; whether it did."""
        cfg = self.config
        # the best route: the chosen one, or gaussian where it is the lowest and held back
        lowest = _GAUSSIAN if self._leading == _GAUSSIAN else self.chosen
        theta_h, x_h = heldout
        if lowest in _EXCHANGE or cfg.resolve <= cfg.exchange_tie:
            return False
        for route in _EXCHANGE:
            if route not in scores:
                continue
            diff, se = paired_difference(scores[route], scores[lowest])
            done = scores[route].scores.numel()
            more = min(2 * done, theta_h.shape[0])
            if not (math.isfinite(se) and diff <= cfg.resolve * se) or more <= done:
                continue
            if scores[route].seconds * (more / done) > limit:
                logger.info("auto: %s left as it is: more pairs would pass the limit", route)
                continue
            method = dict(candidates[route][1])[kept[route]]
            extra = self._score(
                method, theta_h[done:more], x_h[done:more], scale, seed + 1, batch=True
            )
            scores[route] = _joined(scores[route], extra)
            added = {route: extra.seconds}
            scored = scores[lowest].scores.numel()
            # the same pairs for the best route: its next ones (never mdn, scored on all)
            if scored < more:
                best = dict(candidates[lowest][1])[kept[lowest]]
                rows_new = slice(scored, more)
                again = self._score(
                    best, theta_h[rows_new], x_h[rows_new], scale, seed, first_pair=scored
                )
                scores[lowest], added[lowest] = _joined(scores[lowest], again), again.seconds
            for row in rows:
                if row["route"] in added:
                    row["score_seconds"] = row.get("score_seconds", 0.0) + added[row["route"]]
                if row["route"] == route:
                    row["note"] = (
                        f"scored on {more} pairs: on {done} it trailed {lowest} by "
                        f"{diff:.3f} ± {se:.3f} (AutoConfig.resolve)"
                    )
            logger.info(
                "auto: %s scored on %d pairs (%.3f ± %.3f on %d)", route, more, diff, se, done
            )
            return True
        return False

    def _final(self, route: str, fit, num_accepted: int | None) -> Method:
        """The route with its full posterior stage, prepared on its fit's training pairs."""
        if num_accepted is not None:
            abc = replace(self.abc, num_accepted=num_accepted)
            stage = ABCStage(abc, progress=self.progress)
        elif route in _POTENTIAL:
            stage = PotentialStage(self.mcmc, progress=self.progress)
        elif route == _GAUSSIAN:
            stage = PotentialStage(replace(self.mcmc, sampler="smc"), progress=self.progress)
        else:
            stage = ExchangeStage(self.exchange, progress=self.progress)
        method = Method(fit, stage, name=route)
        return method.prepare() if route != self.chosen else method

    # ------------------------------------------------------------------ posterior
    def posterior(
        self, x_o, num_samples: int = 1000, *, seed: int | None = None, **options: Any
    ) -> Posterior:
        r"""The posterior of the chosen route for ``x_o``; its diagnostics add ``route`` and
        ``auto`` (the table of candidates, as a list of rows)."""
        return self._annotate(super().posterior(x_o, num_samples, seed=seed, **options))

    def posteriors(
        self, x_os, num_samples: int = 1000, *, seed: int | None = None, **options: Any
    ) -> list[Posterior]:
        """The posteriors of several observations by the chosen route (see
        :meth:`~ebm_lfi.methods.method.Method.posteriors`), annotated as by :meth:`posterior`."""
        posts = super().posteriors(x_os, num_samples, seed=seed, **options)
        return [self._annotate(post) for post in posts]

    def _annotate(self, post: Posterior) -> Posterior:
        post.diagnostics["route"] = self.chosen
        post.diagnostics["auto"] = _json_rows(self.table)
        stage = int(post.diagnostics.get("simulations", 0) or 0)
        post.diagnostics["total_simulations"] = self.num_pairs + stage
        return post

    @property
    def diagnostics(self) -> dict:
        """The chosen fit's diagnostics, with ``route`` and the table ``auto``."""
        out = dict(self.fit_stage.diagnostics)
        if self.chosen is not None:
            out["route"] = self.chosen
            out["auto"] = self.table
        return out


def _atoms(fit) -> str | None:
    """Why an exchange route is not scored: its fit found point masses in the data
    (:func:`~ebm_lfi.methods.fit.point_masses`), where the exchange sampler reads a density of
    x that has none (its posteriors were far off on every such simulator tried, and ranked
    last when scored)."""
    atoms = fit.diagnostics.get("point_masses")
    if not atoms:
        return None
    return (
        f"not scored: {point_masses_text(atoms)}, where the exchange sampler reads a density of "
        "x that has none"
    )


def _weaker_fit(route: str, scores: dict[str, HeldoutScore]) -> str | None:
    """Why the exchange route ``route`` is not scored: the other score-matching fit (flat or
    reshaped) gave the better ABC posterior, and the exchange stage reads the same model, so
    only the exchange route of that fit is scored (one batch of chains instead of two)."""
    abc = _SIBLING[route]
    for other in _EXCHANGE:
        theirs = _SIBLING[other]
        if other == route or abc not in scores or theirs not in scores:
            continue
        diff, se = paired_difference(scores[abc], scores[theirs])
        if diff > 0:
            return (
                f"not scored: {theirs} scored better than {abc} by {diff:.3f} ± {se:.3f} "
                f"(paired); only the exchange route of the better fit, {other}, is scored"
            )
    return None


def _joined(a: HeldoutScore, b: HeldoutScore) -> HeldoutScore:
    """The scores of ``a``'s pairs followed by ``b``'s."""
    rhat = None if a.rhat is None or b.rhat is None else torch.cat([a.rhat, b.rhat])
    return HeldoutScore(
        torch.cat([a.scores, b.scores]),
        torch.cat([a.contraction, b.contraction]),
        torch.cat([a.covered, b.covered]),
        a.seconds + b.seconds,
        rhat,
    )


def _median_rhat(score: HeldoutScore) -> float:
    """The median over the pairs of the largest split R-hat of each pair's chains (``nan``
    for a route without chains)."""
    if score.rhat is None or not bool(torch.isfinite(score.rhat).any()):
        return math.nan
    return float(torch.nanmedian(score.rhat))


def _routes_of(fit_name: str, cfg: AutoConfig) -> list[str]:
    """The routes of ``cfg`` that need the fit ``fit_name``."""
    if fit_name in _POTENTIAL:
        return [r for r in (fit_name, f"{fit_name}-abc") if r in cfg.routes]
    if fit_name == _REGRESSION:
        return ["fp-abc"]
    if fit_name == _GAUSSIAN:
        return [_GAUSSIAN] if _GAUSSIAN in cfg.routes else []
    return [_RESHAPED] + ([_RESHAPED_EXCHANGE] if "ssm-exchange" in cfg.routes else [])


def _layout(fit, x_shape) -> str:
    layout = getattr(fit, "layout", None)
    return str(tuple(layout) if layout is not None else tuple(int(s) for s in x_shape))


def _row(route: str, fit_name: str, layout) -> dict:
    return {
        "route": route,
        "fit": fit_name if fit_name != _RESHAPED_FIT else "ssm",
        "layout": layout if isinstance(layout, str) or layout is None else str(tuple(layout)),
        "score": math.nan,
        "se": math.nan,
        "diff": math.nan,
        "diff_se": math.nan,
        "pairs": 0,
        "contraction": math.nan,
        "rhat": math.nan,
        "fit_seconds": math.nan,
        "score_seconds": math.nan,
        "num_accepted": None,
        "chosen": False,
        "tie": False,
        "note": None,
    }


def _json_rows(table: pd.DataFrame | None) -> list[dict]:
    if table is None:
        return []
    rows = []
    for row in table.to_dict("records"):
        rows.append(
            {
                k: (None if isinstance(v, float) and math.isnan(v) else _plain(v))
                for k, v in row.items()
            }
        )
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
