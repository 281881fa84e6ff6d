r"""The listing commands ``ebm-lfi tasks`` and ``ebm-lfi methods``: a plain-text table or JSON.

``methods`` reads the registry's names and descriptions without importing torch; ``tasks``
imports the benchmark tasks (and torch with them) only when it runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from ..methods.registry import available as available_methods

__all__ = ["task_rows", "method_rows", "format_table", "list_tasks", "list_methods"]


def _bound(value: float) -> str:
    return f"{value:g}"


def task_rows() -> list[dict[str, object]]:
    r"""One record per benchmark task: name, parameters with their prior box, x shape,
    number of stored observations and description."""
    from ..benchmarks.tasks import available, get

    rows = []
    for name in available():
        task = get(name)
        rows.append(
            {
                "name": name,
                "parameters": {
                    p: [lo, hi] for p, lo, hi in zip(task.parameter_names, task.low, task.high)
                },
                "x_shape": list(task.x_shape),
                "observations": task.num_observations,
                "description": task.description,
            }
        )
    return rows


def method_rows() -> list[dict[str, str]]:
    """One record per registered method: name and description."""
    return [{"name": n, "description": d} for n, d in available_methods().items()]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns left-aligned to their widest cell, two spaces apart; the last column unpadded."""
    widths = [max(len(str(r[j])) for r in [header, *rows]) for j in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)


def list_tasks(as_json: bool, stream: TextIO) -> None:
    """Print the benchmark tasks to ``stream``."""
    rows = task_rows()
    if as_json:
        print(json.dumps(rows, indent=2), file=stream)
        return
    table = [
        (
            r["name"],
            ", ".join(
                f"{p} [{_bound(lo)}, {_bound(hi)}]" for p, (lo, hi) in r["parameters"].items()
            ),
            "("
            + ", ".join(str(d) for d in r["x_shape"])
            + ("," if len(r["x_shape"]) == 1 else "")
            + ")",
            str(r["observations"]),
            r["description"],
        )
        for r in rows
    ]
    header = ("TASK", "PARAMETERS [PRIOR BOX]", "X SHAPE", "OBS", "DESCRIPTION")
    print(format_table(header, table), file=stream)


def list_methods(as_json: bool, stream: TextIO) -> None:
    """Print the inference methods to ``stream``."""
    rows = method_rows()
    if as_json:
        print(json.dumps(rows, indent=2), file=stream)
        return
    table = [(r["name"], r["description"]) for r in rows]
    print(format_table(("METHOD", "DESCRIPTION"), table), file=stream)
