r"""The registry of inference methods: build any method by name.

Example:
    >>> import ebm_lfi as el
    >>> "ssm-abc" in el.methods.available()
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register", "get", "available"]

_REGISTRY: dict[str, tuple[Callable[..., Any], str]] = {}


def register(name: str, factory: Callable[..., Any], description: str) -> None:
    """Register ``factory(**options)`` under ``name`` with a one-line description."""
    if name in _REGISTRY:
        raise ValueError(f"a method named {name!r} is already registered")
    _REGISTRY[name] = (factory, description)


def available() -> dict[str, str]:
    """Names of the registered methods with a one-line description each."""
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}


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
    factory, _ = _REGISTRY[name.lower()]
    return factory(**options)
