r"""Reading what a user names on the command line: priors, simulators, observations, options.

Every mistake a user can make here raises :class:`~ebm_lfi.cli.parser.UsageError` with one
line that says what is wrong and what is expected; :func:`ebm_lfi.cli.main` prints it as
``error: ...`` and exits with status 2.

Prior grammar (``--prior``), case-insensitive, one pair of numbers per parameter:

* ``uniform(LOW1,HIGH1,LOW2,HIGH2,...)``: :class:`~ebm_lfi.BoxUniform` on
  :math:`\prod_i [\mathrm{LOW}_i, \mathrm{HIGH}_i]`, each ``LOW < HIGH``;
* ``normal(MEAN1,SD1,MEAN2,SD2,...)``: independent normals, each ``SD > 0``;
* ``module:object`` or ``path/file.py:object``: a ``torch.distributions.Distribution`` over
  vectors :math:`(p,)` (or a function of no arguments returning one).

Objects (``--simulator``, ``--prior``) are named ``module:attribute`` with the module importable
from the current directory, or ``path/to/file.py:attribute``; the attribute may be dotted.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributions import Distribution, Independent, Normal

from ..priors import BoxUniform, validate_prior
from .parser import UsageError

__all__ = [
    "cwd_on_path",
    "load_object",
    "parse_prior",
    "parse_names",
    "load_observation",
    "load_reference",
    "match_shape",
    "parse_options",
]

_PRIOR_GRAMMAR = (
    "expected 'uniform(LOW1,HIGH1,LOW2,HIGH2,...)', 'normal(MEAN1,SD1,...)' or "
    "'module:object' naming a torch distribution"
)
_RESERVED_NAMES = ("weight", "chain", "draw")


@contextmanager
def cwd_on_path() -> Iterator[None]:
    """Put the current directory first on ``sys.path`` for the duration of the block."""
    entry = str(Path.cwd())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _import_module(spec: str) -> Any:
    r"""Import ``spec``: a dotted module name or the path of a ``.py`` file."""
    path = Path(spec)
    if spec.endswith(".py") or path.suffix == ".py" or "/" in spec or "\\" in spec:
        if not path.is_file():
            raise UsageError(f"simulator/prior file {spec!r} not found")
        name = f"_ebm_lfi_user_{path.stem}_{abs(hash(str(path.resolve()))):x}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise UsageError(f"cannot import {spec!r} as a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module  # so that pickling and dataclasses can find it
        try:
            module_spec.loader.exec_module(module)
        except Exception as err:
            sys.modules.pop(name, None)
            raise UsageError(f"importing {spec!r} failed: {type(err).__name__}: {err}") from err
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as err:
        if err.name and spec.startswith(err.name):
            raise UsageError(
                f"cannot import module {spec!r} (not found from the current directory or "
                "the installed packages); name a file as path/to/file.py:function"
            ) from err
        raise UsageError(f"importing {spec!r} failed: {err}") from err
    except Exception as err:
        raise UsageError(f"importing {spec!r} failed: {type(err).__name__}: {err}") from err


def load_object(spec: str, what: str) -> Any:
    r"""The object named by ``module:attribute`` or ``path/file.py:attribute``.

    Arguments:
        spec: The name, split at its last colon; the attribute may be dotted (``mod:obj.fn``).
        what: What the object is for, used in messages (``"simulator"``).

    Returns:
        The object.
    """
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"{what} {spec!r} must be given as module:name or path/to/file.py:name")
    obj = _import_module(module_name)
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{module_name!r} has no attribute {attribute!r} (the {what})")
        obj = getattr(obj, part)
    return obj


def _numbers(text: str, spec: str) -> list[float]:
    values = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise UsageError(f"bad prior {spec!r}: {item.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise UsageError(f"bad prior {spec!r}: bounds and scales must be finite")
        values.append(value)
    if len(values) < 2 or len(values) % 2:
        raise UsageError(
            f"bad prior {spec!r}: needs one pair of numbers per parameter, got {len(values)} "
            "numbers"
        )
    return values


def parse_prior(spec: str, names: Sequence[str] | None = None) -> Distribution:
    r"""The prior described by ``spec`` (see the module docstring for the grammar).

    Arguments:
        spec: ``uniform(...)``, ``normal(...)`` or ``module:object``.
        names: Optional parameter names, one per parameter.

    Returns:
        A distribution over vectors :math:`(p,)`; it carries ``parameter_names`` when ``names``
        is given.
    """
    match = re.fullmatch(r"\s*(uniform|normal)\s*\((.*)\)\s*", spec, flags=re.IGNORECASE)
    if match is not None:
        kind, values = match.group(1).lower(), _numbers(match.group(2), spec)
        first, second = values[0::2], values[1::2]
        p = len(first)
        if names is not None and len(names) != p:
            raise UsageError(f"--names gives {len(names)} names for the {p} parameters of {spec!r}")
        if kind == "uniform":
            bad = [i for i in range(p) if not first[i] < second[i]]
            if bad:
                raise UsageError(
                    f"bad prior {spec!r}: LOW must be below HIGH; fails at parameter index(es) "
                    f"{bad} (0-based, as BoxUniform reports it)"
                )
            return BoxUniform(first, second, parameter_names=names)
        bad = [i for i in range(p) if not second[i] > 0]
        if bad:
            raise UsageError(
                f"bad prior {spec!r}: SD must be positive; fails at parameter index(es) {bad} "
                "(0-based)"
            )
        prior = Independent(Normal(torch.tensor(first), torch.tensor(second)), 1)
    elif ":" in spec:
        prior = load_object(spec, "prior")
        if not isinstance(prior, Distribution) and callable(prior):
            try:
                prior = prior()
            except Exception as err:
                raise UsageError(f"calling the prior factory {spec!r} failed: {err}") from err
        if not isinstance(prior, Distribution):
            raise UsageError(
                f"prior {spec!r} is a {type(prior).__name__}, not a torch distribution"
            )
        try:
            prior = validate_prior(prior)
        except (TypeError, ValueError) as err:
            raise UsageError(f"prior {spec!r}: {err}") from err
        p = int(prior.event_shape[0])
        if names is not None and len(names) != p:
            raise UsageError(f"--names gives {len(names)} names for the {p} parameters of {spec!r}")
    else:
        raise UsageError(f"bad prior {spec!r}: {_PRIOR_GRAMMAR}")
    if names is not None:
        prior.parameter_names = list(names)
    return prior


def parse_names(text: str | None) -> list[str] | None:
    """Parameter names from ``a,b,c``: non-empty, distinct, not a reserved CSV column."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if any(not n for n in names):
        raise UsageError(f"--names {text!r} has an empty name")
    if len(set(names)) != len(names):
        raise UsageError(f"--names {text!r} repeats a name")
    clash = [n for n in names if n in _RESERVED_NAMES]
    if clash:
        raise UsageError(f"--names may not use {clash}: reserved for columns of samples.csv")
    return names


def load_observation(path_text: str, what: str = "observation") -> np.ndarray:
    r"""Read an observation from a ``.npy``, ``.csv`` (commas, optional header line) or
    ``.txt`` (whitespace) file.

    Arguments:
        path_text: The file.
        what: What the file holds, for messages.

    Returns:
        The values as a float64 array (any shape; see :func:`match_shape`).
    """
    path = Path(path_text)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv", ".txt"):
        hint = " (or give a stored observation's index for a benchmark task)"
        raise UsageError(
            f"{what} file {path_text!r} must end in .npy, .csv or .txt"
            + (hint if what == "observation" else "")
        )
    if not path.is_file():
        raise UsageError(f"{what} file {path_text!r} not found")
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            delimiter = "," if suffix == ".csv" else None
            try:
                data = np.loadtxt(path, delimiter=delimiter, ndmin=1)
            except ValueError:  # a header line
                data = np.loadtxt(path, delimiter=delimiter, ndmin=1, skiprows=1)
        data = np.asarray(data, dtype=np.float64)
    except (OSError, ValueError, TypeError) as err:
        raise UsageError(f"cannot read {what} file {path_text!r}: {err}") from err
    if data.size == 0:
        raise UsageError(f"{what} file {path_text!r} holds no numbers")
    if not np.isfinite(data).all():
        raise UsageError(f"{what} file {path_text!r} holds NaN or infinite values")
    return data


def load_reference(path_text: str, num_parameters: int) -> torch.Tensor:
    r"""Reference posterior samples from a ``.npy``, ``.csv`` (commas, optional header line)
    or ``.txt`` file: one row per draw, one column per parameter.

    Arguments:
        path_text: The file.
        num_parameters: :math:`p`, the number of parameters of the prior.

    Returns:
        The draws, shape :math:`(m, p)`, float64 (a single column is accepted for
        :math:`p = 1`); a :class:`UsageError` for another shape or fewer than 2 draws.
    """
    data = load_observation(path_text, "reference")
    if data.ndim == 1 and num_parameters == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[1] != num_parameters or data.shape[0] < 2:
        raise UsageError(
            f"reference file {path_text!r} holds an array of shape {tuple(data.shape)}; "
            f"expected posterior draws (m, {num_parameters}), one row per draw and one column "
            "per parameter"
        )
    return torch.from_numpy(data)


def match_shape(x_o: np.ndarray, x_shape: tuple[int, ...], label: str) -> np.ndarray:
    r"""``x_o`` reshaped to ``x_shape`` when it holds the same entries up to axes of size 1
    (a CSV row or column for a vector); otherwise a :class:`UsageError` naming both shapes."""
    if tuple(x_o.shape) == tuple(x_shape):
        return x_o
    squeezed = tuple(d for d in x_shape if d != 1)
    if tuple(np.squeeze(x_o).shape) == squeezed:
        return x_o.reshape(x_shape)
    raise UsageError(
        f"observation {label} has shape {tuple(x_o.shape)}, but the simulator returns x of "
        f"shape {tuple(x_shape)}"
    )


def _value(text: str) -> Any:
    """A JSON value (lists become tuples), else the text itself."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text

    def tuples(v: Any) -> Any:
        if isinstance(v, list):
            return tuple(tuples(i) for i in v)
        if isinstance(v, dict):
            return {k: tuples(i) for k, i in v.items()}
        return v

    return tuples(value)


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    r"""Method options from ``KEY=VALUE`` strings; ``section.field=VALUE`` fills a nested dict
    (``training.epochs=5`` gives ``{"training": {"epochs": 5}}``). Values are read as JSON
    (numbers, ``true``, ``null``, ``[0.05, 1.0]`` as a tuple), else kept as strings."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?", key):
            raise UsageError(f"--option {item!r} must look like KEY=VALUE or SECTION.KEY=VALUE")
        value = _value(text.strip())
        if "." in key:
            section, field = key.split(".")
            target = options.setdefault(section, {})
            if not isinstance(target, dict):
                raise UsageError(f"--option {item!r}: {section!r} was already set to a value")
            target[field] = value
        else:
            if isinstance(options.get(key), dict):
                raise UsageError(f"--option {item!r}: {key!r} already has fields set")
            options[key] = value
    return options
