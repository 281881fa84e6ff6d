r"""Progress bars that suit where they are shown.

Every long loop of the library (simulation, training, model choice, MCMC, ABC, SBC) takes
``progress=True`` and draws its bar with :func:`progress_bar`. On a terminal that is a live
`tqdm <https://tqdm.github.io>`_ bar. When standard error is redirected to a file or a pipe (a
batch job's log, a notebook server's log), a live bar would write one carriage-return update
per step, thousands of them per minute, into the log; there the bar is redrawn at most once
every :data:`LOG_INTERVAL` seconds and once at the end (new figures shown on the bar wait for
the next redraw), so a log keeps its progress readable in a few lines.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL", "is_terminal", "progress_bar"]

LOG_INTERVAL = 30.0
"""Seconds between two updates of a bar written to a stream that is not a terminal."""


def is_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (standard error by default) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed, or replaced by an object without isatty
        return False


class _LogBar(tqdm):
    """A bar for a log: new figures (postfix, description) wait for the next timed redraw."""

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s="", refresh=True):
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc=None, refresh=True):
        super().set_description(desc, refresh=False)


def progress_bar(iterable: Iterable | None = None, *, enabled: bool, **options: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one), shown only when ``enabled``.

    Arguments:
        iterable: What to iterate over; ``None`` for a bar advanced with ``update``.
        enabled: Show the bar (the ``progress`` option of the caller).
        options: tqdm's keywords (``total``, ``desc``, ``unit``, ``initial``, ...).

    Example:
        >>> sum(progress_bar(range(3), enabled=False))
        3
    """
    if enabled and not is_terminal() and "mininterval" not in options:
        options["mininterval"] = LOG_INTERVAL
        return _LogBar(iterable, **options)
    return tqdm(iterable, disable=not enabled, **options)
