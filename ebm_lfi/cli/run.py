r"""``ebm-lfi run``: simulate, fit a method, sample the posterior of one observation, write files.

The steps are those of :func:`ebm_lfi.infer` with the same seeds (three seeds drawn from
``numpy.random.SeedSequence(seed)``: simulation, fit, posterior) and the same budget
(``--simulations`` is the total number of simulator calls, shared by the training set and the
method's posterior stage, :meth:`~ebm_lfi.methods.Method.split_budget`), so a run reproduces
``el.infer(simulator, prior, x_o, method, num_simulations=N, num_samples=M, seed=S, **options)``.
Every check of the command line runs before the first simulation, except the shape of an
observation file of a user simulator, which is checked against the simulations before fitting.

Progress bars are drawn only when stderr is a terminal; otherwise (a log file, a pipe, a batch
job) the run prints one line per stage, so that a redirected stderr does not fill with bar
updates. A posterior that should not be trusted (:mod:`ebm_lfi.methods.checks`) is reported as
``warning: ...`` on stderr and in ``summary.json`` (``diagnostics["warnings"]``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import re
import shlex
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import __version__
from ..benchmarks.tasks import available as available_tasks
from ..benchmarks.tasks import get as get_task
from ..infer import count_simulations
from ..methods.registry import available as available_methods
from ..methods.registry import get as get_method
from ..posterior.posterior import Posterior
from ..priors import prior_dim
from ..progress import is_terminal
from ..simulation.simulate import simulate
from ..simulation.simulator import Simulator
from .catalog import format_table
from .inputs import (
    load_object,
    load_observation,
    load_reference,
    match_shape,
    parse_names,
    parse_options,
    parse_prior,
)
from .parser import UsageError
from .report import jsonable, jsonable_dict, posterior_summary, reference_metrics

__all__ = [
    "Problem",
    "resolve_problem",
    "method_options",
    "build_method",
    "process_pool",
    "split_budget",
    "run_command",
]

logger = logging.getLogger("ebm_lfi.cli")

# command-line shortcut -> where it goes in the method's options
_SHORTCUTS = {
    "epochs": ("training", "epochs"),
    "batch_size": ("training", "batch_size"),
    "lr": ("training", "lr"),
    "structure": ("structure",),
    "num_statistics": ("num_statistics",),
    "num_reference": ("abc", "num_reference"),
    "sampler": ("abc", "sampler"),
    "device": ("device",),
}
_UNEXPECTED = re.compile(r"\S*\(\) got an unexpected keyword argument '(\w+)'")
# library words -> command-line words, for the messages of the budget
_CLI_WORDS = (
    ("num_simulations=", "--simulations "),
    ("abc.num_reference=", "--num-reference "),
    ("abc.max_simulations", "--option abc.max_simulations"),
    ("abc.num_particles", "--option abc.num_particles"),
    ("exchange.check_inner", "--option exchange.check_inner"),
    ("num_simulations", "--simulations"),
)


@dataclass
class Problem:
    r"""What to infer: prior, simulator, observation and (for a task) the reference."""

    label: str
    prior: Any
    simulator: Simulator
    observation: int | str
    x_o: np.ndarray
    task: Any = None
    reference: Tensor | None = None
    truth: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _observation_spec(text: str | None) -> int | str | None:
    if text is not None and re.fullmatch(r"[+-]?\d+", text.strip()):
        return int(text)
    return text


def resolve_problem(args: argparse.Namespace) -> Problem:
    r"""The :class:`Problem` named by ``TASK`` or by ``--simulator`` / ``--prior``."""
    observation = _observation_spec(args.observation)
    if args.task is not None and args.simulator is not None:
        raise UsageError("give either a TASK or --simulator, not both")
    if args.task is None and args.simulator is None:
        raise UsageError("give a TASK (see `ebm-lfi tasks`) or --simulator with --prior")
    if args.task is not None:
        for flag, value in (("--prior", args.prior), ("--names", args.names)):
            if value is not None:
                raise UsageError(f"{flag} is for --simulator; a TASK has its own prior")
        if args.batched or args.numpy:
            raise UsageError("--batched and --numpy are for --simulator, not for a TASK")
        if args.task.lower() not in available_tasks():
            raise UsageError(
                f"unknown task {args.task!r}; available: {', '.join(available_tasks())}"
            )
        task = get_task(args.task)
        observation = 0 if observation is None else observation
        if isinstance(observation, int):
            if not 0 <= observation < task.num_observations:
                raise UsageError(
                    f"--observation {observation} is out of range: task {task.name!r} stores "
                    f"observations 0 .. {task.num_observations - 1}"
                )
            x_o = task.observation(observation).numpy()
            reference = (
                task.reference_posterior(observation) if task.has_reference_posterior else None
            )
            truth = task.true_parameters(observation)
        else:
            x_o = match_shape(load_observation(observation), task.x_shape, repr(observation))
            reference = truth = None
        return Problem(
            task.name, task.prior, task.simulator, observation, x_o, task, reference, truth
        )

    if args.prior is None:
        raise UsageError('--simulator needs --prior, e.g. --prior "uniform(-1,1,0,1)"')
    if observation is None:
        raise UsageError("--simulator needs --observation FILE (.npy, .csv or .txt)")
    if isinstance(observation, int):
        raise UsageError(
            f"--observation {observation}: an index selects a stored observation of a TASK; "
            "with --simulator give a .npy, .csv or .txt file"
        )
    prior = parse_prior(args.prior, parse_names(args.names))
    x_o = load_observation(observation)
    fn = load_object(args.simulator, "simulator")
    if isinstance(fn, Simulator):
        if args.batched or args.numpy:
            logger.warning("%s is a Simulator: --batched and --numpy are ignored", args.simulator)
        simulator = fn
    elif callable(fn):
        simulator = Simulator(fn, batched=args.batched, name=args.simulator, as_numpy=args.numpy)
    else:
        raise UsageError(f"simulator {args.simulator!r} is a {type(fn).__name__}, not callable")
    return Problem(args.simulator, prior, simulator, observation, x_o)


def method_options(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, set[str]]]:
    r"""The method's keyword options from ``--option`` and the shortcut flags, and for each
    top-level key the flags that set it."""
    options = parse_options(args.option)
    origins: dict[str, set[str]] = {key: {"--option"} for key in options}
    for dest, path in _SHORTCUTS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        flag = "--" + dest.replace("_", "-")
        target = options
        for key in path[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise UsageError(f"{flag} conflicts with --option {key}=...")
        if path[-1] in target:
            raise UsageError(f"{flag} and --option {'.'.join(path)} both given")
        target[path[-1]] = value
        origins.setdefault(path[0], set()).add(flag)
    return options, origins


def build_method(
    name: str,
    problem: Problem,
    options: dict[str, Any],
    origins: dict[str, set[str]],
    progress: bool,
) -> tuple[Any, dict[str, Any]]:
    r"""Build the method ``name``; an option it does not take is dropped with a warning when
    only shortcut flags set it, and is a :class:`UsageError` when ``--option`` set it.

    Returns:
        The unfitted method and the options it was built with.
    """
    if name.lower() not in available_methods():
        raise UsageError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    options = dict(options)
    while True:
        try:
            method = get_method(
                name,
                prior=problem.prior,
                simulator=problem.simulator,
                progress=progress,
                **options,
            )
            return method, options
        except TypeError as err:
            match = _UNEXPECTED.fullmatch(str(err))
            key = match.group(1) if match else None
            if key in options and "--option" not in origins.get(key, ()):
                flags = ", ".join(sorted(origins[key]))
                logger.warning("method %s does not use %s; ignored", name, flags)
                del options[key]
                continue
            if key in options:
                raise UsageError(f"method {name!r} has no option {key!r}") from err
            raise UsageError(f"method {name!r}: {err}") from err
        except ValueError as err:
            raise UsageError(f"method {name!r}: {err}") from err


def split_budget(method: Any, simulations: int, samples: int) -> int:
    r"""The training simulations of a run of ``simulations`` simulator calls in all (the rest
    goes to the method's posterior stage); a :class:`UsageError` in command-line words when
    the budget cannot cover what the method simulates besides training."""
    split = getattr(method, "split_budget", None)
    if not callable(split):
        return simulations
    try:
        return split(simulations, samples)[0]
    except ValueError as err:
        message = str(err)
        for library, cli in _CLI_WORDS:
            message = message.replace(library, cli)
        raise UsageError(message) from err


def prepare_out(path_text: str, overwrite: bool) -> Path:
    """Create the output directory; refuse a non-empty one unless ``overwrite``."""
    path = Path(path_text)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path_text!r} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UsageError(
            f"output directory {path_text!r} is not empty; pass --overwrite or choose another --out"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create output directory {path_text!r}: {err}") from err
    return path


def _status(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings of the library as one ``warning: ...`` line on stderr, like its log."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _write_plot(post: Posterior, problem: Problem, reference: Any, path: Path) -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.warning("matplotlib is not installed (pip install 'ebm_lfi[plot]'): no pair plot")
        return False
    post.plot(reference=reference, truth=problem.truth, path=path)
    return True


def process_pool(workers: int | None) -> Any:
    r"""A context of a ``ProcessPoolExecutor`` of ``workers`` processes, or of ``None`` for
    one process.

    Workers are forked where the platform allows it, so that a simulator loaded from a file
    (``path/file.py:function``) reaches them without being importable by name.
    """
    if workers is None or workers <= 1:
        return contextlib.nullcontext(None)
    methods_ = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods_ else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def run_command(args: argparse.Namespace, argv: list[str]) -> int:
    r"""Carry out ``ebm-lfi run``; returns the exit status (errors are raised)."""
    start = time.perf_counter()
    progress = bool(args.progress)  # stage lines
    bars = progress and is_terminal()  # progress bars only on a terminal
    problem = resolve_problem(args)
    reference = problem.reference
    if args.reference is not None:
        reference = load_reference(args.reference, prior_dim(problem.prior))
    options, origins = method_options(args)
    method, options = build_method(args.method, problem, options, origins, bars)
    if getattr(method, "on_error", False) is None:
        method.on_error = args.on_error  # the table, SMC-ABC and checks too
    num_training = split_budget(method, args.simulations, args.samples)
    out = prepare_out(args.out, args.overwrite)
    seeds = np.random.SeedSequence(args.seed).generate_state(3, dtype=np.uint32)
    sim_seed, fit_seed, post_seed = (int(s) for s in seeds)
    times: dict[str, float] = {}

    with process_pool(args.workers) as executor, warnings.catch_warnings():
        warnings.showwarning = _show_warning
        if executor is not None and getattr(method, "executor", False) is None:
            method.executor = executor  # the ABC stage's simulations too
        stage_share = args.simulations - num_training
        _status(
            progress,
            f"[1/4] running {num_training} training simulations of {problem.label}"
            + (f" ({stage_share} more left to the posterior stage)" if stage_share else ""),
        )
        tick = time.perf_counter()
        theta, x, info = simulate(
            problem.simulator,
            problem.prior,
            num_training,
            seed=sim_seed,
            progress=bars,
            on_error=args.on_error,
            executor=executor,
            return_info=True,
        )
        times["simulation"] = time.perf_counter() - tick
        x_shape = tuple(x.shape[1:])
        x_o = torch.as_tensor(
            match_shape(problem.x_o, x_shape, repr(problem.observation)), dtype=x.dtype
        )

        _status(progress, f"[2/4] fitting {args.method}")
        tick = time.perf_counter()
        method.fit(theta, x, seed=fit_seed)
        times["fit"] = time.perf_counter() - tick

        _status(progress, f"[3/4] sampling {args.samples} posterior draws")
        tick = time.perf_counter()
        post = method.posterior(x_o, num_samples=args.samples, seed=post_seed)
        times["posterior"] = time.perf_counter() - tick
        if executor is not None and getattr(method, "executor", None) is executor:
            method.executor = None
    stage_sims = int(post.diagnostics.get("simulations", 0) or 0)
    count_simulations(post.diagnostics, num_training, info.num_failed)

    _status(progress, f"[4/4] writing {out}")
    tick = time.perf_counter()
    files = ["samples.csv"]
    post.to_pandas().to_csv(out / "samples.csv", index=False)
    history = getattr(method, "history", None)
    if history is not None and len(history):
        history.to_csv(out / "history.csv", index=False)
        files.append("history.csv")
    if not args.no_plot and _write_plot(post, problem, reference, out / "pairplot.png"):
        files.append("pairplot.png")
    metrics = None
    if reference is not None and not args.no_metrics:
        metrics = reference_metrics(post, reference, problem.prior, seed=args.seed)
        metrics["reference"] = "task" if args.reference is None else args.reference
    times["outputs"] = time.perf_counter() - tick
    times["total"] = time.perf_counter() - start

    diagnostics, skipped = jsonable_dict(post.diagnostics)
    fit_diagnostics, fit_skipped = jsonable_dict(getattr(method, "diagnostics", None) or {})
    names = post.parameter_names
    summary: dict[str, Any] = {
        "ebm_lfi_version": __version__,
        "command": shlex.join(["ebm-lfi", *argv]),
        "task": problem.task.name if problem.task is not None else None,
        "simulator": None if problem.task is not None else args.simulator,
        "prior": repr(problem.prior) if problem.task is not None else args.prior,
        "parameter_names": names,
        "observation": problem.observation,
        "x_shape": list(x_shape),
        "method": args.method.lower(),
        "method_options": jsonable(options),
        "seed": args.seed,
        "seeds": {"simulation": sim_seed, "fit": fit_seed, "posterior": post_seed},
        "simulations": {
            "budget": args.simulations,
            "training": num_training,
            "method": stage_sims,
            "failed": int(post.diagnostics["failed_simulations"]),
            "total": int(post.diagnostics["total_simulations"]),
        },
        "wall_time_seconds": times,
        "posterior": posterior_summary(post),
        "true_parameters": None
        if problem.truth is None
        else dict(zip(names, problem.truth.double().tolist())),
        "metrics": metrics,
        "diagnostics": diagnostics,
        "fit_diagnostics": fit_diagnostics,
        "skipped_diagnostics": skipped + fit_skipped,
        "files": [*files, "summary.json"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    if progress:
        _print_summary(summary, out)
    return 0


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    post, sims = summary["posterior"], summary["simulations"]
    where = summary["task"] or summary["simulator"]
    print(
        f"{summary['method']} on {where}, observation {summary['observation']}: "
        f"{post['num_samples']} draws from {sims['total']} simulations in "
        f"{summary['wall_time_seconds']['total']:.1f} s"
    )
    truth = summary["true_parameters"]
    header = ["parameter", "mean", "sd", "5%", "95%"] + (["true"] if truth else [])
    rows = []
    for name in summary["parameter_names"]:
        cells = [post[k][name] for k in ("mean", "sd", "q05", "q95")]
        cells += [truth[name]] if truth else []
        rows.append([name, *(f"{c:.4g}" if c is not None else "nan" for c in cells)])
    print(format_table(header, rows))
    metrics = summary["metrics"]
    if metrics:
        parts = []
        if "w2" in metrics:
            parts.append(f"W2 {metrics['w2']:.4g} (prior {metrics['w2_prior']:.4g})")
        if "c2st" in metrics:
            parts.append(f"C2ST {metrics['c2st']:.3f}")
        parts.append(f"mean RMSE {metrics['mean_rmse']:.4g}")
        print("against the reference posterior: " + ", ".join(parts))
    print(f"wrote {', '.join(summary['files'])} to {out}")
