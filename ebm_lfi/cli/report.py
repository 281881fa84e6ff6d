r"""What a run reports: JSON-safe diagnostics, metrics against a reference, the console summary.

Metrics (:mod:`ebm_lfi.metrics`) compare the posterior with reference samples :math:`(m, p)`:

* ``w2``: 2-Wasserstein distance, on at most :data:`W2_MAX_SAMPLES` draws of each sample (a
  random subset, weights kept; exact when both are smaller), and ``w2_prior`` the same for a
  seeded prior sample of that size, the score of not learning anything;
* ``c2st``: classifier two-sample accuracy (0.5: indistinguishable), on at most
  :data:`C2ST_MAX_SAMPLES` unweighted draws of each (a weighted posterior is resampled);
* ``mean_rmse``: root mean squared error of the posterior mean against the reference mean.

A metric whose optional dependency (POT, scikit-learn) is missing is left out and named in
``metrics["skipped"]``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import metrics as _metrics
from ..posterior.posterior import Posterior

__all__ = ["jsonable", "jsonable_dict", "posterior_summary", "reference_metrics", "W2_MAX_SAMPLES"]

logger = logging.getLogger("ebm_lfi.cli")

W2_MAX_SAMPLES = 2000
C2ST_MAX_SAMPLES = 2000
_MAX_ARRAY = 10_000  # arrays with more entries are left out of summary.json

_SKIP = object()


def jsonable(value: Any) -> Any:
    r"""``value`` as plain JSON data, or the sentinel ``_SKIP`` when it has no JSON form.

    Numbers, strings, booleans and ``None`` stay (non-finite floats become ``None``); numpy
    scalars, small arrays and tensors become numbers and lists; tuples become lists; dicts keep
    their convertible entries; a :class:`pandas.DataFrame` becomes a list of row records.
    """
    import pandas as pd

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.size > _MAX_ARRAY or value.dtype.kind not in "biuf":
            return _SKIP
        return jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        items = [jsonable(v) for v in value]
        return _SKIP if any(i is _SKIP for i in items) else items
    if isinstance(value, Mapping):
        return jsonable_dict(value)[0]
    if isinstance(value, pd.DataFrame):
        if value.size > _MAX_ARRAY:
            return _SKIP
        return jsonable(value.to_dict(orient="records"))
    if isinstance(value, pd.Series):
        return jsonable(value.to_dict())
    return _SKIP


def jsonable_dict(values: Mapping[Any, Any]) -> tuple[dict[str, Any], list[str]]:
    """The JSON-convertible entries of ``values`` (keys as strings) and the keys left out."""
    kept, skipped = {}, []
    for key, value in values.items():
        converted = jsonable(value)
        if converted is _SKIP:
            skipped.append(str(key))
        else:
            kept[str(key)] = converted
    return kept, skipped


def _by_name(names: list[str], values: Tensor | np.ndarray) -> dict[str, float | None]:
    return {n: jsonable(float(v)) for n, v in zip(names, np.asarray(values).tolist())}


def posterior_summary(post: Posterior) -> dict[str, Any]:
    r"""Size, weighting and per-parameter mean, sd and 5 / 50 / 95 % quantiles of ``post``."""
    names = post.parameter_names
    quantiles = post.quantile([0.05, 0.5, 0.95]).double().cpu().numpy()
    return {
        "num_samples": post.num_samples,
        "weighted": post.weights is not None,
        "effective_sample_size": jsonable(post.effective_sample_size),
        "mean": _by_name(names, post.mean().double().cpu().numpy()),
        "sd": _by_name(names, post.std().double().cpu().numpy()),
        "q05": _by_name(names, quantiles[0]),
        "q50": _by_name(names, quantiles[1]),
        "q95": _by_name(names, quantiles[2]),
    }


def _unweighted(post: Posterior, size: int, seed: int) -> Tensor:
    if post.weights is None:
        if post.num_samples <= size:
            return post.samples
        idx = torch.randperm(post.num_samples, generator=torch.Generator().manual_seed(seed))
        return post.samples[idx[:size]]
    return post.sample(min(size, post.num_samples), seed=seed)


def reference_metrics(post: Posterior, reference: Tensor, prior: Any, seed: int = 0) -> dict:
    r"""Scores of ``post`` against the reference sample (see the module docstring).

    Arguments:
        post: The posterior.
        reference: Reference posterior samples, shape :math:`(m, p)`.
        prior: The prior (for ``w2_prior``).
        seed: Seed of the subsets, resampling, prior sample and classifier.

    Returns:
        A dict of floats, plus ``reference_samples``, ``w2_max_samples`` and ``skipped``.
    """
    result: dict[str, Any] = {
        "reference_samples": int(reference.shape[0]),
        "w2_max_samples": W2_MAX_SAMPLES,
        "c2st_max_samples": C2ST_MAX_SAMPLES,
    }
    skipped: dict[str, str] = {}
    samples, weights = post.samples.double().cpu(), post.weights
    reference = reference.double().cpu()
    try:
        result["w2"] = _metrics.wasserstein2(
            samples, reference, weights, max_samples=W2_MAX_SAMPLES, seed=seed
        )
        with torch.random.fork_rng(devices=[]):  # a seeded prior sample, global RNG untouched
            torch.manual_seed(seed)
            prior_sample = prior.sample((W2_MAX_SAMPLES,))
        result["w2_prior"] = _metrics.wasserstein2(
            prior_sample, reference, max_samples=W2_MAX_SAMPLES, seed=seed
        )
    except ImportError as err:
        skipped["w2"] = f"needs POT ({err.name}); pip install 'ebm_lfi[metrics]'"
    try:
        draws = _unweighted(post, C2ST_MAX_SAMPLES, seed)
        result["c2st"] = _metrics.c2st(draws.double(), reference, seed=seed)
    except ImportError as err:
        skipped["c2st"] = f"needs scikit-learn ({err.name}); pip install 'ebm_lfi[metrics]'"
    result["mean_rmse"] = _metrics.posterior_mean_rmse(samples, reference, weights)
    for key, reason in skipped.items():
        logger.warning("metric %s skipped: %s", key, reason)
    result["skipped"] = skipped
    return result
