r"""The exchange posterior stage: exchange MCMC with a fitted exponential family as the
likelihood (``*-exchange``).

The exchange algorithm (Murray, Ghahramani & MacKay, 2006) accepts :math:`\theta'` with a ratio
in which the unknown normaliser :math:`Z(\theta)` cancels, thanks to an auxiliary draw from the
model at :math:`\theta'`, made here by a short inner MCMC chain on the transformed data (so the
Jacobian of the data transform cancels too). The chains start at the training parameters
whose learned statistics are nearest to the observation's
(:class:`~ebm_lfi.methods.starting_points.StartingPoints`). When the simulator is known, the
inner chain is checked against simulations at ``check_inner`` posterior draws
(:func:`~ebm_lfi.samplers.mcmc.inner_check.inner_chain_check`); those simulations are counted
in ``diagnostics["simulations"]`` (and taken from a total budget by :meth:`ExchangeStage.
split_budget`), and a chain that has not mixed raises a
:class:`~ebm_lfi.methods.checks.PosteriorWarning` (through
:class:`~ebm_lfi.methods.method.Method`).

With a noise-conditional (DSM) fit, the model at noise :math:`\sigma` is the ABC likelihood
with a Gaussian kernel of bandwidth :math:`\sigma`; the stage targets
:math:`\pi(\theta)\, p_\sigma(y_o \mid \theta)` at any tolerance of the trained range, reached
by annealing through the levels of :func:`tolerance_levels`.

References:
    | MCMC for doubly-intractable distributions (Murray, Ghahramani & MacKay, 2006)
    | https://arxiv.org/abs/1206.6848

    | Score Matched Neural Exponential Families for Likelihood-Free Inference
      (Pacchiardi & Dutta, JMLR 2022) https://arxiv.org/abs/2012.10903
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from ..energy.model import ExpFamEBM
from ..energy.nets import frozen
from ..priors import prior_log_prob
from ..samplers.mcmc.diagnostics import EXTENSION_SEED, run_longer
from ..samplers.mcmc.driver import make_generator
from ..samplers.mcmc.exchange import exchange_mcmc
from ..samplers.mcmc.inner_check import inner_chain_check
from ..simulation.simulate import simulate_at
from ..simulation.simulator import Simulator
from .common import NotFittedError, as_config
from .method import Draws, FitStage
from .starting_points import StartingPoints

__all__ = ["ExchangeConfig", "ExchangeStage", "tolerance_levels"]


@dataclass(frozen=True)
class ExchangeConfig:
    r"""Settings of the exchange sampler (see
    :func:`~ebm_lfi.samplers.mcmc.exchange.exchange_mcmc`).

    Arguments:
        num_chains: Chains run as one batch; they start at the training parameters whose
            learned statistics are closest to the observation's.
        burn_in: Outer tuning steps per chain (discarded).
        inner_steps: Inner MCMC steps drawing the auxiliary data.
        inner_kernel: ``"auto"`` (default: exact Gaussian draws when the model is quadratic
            in the transformed data, see
            :func:`~ebm_lfi.samplers.mcmc.exchange_auxiliary.gaussian_draw`, else MALA),
            ``"gaussian"``, ``"mala"`` (uses the model's score) or ``"rw"``.
        bridging: Geometric bridge steps between :math:`\theta` and :math:`\theta'`.
        thin: Keep every ``thin``-th outer draw.
        check_inner: Posterior draws at which the inner chain is compared with the simulator
            (:func:`~ebm_lfi.samplers.mcmc.inner_check.inner_chain_check`; needs the simulator;
            0: no check).
        anneal: Noise-conditional fits: tolerance levels from the highest trained one down to
            the target (each earlier level gets a short run; 1: start at the target).
        jump_rate: Probability of a differential-evolution jump between chains instead of a
            random-walk step (``exchange_mcmc``'s ``jump_rate``; 0: none; off with fewer than
            4 chains): it moves chains between separated modes, which the random walk does
            not cross.
        min_ess: The smallest effective sample size the draws of one posterior should have,
            as a fraction of the draws asked for: where the chains' smallest effective sample
            size (over the parameters) is below it, :meth:`ExchangeStage.sample` runs them
            again from where they ended (after the planned burn-in), with a thinning ``f``
            times longer for ``f = ceil(min_ess * num_samples / ess)`` (see
            :func:`~ebm_lfi.samplers.mcmc.diagnostics.extension_factor`), at most
            ``max_extension``, keeps that run, and so on until the size is reached or ``f``
            is at the cap (0: never run again). Not for runs that keep fewer than 100 steps
            per chain (``MIN_STEPS_TO_EXTEND``): their effective size is too rough.
        max_extension: The largest ``f`` (1: never run again).

    The defaults favour longer chains over many chains: on a 5-parameter linear-Gaussian model
    100 chains of 20 kept steps gave split :math:`\hat R \approx 2.2` and C2ST 0.67 to the exact
    posterior, 20 chains of 250 steps :math:`\hat R \approx 1.1` and C2ST 0.56. Every tenth
    step is kept: converged chains still show a split :math:`\hat R` of about
    :math:`1 + 1/(2 n_e)` for :math:`n_e` effective draws per half chain, so 50 draws of 20
    chains need an ESS of about 500 to stay below the warning's 1.05. On MA(2) at 10⁴
    simulations (3 observations) ``thin=5`` gave ESS 190–307 and :math:`\hat R` 1.05–1.08,
    ``thin=10`` ESS 486–586 and :math:`\hat R` 1.02–1.04 (W2 to the reference unchanged,
    0.096–0.130), for 1.7 times the time.

    Longer runs where the draws are worth too little (``min_ess``): the random walk's steps
    shrink with the number of parameters, and the exchange acceptance adds the noise of the
    auxiliary draw, so a run of fixed length mixes worse in more dimensions. On sbibm's
    10-parameter ``gaussian_linear_uniform`` at 10⁴ simulations (observations 1 and 2, one
    ``ssm-abc`` fit; ``scripts/check_chain_length.py``) the planned run gave an effective
    size of 50 and 58 for 1,000 draws, split :math:`\hat R` 1.32 and 1.29, C2ST 0.672 / 0.664
    to the reference; run again 4 times longer, 220 and 151, :math:`\hat R` 1.07 and 1.10,
    C2ST 0.538 / 0.564, in 3 s instead of 0.8 s (exact Gaussian auxiliary draws); with
    ``max_extension=8``, 7 times longer on observation 1: 338, C2ST 0.495. On two_moons at 10⁴
    (2 parameters, 30 inner MALA steps) 30 and 31 became 73 and 62 (:math:`\hat R` 1.7 →
    1.2), C2ST 0.544 / 0.540 → 0.604 / 0.516, in 44 s instead of 11.5 s. The cap is 4 because
    the cost is that of the inner chain: an exchange route with MALA auxiliary draws in 10
    dimensions took about 100 s for its planned run.

    Jumps (``jump_rate``): on two_moons at 10⁴ simulations (sbibm's observations 1–5, the
    ``ssm-abc`` fit) the random walk alone left split :math:`\hat R` at 5–27, each chain in
    the part of a crescent where it started (mean C2ST 0.695, W2 0.374); with jumps at rate
    0.2 :math:`\hat R` was 1.5–2.1, C2ST 0.631 and W2 0.234 (rates 0.15 and 0.3: C2ST 0.680
    and 0.670). On AR(2) and MA(2) at 10³ (unimodal, 3 observations each) rate 0.2 left C2ST
    and W2 as they were (AR(2) 0.543 against 0.545, MA(2) 0.793 against 0.791) and raised
    AR(2)'s ESS.
    """

    num_chains: int = 20
    burn_in: int = 300
    inner_steps: int = 30
    inner_kernel: str = "auto"
    bridging: int = 0
    thin: int = 10
    check_inner: int = 200
    anneal: int = 4
    jump_rate: float = 0.2
    min_ess: float = 0.25
    max_extension: int = 4

    def __post_init__(self):
        if self.num_chains < 1 or self.burn_in < 0 or self.inner_steps < 1 or self.thin < 1:
            raise ValueError(
                "num_chains, inner_steps and thin must be >= 1 and burn_in >= 0, got "
                f"{self.num_chains}, {self.inner_steps}, {self.thin}, {self.burn_in}"
            )
        if self.inner_kernel not in ("auto", "gaussian", "mala", "rw"):
            raise ValueError(
                "inner_kernel must be 'auto', 'gaussian', 'mala' or 'rw', got "
                f"{self.inner_kernel!r}"
            )
        if self.anneal < 1:
            raise ValueError(f"anneal must be >= 1, got {self.anneal}")
        if not 0 <= self.jump_rate <= 1:
            raise ValueError(f"jump_rate must be in [0, 1], got {self.jump_rate}")
        if self.check_inner < 0:
            raise ValueError(f"check_inner must be >= 0, got {self.check_inner}")
        if not 0 <= self.min_ess <= 1 or self.max_extension < 1:
            raise ValueError(
                "min_ess must be in [0, 1] and max_extension >= 1, got "
                f"{self.min_ess} and {self.max_extension}"
            )


def _statistics_in_shape(model: ExpFamEBM, shape: tuple[int, ...], x: Tensor) -> Tensor:
    """The model's statistics of simulations ``(n, *x_shape)`` reshaped to ``(n, *shape)``."""
    return model.statistics(x.reshape(x.shape[0], *shape))


def tolerance_levels(model: ExpFamEBM, tolerance: float | None, anneal: int) -> list[float]:
    r"""The noise scales the exchange stage visits for ``tolerance``.

    For a noise-conditional model: ``anneal`` levels spaced geometrically from the highest
    trained scale down to the tolerance (default: the lowest trained one); the last is the
    target. For any other model: ``[]`` (and a ``ValueError`` if a tolerance is asked).

    Example:
        >>> from ebm_lfi.energy.model import ExpFamEBM
        >>> model = ExpFamEBM.default((3,), 1, hidden=(4,), noise_conditional=True,
        ...                           noise_range=(0.1, 1.0))
        >>> [round(s, 3) for s in tolerance_levels(model, 0.1, 3)]
        [1.0, 0.316, 0.1]
    """
    if not model.noise_conditional:
        if tolerance is not None:
            raise ValueError(
                "tolerance needs a fit over a range of noise scales (loss='dsm' with "
                "sigma=(lowest, highest), as in 'dsm-exchange'); this model has none"
            )
        return []
    low, high = (float(v) for v in model.noise_range)
    target = low if tolerance is None else float(tolerance)
    if not low * (1 - 1e-6) <= target <= high * (1 + 1e-6):  # the range is stored in float32
        raise ValueError(
            f"tolerance {tolerance} is outside the trained range [{low:.4g}, {high:.4g}]"
        )
    target = min(max(target, low), high)
    if anneal <= 1 or target >= high:
        return [target]
    ratio = (target / high) ** (1 / (anneal - 1))
    return [high * ratio**i for i in range(anneal - 1)] + [target]


class ExchangeStage:
    r"""Exchange MCMC with the fitted energy model as the likelihood (the posterior stage of
    ``*-exchange``).

    Arguments:
        config: An :class:`ExchangeConfig` or a dict of its fields (default: its defaults).
        simulator: The simulator, for the check of the inner chain (``None``: no check).
        on_error: The policy for failed simulations of the check: ``"raise"``, ``"drop"``
            (the check runs on the others) or ``None`` (raise).
        progress: Show a progress bar while sampling.

    The stage reads ``prior`` and ``model`` (an :class:`~ebm_lfi.ExpFamEBM`) of the fit it is
    prepared on, e.g. :class:`~ebm_lfi.methods.fit.EnergyFit`, and ``model_x_shape`` where the
    fit has one: the shape in which its model reads one simulation, when the fit takes
    simulations in another (a :class:`~ebm_lfi.methods.reshape.ReshapedFit` takes flat data
    and models them as :math:`(m, d)` draws); observations and simulations are reshaped to it.
    """

    def __init__(
        self,
        config: ExchangeConfig | dict | None = None,
        *,
        simulator: Simulator | Callable | None = None,
        on_error: str | None = None,
        progress: bool = False,
    ):
        self.config = as_config(config, ExchangeConfig, "exchange")
        self.simulator = simulator
        if on_error not in (None, "raise", "drop"):
            raise ValueError(f"on_error must be None, 'raise' or 'drop', got {on_error!r}")
        self.on_error = on_error
        self.progress = progress
        self.prior = None
        self.model: ExpFamEBM | None = None
        self.model_x_shape: tuple[int, ...] | None = None
        self.starts: StartingPoints | None = None

    def __setstate__(self, state: dict) -> None:
        # stages pickled before on_error and model_x_shape
        self.__dict__.update({"on_error": None, "model_x_shape": None, **state})

    def split_budget(self, num_simulations: int, num_samples: int = 1000) -> tuple[int, int]:
        """Share a total budget of simulator calls: the check of the inner chain takes
        ``check_inner`` of them (at most the draws kept; none without a simulator), training
        the rest. Returns ``(training, stage)``."""
        cfg, stage = self.config, 0
        if self.simulator is not None and cfg.check_inner:
            kept = math.ceil(num_samples / cfg.num_chains) * cfg.num_chains  # draws kept
            stage = min(cfg.check_inner, kept) if kept >= 2 else 0
        if num_simulations - stage < 2:
            raise ValueError(
                f"the check of the exchange sampler's inner chain takes {stage} of "
                f"num_simulations={num_simulations}: raise num_simulations or set "
                "exchange.check_inner=0"
            )
        return num_simulations - stage, stage

    def prepare(
        self, fit: FitStage, theta: Tensor, x: Tensor, *, seed: int | None = None
    ) -> ExchangeStage:
        """Take the fit's model (and ``model_x_shape``, see the class) and build the table of
        chain starting points from the training pairs ``theta, x`` (``seed`` is unused:
        nothing random here)."""
        model = getattr(fit, "model", None)
        if not isinstance(model, ExpFamEBM):
            raise TypeError(
                "the exchange stage needs a fit with an energy model (an ExpFamEBM, e.g. "
                f"EnergyFit); {type(fit).__name__} has none"
            )
        self.prior, self.model = fit.prior, model
        shape = getattr(fit, "model_x_shape", None)
        self.model_x_shape = None if shape is None else tuple(int(s) for s in shape)
        statistics = model.statistics
        if self.model_x_shape is not None:  # a partial of a module function: picklable
            statistics = partial(_statistics_in_shape, model, self.model_x_shape)
        self.starts = StartingPoints(statistics, theta, x)
        return self

    def _model_x(self, x: Tensor) -> Tensor:
        """Simulations ``(n, *x_shape)`` in the shape the model reads (see the class)."""
        if self.model_x_shape is None:
            return x
        return x.reshape(x.shape[0], *self.model_x_shape)

    def tolerances(self, tolerance: float | None = None) -> list[float]:
        """The noise scales visited for ``tolerance`` (see :func:`tolerance_levels`)."""
        if self.model is None:
            raise NotFittedError("the exchange stage is not prepared: call .prepare(fit, ...)")
        return tolerance_levels(self.model, tolerance, self.config.anneal)

    def sample(
        self,
        x_o: Tensor,
        num_samples: int,
        *,
        seed: int | None = None,
        tolerance: float | None = None,
    ) -> Draws:
        r"""Exchange-MCMC chains for one observation (no samples or weights: the chains hold
        the draws).

        Arguments:
            x_o: The observation, shaped like one simulation.
            num_samples: Draws kept over all chains (rounded up to a multiple of the chains).
            seed: Seed of the chains.
            tolerance: Noise-conditional (DSM) fits only: the ABC tolerance :math:`\sigma`, the
                bandwidth of the Gaussian kernel on the standardised transformed data, inside
                the trained range; the sampler targets
                :math:`\pi(\theta)\, p_\sigma(y_o \mid \theta)`. Default: the lowest
                trained tolerance, approached by annealing from the highest (see
                :func:`tolerance_levels`).
        """
        cfg, model = self.config, self.model
        start = time.perf_counter()
        draws, levels, kernel, family = self._plan(num_samples, tolerance)
        with frozen(model):
            with torch.no_grad():
                y_o = model.transform_x(self._model_x(x_o[None]))[0]
                theta0 = self.starts(x_o, cfg.num_chains)
            result, factor = run_longer(
                self._run_chains(family, y_o, theta0, levels, kernel, draws, seed),
                partial(self._extend, family, y_o, kernel=kernel, draws=draws, seed=seed),
                num_samples,
                cfg.min_ess,
                cfg.max_extension,
                steps=draws,
            )
        thin = cfg.thin * factor
        chains = result.chains[:, thin - 1 :: thin]
        check = {}
        if cfg.check_inner:
            check = self._check_inner(family, y_o, chains, result, kernel, seed, levels)
        diagnostics = _diagnostics(result, kernel, levels, check, cfg)
        diagnostics["extension"] = factor
        diagnostics["seconds"] = time.perf_counter() - start
        return Draws(None, None, chains, diagnostics)

    def sample_many(
        self,
        x_os: Tensor,
        num_samples: int,
        *,
        seed: int | None = None,
        tolerance: float | None = None,
    ) -> list[Draws]:
        r"""Exchange-MCMC chains for several observations, run as one batch.

        Each observation gets ``num_chains`` chains with a proposal adapted to its own
        posterior (the groups of :func:`~ebm_lfi.samplers.mcmc.exchange.exchange_mcmc`); the
        inner step size is shared. Where a forward pass of the model is dominated by its
        overhead (small networks, low-dimensional data), :math:`g` observations cost far
        less than :math:`g` calls of :meth:`sample`: this is how
        :class:`~ebm_lfi.methods.auto.AutoMethod` scores the exchange posterior on held-out
        pairs. The inner chain is not checked against the simulator here (that would
        simulate for every observation), the chains are not run again for a small effective
        size (``min_ess``: the cost of scoring stays what was planned), and the draws differ
        from those of :meth:`sample` with the same seed.

        Arguments:
            x_os: The observations, shape :math:`(g, *x_{shape})`.
            num_samples, seed, tolerance: As for :meth:`sample` (one seed for the batch).

        Returns:
            One :class:`~ebm_lfi.methods.method.Draws` per observation; their diagnostics
            give the batch's seconds divided by :math:`g`.
        """
        cfg, model = self.config, self.model
        start = time.perf_counter()
        draws, levels, kernel, family = self._plan(num_samples, tolerance)
        with frozen(model):
            with torch.no_grad():
                y_os = model.transform_x(self._model_x(x_os))
                theta0 = torch.stack([self.starts(x_o, cfg.num_chains) for x_o in x_os])
            result = self._run_chains(family, y_os, theta0, levels, kernel, draws, seed)
        seconds = (time.perf_counter() - start) / len(x_os)
        out = []
        for i in range(len(x_os)):
            group = result._replace(
                chains=result.chains[i],
                outer_acceptance=result.outer_acceptance[i],
                ess=result.ess[i],
                rhat=result.rhat[i],
            )
            diagnostics = _diagnostics(group, kernel, levels, {}, cfg)
            diagnostics["seconds"] = seconds
            out.append(Draws(None, None, group.chains[:, cfg.thin - 1 :: cfg.thin], diagnostics))
        return out

    def _plan(self, num_samples: int, tolerance: float | None) -> tuple[int, list, str, Any]:
        """The steps kept per chain (before thinning), the noise levels, the inner kernel (for
        ``"auto"``: exact Gaussian draws when the model is quadratic in the transformed data,
        else MALA) and the family the chains target."""
        cfg, model = self.config, self.model
        draws = math.ceil(num_samples / cfg.num_chains) * cfg.thin
        levels = self.tolerances(tolerance)
        kernel = cfg.inner_kernel
        if kernel == "auto":
            kernel = "gaussian" if model.gaussian_in_y else "mala"
        family = model.at_noise(levels[-1]) if levels else model
        return draws, levels, kernel, family

    def _log_prior(self, theta: Tensor) -> Tensor:
        """``-inf`` outside the prior's support (a proposal may leave it: a Gamma prior
        that validates its arguments raised there, :func:`~ebm_lfi.priors.prior_log_prob`)."""
        return prior_log_prob(self.prior, theta.cpu()).to(theta.device)

    def _options(self, kernel: str) -> dict:
        """The settings of :func:`exchange_mcmc` every run of this stage shares."""
        cfg = self.config
        return dict(
            inner_steps=cfg.inner_steps,
            inner_kernel=kernel,
            bridging=cfg.bridging,
            jump_rate=cfg.jump_rate if cfg.num_chains >= 4 else 0.0,
        )

    def _extend(
        self, family, y_o: Tensor, result, factor: int, *, kernel: str, draws: int, seed: int | None
    ):
        """The chains run again from where ``result`` left them, at the target level, with
        ``draws`` ``factor`` times longer after the planned burn-in (the proposal tuned
        afresh from the chains' spread there); a seed of its own for each ``factor``."""
        return exchange_mcmc(
            family,
            self._log_prior,
            y_o,
            result.chains[..., -1, :],
            num_samples=draws * factor,
            burn_in=self.config.burn_in,
            seed=None if seed is None else seed + EXTENSION_SEED * factor,
            progress=self.progress,
            **self._options(kernel),
        )

    def _run_chains(
        self,
        family,
        y_o: Tensor,
        theta0: Tensor,
        levels: list[float],
        kernel: str,
        draws: int,
        seed: int | None,
    ):
        """The exchange chains at the target level, after short runs at the higher levels
        of the annealing schedule (each starting where the previous one ended)."""
        cfg = self.config
        options = self._options(kernel)
        for i, sigma in enumerate(levels[:-1]):  # annealing: short runs, falling tolerance
            warm = exchange_mcmc(
                self.model.at_noise(sigma),
                self._log_prior,
                y_o,
                theta0,
                num_samples=1,
                burn_in=max(1, cfg.burn_in // (2 * (len(levels) - 1))),
                seed=None if seed is None else seed + 7919 * (i + 1),
                **options,
            )
            theta0 = warm.chains[..., -1, :]  # (c, p), or (g, c, p) for a batch
        return exchange_mcmc(
            family,
            self._log_prior,
            y_o,
            theta0,
            num_samples=draws,
            burn_in=cfg.burn_in if len(levels) <= 1 else max(1, cfg.burn_in // 2),
            seed=seed,
            progress=self.progress,
            **options,
        )

    def _check_inner(
        self,
        family,
        y_o: Tensor,
        chains: Tensor,
        result,
        kernel: str,
        seed: int | None,
        levels: list[float],
    ) -> dict:
        """Compare the inner chain's auxiliary draws with simulations at posterior draws (at
        a tolerance, the simulations get the kernel's noise: the model is their density)."""
        if self.simulator is None:
            return {}
        cfg = self.config
        draws = chains.reshape(-1, chains.shape[-1])
        pick = torch.linspace(0, draws.shape[0] - 1, min(cfg.check_inner, draws.shape[0]))
        theta = draws[pick.round().long()]
        if theta.shape[0] < 2:
            return {}
        simulator = self.simulator
        if not isinstance(simulator, Simulator):
            simulator = Simulator(simulator)
        sim_seed = None if seed is None else seed + 104_729
        calls = {"simulations": int(theta.shape[0]), "failed_simulations": 0}
        if self.on_error == "drop":
            x, valid = simulate_at(simulator, theta.cpu(), seed=sim_seed, on_error="drop")
            calls["failed_simulations"] = int((~valid).sum())
            theta = theta[valid.to(theta.device)]
            if theta.shape[0] < 2:
                return calls
        else:
            x = simulate_at(simulator, theta.cpu(), seed=sim_seed)
        x = x.to(dtype=theta.dtype, device=theta.device)
        with frozen(self.model):
            with torch.no_grad():
                y = self.model.transform_x(self._model_x(x))
                if levels:
                    gen = make_generator(sim_seed, y.device)
                    noise = torch.randn(y.shape, generator=gen, dtype=y.dtype, device=y.device)
                    y = y + levels[-1] * noise
            check = inner_chain_check(
                family,
                y_o,
                theta,
                y,
                inner_steps=cfg.inner_steps,
                inner_step_size=result.inner_step_size,
                inner_kernel=kernel,
                seed=sim_seed,
            )
        return {
            **calls,
            "inner_mixed": check.mixed,
            "inner_sd_ratio": check.sd_ratio.tolist(),
            "inner_z": check.z.tolist(),
            "inner_fits": check.fits,
            "inner_fit_sd_ratio": check.fit_sd_ratio.tolist(),
            "inner_fit_shift": check.fit_shift.tolist(),
        }


def _diagnostics(
    result, kernel: str, levels: list[float], check: dict, cfg: ExchangeConfig
) -> dict:
    """The diagnostics of one observation's chains (``check``: the inner chain's check)."""
    diagnostics = {"inner_kernel": kernel, **check}
    if levels:
        diagnostics |= {"tolerance": levels[-1], "annealed_through": levels[:-1]}
    diagnostics |= {
        "sampler": "exchange",
        "simulations": check.pop("simulations", 0),
        "failed_simulations": check.pop("failed_simulations", 0),
        "outer_acceptance": float(torch.as_tensor(result.outer_acceptance).mean()),
        "inner_acceptance": float(torch.as_tensor(result.inner_acceptance).mean()),
        "ess": torch.as_tensor(result.ess).tolist(),
        "rhat": torch.as_tensor(result.rhat).tolist(),
        "num_chains": cfg.num_chains,
        "inner_steps": cfg.inner_steps,
    }
    if not math.isnan(result.jump_acceptance):
        diagnostics["jump_acceptance"] = result.jump_acceptance
    return diagnostics
