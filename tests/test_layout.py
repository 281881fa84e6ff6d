r"""The architecture as a test: the import graph of the package, read from its source with
:mod:`ast` (imports inside functions and under ``TYPE_CHECKING`` included), has no circle and
no import from a lower layer to a higher one; inside the package every import names the module
that defines the name (package ``__init__`` files are faces for users, not for the package);
and the package root stays small.

Layers, bottom to top (a module may import its own layer or lower ones):

==  ==========================================================================
0   ``priors``, ``metrics``, ``progress``
1   ``simulation``
2   ``energy``
3   ``losses``
4   ``training``
5   ``posterior``
6   ``samplers.mcmc``
7   ``samplers.abc``
8   ``methods``
9   ``infer``
10  ``benchmarks``, ``diagnostics``, ``integrations``
11  ``cli``
==  ==========================================================================

The samplers take structural protocols and never import the model, the losses or the fit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ebm_lfi"
LAYERS = [
    ("priors", "metrics", "progress"),
    ("simulation",),
    ("energy",),
    ("losses",),
    ("training",),
    ("posterior",),
    ("samplers.mcmc",),
    ("samplers.abc",),
    ("methods",),
    ("infer",),
    ("benchmarks", "diagnostics", "integrations"),
    ("cli",),
]
FORBIDDEN = {"samplers": ("energy", "losses", "training", "methods")}
MAX_ROOT_MODULES = 8


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        out[name] = (path, is_package)
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, names a non-module through a package face) for one module."""
    path, is_package = MODULES[name]
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, False) for a in node.names if a.name in MODULES]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source not in MODULES:
                continue
            for alias in node.names:
                child = f"{source}.{alias.name}"
                if child in MODULES:
                    found.append((child, node.lineno, False))
                else:
                    via_face = MODULES[source][1] and alias.name not in _defined(source)
                    found.append((source, node.lineno, via_face))
    return found


def _defined(name: str) -> set[str]:
    """Names a module defines itself (functions, classes, assignments) at top level."""
    out = set()
    for node in ast.parse(MODULES[name][0].read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.update(t.id for t in targets if isinstance(t, ast.Name))
    return out


def _layer(name: str) -> int | None:
    rest = name.removeprefix("ebm_lfi").lstrip(".")
    for index, members in enumerate(LAYERS):
        for member in members:
            if rest == member or rest.startswith(member + "."):
                return index
    if rest == "samplers":
        return LAYERS.index(("samplers.mcmc",))
    return None


INTERNAL = [m for m in MODULES if m != "ebm_lfi"]  # the root face is lazy and exempt


def test_every_module_has_a_layer():
    assert [m for m in INTERNAL if _layer(m) is None] == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = []
    for name in INTERNAL:
        for target, line, _ in _imports(name):
            if target.startswith(name + "."):
                continue  # a face gathering its own subpackages
            if target != "ebm_lfi" and _layer(target) > _layer(name):
                upward.append(f"{name}:{line} imports {target}")
    assert upward == []


def test_samplers_never_import_the_model_or_the_fit():
    bad = []
    for name in INTERNAL:
        for prefix, banned in FORBIDDEN.items():
            if not name.startswith(f"ebm_lfi.{prefix}"):
                continue
            for target, line, _ in _imports(name):
                if any(target.startswith(f"ebm_lfi.{b}") for b in banned):
                    bad.append(f"{name}:{line} imports {target}")
    assert bad == []


def test_inside_the_package_names_come_from_their_defining_module():
    through_faces = [
        f"{name}:{line} imports a name through the face {target}"
        for name in INTERNAL
        if not MODULES[name][1]  # faces may gather their own subpackage's names
        for target, line, via_face in _imports(name)
        if via_face
    ]
    assert through_faces == []


def test_import_graph_has_no_circle():
    graph = {m: {t for t, _, _ in _imports(m) if t != "ebm_lfi" and t != m} for m in INTERNAL}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            # a face importing its own children is the package gathering them, not a circle
            if MODULES[node][1] and nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_package_root_is_small():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


@pytest.mark.parametrize("name", sorted(INTERNAL))
def test_every_module_declares_all(name):
    path, _ = MODULES[name]
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{name} has no module docstring"
    names = [
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    ]
    if name.endswith("__main__"):
        return
    assert "__all__" in names, f"{name} has no __all__"
