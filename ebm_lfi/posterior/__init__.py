r"""The result of inference: :class:`Posterior` (samples, weights, chains, diagnostics), its
weighted statistics, files and plots."""

from .posterior import Posterior

__all__ = ["Posterior"]
