r"""Running ebm_lfi problems in pyabc: the prior and the simulator in, a Posterior out.

* :class:`TorchPrior` wraps any torch prior as a pyabc distribution keyed by parameter names
  (``rvs`` draws a ``pyabc.Parameter``, ``pdf`` is :math:`\exp\log\pi(\theta)`, zero outside
  the support), so that priors that are not boxes keep their exact density.
* :class:`SimulatorModel` wraps an ebm_lfi simulator as a pyabc model returning ``{key: x}``.

Both draw their seeds from numpy's global RNG, which pyabc itself uses and reseeds in every
worker process: ``np.random.seed(s)`` before a run with pyabc's ``SingleCoreSampler``
reproduces it, and parallel workers draw independent seeds. Both pickle (pyabc's
multiprocessing samplers send them to the workers).

* :func:`history_to_posterior` reads one generation :math:`t` of a run's database
  (``pyabc.History``: the accepted particles :math:`\theta_i`, their importance weights
  :math:`w_i`, the tolerance :math:`\varepsilon_t`, the simulation counts) as a weighted
  :class:`~ebm_lfi.Posterior`, the weights normalised as ``History.get_distribution`` gives
  them, the parameters in a chosen order, and the run's figures as diagnostics.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyabc
import torch
from torch import Tensor
from torch.distributions import Distribution

from ..posterior import Posterior
from ..priors import parameter_names as prior_parameter_names
from ..priors import prior_dim, validate_prior
from ..samplers._prior import prior_log_prob
from ..simulator import Simulator, forked_torch_rng

__all__ = ["TorchPrior", "SimulatorModel", "history_to_posterior", "open_history"]


def _global_numpy_seed() -> int:
    """A seed drawn from numpy's global RNG, the RNG pyabc seeds (per worker process)."""
    return int(np.random.randint(0, 2**63 - 1, dtype=np.int64))  # noqa: NPY002


class TorchPrior(pyabc.DistributionBase):
    r"""A torch prior as a pyabc distribution over named parameters.

    Arguments:
        prior: Any torch distribution over :math:`\theta` of shape :math:`(p,)` (e.g.
            :class:`~ebm_lfi.BoxUniform`, a task's prior, ``Independent(Normal(...), 1)``).
        parameter_names: The :math:`p` names (default: the prior's own, else
            ``theta_1, ..., theta_p``); they key pyabc's ``Parameter``.

    ``rvs`` draws with torch from a seed taken from numpy's global RNG (pyabc's convention);
    ``pdf`` is :math:`\exp \log \pi(\theta)`, zero outside the support.
    """

    def __init__(self, prior: Distribution, parameter_names: Sequence[str] | None = None):
        self.prior = validate_prior(prior)
        p = prior_dim(prior)
        names = prior_parameter_names(prior, p) if parameter_names is None else parameter_names
        self.parameter_names = [str(n) for n in names]
        if len(self.parameter_names) != p or len(set(self.parameter_names)) != p:
            raise ValueError(f"need {p} distinct parameter names, got {self.parameter_names}")

    def get_parameter_names(self) -> list[str]:
        """The parameter names, in the order of :math:`\\theta`."""
        return list(self.parameter_names)

    def to_tensor(self, x: Mapping[str, float]) -> Tensor:
        r"""A pyabc parameter as :math:`\theta`, shape :math:`(p,)` (float64)."""
        if set(x) != set(self.parameter_names):
            raise ValueError(f"parameter keys {sorted(x)} differ from {self.parameter_names}")
        return torch.tensor([float(x[n]) for n in self.parameter_names], dtype=torch.float64)

    def rvs(self, *args, **kwargs) -> pyabc.Parameter:
        """One prior draw as a ``pyabc.Parameter`` (pyabc passes no arguments)."""
        with forked_torch_rng(_global_numpy_seed()):
            theta = self.prior.sample()
        return pyabc.Parameter(dict(zip(self.parameter_names, theta.tolist())))

    def pdf(self, x: Mapping[str, float]) -> float:
        r"""The prior density at the parameter ``x`` (a dict keyed by the names)."""
        return float(prior_log_prob(self.prior, self.to_tensor(x)[None])[0].exp())

    def __repr__(self) -> str:
        return f"TorchPrior({self.prior!r}, parameter_names={self.parameter_names})"


class SimulatorModel(pyabc.Model):
    r"""An ebm_lfi simulator as a pyabc model: ``sample(pars) -> {key: x}``.

    Arguments:
        simulator: An :class:`~ebm_lfi.Simulator` (e.g. a task's ``simulator``) or a plain
            callable of one :math:`\theta` (wrapped as ``Simulator(fn)``).
        parameter_names: Order of the parameters in :math:`\theta`.
        key: The data key (default ``"x"``).
        name: The model name pyabc stores.

    Each call simulates once with a seed drawn from numpy's global RNG; :math:`x` is returned
    as a float64 array of the simulator's shape.
    """

    def __init__(
        self,
        simulator: Simulator | Callable,
        parameter_names: Sequence[str],
        *,
        key: str = "x",
        name: str = "ebm_lfi",
    ):
        super().__init__(name=name)
        self.simulator = simulator if isinstance(simulator, Simulator) else Simulator(simulator)
        self.parameter_names = [str(n) for n in parameter_names]
        self.key = str(key)

    def sample(self, pars: Mapping[str, float]) -> dict[str, np.ndarray]:
        r"""One simulation at the parameter ``pars``: ``{key: x}``, :math:`x` in float64."""
        if set(pars) != set(self.parameter_names):
            raise ValueError(f"parameter keys {sorted(pars)} differ from {self.parameter_names}")
        theta = torch.tensor([float(pars[n]) for n in self.parameter_names], dtype=torch.float64)
        x = self.simulator(theta, seed=_global_numpy_seed())
        return {self.key: x.numpy().astype(np.float64, copy=False)}


def open_history(
    history: pyabc.History | str | os.PathLike, run_id: int | None = None
) -> pyabc.History:
    r"""A ``pyabc.History`` for a database: an open ``History``, a file path of an sqlite
    database, or an SQLAlchemy URL (``"sqlite:///run.db"``).

    Arguments:
        history: The database.
        run_id: The run (``abc_id``) to read; ``None``: the given ``History``'s run, else the
            database's latest run with populations. A given ``History`` is never changed: another
            run is read through a new ``History`` on the same database.

    Returns:
        A ``pyabc.History`` set to that run.
    """
    if isinstance(history, pyabc.History):
        if run_id is None or run_id == history.id:
            return history
        db = history.db
    elif isinstance(history, str | os.PathLike):
        text = os.fspath(history)
        if "://" in text:
            db = text
        else:
            path = Path(text).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"no pyabc database at {text!r}")
            db = f"sqlite:///{path}"
    else:
        raise TypeError(
            f"history must be a pyabc.History, a database path or URL, got {type(history).__name__}"
        )
    out = pyabc.History(db, create=False)
    runs = sorted(int(run.id) for run in out.all_runs())
    if run_id is not None:
        if int(run_id) not in runs:
            raise ValueError(f"run_id {run_id} is not in the database; its runs are {runs}")
        out.id = int(run_id)
    if out.id is None:
        raise ValueError(f"the database {db!r} holds no run with populations")
    return out


def history_to_posterior(
    history: pyabc.History | str | os.PathLike,
    t: int | None = None,
    parameter_names: Sequence[str] | None = None,
    run_id: int | None = None,
    m: int = 0,
) -> Posterior:
    r"""One generation of a pyabc run as a weighted :class:`~ebm_lfi.Posterior`.

    Arguments:
        history: A ``pyabc.History``, the path of its sqlite file, or an SQLAlchemy URL.
        t: The generation, ``0 .. max_t`` (default: the last one, ``max_t``).
        parameter_names: The order of the parameters (the stored names, each once); default:
            pyabc's order (sorted names).
        run_id: The run in the database (default: the ``History``'s, or the latest one).
        m: The model index (model selection runs).

    Returns:
        The particles, shape :math:`(n, p)` in float64, with their normalised weights
        :math:`(n,)`; ``diagnostics`` holds ``t``, ``run_id``, ``model``, ``epsilon`` (the
        generation's tolerance), ``simulations`` (total up to and including :math:`t`,
        the calibration sample included), ``population_size`` and ``ess``
        (:math:`1 / \sum_i w_i^2`).
    """
    h = open_history(history, run_id)
    max_t = h.max_t
    if max_t is None or max_t < 0:
        raise ValueError("the pyabc run has no generation yet")
    t = max_t if t is None else int(t)
    if not 0 <= t <= max_t:
        raise ValueError(f"t must be in 0 .. {max_t} (the run's generations), got {t}")
    frame, weights = h.get_distribution(m=int(m), t=t)
    if frame.shape[0] == 0:
        raise ValueError(f"model m={m} has no particles at generation t={t}")
    stored = [str(c) for c in frame.columns]
    if parameter_names is None:
        names = stored
    else:
        names = [str(n) for n in parameter_names]
        if sorted(names) != sorted(stored) or len(set(names)) != len(names):
            raise ValueError(f"parameter_names {names} must list the stored names {stored} once")
    samples = np.array(frame[names].to_numpy(dtype=np.float64))  # a writable copy
    weights = np.array(weights, dtype=np.float64)
    populations = h.get_all_populations()
    upto = populations[populations.t <= t]
    row = populations[populations.t == t].iloc[0]
    diagnostics = {
        "t": t,
        "max_t": int(max_t),
        "run_id": int(h.id),
        "model": int(m),
        "epsilon": float(row.epsilon),
        "simulations": int(upto.samples.sum()),
        "population_size": int(samples.shape[0]),
        "ess": float(weights.sum() ** 2 / np.square(weights).sum()),
    }
    return Posterior(
        samples, weights=weights, parameter_names=names, diagnostics=diagnostics, method="pyabc"
    )
