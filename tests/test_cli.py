r"""Tests of the ``ebm-lfi`` command line: listings, real small runs, user simulators, errors.

Most tests call :func:`ebm_lfi.cli.main` in this process; two start the installed entry points
(``python -m ebm_lfi.cli`` and the console script) as real subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import ebm_lfi as el
from ebm_lfi.cli import main
from ebm_lfi.cli import run as cli_run
from ebm_lfi.cli.inputs import load_observation, match_shape, parse_options, parse_prior
from ebm_lfi.cli.parser import UsageError

# A small but real fit: training simulations, epochs, reference table and draws kept small
# (--simulations is the total: 3000 to train, 20000 for the reference table).
FAST = [
    "--simulations",
    "23000",
    "--epochs",
    "5",
    "--structure",
    "iid",
    "--num-statistics",
    "2",
    "--num-reference",
    "20000",
    "--samples",
    "500",
]

USER_MODULE = """
import os
from pathlib import Path

import numpy as np
import torch
from ebm_lfi import BoxUniform

NOISE = 0.1
prior = BoxUniform(low=[-1.0, -1.0], high=[1.0, 1.0])


def simulate(theta, rng):
    t = np.asarray(theta, dtype=float)
    return t + NOISE * rng.standard_normal(t.shape)


def simulate_batch(theta, rng):
    t = np.asarray(theta, dtype=float)
    return np.stack([row + NOISE * r.standard_normal(row.shape) for row, r in zip(t, rng)])


_RECORDED = set()


def simulate_recording(theta, rng):
    # simulate, leaving one empty file named by the id of each process that runs it in the
    # folder pids/ of the working directory (forked workers inherit it)
    pid = os.getpid()
    if pid not in _RECORDED:
        _RECORDED.add(pid)
        Path("pids", str(pid)).touch()
    return simulate(theta, rng)


def broken(theta):
    raise RuntimeError("the simulator broke\\non two lines")
"""


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    r"""A working directory holding a simulator module (a unique name per test) and the
    observation x_o = (0.3, -0.5) as .npy, .csv (with a header) and .txt files."""
    name = f"usersim_{abs(hash(str(tmp_path))):x}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    np.save(tmp_path / "x.npy", np.array([0.3, -0.5]))
    (tmp_path / "x.csv").write_text("x1,x2\n0.3,-0.5\n")
    (tmp_path / "x.txt").write_text("0.3\n-0.5\n")
    np.save(tmp_path / "x3.npy", np.zeros(3))
    monkeypatch.chdir(tmp_path)
    yield tmp_path, name
    sys.modules.pop(name, None)


# ---------------------------------------------------------------- entry points, listings


def test_console_script_and_module_run_as_subprocesses():
    module = subprocess.run(
        [sys.executable, "-m", "ebm_lfi.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert module.returncode == 0, module.stderr
    assert "usage: ebm-lfi" in module.stdout and "examples:" in module.stdout
    script = Path(sys.executable).parent / "ebm-lfi"
    if not script.exists():
        pytest.skip("the ebm-lfi console script is not installed next to this Python")
    tasks = subprocess.run([str(script), "tasks"], capture_output=True, text=True, timeout=60)
    assert tasks.returncode == 0, tasks.stderr
    for name in el.benchmarks.available():
        assert name in tasks.stdout
    bad = subprocess.run(
        [str(script), "run", "nope", "--out", "unused"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: unknown task 'nope'; available: " + ", ".join(
        el.benchmarks.available()
    )


def test_tasks_table_lists_every_task_with_its_shape_and_parameters(capsys):
    code, out, _ = run_cli(capsys, "tasks")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1 + len(el.benchmarks.available())
    for name in el.benchmarks.available():
        task = el.benchmarks.get(name)
        (line,) = [row for row in lines if row.split()[0] == name]
        assert str(tuple(task.x_shape)) in line
        assert all(p in line for p in task.parameter_names)


def test_listings_as_json_match_the_registries(capsys):
    code, out, _ = run_cli(capsys, "methods", "--json")
    assert code == 0
    assert {r["name"]: r["description"] for r in json.loads(out)} == el.methods.available()
    code, out, _ = run_cli(capsys, "tasks", "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == el.benchmarks.available()
    ma2 = next(r for r in rows if r["name"] == "ma2")
    assert ma2["x_shape"] == [100] and ma2["parameters"]["theta2"] == [0.0, 1.0]


def test_help_and_version_exit_zero(capsys):
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0
    for text in ("--simulator", "uniform(LOW1,HIGH1", "summary.json", "exit status"):
        assert text in out
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and el.__version__ in out


# ---------------------------------------------------------------- real runs


def test_run_on_a_task_writes_samples_plot_and_summary(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(
        capsys,
        "run",
        "gaussian",
        "--method",
        "ssm-abc",
        *FAST,
        "--observation",
        "2",
        "--seed",
        "1",
        "--out",
        out_dir,
    )
    assert code == 0, err
    assert "[1/4]" in err and "Simulating" not in err  # stage lines; no bars off a terminal
    assert "W2" in out

    summary = json.loads((out_dir / "summary.json").read_text())
    samples = pd.read_csv(out_dir / "samples.csv")
    names = ["mu", "sigma"]
    expected_columns = names + (["weight"] if summary["posterior"]["weighted"] else [])
    assert list(samples.columns) == expected_columns
    assert len(samples) == 500
    assert np.isfinite(samples.to_numpy()).all()
    if "weight" in samples:
        assert (samples["weight"] >= 0).all()
        assert samples["weight"].sum() == pytest.approx(1.0, abs=1e-4)

    assert summary["task"] == "gaussian" and summary["method"] == "ssm-abc"
    assert summary["observation"] == 2 and summary["seed"] == 1
    sims = summary["simulations"]
    assert sims["training"] == 3000 and sims["budget"] == 23000
    assert sims["total"] == summary["diagnostics"]["total_simulations"] == 23000 + sims["failed"]
    assert summary["wall_time_seconds"]["total"] > 0
    # The summary's posterior mean is the (weighted) mean of the written samples.
    w = samples["weight"].to_numpy() if "weight" in samples else np.full(len(samples), 1 / 500)
    for name in names:
        mean = float(np.sum(w * samples[name]) / np.sum(w))
        assert summary["posterior"]["mean"][name] == pytest.approx(mean, rel=1e-4, abs=1e-4)
        assert summary["posterior"]["sd"][name] > 0
    metrics = summary["metrics"]
    assert math.isfinite(metrics["w2"]) and metrics["w2"] >= 0
    # The fitted posterior must be far closer to the reference than the prior is.
    assert metrics["w2"] < 0.5 * metrics["w2_prior"]
    assert 0.0 <= metrics["c2st"] <= 1.0
    truth = el.benchmarks.get("gaussian").true_parameters(2)
    assert summary["true_parameters"]["mu"] == pytest.approx(float(truth[0]))

    assert (out_dir / "pairplot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = pd.read_csv(out_dir / "history.csv")
    assert len(history) == summary["diagnostics"]["training_epochs"] <= 5
    assert set(summary["files"]) == {"samples.csv", "history.csv", "pairplot.png", "summary.json"}


def test_run_reproduces_infer_and_ignores_options_a_method_does_not_use(tmp_path, capsys):
    out_dir = tmp_path / "rej"
    code, out, err = run_cli(
        capsys,
        "run",
        "gaussian",
        "--method",
        "rejection-abc",
        "--simulations",
        "7000",
        "--num-reference",
        "5000",
        "--samples",
        "200",
        "--seed",
        "3",
        "--epochs",
        "7",
        "--quiet",
        "--no-plot",
        "--no-metrics",
        "--out",
        out_dir,
    )
    assert code == 0, err
    assert out == ""
    assert err.strip() == "warning: method rejection-abc does not use --epochs; ignored"
    task = el.benchmarks.get("gaussian")
    post = el.infer(
        task.simulator,
        task.prior,
        task.observation(0),
        method="rejection-abc",
        num_simulations=7000,
        num_samples=200,
        seed=3,
        abc={"num_reference": 5000},
    )
    samples = pd.read_csv(out_dir / "samples.csv")
    np.testing.assert_allclose(samples[["mu", "sigma"]].to_numpy(), post.samples.numpy(), rtol=1e-6)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["metrics"] is None and not (out_dir / "pairplot.png").exists()
    assert summary["method_options"] == {"abc": {"num_reference": 5000}}  # --epochs dropped


def worker_pids(folder: Path) -> set[int]:
    """Ids of the processes other than this one that ran the recording simulator, emptied."""
    pids = set()
    for path in (folder / "pids").iterdir():
        pids.add(int(path.name))
        path.unlink()
    return pids - {os.getpid()}


def check_workers_ran(folder: Path, workers: int) -> None:
    """The simulations ran in worker processes: one to ``workers`` ids other than this one."""
    pids = worker_pids(folder)
    assert 1 <= len(pids) <= workers, f"simulations ran in {len(pids)} worker processes"


def test_workers_give_the_same_run_as_one_process(user_dir, capsys, monkeypatch):
    r"""--workers 2 runs the training simulations and the ABC reference table in two forked
    processes; a simulator loaded from a file reaches them and the samples are unchanged."""
    folder, name = user_dir
    (folder / "pids").mkdir()
    common = [
        "run",
        "--simulator",
        f"{folder / f'{name}.py'}:simulate_recording",
        "--prior",
        "uniform(-1,1,-1,1)",
        "--observation",
        "x.npy",
        "--method",
        "rejection-abc",
        "--simulations",
        "3300",
        "--num-reference",
        "3000",
        "--samples",
        "100",
        "--quiet",
    ]
    assert run_cli(capsys, *common, "--out", "one")[0] == 0
    assert worker_pids(folder) == set()  # one process: this one
    code, _, err = run_cli(capsys, *common, "--workers", "2", "--out", "two")
    assert code == 0, err
    check_workers_ran(folder, 2)
    one, two = (pd.read_csv(folder / d / "samples.csv") for d in ("one", "two"))
    pd.testing.assert_frame_equal(one, two)
    assert (
        json.loads((folder / "two" / "summary.json").read_text())["simulations"]["training"] == 300
    )
    # negative control: --workers silently ignored (no pool) gives the same samples, and
    # fails the check that workers ran
    monkeypatch.setattr(cli_run, "process_pool", lambda workers: contextlib.nullcontext(None))
    assert run_cli(capsys, *common, "--workers", "2", "--out", "ignored")[0] == 0
    pd.testing.assert_frame_equal(one, pd.read_csv(folder / "ignored" / "samples.csv"))
    with pytest.raises(AssertionError, match="0 worker processes"):
        check_workers_ran(folder, 2)


@pytest.mark.parametrize("form", ["module", "file"])
def test_run_with_a_user_simulator(user_dir, capsys, form):
    r"""x = theta + N(0, 0.1^2 I) with theta uniform on [-1, 1]^2: the exact posterior given
    x_o = (0.3, -0.5) is N(x_o, 0.1^2 I) (the box cuts off < 1e-6 of it), so the ABC mean
    must be within one posterior sd of x_o and the spread well below the prior's 0.58."""
    folder, name = user_dir
    if form == "module":
        spec = [
            f"--simulator={name}:simulate",
            "--prior",
            "uniform(-1,1,-1,1)",
            "--observation",
            "x.csv",
        ]
    else:  # a file path, a batched simulator and a prior object from the same file
        path = folder / f"{name}.py"
        spec = [
            "--simulator",
            f"{path}:simulate_batch",
            "--batched",
            "--prior",
            f"{path}:prior",
            "--observation",
            str(folder / "x.txt"),
        ]
    code, out, err = run_cli(
        capsys,
        "run",
        *spec,
        "--names",
        "a,b",
        "--method",
        "rejection-abc",
        "--simulations",
        "22000",
        "--num-reference",
        "20000",
        "--samples",
        "500",
        "--quiet",
        "--out",
        "res",
    )
    assert code == 0, err
    assert out == ""
    samples = pd.read_csv(folder / "res" / "samples.csv")
    assert list(samples.columns)[:2] == ["a", "b"] and len(samples) == 500
    summary = json.loads((folder / "res" / "summary.json").read_text())
    assert summary["task"] is None and summary["metrics"] is None
    assert summary["x_shape"] == [2] and summary["parameter_names"] == ["a", "b"]
    mean, sd = summary["posterior"]["mean"], summary["posterior"]["sd"]
    assert abs(mean["a"] - 0.3) < 0.1 and abs(mean["b"] + 0.5) < 0.1
    assert 0 < sd["a"] < 0.3 and 0 < sd["b"] < 0.3
    assert (folder / "res" / "pairplot.png").exists()


# ---------------------------------------------------------------- errors


def _usage_cases(name: str) -> list[tuple[list[str], int, str]]:
    user = ["--prior", "uniform(-1,1,-1,1)", "--observation", "x.npy"]
    return [
        (["run", "nope"], 2, "unknown task 'nope'"),
        (["run", "gaussian", "--method", "nope"], 2, "unknown method 'nope'"),
        (["run", "gaussian", "--observation", "100"], 2, "out of range"),
        (["run", "gaussian", "--observation", "x.npy"], 2, "shape (2,)"),
        (["run", "gaussian", "--simulator", f"{name}:simulate"], 2, "not both"),
        (["run", "gaussian", "--option", "training"], 2, "KEY=VALUE"),
        (
            ["run", "gaussian", "--method", "rejection-abc", "--option", "bogus=1"],
            2,
            "no option 'bogus'",
        ),
        (["run", "--simulator", f"{name}:simulate", "--observation", "x.npy"], 2, "--prior"),
        (
            [
                "run",
                "--simulator",
                f"{name}:simulate",
                "--prior",
                "uniform(0,1,2)",
                "--observation",
                "x.npy",
            ],
            2,
            "one pair of numbers per parameter",
        ),
        (
            [
                "run",
                "--simulator",
                f"{name}:simulate",
                "--prior",
                "uniform(1,0,0,1)",
                "--observation",
                "x.npy",
            ],
            2,
            "LOW must be below HIGH",
        ),
        (
            [
                "run",
                "--simulator",
                f"{name}:simulate",
                "--prior",
                "beta(1,2)",
                "--observation",
                "x.npy",
            ],
            2,
            "bad prior 'beta(1,2)'",
        ),
        (
            [
                "run",
                "--simulator",
                f"{name}:simulate",
                "--prior",
                f"{name}:NOISE",
                "--observation",
                "x.npy",
            ],
            2,
            "not a torch distribution",
        ),
        (
            ["run", "--simulator", f"{name}:simulate", *user[:2], "--observation", "none.npy"],
            2,
            "not found",
        ),
        (
            ["run", "--simulator", f"{name}:simulate", *user[:2], "--observation", "x.json"],
            2,
            ".npy, .csv or .txt",
        ),
        (["run", "--simulator", "no_such_module_xyz:f", *user], 2, "cannot import module"),
        (["run", "--simulator", f"{name}:nothing", *user], 2, "no attribute 'nothing'"),
        (["run", "--simulator", "missing.py:f", *user], 2, "not found"),
        (["run", "--simulator", "syntax_error.py:f", *user], 2, "SyntaxError"),
        (["run", "--simulator", f"{name}:simulate", *user, "--names", "a"], 2, "1 names"),
        (["run", "--simulator", f"{name}:simulate", *user, "--names", "a,weight"], 2, "reserved"),
    ]


@pytest.mark.parametrize("case", range(len(_usage_cases("m"))))
def test_usage_errors_are_one_line_before_anything_is_written(user_dir, capsys, case):
    folder, name = user_dir
    (folder / "syntax_error.py").write_text("def f(:\n")
    args, status, text = _usage_cases(name)[case]
    code, out, err = run_cli(capsys, *args, "--out", "never", "--quiet")
    assert code == status
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert text in err and "Traceback" not in err
    assert not (folder / "never").exists()


def test_errors_found_after_simulating_or_in_the_simulator(user_dir, capsys):
    folder, name = user_dir
    base = [
        "run",
        "--simulator",
        f"{name}:simulate",
        "--prior",
        "uniform(-1,1,-1,1)",
        "--simulations",
        "50",
        "--quiet",
    ]
    code, _, err = run_cli(capsys, *base, "--observation", "x3.npy", "--out", "o1")
    assert code == 2 and err.count("\n") == 1
    assert "has shape (3,)" in err and "shape (2,)" in err and "Traceback" not in err

    broken = [
        "run",
        "--simulator",
        f"{name}:broken",
        "--prior",
        "uniform(-1,1,-1,1)",
        "--observation",
        "x.npy",
        "--simulations",
        "20",
        "--quiet",
    ]
    code, _, err = run_cli(capsys, *broken, "--out", "o2")
    assert code == 1
    assert err.startswith("error: SimulationError") and err.count("\n") == 1
    assert "the simulator broke" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, *broken, "--out", "o3", "--debug")
    assert code == 1 and "Traceback" in err and "RuntimeError" in err
    assert err.strip().splitlines()[-1].startswith("error: SimulationError")

    (folder / "full").mkdir()
    (folder / "full" / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "run", "gaussian", "--out", "full", "--quiet")
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    assert (folder / "full" / "keep.txt").read_text() == "mine"


def test_run_scores_against_a_reference_file_and_counts_the_budget(user_dir, capsys):
    r"""``--reference FILE``: draws of the exact posterior N(x_o, 0.1^2 I) of the user
    simulator score the run (W2, C2ST in summary.json); ``--simulations`` is every simulator
    call, the reference table included; no progress bars off a terminal."""
    folder, name = user_dir
    rng = np.random.default_rng(0)
    np.save(folder / "exact.npy", np.array([0.3, -0.5]) + 0.1 * rng.standard_normal((2000, 2)))
    np.save(folder / "bad.npy", np.zeros((10, 3)))
    common = [
        "run",
        "--simulator",
        f"{name}:simulate",
        "--prior",
        "uniform(-1,1,-1,1)",
        "--observation",
        "x.npy",
        "--method",
        "rejection-abc",
        "--samples",
        "300",
        "--no-plot",
    ]
    code, _, err = run_cli(
        capsys, *common, "--simulations", "4000", "--num-reference", "2000",
        "--reference", "exact.npy", "--out", "scored",
    )  # fmt: skip
    assert code == 0, err
    assert "[1/4] running 2000 training simulations" in err and "Simulating" not in err
    summary = json.loads((folder / "scored" / "summary.json").read_text())
    metrics = summary["metrics"]
    assert metrics["reference"] == "exact.npy" and metrics["reference_samples"] == 2000
    # ABC on 2000 + 2000 simulations of a 2-d problem is close to, not at, the exact posterior;
    # the prior, 6 posterior sds wide, would be far (its W2 is about 0.8)
    assert metrics["w2"] < 0.25 * metrics["w2_prior"] and metrics["c2st"] < 0.8
    sims = summary["simulations"]
    assert sims == {"budget": 4000, "training": 2000, "method": 2000, "failed": 0, "total": 4000}
    code, _, err = run_cli(capsys, *common, "--reference", "bad.npy", "--out", "never")
    assert code == 2 and "expected posterior draws (m, 2)" in err
    code, _, err = run_cli(
        capsys, *common, "--simulations", "1000", "--num-reference", "5000", "--out", "never"
    )
    assert code == 2 and "--num-reference 5000 leaves -4000 of --simulations 1000" in err
    assert not (folder / "never").exists()


def test_errors_name_public_classes_and_command_line_options(user_dir, capsys):
    folder, _ = user_dir
    (folder / "shapes.py").write_text(
        "import numpy as np\n\n\ndef simulate(theta):\n"
        "    return np.zeros(2 if float(theta[0]) < 0 else 3)\n"
    )
    base = ["run", "--simulator", "shapes.py:simulate", "--prior", "uniform(-1,1)", "--quiet"]
    base += ["--observation", "x.npy", "--method", "rejection-abc", "--simulations", "200"]
    code, _, err = run_cli(capsys, *base, "--out", "o1")
    assert code == 1 and err.startswith("error: SimulationError: ") and err.count("\n") == 1
    assert "_SimulationShapeError" not in err and "on_error=" not in err
    assert "pass --on-error drop to drop failed simulations" in err
    # positive data over orders of magnitude are read as log x: an observation at or below 0 is
    # refused with the command line's option to fit without it
    (folder / "positive.py").write_text(
        "import numpy as np\n\n\ndef simulate(theta, rng):\n"
        "    return np.exp(4 * float(theta[0]) * np.arange(3) + rng.standard_normal(3))\n"
    )
    np.save(folder / "negative.npy", np.array([1.0, -2.0, 3.0]))
    positive = ["run", "--simulator", "positive.py:simulate", "--prior", "uniform(-1,1)"]
    positive += ["--observation", "negative.npy", "--method", "ssm-abc", "--structure", "mlp"]
    positive += ["--epochs", "1", "--simulations", "300", "--quiet", "--no-plot"]
    code, _, err = run_cli(capsys, *positive, "--out", "o2")
    assert code == 1 and "x_o[1] = -2 is outside the support (0, inf)" in err, err
    assert "pass --option x_support=null" in err and "x_support=None" not in err
    code, _, err = run_cli(capsys, *positive, "--option", "x_support=null", "--out", "o3")
    assert code == 0, err
    with pytest.raises(UsageError, match=r"fails at parameter index\(es\) \[1\] \(0-based"):
        parse_prior("uniform(0,1,1,0)")  # as BoxUniform([0, 1], [1, 0]) says "fails at [1]"
    with pytest.raises(ValueError, match=r"fails at \[1\]"):
        el.BoxUniform([0.0, 1.0], [1.0, 0.0])


def test_argparse_errors_exit_with_status_two(capsys):
    for args in (
        ["run", "gaussian", "--simulations", "0", "--out", "x"],
        ["run", "gaussian"],
        ["frobnicate"],
        [],
    ):
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and "usage:" in err and "Traceback" not in err


# ---------------------------------------------------------------- input parsing


def test_prior_grammar():
    prior = parse_prior("uniform(-1, 1, 0, 1)", ["a", "b"])
    assert isinstance(prior, el.BoxUniform)
    assert prior.low.tolist() == [-1.0, 0.0] and prior.high.tolist() == [1.0, 1.0]
    assert prior.parameter_names == ["a", "b"]
    normal = parse_prior("Normal(0, 1, 2, 3e-1)")
    assert normal.mean.tolist() == [0.0, 2.0]
    assert torch.allclose(normal.stddev, torch.tensor([1.0, 0.3]))
    for bad in ("uniform()", "uniform(0,1,2)", "uniform(0,x)", "normal(0,-1)", "uniform(0,inf)"):
        with pytest.raises(UsageError, match="bad prior"):
            parse_prior(bad)
    with pytest.raises(UsageError, match="2 names"):
        parse_prior("uniform(0,1)", ["a", "b"])


def test_options_and_observation_files(tmp_path):
    options = parse_options(
        [
            "training.epochs=5",
            "sigma=[0.1, 1.0]",
            "abc.sampler=smc",
            "loss=ssm",
            "abc.regression_adjustment=false",
        ]
    )
    assert options == {
        "training": {"epochs": 5},
        "sigma": (0.1, 1.0),
        "loss": "ssm",
        "abc": {"sampler": "smc", "regression_adjustment": False},
    }
    with pytest.raises(UsageError):
        parse_options(["abc=1", "abc.sampler=smc"])

    (tmp_path / "row.csv").write_text("1.5,2,3\n")
    (tmp_path / "matrix.txt").write_text("# a comment\n1 2\n3 4\n")
    row = load_observation(str(tmp_path / "row.csv"))
    assert match_shape(row, (3,), "row").tolist() == [1.5, 2.0, 3.0]
    assert match_shape(row, (3, 1), "row").shape == (3, 1)
    matrix = load_observation(str(tmp_path / "matrix.txt"))
    assert matrix.shape == (2, 2)
    with pytest.raises(UsageError, match=r"shape \(2, 2\)"):
        match_shape(matrix, (4,), "matrix")
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan]))
    with pytest.raises(UsageError, match="NaN"):
        load_observation(str(tmp_path / "nan.npy"))
