"""Where the test suite's CPU time goes: a pytest plugin, and the table it leads to.

Run the suite as ``make test`` does, with the plugin loaded from this folder, then print the
table from the files it wrote (one per pytest-xdist worker)::

    PYTHONPATH=scripts .venv/bin/python -m pytest -q -n auto --dist loadgroup -p suite_profile
    .venv/bin/python scripts/suite_profile.py --summary

The plugin times, in CPU seconds of each worker process, the library functions that carry the
suite's cost (training runs, model-choice searches and their pilot runs, exchange chains, C2ST
classifiers, simulation, the maximum-likelihood normaliser regression), and for every test the
CPU seconds of its own process and of the child processes it waited for (notebook kernels,
Redis and Dask workers, command-line runs: ``RUSAGE_CHILDREN``). A function called inside
another timed one counts in both. Each worker's wall-clock timeline (when it started and
finished, its seconds inside tests, its last tests) shows whether one worker finished long
after the other, which would set the suite's time: on 2026-12-05 the two finished 7 s apart
(438 and 431 s), so the suite's time is its CPU seconds over two cores. Results go to
``SUITE_PROFILE_DIR`` (default ``outputs/suite_profile``).

Measured on the 2-core development machine (794 CPU-s in all, 6:53 of wall time; the figures
overlap):

    training runs 270 (model-choice pilots 82 of them), the two 10^4 defaults tests 169 (of
    which training 68, pilots 32, exchange chains 41), child processes 134 (notebook kernels 56,
    Redis and Dask workers about 70), exchange chains 97, ML normaliser regression 45, C2ST
    39, simulation 21
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import resource
import time
from pathlib import Path

import pytest

# (module, attribute): what is timed; a class attribute is written "Class.method"
TIMED = [
    ("ebm_lfi.training.loop", "train"),
    ("ebm_lfi.methods.fit", "train"),
    ("ebm_lfi.training.selection", "train"),
    ("ebm_lfi.training.selection", "select_model"),
    ("ebm_lfi.samplers.mcmc.exchange", "exchange_mcmc"),
    ("ebm_lfi.samplers.mcmc.driver", "sample_mcmc"),
    ("ebm_lfi.metrics", "c2st"),
    ("ebm_lfi.simulation.simulate", "simulate"),
    ("ebm_lfi.losses.maximum_likelihood", "MaximumLikelihood.fit_normalizer"),
]

_totals: dict[str, list[float]] = {}
_tests: dict[str, list[float]] = {}
_started = time.time()


def _out_dir() -> Path:
    return Path(os.environ.get("SUITE_PROFILE_DIR", "outputs/suite_profile"))


def _timed(key: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            entry = _totals.setdefault(key, [0.0, 0])
            entry[0] += time.process_time() - start
            entry[1] += 1

    wrapper.__suite_profile__ = True
    return wrapper


def pytest_configure(config):
    for module_name, attribute in TIMED:
        module = importlib.import_module(module_name)
        owner, name = module, attribute
        if "." in attribute:
            owner_name, name = attribute.split(".")
            owner = getattr(module, owner_name)
        fn = getattr(owner, name)
        if not getattr(fn, "__suite_profile__", False):  # a name imported from a timed module
            setattr(owner, name, _timed(f"{module_name.split('.')[-1]}.{attribute}", fn))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, wall = time.process_time(), time.time()
    yield
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    _tests[item.nodeid] = [time.process_time() - start, children, wall, time.time()]


def pytest_sessionfinish(session):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    out = _out_dir()
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "process": time.process_time(),
        "wall": [_started, time.time()],
        "functions": _totals,
        "tests": _tests,
    }
    (out / f"{worker}.json").write_text(json.dumps(record, indent=1))


def summary(folder: Path, top: int) -> None:
    """Print the totals of the files the plugin wrote to ``folder``."""
    functions: dict[str, list[float]] = {}
    tests: dict[str, list[float]] = {}
    process = 0.0
    timelines = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        process += record["process"]
        tests.update(record["tests"])
        if record["tests"] and "wall" in record:
            timelines[path.stem] = (record["wall"], record["tests"])
        for key, (seconds, calls) in record["functions"].items():
            entry = functions.setdefault(key, [0.0, 0])
            entry[0] += seconds
            entry[1] += calls
    children = sum(entry[1] for entry in tests.values())
    print(f"pytest processes {process:.0f} CPU-s, their child processes {children:.0f} CPU-s")
    print(f"\n{'function':50s} {'CPU-s':>8} {'calls':>7}")
    for key, (seconds, calls) in sorted(functions.items(), key=lambda kv: -kv[1][0]):
        print(f"{key:50s} {seconds:8.1f} {calls:7d}")
    print(f"\n{'test (own + children CPU-s)':100s} {'own':>7} {'child':>7}")
    ranked = sorted(tests.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))
    for nodeid, (own, child, *_) in ranked[:top]:
        print(f"{nodeid[:100]:100s} {own:7.1f} {child:7.1f}")
    _timeline(timelines)


def _timeline(timelines: dict) -> None:
    """Each worker's wall clock: when it started and finished, the time inside tests, and the
    tests it ran last (a worker that finishes long after the other sets the suite's time)."""
    if not timelines:
        return
    zero = min(wall[0] for wall, _ in timelines.values())
    print(f"\n{'worker':8s} {'start':>7} {'end':>7} {'in tests':>9}   (wall seconds)")
    for worker, (wall, tests) in sorted(timelines.items()):
        inside = sum(entry[3] - entry[2] for entry in tests.values() if len(entry) == 4)
        print(f"{worker:8s} {wall[0] - zero:7.0f} {wall[1] - zero:7.0f} {inside:9.0f}")
    for worker, (_, tests) in sorted(timelines.items()):
        timed = sorted((e[2], e[3], nodeid) for nodeid, e in tests.items() if len(e) == 4)
        print(f"\nlast tests of {worker} (start, end):")
        for start, end, nodeid in timed[-5:]:
            print(f"  {start - zero:6.0f} {end - zero:6.0f}  {nodeid[:90]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", action="store_true", help="print the table")
    parser.add_argument("--dir", type=Path, default=None, help="the plugin's output folder")
    parser.add_argument("--top", type=int, default=30, help="tests listed")
    args = parser.parse_args()
    if not args.summary:
        parser.error("run the suite with -p suite_profile first, then --summary")
    summary(args.dir or _out_dir(), args.top)


if __name__ == "__main__":
    main()
