r"""The ``.npz`` file format of :meth:`ebm_lfi.Posterior.save` and :meth:`~ebm_lfi.Posterior.load`.

A file is a numpy ``.npz`` archive that loads with ``allow_pickle=False``. It holds

* ``samples``, shape :math:`(n, p)` in its own dtype (chains flattened chain by chain);
* ``weights``, shape :math:`(n,)`, when the sample is weighted;
* ``diagnostic_<k>`` (and ``diagnostic_<k>_<j>`` for the columns of a DataFrame) for the
  array-valued diagnostics;
* ``metadata``, a JSON string with ``format`` (``"ebm_lfi.Posterior"``), ``version``,
  ``parameter_names``, ``method``, ``chains_shape`` (:math:`[c, d, p]` or ``null``), the
  JSON-representable ``diagnostics``, the encodings of the array-valued ones
  (``diagnostic_arrays``) and the original order of the keys (``diagnostic_order``).

Diagnostics may be numbers, strings, ``None``, lists / dicts of those, numpy arrays, torch
tensors or pandas DataFrames of numeric columns; any other value is skipped with a warning.
This module knows nothing of :class:`ebm_lfi.Posterior`: it writes the fields given to it and
reads them back as the posterior's constructor arguments.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["FORMAT", "FORMAT_VERSION", "read_npz", "write_npz"]

FORMAT = "ebm_lfi.Posterior"
FORMAT_VERSION = 1


def write_npz(
    path: str | os.PathLike,
    samples: Tensor,
    weights: Tensor | None,
    parameter_names: Sequence[str],
    method: str | None,
    chains_shape: Sequence[int] | None,
    diagnostics: Mapping[Any, Any],
) -> None:
    r"""Writes a posterior's fields to a ``.npz`` file exactly at ``path``.

    Arguments:
        path: The file (no extension is added).
        samples: Draws, shape :math:`(n, p)`.
        weights: Weights, shape :math:`(n,)`, or ``None``.
        parameter_names: The :math:`p` names.
        method: Name of the method, or ``None``.
        chains_shape: :math:`(c, d, p)` when the draws are chains, else ``None``.
        diagnostics: Diagnostics; unsupported values are skipped with a ``UserWarning``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = os.path.join(d, "post.npz")
        ...     write_npz(path, torch.zeros(3, 2), None, ["a", "b"], "m", None, {"n": 3})
        ...     fields = read_npz(path)
        >>> fields["parameter_names"], fields["diagnostics"]
        (['a', 'b'], {'n': 3})
    """
    arrays: dict[str, np.ndarray] = {"samples": samples.cpu().numpy()}
    if weights is not None:
        arrays["weights"] = weights.cpu().numpy()
    diag_json: dict[str, Any] = {}
    diag_arrays: dict[str, str] = {}
    for key, value in diagnostics.items():
        key = str(key)
        encoded = _encode_diagnostic(key, value, arrays, len(diag_arrays))
        if encoded is None:
            continue
        kind, payload = encoded
        if kind == "json":
            diag_json[key] = payload
        else:
            diag_arrays[key] = payload
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "parameter_names": list(parameter_names),
        "method": method,
        "chains_shape": None if chains_shape is None else list(chains_shape),
        "diagnostics": diag_json,
        "diagnostic_arrays": diag_arrays,
        "diagnostic_order": [
            k for k in map(str, diagnostics) if k in diag_json or k in diag_arrays
        ],
    }
    arrays["metadata"] = np.array(json.dumps(meta))
    with open(os.fspath(path), "wb") as f:
        np.savez(f, **arrays)


def read_npz(
    path: str | os.PathLike, *, device: torch.device | str | None = None
) -> dict[str, Any]:
    r"""Reads a file written by :func:`write_npz` (no pickle involved).

    Arguments:
        path: The file.
        device: Where to put the tensors, default the CPU.

    Returns:
        The keyword arguments of :class:`ebm_lfi.Posterior`: ``samples`` (``None`` when the
        draws are chains), ``weights`` (exactly as stored, or ``None``), ``parameter_names``,
        ``chains`` (shape :math:`(c, d, p)`, or ``None``), ``diagnostics`` and ``method``.

    Raises:
        ValueError: If the file is not a saved posterior or has a newer format version.
    """
    with np.load(os.fspath(path), allow_pickle=False) as data:
        if "metadata" not in data.files:
            raise ValueError(f"{os.fspath(path)} is not a saved ebm_lfi Posterior")
        meta = json.loads(str(data["metadata"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{os.fspath(path)} is not a saved ebm_lfi Posterior")
        if int(meta.get("version", 0)) > FORMAT_VERSION:
            raise ValueError(
                f"file format version {meta['version']} is newer than this library's "
                f"{FORMAT_VERSION}"
            )
        samples = torch.from_numpy(data["samples"].copy())
        weights = torch.from_numpy(data["weights"].copy()) if "weights" in data.files else None
        diagnostics = dict(meta["diagnostics"])
        for key, spec in meta["diagnostic_arrays"].items():
            diagnostics[key] = _decode_diagnostic(spec, data)
        order = meta.get("diagnostic_order", list(diagnostics))
        diagnostics = {key: diagnostics[key] for key in order}
    if device is not None:
        samples = samples.to(device)
        weights = None if weights is None else weights.to(device)
    chains = None
    if meta["chains_shape"] is not None:
        chains = samples.reshape(meta["chains_shape"])
        samples = None
    return {
        "samples": samples,
        "weights": weights,
        "parameter_names": meta["parameter_names"],
        "chains": chains,
        "diagnostics": diagnostics,
        "method": meta["method"],
    }


def _encode_diagnostic(
    key: str, value: Any, arrays: dict[str, np.ndarray], index: int
) -> tuple[str, Any] | None:
    r"""Encode one diagnostic as JSON or as arrays added to ``arrays``; ``None`` to skip."""
    prefix = f"diagnostic_{index}"
    if isinstance(value, Tensor):
        arrays[prefix] = value.detach().cpu().numpy()
        return "array", {"type": "tensor", "arrays": [prefix]}
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        arrays[prefix] = value
        return "array", {"type": "ndarray", "arrays": [prefix]}
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return "json", value.item()
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(value, pd.DataFrame):
        if all(value[c].dtype.kind in "biuf" for c in value.columns):
            names = []
            for j, column in enumerate(value.columns):
                arrays[f"{prefix}_{j}"] = value[column].to_numpy()
                names.append(f"{prefix}_{j}")
            columns = [str(c) for c in value.columns]
            return "array", {"type": "dataframe", "arrays": names, "columns": columns}
    try:
        text = json.dumps(value)
        if json.dumps(json.loads(text)) == text:  # tuples come back as lists
            return "json", json.loads(text)
    except (TypeError, ValueError):
        pass
    warnings.warn(
        f"diagnostic {key!r} of type {type(value).__name__} cannot be saved and is skipped",
        UserWarning,
        stacklevel=4,  # _encode_diagnostic -> write_npz -> Posterior.save -> the caller
    )
    return None


def _decode_diagnostic(spec: dict[str, Any], data: Any) -> Any:
    r"""Decode one array-valued diagnostic from its ``spec`` and the open archive ``data``."""
    kind = spec["type"]
    if kind == "tensor":
        return torch.from_numpy(data[spec["arrays"][0]].copy())
    if kind == "ndarray":
        return data[spec["arrays"][0]].copy()
    if kind == "dataframe":
        import pandas as pd

        columns = {c: data[a].copy() for c, a in zip(spec["columns"], spec["arrays"])}
        return pd.DataFrame(columns)
    raise ValueError(f"unknown diagnostic encoding {kind!r}")
