r"""The argument parser of ``ebm-lfi``: sub-commands, options, help texts and examples."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .. import __version__

__all__ = [
    "build_parser",
    "UsageError",
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
]

EXIT_OK = 0  # success
EXIT_FAILURE = 1  # the run itself failed (simulator error, training error, ...)
EXIT_USAGE = 2  # bad command line or input files (argparse's own status for usage errors)
EXIT_INTERRUPTED = 130  # Ctrl-C


class UsageError(Exception):
    """A mistake in the command line or in the files it names (exit status 2)."""


_MAIN_EPILOG = """\
examples:
  ebm-lfi tasks                       list the benchmark tasks
  ebm-lfi methods                     list the inference methods
  ebm-lfi run ma2 --method ssm-abc --simulations 20000 --observation 0 --out runs/ma2
  ebm-lfi run --simulator mysim.py:simulate --prior "uniform(-1,1,0,1)" --names a,b \\
      --observation x_o.npy --out runs/mine

exit status: 0 success, 1 the run failed (simulator or training error), 2 usage error
(bad option, unknown task or method, unreadable file, ...), 130 interrupted.
Run `ebm-lfi run --help` for the options of a run.
"""

_RUN_USAGE = """\
%(prog)s TASK [--observation I] --out DIR [options]
       %(prog)s --simulator SPEC --prior SPEC --observation FILE --out DIR [options]"""

_RUN_DESCRIPTION = """\
Simulate, fit an inference method and sample its posterior for one observation, then write
samples.csv, pairplot.png and summary.json to --out. The problem is a benchmark TASK (its stored
observation I, scored against its reference posterior) or your own --simulator with a --prior.
"""

_RUN_EPILOG = """\
examples:
  ebm-lfi run gaussian --method rejection-abc --simulations 5000 --out runs/g
  ebm-lfi run ma2 --method ssm-abc --simulations 20000 --observation 3 --seed 1 --out runs/ma2
  ebm-lfi run --simulator mysim:simulate --prior "uniform(-1,1,0,1)" --names a,b \\
      --observation x_o.csv --method ssm-abc --out runs/mine
  ebm-lfi run beta --method ssm-abc --epochs 20 --option abc.num_accepted=200 --out runs/b
  ebm-lfi run --simulator mysim:simulate --prior "uniform(-1,1,0,1)" --observation x_o.npy \\
      --reference exact_draws.npy --out runs/scored

your own simulator (--simulator):
  module:function        module importable from the current directory (or installed)
  path/to/file.py:function
  The function takes one theta, a torch tensor of shape (p,) (a numpy array with --numpy;
  a batch (b, p) with --batched), and returns x as an array. Give it a parameter named `rng`
  to receive a seeded numpy Generator (a list of b Generators when batched); without one it
  runs with the global RNGs seeded per simulation. An ebm_lfi.Simulator object is used as is.

prior grammar (--prior), one pair of numbers per parameter:
  uniform(LOW1,HIGH1,LOW2,HIGH2,...)  box uniform, e.g. "uniform(-1,1,0,1)" is
                                      BoxUniform(low=[-1, 0], high=[1, 1])
  normal(MEAN1,SD1,MEAN2,SD2,...)     independent normals
  module:object | file.py:object      a torch.distributions.Distribution over vectors (p,),
                                      or a function of no arguments returning one

observation (--observation): an integer selects a stored observation of a TASK (default 0);
  otherwise a file: .npy, .csv (commas, optional header line) or .txt (whitespace), holding
  one simulation's worth of numbers (reshaped to the simulator's x shape when the numbers
  match up to axes of size 1).

outputs in --out:
  samples.csv    one row per draw, a column per parameter (+ chain, draw for MCMC methods,
                 + weight for a weighted sample)
  pairplot.png   pair plot of the posterior, over the reference posterior of a TASK
  summary.json   task, method, options, seeds, simulations used (every simulator call, within
                 --simulations), wall times, posterior mean, sd and quantiles, diagnostics
                 (with the warnings of a posterior that should not be trusted), and for a
                 TASK or with --reference FILE the metrics against the reference: W2 (on at
                 most 2000 draws of each), C2ST, posterior-mean RMSE
  history.csv    training losses per epoch (methods that train a network)
  The same --seed gives the same samples as ebm_lfi.infer(..., seed=SEED) with the same
  method options.

exit status: 0 success, 1 the run failed, 2 usage error, 130 interrupted.
"""


def _checked(convert: Callable[[str], Any], noun: str, valid: Callable, requirement: str):
    """An argparse ``type``: ``convert(text)``, refused unless ``valid(value)``."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
        return value

    return parse


_positive_int = _checked(int, "an integer", lambda v: v >= 1, "a positive integer")
_seed = _checked(int, "an integer", lambda v: v >= 0, "a non-negative integer")
_positive_float = _checked(float, "a number", lambda v: v > 0, "positive")


def _num_statistics(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _add_debug(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the full traceback of an error and debug-level log messages",
    )


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run",
        usage=_RUN_USAGE,
        help="simulate, fit a method and write the posterior of one observation",
        description=_RUN_DESCRIPTION,
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    problem = run.add_argument_group("problem")
    problem.add_argument(
        "task",
        nargs="?",
        metavar="TASK",
        help="a benchmark task (see `ebm-lfi tasks`); omit it with --simulator",
    )
    problem.add_argument(
        "--simulator", metavar="SPEC", help="your simulator: module:function or file.py:function"
    )
    problem.add_argument(
        "--prior", metavar="SPEC", help='prior of your simulator, e.g. "uniform(-1,1,0,1)"'
    )
    problem.add_argument("--names", metavar="A,B,...", help="parameter names of your simulator")
    problem.add_argument(
        "--batched", action="store_true", help="the simulator takes a batch of thetas (b, p)"
    )
    problem.add_argument(
        "--numpy", action="store_true", help="pass theta to the simulator as a numpy array"
    )
    problem.add_argument(
        "--observation",
        metavar="I|FILE",
        help="index of a stored TASK observation (default 0), or a .npy/.csv/.txt file",
    )

    method = run.add_argument_group("inference")
    method.add_argument(
        "--method",
        default="auto",
        help="inference method (see `ebm-lfi methods`; default %(default)s)",
    )
    method.add_argument(
        "--simulations",
        type=_positive_int,
        default=20_000,
        metavar="N",
        help="total simulator calls (default %(default)s): the training set plus any ABC "
        "reference table (--num-reference) or SMC-ABC rounds; failed simulations dropped by "
        "--on-error drop are replaced on top",
    )
    method.add_argument(
        "--samples",
        type=_positive_int,
        default=1_000,
        metavar="M",
        help="posterior samples (default %(default)s)",
    )
    method.add_argument(
        "--seed", type=_seed, default=0, metavar="S", help="root seed (default %(default)s)"
    )

    output = run.add_argument_group("output")
    output.add_argument("--out", required=True, metavar="DIR", help="output directory")
    output.add_argument(
        "--overwrite", action="store_true", help="write into DIR even if it is not empty"
    )
    output.add_argument("--no-plot", action="store_true", help="do not draw pairplot.png")
    output.add_argument(
        "--no-metrics", action="store_true", help="do not score the posterior against a reference"
    )
    output.add_argument(
        "--reference",
        metavar="FILE",
        help="reference posterior draws (.npy, .csv or .txt, one row per draw, one column per "
        "parameter) to score the posterior against: W2, C2ST and mean RMSE in summary.json "
        "(replaces a TASK's own reference)",
    )
    verbosity = output.add_mutually_exclusive_group()
    verbosity.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=True,
        help="show stage messages on stderr, and progress bars when stderr is a terminal (default)",
    )
    verbosity.add_argument(
        "--quiet",
        "-q",
        dest="progress",
        action="store_false",
        help="print nothing but errors and warnings",
    )
    _add_debug(output, argparse.SUPPRESS)

    advanced = run.add_argument_group(
        "advanced (method settings; an option a method does not use is ignored with a warning)"
    )
    advanced.add_argument("--epochs", type=_positive_int, metavar="E", help="training epochs")
    advanced.add_argument("--batch-size", type=_positive_int, metavar="B", help="mini-batch size")
    advanced.add_argument("--lr", type=_positive_float, metavar="LR", help="learning rate")
    advanced.add_argument(
        "--structure",
        choices=("auto", "mlp", "iid", "markov", "ring"),
        help="statistics network (default auto: chosen by held-out loss)",
    )
    advanced.add_argument(
        "--num-statistics", type=_num_statistics, metavar="K", help="number of statistics or auto"
    )
    advanced.add_argument(
        "--num-reference",
        type=_positive_int,
        metavar="R",
        help="simulate a separate ABC reference table of R simulations, taken from --simulations "
        "(default: the training simulations serve as the table)",
    )
    advanced.add_argument(
        "--sampler", choices=("rejection", "smc"), help="ABC sampler (default rejection)"
    )
    advanced.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other method option, VALUE as JSON; SECTION.KEY sets a field of a config "
        "(training, abc, exchange, mcmc, selection, network), e.g. abc.num_accepted=200; "
        "repeatable",
    )
    advanced.add_argument(
        "--on-error",
        choices=("raise", "drop"),
        default="raise",
        help="failed simulations, of the training set, the ABC reference table, SMC-ABC and "
        "the exchange sampler's check: stop (raise, default) or drop them (a failed training "
        "or table simulation is replaced by a fresh prior draw)",
    )
    advanced.add_argument("--device", help="torch device of the method, e.g. cuda (default cpu)")
    advanced.add_argument("--threads", type=_positive_int, metavar="T", help="torch CPU threads")
    advanced.add_argument(
        "--workers",
        type=_positive_int,
        metavar="W",
        help="run the simulations (training set, ABC reference table and rounds) in W "
        "processes; the results are identical to one process",
    )


def build_parser() -> argparse.ArgumentParser:
    r"""The parser of ``ebm-lfi`` with the sub-commands ``tasks``, ``methods`` and ``run``."""
    parser = argparse.ArgumentParser(
        prog="ebm-lfi",
        description="Likelihood-free inference with energy-based exponential-family models.",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_debug(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in (
        ("tasks", "list the benchmark tasks: parameters, x shape, description"),
        ("methods", "list the inference methods"),
    ):
        listing = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
        _add_debug(listing, argparse.SUPPRESS)
    _add_run(sub)
    return parser
