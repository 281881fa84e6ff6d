r"""The default method, the routes it chooses among, and sbi's NPE, NRE and sequential NPE, at equal
total budget on generic problems, against reference posteriors (C2ST).

Problems (``--problems``):

* ``counts``, ``flat``: the two simulators of a new user in ``tests/user_problems.py`` (integer
  daily case counts; 20 draws of a 2-D Student-t location model returned flat as 40 numbers),
  exact posteriors on a grid; observations from seeds 100, 101, ...
* ``two_moons``, ``slcp``: sbibm's tasks (prior :math:`U(-1, 1)^2` and :math:`U(-3, 3)^5`), their
  simulators wrapped as ours (one seeded call per simulation) and their stored reference
  posteriors, observations 1, 2, ... Needs sbibm, a benchmark-only dependency (see
  ``docs/benchmarks.md``; the script says how to install it when it is missing).
* ``ar2``, ``ma2``: the paper's time series (``el.benchmarks``), stored reference posteriors,
  observations 0, 1, ...
* ``gaussian_linear_uniform`` (not run by default): sbibm's 10-parameter linear Gaussian with a
  uniform prior, as the other sbibm tasks.

Budget. For each problem and budget :math:`n` (``--budgets``), :math:`n` pairs are simulated
once and every method is fitted on exactly those: nothing is simulated after (the ABC rows use
the training pairs as their table, the exchange sampler runs without its simulator check, sbi
spends none at posterior time). ``total_simulations`` in the CSV is :math:`n` plus whatever a
posterior reported simulating (0 everywhere, or the row says so).

Methods (``--methods``):

* ``auto``: ``el.methods.get("auto")`` with its defaults. Its fit also yields every route it
  scored, fitted on its training part (all but the held-out 10 %) and with the number of ABC
  entries it chose: those are the rows ``auto:<route>`` (``ssm-abc``, ``nce``, ``nce-abc``,
  ``ssm-exchange`` where scored, ``ssm-abc-reshaped`` on flat data that factors into draws,
  ``mdn``),
  with the route's held-out score in ``score``; ``auto`` itself is the chosen one.
* ``ssm-mdn``, ``nce-mdn`` (not run by default): the density stage on the stand-alone fits.
* ``ml``, ``ml-abc`` (not run by default): maximum likelihood with MCMC negatives
  (:mod:`ebm_lfi.losses.maximum_likelihood`), its potential MCMC and its ABC route.
* ``ssm-abc``, ``nce``, ``nce-abc``, ``ssm-exchange``: the same routes as stand-alone methods
  with their defaults, fitted on all :math:`n` pairs (``ssm-exchange`` shares the ``ssm-abc``
  fit).
* ``npe``, ``nre``: sbi's defaults on the raw data (``scripts/sbi_baselines.py``).
* ``<route>-rounds`` (not run by default), for each of our routes valid in sequential rounds
  (:data:`ebm_lfi.methods.rounds.ROUND_METHODS`: ``nce-rounds``, ``ssm-exchange-rounds``,
  ``ml-rounds``, ...): ``el.infer(..., rounds=--rounds)`` for each observation, the route
  created without a simulator as the stand-alone rows are; ``--rounds auto`` (default) takes
  :func:`~ebm_lfi.methods.rounds.default_rounds` (4 rounds at 10^3, 8 at 10^4).
* ``snpe`` (not run by default): sbi's sequential NPE with truncated proposals for each
  observation, in ``--snpe-rounds`` (4) rounds of equal size (``scripts/sbi_baselines.py``).

The sequential rows (``*-rounds``, ``snpe``) simulate their own :math:`n` pairs per
observation, round after round (round 1 from the prior with a seed of their own), so they do
not share the others' training set; ``fit_seconds`` is then the whole run for that observation
(all rounds' simulations, fits and posteriors), ``posterior_seconds`` is empty, and ``note``
gives the rounds and their sizes.

Each row (problem, budget, observation, method) is appended to ``--out`` (a CSV) as soon as it
is computed, and rows already there are skipped: an interrupted run resumes where it stopped.
A method whose fit or posterior raises gets a row with the error in ``note`` (delete the row to
retry). At the end (or with ``--summary``, which runs nothing) the mean C2ST over observations
is printed per problem and budget, with the route ``auto`` chose, its margin to the best of
our routes and to NPE, and seconds per fit and per posterior.

    python scripts/bench_generic.py --out outputs/bench_generic/results.csv
    python scripts/bench_generic.py --problems counts flat --budgets 10000 --methods auto nce
    python scripts/bench_generic.py --summary --out outputs/bench_generic/results.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import ebm_lfi as el  # noqa: E402
from ebm_lfi.methods import EnergyExchange  # noqa: E402
from ebm_lfi.methods.rounds import ROUND_METHODS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
import check_fresh  # noqa: E402
from sbi_baselines import NPEBaseline, NREBaseline, SNPEBaseline  # noqa: E402
from user_problems import PROBLEMS as USER_PROBLEMS  # noqa: E402

SBIBM_INSTALL = (
    "pip install --no-deps sbibm==1.1.0 && pip install pyro-ppl "
    "(with torch pinned, e.g. -c constraints.txt)"
)
ALL_PROBLEMS = ("counts", "flat", "two_moons", "slcp", "ma2", "ar2", "gaussian_linear_uniform")
DEFAULT_PROBLEMS = ALL_PROBLEMS[:-1]
SBIBM_PROBLEMS = {"two_moons", "slcp", "gaussian_linear_uniform"}
OUR_ROUTES = (
    "ssm-abc",
    "nce",
    "nce-abc",
    "ssm-exchange",
    "ssm-mdn",
    "nce-mdn",
    "ml",
    "ml-abc",
    "gaussian",
)
ROUNDS_SUFFIX = "-rounds"
ROUND_ROUTES = tuple(f"{m}{ROUNDS_SUFFIX}" for m in OUR_ROUTES if m in ROUND_METHODS)
ALL_METHODS = ("auto", *OUR_ROUTES, *ROUND_ROUTES, "npe", "nre", "snpe")
DEFAULT_METHODS = ("auto", "ssm-abc", "nce", "nce-abc", "ssm-exchange", "npe", "nre")
COLUMNS = [
    "problem",
    "budget",
    "observation",
    "method",
    "route",
    "c2st",
    "w2",
    "score",
    "chosen",
    "fit_seconds",
    "posterior_seconds",
    "total_simulations",
    "note",
]
NUM_SAMPLES = 1000
AUTO_ROUTES: tuple[str, ...] = ()  # AutoConfig.routes of the auto rows (--auto-routes)
REFERENCE_SAMPLES = 2000  # of the reference, for W2 (C2ST subsamples it to NUM_SAMPLES)


@dataclass
class Problem:
    """A prior, a simulator and, per observation index, the data and reference draws."""

    name: str
    prior: torch.distributions.Distribution
    simulator: el.Simulator
    observation: Callable[[int], tuple[str, torch.Tensor, torch.Tensor]]


def user_problem(name: str) -> Problem:
    """``counts`` or ``flat`` of ``tests/user_problems.py``: observation ``i`` from seed
    ``100 + i``, its exact posterior by grid (2,000 draws)."""
    prob = USER_PROBLEMS[name]

    def observation(i: int):
        seed = 100 + i
        _, x_o = prob.observation(seed)
        return str(seed), x_o, prob.reference(x_o)

    return Problem(name, prob.prior, el.Simulator(prob.simulator), observation)


def import_sbibm(name: str):
    """sbibm, or a clear exit naming the install command."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import sbibm
    except ImportError as err:
        raise SystemExit(
            f"problem {name!r} needs sbibm, a benchmark-only dependency, which is not "
            f"installed ({err}). Install it with: {SBIBM_INSTALL}"
        ) from None
    return sbibm


def sbibm_problem(name: str) -> Problem:
    """An sbibm task as a box-uniform prior and one of our simulators (sbibm's simulator run
    once per simulation, seeded through the global torch RNG); observation ``i`` is sbibm's
    ``i + 1`` with its stored reference posterior."""
    task = import_sbibm(name).get_task(name)
    box = task.get_prior_dist().base_dist  # Independent(Uniform(low, high), 1) in sbibm
    prior = el.BoxUniform(box.low.tolist(), box.high.tolist())
    simulate = task.get_simulator()

    def simulator(theta):
        return simulate(torch.as_tensor(theta).reshape(1, -1).float())[0]

    simulator.__name__ = f"sbibm_{name}"

    def observation(i: int):
        number = i + 1
        if number > task.num_observations:
            raise SystemExit(f"sbibm's {name} has {task.num_observations} observations")
        x_o = task.get_observation(number)[0]
        return str(number), x_o, task.get_reference_posterior_samples(number)

    return Problem(name, prior, el.Simulator(simulator, batched=False), observation)


def paper_problem(name: str) -> Problem:
    """A task of ``el.benchmarks`` (``ar2``, ``ma2``) with its stored reference posteriors."""
    task = el.benchmarks.get(name)

    def observation(i: int):
        return str(i), task.observation(i), task.reference_posterior(i)

    return Problem(name, task.prior, task.simulator, observation)


def load_problem(name: str) -> Problem:
    if name in USER_PROBLEMS:
        return user_problem(name)
    if name in SBIBM_PROBLEMS:
        return sbibm_problem(name)
    return paper_problem(name)


def problem_and_observations(name: str) -> tuple:
    """The prior, the simulator and two (observation, reference draws) pairs of a problem of
    this script or of ``scripts/check_fresh.py`` (for the scripts that compare settings on
    both)."""
    if name in check_fresh.PROBLEMS:
        problem = check_fresh.PROBLEMS[name]
        return problem.prior, problem.simulator, check_fresh.observations(problem)
    problem = load_problem(name)
    return problem.prior, problem.simulator, [problem.observation(i)[1:] for i in range(2)]


# ---------------------------------------------------------------------------------- results


def read_done(path: Path) -> set[tuple[str, int, str, str]]:
    """The (problem, budget, observation, method) keys already in the CSV."""
    if not path.exists():
        return set()
    table = pd.read_csv(path, dtype={"observation": str})
    return {
        (p, int(b), str(o), m)
        for p, b, o, m in zip(table.problem, table.budget, table.observation, table.method)
    }


def append_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k) for k in COLUMNS})


def draws(post) -> torch.Tensor:
    """Unweighted posterior draws (weighted ABC posteriors resampled)."""
    samples = post.sample(NUM_SAMPLES, seed=0) if post.weights is not None else post.samples
    return samples.double()


def accuracy(samples: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """C2ST and W2 of ``samples`` against the reference draws."""
    ref = reference.double()
    c2st = el.metrics.c2st(samples, ref, seed=0)
    gen = torch.Generator().manual_seed(0)
    ref_w2 = ref[torch.randperm(ref.shape[0], generator=gen)[:REFERENCE_SAMPLES]]
    return c2st, el.metrics.wasserstein2(samples, ref_w2)


def posterior_row(method, x_o, reference, seed: int) -> dict:
    """Draw the posterior of ``x_o``, time it and score it."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = method.posterior(x_o, NUM_SAMPLES, seed=seed)
    seconds = time.perf_counter() - start
    c2st, w2 = accuracy(draws(post), reference)
    simulations = int(post.diagnostics.get("simulations", 0) or 0)
    return {
        "c2st": c2st,
        "w2": w2,
        "posterior_seconds": seconds,
        "route": post.diagnostics.get("route"),
        "stage_simulations": simulations,
    }


def sequential(method_name: str) -> bool:
    """Whether the method runs its own rounds of simulations per observation."""
    return method_name == "snpe" or method_name.endswith(ROUNDS_SUFFIX)


def print_row(row: dict) -> None:
    print(
        f"{row['problem']:>9} {row['budget']:>6} obs {row['observation']:>3} "
        f"{row['method']:>22}: "
        f"C2ST {row.get('c2st', math.nan):.3f}  W2 {row.get('w2', math.nan):.3f}  "
        f"fit {row.get('fit_seconds') or math.nan:.0f} s  "
        f"posterior {row.get('posterior_seconds', math.nan):.1f} s"
        + (f"  [{row['note']}]" if row.get("note") else ""),
        flush=True,
    )


# ---------------------------------------------------------------------------------- running


def run_problem(name: str, args, done: set, out: Path) -> None:
    problem = load_problem(name)
    observations = [problem.observation(i) for i in range(args.observations)]
    for budget in args.budgets:
        todo = [
            m
            for m in args.methods
            if any((name, budget, label, m) not in done for label, _, _ in observations)
        ]
        if not todo:
            print(f"{name} {budget}: done", flush=True)
            continue
        for method_name in [m for m in todo if sequential(m)]:
            run_sequential(problem, budget, method_name, observations, args, out)
            done |= read_done(out)
        todo = [m for m in todo if not sequential(m)]
        if not todo:
            continue
        start = time.perf_counter()
        theta, x = el.simulate(problem.simulator, problem.prior, budget, seed=args.seed)
        if theta.shape[0] != budget:
            raise RuntimeError(f"{name}: simulated {theta.shape[0]} pairs, asked for {budget}")
        print(
            f"{name} {budget}: simulated {tuple(x.shape)} in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        fitted: dict[str, tuple[object, float]] = {}
        for method_name in todo:
            run_method(problem, budget, method_name, theta, x, observations, fitted, args, out)
            done |= read_done(out)


def fit_method(problem: Problem, method_name: str, theta, x, fitted: dict, seed: int):
    """The fitted method and its fit seconds (``ssm-exchange`` reuses ``ssm-abc``'s fit)."""
    if method_name in fitted:
        return fitted[method_name]
    start = time.perf_counter()
    if method_name == "ssm-exchange":
        abc, seconds = fit_method(problem, "ssm-abc", theta, x, fitted, seed)
        fitted[method_name] = (EnergyExchange.from_fitted(abc), seconds)
        return fitted[method_name]
    if method_name == "npe":
        method = NPEBaseline(problem.prior)
    elif method_name == "nre":
        method = NREBaseline(problem.prior)
    elif method_name == "auto" and AUTO_ROUTES:
        method = el.methods.get("auto", prior=problem.prior, config={"routes": AUTO_ROUTES})
    else:
        method = el.methods.get(method_name, prior=problem.prior)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method.fit(theta, x, seed=seed)
    fitted[method_name] = (method, time.perf_counter() - start)
    return fitted[method_name]


def sequential_posterior(problem: Problem, method_name: str, budget: int, x_o, seed: int, args):
    """The posterior of a sequential method for one observation, all rounds run for it."""
    if method_name == "snpe":
        snpe = SNPEBaseline(problem.prior, rounds=args.snpe_rounds)
        return snpe.infer(problem.simulator, x_o, budget, NUM_SAMPLES, seed=seed)
    route = method_name.removesuffix(ROUNDS_SUFFIX)
    return el.infer(
        problem.simulator,
        problem.prior,
        x_o,
        method=el.methods.get(route, prior=problem.prior),  # no simulator: no exchange check
        num_simulations=budget,
        num_samples=NUM_SAMPLES,
        seed=seed,
        rounds=args.rounds,
    )


def run_sequential(problem: Problem, budget: int, method_name: str, observations, args, out):
    """Rows of a method that simulates in rounds for each observation (resumable per row)."""
    done = read_done(out)
    for label, x_o, reference in observations:
        if (problem.name, budget, label, method_name) in done:
            continue
        row = {"problem": problem.name, "budget": budget, "observation": label}
        row["method"] = method_name
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                post = sequential_posterior(
                    problem, method_name, budget, x_o, int(label) + 1000 * args.seed, args
                )
            c2st, w2 = accuracy(draws(post), reference)
        except Exception as err:  # noqa: BLE001 - reported in the table
            row.update(fit_seconds=time.perf_counter() - start, note=repr(err))
        else:
            rounds = post.diagnostics.get("rounds") or [{"simulations": budget}]
            sizes = [int(r["simulations"]) for r in rounds]
            row.update(
                c2st=c2st,
                w2=w2,
                route=post.diagnostics.get("route", method_name.removesuffix(ROUNDS_SUFFIX)),
                fit_seconds=time.perf_counter() - start,
                total_simulations=int(post.diagnostics.get("total_simulations", budget)),
                note=f"{len(sizes)} rounds of {'/'.join(map(str, sorted(set(sizes))))}; "
                "fit_seconds: all rounds",
            )
        append_row(out, row)
        print_row(row)


def run_method(problem, budget, method_name, theta, x, observations, fitted, args, out) -> None:
    name = problem.name
    base = {"problem": name, "budget": budget}
    try:
        method, fit_seconds = fit_method(problem, method_name, theta, x, fitted, args.seed)
    except Exception as err:  # noqa: BLE001 - reported in the table
        print(f"{name} {budget} {method_name}: fit failed: {err!r}", flush=True)
        for label, _, _ in observations:
            row = {**base, "observation": label, "method": method_name, "note": repr(err)}
            append_row(out, row)
        return
    done = read_done(out)
    if method_name == "auto":
        print(f"{name} {budget}: auto chose {method.chosen}\n{method.table.to_string()}")
        table = method.table.set_index("route")
    for label, x_o, reference in observations:
        if (name, budget, label, method_name) in done:
            continue
        seed = int(label)
        rows = []
        variants = [(method_name, method, fit_seconds)]
        if method_name == "auto":  # the routes first, the auto row last (it marks them done)
            variants = [
                (f"auto:{route}", route_method, float(table.loc[route, "fit_seconds"]))
                for route, route_method in method.routes.items()
            ] + variants
        results: dict[int, dict | Exception] = {}  # by id of the method: auto is a route
        for row_name, row_method, seconds in variants:
            row = {**base, "observation": label, "method": row_name, "fit_seconds": seconds}
            if id(row_method) not in results:
                try:
                    results[id(row_method)] = posterior_row(row_method, x_o, reference, seed)
                except Exception as err:  # noqa: BLE001 - reported in the table
                    results[id(row_method)] = err
            result = results[id(row_method)]
            if isinstance(result, Exception):
                row["note"] = repr(result)
            else:
                result = dict(result)
                stage = result.pop("stage_simulations")
                row.update(result, total_simulations=budget + stage)
                if stage:
                    row["note"] = f"the posterior simulated {stage} more"
            if row_name.startswith("auto"):
                route = row_name.split(":", 1)[1] if ":" in row_name else method.chosen
                row["route"] = route
                row["score"] = float(table.loc[route, "score"])
                row["chosen"] = route == method.chosen
                if row_name == "auto":
                    row["fit_seconds"] = fit_seconds
            rows.append(row)
        for row in rows:
            append_row(out, row)
            print_row(row)


# ---------------------------------------------------------------------------------- summary


def show(frame: pd.DataFrame, markdown: bool) -> str:
    """A table as text, or as Markdown (needs ``tabulate``)."""
    return frame.reset_index().to_markdown(index=False) if markdown else frame.to_string()


def summary(out: Path, markdown: bool = False) -> pd.DataFrame:
    """Mean C2ST per problem, budget and method; auto's choice and margins."""
    table = pd.read_csv(out, dtype={"observation": str})
    c2st = table.pivot_table(
        index=["problem", "budget"], columns="method", values="c2st", aggfunc="mean"
    )
    order = [m for m in ALL_METHODS if m in c2st] + sorted(m for m in c2st if m.startswith("auto:"))
    c2st = c2st[order]
    counts = table.pivot_table(
        index=["problem", "budget"], columns="method", values="c2st", aggfunc="count"
    )
    print("\nMean C2ST over observations (0.5: indistinguishable from the reference)")
    print(show(c2st.round(3), markdown))
    print("\nObservations per cell:", sorted({int(v) for v in counts.to_numpy().ravel() if v > 0}))
    auto = table[table.method == "auto"]
    chosen = auto.groupby(["problem", "budget"])["route"].agg(lambda r: ", ".join(r))
    ours = [m for m in c2st if m in OUR_ROUTES + ROUND_ROUTES or m.startswith("auto:")]
    verdict = pd.DataFrame({"auto chose": chosen})
    if "auto" in c2st and ours:
        best = c2st[ours].min(axis=1)
        verdict["best of our routes"] = c2st[ours].idxmin(axis=1) + " " + best.round(3).astype(str)
        verdict["auto - best"] = (c2st["auto"] - best).round(3)
        verdict["within 0.03"] = (c2st["auto"] - best) <= 0.03
    if "auto" in c2st and "npe" in c2st:
        verdict["auto - npe"] = (c2st["auto"] - c2st["npe"]).round(3)
    print("\n" + show(verdict, markdown))
    seconds = table.groupby(["problem", "budget", "method"]).agg(
        fit_seconds=("fit_seconds", "mean"), posterior_seconds=("posterior_seconds", "median")
    )
    seconds = seconds.reset_index()
    seconds = seconds[~seconds.method.str.startswith("auto:")]
    fit = seconds.pivot_table(index=["problem", "budget"], columns="method", values="fit_seconds")
    post = seconds.pivot_table(
        index=["problem", "budget"], columns="method", values="posterior_seconds"
    )
    print("\nFit seconds (once per problem and budget; sequential rows: per observation)")
    print(show(fit[[m for m in ALL_METHODS if m in fit]].round(0), markdown))
    print("\nPosterior seconds per observation (median)")
    print(show(post[[m for m in ALL_METHODS if m in post]].round(2), markdown))
    if {"auto", "ssm-abc"} <= set(fit):
        n = table.groupby(["problem", "budget"])["observation"].nunique()
        cost = (fit["auto"] + n * post["auto"]) / (fit["ssm-abc"] + n * post["ssm-abc"])
        print("\nauto's cost relative to ssm-abc (fit plus posteriors)")
        print(show(cost.round(2).to_frame("cost"), markdown))
    return c2st


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--problems", nargs="+", default=list(DEFAULT_PROBLEMS), choices=ALL_PROBLEMS
    )
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=ALL_METHODS)
    parser.add_argument("--budgets", nargs="+", type=int, default=[1_000, 10_000])
    parser.add_argument("--observations", type=int, default=2, help="per problem (the first N)")
    parser.add_argument("--seed", type=int, default=0, help="of the simulations and the fits")
    parser.add_argument(
        "--rounds",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="rounds of the *-rounds methods: an int or 'auto' (default)",
    )
    parser.add_argument("--snpe-rounds", type=int, default=4, help="rounds of snpe")
    parser.add_argument(
        "--auto-routes", nargs="+", default=None, help="AutoConfig.routes (default: its own)"
    )
    parser.add_argument("--out", default="outputs/bench_generic/results.csv")
    parser.add_argument("--summary", action="store_true", help="only print the tables")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = parser.parse_args(argv)
    global AUTO_ROUTES
    AUTO_ROUTES = tuple(args.auto_routes or ())
    out = Path(args.out)
    if not args.summary:
        torch.set_num_threads(1)
        np.seterr(all="ignore")
        out.parent.mkdir(parents=True, exist_ok=True)
        for name in SBIBM_PROBLEMS & set(args.problems):  # fail before hours of the others
            import_sbibm(name)
        done = read_done(out)
        for name in args.problems:
            run_problem(name, args, done, out)
    summary(out, markdown=args.markdown)


if __name__ == "__main__":
    main()
