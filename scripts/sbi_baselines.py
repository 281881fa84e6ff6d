"""sbi's neural posterior and ratio estimation behind our ``fit`` / ``posterior`` interface.

What a user would otherwise pick, at the same simulations and with sbi's defaults on the
flattened raw data (no embedding network):

* ``NPEBaseline``: ``sbi.inference.NPE`` (a masked autoregressive flow), sampled directly.
* ``NREBaseline``: ``sbi.inference.NRE``, which is NRE-B in sbi 0.27 (contrastive
  classification of the true parameter among 10 candidates, Durkan et al. 2020); its posterior is
  sampled by sbi's vectorised slice sampler, 20 chains, 200 warm-up steps each, no thinning.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

import ebm_lfi as el

__all__ = ["NPEBaseline", "NREBaseline"]


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
