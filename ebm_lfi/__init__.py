r"""ebm_lfi: likelihood-free inference with energy-based exponential-family models."""

from .priors import BoxUniform

__all__ = ["BoxUniform"]
__version__ = "0.1.0"
