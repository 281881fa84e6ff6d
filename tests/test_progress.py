"""Progress bars: live on a terminal, a few lines in a log."""

from __future__ import annotations

import numpy as np

import ebm_lfi as el
from ebm_lfi.priors import BoxUniform
from ebm_lfi.progress import is_terminal, progress_bar


def _writes(log: str) -> int:
    return log.count("\r")


def test_a_bar_written_to_a_log_is_redrawn_a_few_times_not_at_every_step(capsys):
    assert not is_terminal()  # pytest's captured stderr is not a terminal
    with progress_bar(total=500, enabled=True, desc="steps") as bar:
        for i in range(500):
            bar.update(1)
            bar.set_postfix(loss=float(i))  # new figures do not force a redraw
    quiet = _writes(capsys.readouterr().err)
    # negative control: the same loop with the live bar's redraw rule writes at every step
    with progress_bar(total=500, enabled=True, desc="steps", mininterval=0, miniters=1) as bar:
        for _ in range(500):
            bar.update(1)
    live = _writes(capsys.readouterr().err)
    assert 1 <= quiet <= 3 and live >= 500, (quiet, live)


def test_no_bar_without_progress_and_simulate_keeps_a_log_short(capsys):
    for _ in progress_bar(range(100), enabled=False):
        pass
    assert capsys.readouterr().err == ""
    prior = BoxUniform([0.0], [1.0])
    el.simulate(lambda theta, rng: np.asarray(theta) + rng.normal(), prior, 300, progress=True)
    assert 1 <= _writes(capsys.readouterr().err) <= 3
