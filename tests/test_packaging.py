r"""What an installed ``ebm_lfi`` holds and what importing it costs.

* The wheel built from the source tree holds every module of the package and the benchmark
  data (the ``.npz`` files and ``manifest.json`` of ``ebm_lfi/benchmarks/data``), byte for
  byte, so that a regular (not editable) install finds them.
* ``import ebm_lfi`` loads none of torch, the diagnostics, the integrations or the plotting
  stack; its public names load on first use from their defining modules.
* ``ebm-lfi --help`` and ``ebm-lfi methods`` run without importing torch.

Import costs are measured in fresh interpreters (``sys.modules`` of this process is shared
with the other tests).
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ebm_lfi as el

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ebm_lfi"
DATA = PACKAGE / "benchmarks" / "data"

# Stacks that `import ebm_lfi` must leave alone until a name that needs them is used.
HEAVY = (
    "torch",
    "scipy.stats",
    "matplotlib",
    "arviz",
    "pyabc",
    "sbi",
    "ebm_lfi.diagnostics",
    "ebm_lfi.integrations",
)


def _modules_after(code: str) -> tuple[set[str], str]:
    """The modules a fresh interpreter holds after running ``code``, and what it printed."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    *printed, last = done.stdout.splitlines()
    return set(json.loads(last)), "\n".join(printed)


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [n for n in names if n in modules]


def test_import_ebm_lfi_loads_no_heavy_stack():
    modules, _ = _modules_after("import ebm_lfi")
    assert _loaded(modules, HEAVY) == []


def test_cli_help_and_methods_do_not_import_torch():
    modules, printed = _modules_after("from ebm_lfi.cli import main\nassert main(['--help']) == 0")
    assert "usage: ebm-lfi" in printed
    assert _loaded(modules, HEAVY) == []

    modules, printed = _modules_after(
        "from ebm_lfi.cli import main\nassert main(['methods', '--json']) == 0"
    )
    listed = json.loads(printed)
    assert [row["name"] for row in listed] == sorted(row["name"] for row in listed)
    assert "ssm-abc" in {row["name"] for row in listed}
    assert _loaded(modules, HEAVY) == []


def test_lazy_names_come_from_their_defining_modules():
    assert set(el.__all__) <= set(dir(el))
    for name in el.__all__:
        value = getattr(el, name)
        if name in el._SUBPACKAGES:
            assert value is importlib.import_module(f"ebm_lfi.{name}")
        else:
            assert value is getattr(importlib.import_module(el._NAMES[name], "ebm_lfi"), name)
    assert set(el.__all__) == {*el._NAMES, *el._SUBPACKAGES}
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        el.nothing  # noqa: B018


def test_importing_the_infer_module_keeps_the_infer_function():
    importlib.import_module("ebm_lfi.infer")  # sets the attribute ebm_lfi.infer on first load
    assert callable(el.infer) and el.infer.__module__ == "ebm_lfi.infer"
    modules, printed = _modules_after(
        "import ebm_lfi.infer, ebm_lfi\nprint(type(ebm_lfi.infer).__name__)"
    )
    assert printed == "function"


def _source_tree(dest: Path) -> Path:
    """A copy of what the build reads, so that the build leaves the checkout untouched."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PACKAGE, dest / "ebm_lfi", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


def test_wheel_holds_every_module_and_the_benchmark_data(tmp_path):
    source = _source_tree(tmp_path / "src")
    out = tmp_path / "wheel"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--disable-pip-version-check", "-q", "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("ebm_lfi-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        modules = {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")}
        assert sorted(modules - names) == []
        data = sorted(DATA.glob("*.npz")) + [DATA / "manifest.json"]
        assert len(data) == 1 + len(el.benchmarks.available())
        for path in data:
            member = path.relative_to(ROOT).as_posix()
            assert member in names
            assert archive.read(member) == path.read_bytes(), member
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "ebm-lfi = ebm_lfi.cli:main" in archive.read(entry_points).decode()
