r"""The registry of inference methods: build any method by name.

Each entry is a name, a factory given as ``"module:attribute"`` (imported on first use, so that
listing the methods imports neither torch nor the methods) or as a callable, a one-line
description, and the options the name fixes (``ssm-abc`` is
:class:`~ebm_lfi.methods.EnergyABC` with ``loss="ssm"``). This module uses the standard library
only.

Example:
    >>> from ebm_lfi.methods.registry import available
    >>> "ssm-abc" in available()
    True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["register", "get", "available"]


class _Entry(NamedTuple):
    factory: str | Callable[..., Any]
    description: str
    fixed: dict[str, Any]


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, factory: str | Callable[..., Any], description: str, **fixed: Any) -> None:
    r"""Register ``factory(**fixed, **options)`` under ``name`` with a one-line description.

    Arguments:
        name: The method's name (lower case).
        factory: A callable building an unfitted method, or its ``"module:attribute"`` path
            (imported when the method is first built).
        description: One line for :func:`available` and ``ebm-lfi methods``.
        fixed: Options the name fixes; passing them to :func:`get` is an error.
    """
    if name in _REGISTRY:
        raise ValueError(f"a method named {name!r} is already registered")
    if isinstance(factory, str) and factory.count(":") != 1:
        raise ValueError(f"factory must be a callable or 'module:attribute', got {factory!r}")
    _REGISTRY[name] = _Entry(factory, description, dict(fixed))


def available() -> dict[str, str]:
    """Names of the registered methods with a one-line description each."""
    return {name: entry.description for name, entry in sorted(_REGISTRY.items())}


def get(name: str, **options: Any) -> Any:
    r"""Build the method registered as ``name``.

    Arguments:
        name: A method name, see :func:`available`.
        options: Keyword options of the method (``prior`` is required by all of them).

    Returns:
        An unfitted method with ``fit(theta, x, seed=...)`` and ``posterior(x_o, ...)``.
    """
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown method {name!r}; available methods: {known}")
    name = name.lower()
    factory, _, fixed = _REGISTRY[name]
    for key in fixed:
        if key in options:
            raise TypeError(f"method {name!r} fixes {key}={fixed[key]!r}; do not pass {key}")
    if isinstance(factory, str):
        module, attribute = factory.split(":")
        factory = getattr(importlib.import_module(module), attribute)
    method = factory(**fixed, **options)
    method.name = name
    return method


_ENERGY = "ebm_lfi.methods.energy_methods"
_BASELINES = "ebm_lfi.methods.baselines"
for _name, _factory, _description, _fixed in (
    (
        "auto",
        "ebm_lfi.methods.auto:AutoMethod",
        "the best of ssm-abc, ssm-exchange, nce, nce-abc, fp-abc, mdn by held-out posterior "
        "score (default)",
        {},
    ),
    (
        "sm-abc",
        f"{_ENERGY}:EnergyABC",
        "ABC on statistics learned by exact score matching",
        {"loss": "sm"},
    ),
    (
        "ssm-abc",
        f"{_ENERGY}:EnergyABC",
        "ABC on statistics learned by sliced score matching",
        {"loss": "ssm"},
    ),
    (
        "dsm-abc",
        f"{_ENERGY}:EnergyABC",
        "ABC on statistics learned by denoising score matching over a range of noise scales",
        {"loss": "dsm"},
    ),
    (
        "dsm-exchange",
        f"{_ENERGY}:EnergyExchange",
        "ABC at any tolerance: exchange MCMC on the noise-conditional DSM fit (Gaussian kernel)",
        {"loss": "dsm"},
    ),
    (
        "nce",
        f"{_ENERGY}:RatioPosterior",
        "NCE ratio model; its tractable posterior potential sampled by MCMC (no simulation)",
        {"loss": "nce"},
    ),
    (
        "nce-abc",
        f"{_ENERGY}:EnergyABC",
        "ABC on statistics learned by noise-contrastive ratio estimation",
        {"loss": "nce"},
    ),
    (
        "cnce-abc",
        f"{_ENERGY}:EnergyABC",
        "ABC on statistics learned by conditional NCE (Gaussian perturbations, Ceylan & Gutmann)",
        {"loss": "cnce"},
    ),
    (
        "sm-exchange",
        f"{_ENERGY}:EnergyExchange",
        "exchange MCMC with the exact-score-matching exponential family as likelihood",
        {"loss": "sm"},
    ),
    (
        "ssm-exchange",
        f"{_ENERGY}:EnergyExchange",
        "exchange MCMC with the sliced-score-matching exponential family as likelihood",
        {"loss": "ssm"},
    ),
    (
        "ml",
        f"{_ENERGY}:RatioPosterior",
        "maximum likelihood (MCMC negatives) with a normaliser head; potential sampled by MCMC",
        {"loss": "ml"},
    ),
    (
        "ml-abc",
        f"{_ENERGY}:EnergyABC",
        "ABC on statistics learned by maximum likelihood (MCMC negatives)",
        {"loss": "ml"},
    ),
    (
        "ml-exchange",
        f"{_ENERGY}:EnergyExchange",
        "exchange MCMC with the maximum-likelihood exponential family as likelihood",
        {"loss": "ml"},
    ),
    (
        "gaussian",
        f"{_ENERGY}:GaussianPosterior",
        "a learned Gaussian likelihood (the family's Gaussian member) by exact maximum "
        "likelihood; its posterior by tempered SMC",
        {},
    ),
    (
        "ssm-mdn",
        f"{_ENERGY}:EnergyDensity",
        "a mixture density of theta given statistics learned by sliced score matching",
        {"loss": "ssm"},
    ),
    (
        "nce-mdn",
        f"{_ENERGY}:EnergyDensity",
        "a mixture density of theta given statistics learned by noise-contrastive estimation",
        {"loss": "nce"},
    ),
    (
        "rejection-abc",
        f"{_BASELINES}:RejectionABC",
        "rejection ABC on the raw data or user statistics",
        {},
    ),
    (
        "fp-abc",
        f"{_BASELINES}:RegressionABC",
        "ABC on regression statistics E[theta|x] (Fearnhead & Prangle 2012)",
        {},
    ),
):
    register(_name, _factory, _description, **_fixed)
del _name, _factory, _description, _fixed
