r"""The ``ebm-lfi`` command line.

Commands:

* ``ebm-lfi tasks [--json]``: the benchmark tasks (parameters and prior box, x shape, number
  of stored observations, description);
* ``ebm-lfi methods [--json]``: the inference methods with a one-line description;
* ``ebm-lfi run TASK --method NAME --simulations N --observation I --seed S --out DIR`` or
  ``ebm-lfi run --simulator module:function --prior SPEC --observation FILE --out DIR``:
  simulate, fit, sample the posterior and write ``samples.csv``, ``pairplot.png``,
  ``summary.json`` (and ``history.csv``) to ``DIR`` (see :mod:`ebm_lfi.cli.run`; the prior
  grammar and file formats are in :mod:`ebm_lfi.cli.inputs`).

``ebm-lfi --help`` and ``ebm-lfi run --help`` document every option with examples. The module
runs as ``python -m ebm_lfi.cli`` too. The arguments are parsed before anything heavy is
imported: ``--help``, ``--version``, a usage error and ``ebm-lfi methods`` never load torch;
``tasks`` loads the benchmark tasks and ``run`` the whole library.

Exit status:

* 0: success;
* 1: the run failed (the simulator raised or returned NaN, training diverged, ...);
* 2: usage error: a bad option (argparse's own status), an unknown task or method, a bad prior
  spec, a missing or unreadable file, an unimportable simulator, an observation of the wrong
  shape, a non-empty output directory without ``--overwrite``;
* 130: interrupted (Ctrl-C).

An error is reported as one line ``error: ...`` on stderr without a traceback, naming the
public class of the error and the command line's options (``--on-error drop``, not the Python
keyword); ``--debug`` prints the traceback too (and debug-level log messages). Warnings of the
library go to stderr as ``warning: ...``; stage messages (and progress bars, when stderr is a
terminal) go to stderr, the final summary to stdout, and ``--quiet`` silences both.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from .parser import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, build_parser

__all__ = ["main", "build_parser", "UsageError"]


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


_ON_ERROR_CLI = "pass --on-error drop to drop failed simulations and draw replacements"
# the advice of an observation outside an inferred support (EnergyFit.check_support)
_SUPPORT_ADVICE = ("fit with x_support=None", "pass --option x_support=null")


def _public_name(err: BaseException) -> str:
    """The name of the first public class of ``err`` (``SimulationError`` for a private
    subclass of it)."""
    return next(c.__name__ for c in type(err).__mro__ if not c.__name__.startswith("_"))


def _cli_message(err: BaseException) -> str:
    """The message of ``err`` in the words of the command line: a simulation failure's advice
    names ``--on-error drop``, an inferred support's ``--option x_support=null``, instead of
    the Python keywords."""
    hint = getattr(err, "hint", None)
    if isinstance(hint, str) and "on_error='drop'" in hint:
        return f"{_one_line(str(err.message))} ({_ON_ERROR_CLI})"
    return _one_line(str(err)).replace(*_SUPPORT_ADVICE)


def _report(err: BaseException, debug: bool, prefix: str, hint: str) -> None:
    if debug:
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    message = _cli_message(err) or _public_name(err)
    print(f"error: {prefix}{message}{'' if debug else hint}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """Point stdout at devnull so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured output)
        pass


def _command(args: argparse.Namespace, argv: list[str]) -> int:
    """Carry out the parsed command, importing only what it needs."""
    if args.command in ("tasks", "methods"):
        from .catalog import list_methods, list_tasks

        listing = list_tasks if args.command == "tasks" else list_methods
        listing(args.json, sys.stdout)
        return EXIT_OK
    import torch

    from .inputs import cwd_on_path
    from .run import run_command

    threads = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        with cwd_on_path():
            return run_command(args, argv)
    finally:
        torch.set_num_threads(threads)


def main(argv: Sequence[str] | None = None) -> int:
    r"""Run ``ebm-lfi`` with the arguments ``argv`` (default ``sys.argv[1:]``).

    Arguments:
        argv: The command-line arguments, without the program name.

    Returns:
        The exit status: 0 success, 1 failed run, 2 usage error, 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version or an argparse usage error
        code = done.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)

    debug = bool(args.debug)
    package_logger = logging.getLogger("ebm_lfi")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    old_level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    try:
        return _command(args, argv)
    except UsageError as err:
        _report(err, debug, "", "")
        return EXIT_USAGE
    except BrokenPipeError:  # the reader of our output went away (`ebm-lfi tasks | head`)
        _silence_stdout()
        return EXIT_FAILURE
    except KeyboardInterrupt as err:
        _report(err, debug, "interrupted", "")
        return EXIT_INTERRUPTED
    except Exception as err:
        _report(err, debug, f"{_public_name(err)}: ", " (rerun with --debug for the traceback)")
        return EXIT_FAILURE
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(old_level)
