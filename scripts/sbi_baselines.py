"""sbi's neural posterior and ratio estimation behind our ``fit`` / ``posterior`` interface.

What a user would otherwise pick, at the same simulations and with sbi's defaults on the
flattened raw data (no embedding network):

* ``NPEBaseline``: ``sbi.inference.NPE`` (a masked autoregressive flow), sampled directly.
* ``NREBaseline``: ``sbi.inference.NRE``, which is NRE-B in sbi 0.27 (contrastive
  classification of the true parameter among 10 candidates, Durkan et al. 2020); its posterior is
  sampled by sbi's vectorised slice sampler, 20 chains, 200 warm-up steps each, no thinning.
* ``SNPEBaseline``: sequential NPE for one observation with truncated proposals (TSNPE,
  Deistler et al. 2022, as sbi 0.27 offers it): the total budget split into equal rounds; round
  1 draws from the prior, each later round from the prior restricted to the highest-density
  region of the last posterior that holds all but a ``1e-4`` share of its mass (by rejection
  from the prior); the flow is trained by maximum likelihood on all the pairs so far, which is
  valid because the truncated prior only removes parameters of negligible posterior mass.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

import ebm_lfi as el

__all__ = ["NPEBaseline", "NREBaseline", "SNPEBaseline"]


class _SBIBaseline:
    name = "sbi"

    def __init__(self, prior, *, train_options: dict | None = None):
        self.prior = prior
        self.train_options = dict(train_options or {})  # keywords of sbi's ``train``

    def _trainer(self):
        raise NotImplementedError

    def _posterior_options(self) -> dict:
        return {}

    def fit(self, theta, x, *, seed=0):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            inference = self._trainer()(prior=self.prior, show_progress_bars=False)
            flat = x.reshape(x.shape[0], -1).float()
            inference.append_simulations(theta.float(), flat)
            with contextlib.redirect_stdout(io.StringIO()):  # sbi's bare convergence print
                estimator = inference.train(**self.train_options)
            epochs = getattr(inference, "_summary", {}).get("epochs_trained") or [None]
            self.training_epochs_ = epochs[-1]
            self.posterior_ = inference.build_posterior(estimator, **self._posterior_options())
        return self

    def posterior(self, x_o, num_samples=1000, *, seed=0):
        # sbi's slice samplers draw from numpy's legacy global RNG: seed it, then restore it
        numpy_state = np.random.get_state()  # noqa: NPY002
        try:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                np.random.seed(seed)  # noqa: NPY002
                x_o = torch.as_tensor(x_o).reshape(1, -1).float()
                samples = self.posterior_.sample((num_samples,), x=x_o, show_progress_bars=False)
        finally:
            np.random.set_state(numpy_state)  # noqa: NPY002
        diagnostics = {"training_epochs": self.training_epochs_}
        return el.Posterior(samples.double(), diagnostics=diagnostics, method=self.name)


class NPEBaseline(_SBIBaseline):
    """sbi's NPE (default flow, default training)."""

    name = "npe"

    def _trainer(self):
        from sbi.inference import NPE

        return NPE


class NREBaseline(_SBIBaseline):
    """sbi's NRE (NRE-B, default classifier and training), posterior by slice sampling."""

    name = "nre"

    def _trainer(self):
        from sbi.inference import NRE

        return NRE

    def _posterior_options(self) -> dict:
        from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters

        parameters = MCMCPosteriorParameters(
            method="slice_np_vectorized", num_chains=20, warmup_steps=200, thin=1
        )
        return {"posterior_parameters": parameters}


class SNPEBaseline:
    """sbi's sequential NPE with truncated proposals (default flow and training), for one
    observation at a time: :meth:`infer` simulates, trains and samples.

    Arguments:
        prior: The prior.
        rounds: Rounds of equal size the budget is split into.
        quantile: Posterior mass left out of each truncated proposal (sbi's default).
        support_samples: Posterior draws that place the truncation's density threshold
            (sbi's default is 10^6; 10^5 still puts 10 draws below a 10^-4 quantile).
    """

    name = "snpe"

    def __init__(self, prior, rounds=4, quantile=1e-4, support_samples=100_000):
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        self.prior, self.rounds = prior, int(rounds)
        self.quantile, self.support_samples = float(quantile), int(support_samples)

    def infer(self, simulator, x_o, num_simulations, num_samples=1000, *, seed=0):
        """Run the rounds for ``x_o`` with ``num_simulations`` in all; the posterior's
        diagnostics list each round's simulations, epochs and posterior sd."""
        from sbi.inference import NPE
        from sbi.utils import RestrictedPrior, get_density_thresholder

        from ebm_lfi.methods.rounds import round_budgets
        from ebm_lfi.simulation.simulate import simulate_at

        budgets = round_budgets(num_simulations, self.rounds)
        sim_seeds = np.random.SeedSequence(seed).generate_state(self.rounds, dtype=np.uint32)
        x_o = torch.as_tensor(x_o).reshape(1, -1).float()
        history = []
        numpy_state = np.random.get_state()  # noqa: NPY002
        try:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                np.random.seed(seed)  # noqa: NPY002
                inference = NPE(prior=self.prior, show_progress_bars=False)
                proposal = self.prior
                for r, budget in enumerate(budgets):
                    with contextlib.redirect_stdout(io.StringIO()):  # sbi's bare prints
                        theta = proposal.sample((budget,)).reshape(budget, -1)
                    x = simulate_at(simulator, theta.double(), seed=int(sim_seeds[r]))
                    inference.append_simulations(theta.float(), x.reshape(budget, -1).float())
                    with contextlib.redirect_stdout(io.StringIO()):
                        estimator = inference.train(force_first_round_loss=True)
                    posterior = inference.build_posterior(estimator).set_default_x(x_o)
                    samples = posterior.sample((num_samples,), show_progress_bars=False)
                    epochs = getattr(inference, "_summary", {}).get("epochs_trained") or [None]
                    history.append(
                        {
                            "round": r + 1,
                            "simulations": int(budget),
                            "epochs": epochs[-1],
                            "width": samples.std(0).double().tolist(),
                        }
                    )
                    if r + 1 < len(budgets):
                        with contextlib.redirect_stderr(io.StringIO()):  # progress bars
                            threshold = get_density_thresholder(
                                posterior, self.quantile, self.support_samples
                            )
                        proposal = RestrictedPrior(self.prior, threshold, sample_with="rejection")
        finally:
            np.random.set_state(numpy_state)  # noqa: NPY002
        diagnostics = {
            "rounds": history,
            "training_simulations": int(sum(budgets)),
            "total_simulations": int(sum(budgets)),
        }
        return el.Posterior(samples.double(), diagnostics=diagnostics, method=self.name)
