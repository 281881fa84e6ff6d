r"""pyabc's run database as an ebm_lfi :class:`~ebm_lfi.Posterior`.

:func:`history_to_posterior` reads one generation :math:`t` of a run's database
(``pyabc.History``: the accepted particles :math:`\theta_i`, their importance weights
:math:`w_i`, the tolerance :math:`\varepsilon_t`, the simulation counts) as a weighted
:class:`~ebm_lfi.Posterior`, the weights normalised as ``History.get_distribution`` gives them,
the parameters in a chosen order, and the run's figures as diagnostics.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyabc

from ...posterior.posterior import Posterior

__all__ = ["history_to_posterior", "open_history"]


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
