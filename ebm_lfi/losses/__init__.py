r"""Training losses: one small module per family, called as ``loss(model, *batch) -> scalar``.

Score matching (:mod:`.score_matching`): :class:`ScoreMatching` (exact Hyvärinen),
:class:`SlicedScoreMatching` and :class:`DenoisingScoreMatching`. Noise contrast
(:mod:`.nce`): :class:`NCE` (ratio estimation) and :class:`ConditionalNCE`. Maximum likelihood
(:mod:`.maximum_likelihood`): :class:`MaximumLikelihood`, with MCMC negatives, and
:class:`ExactLikelihood` where the normaliser is exact.

A loss may carry ``model_options``: keywords of :meth:`~ebm_lfi.ExpFamEBM.default` that the
model it trains needs (a normaliser head for NCE, a noise input for conditional DSM).
"""

from .maximum_likelihood import ExactLikelihood, MaximumLikelihood
from .nce import NCE, ConditionalNCE, cnce_noise_scale
from .score_matching import (
    DenoisingScoreMatching,
    ScoreMatching,
    SlicedScoreMatching,
    batched_score_and_hessian_diagonal,
    hessian_diagonal,
    sample_projections,
    score_and_hessian_diagonal,
)

__all__ = [
    "ScoreMatching",
    "SlicedScoreMatching",
    "DenoisingScoreMatching",
    "NCE",
    "ConditionalNCE",
    "MaximumLikelihood",
    "ExactLikelihood",
    "cnce_noise_scale",
    "score_and_hessian_diagonal",
    "batched_score_and_hessian_diagonal",
    "hessian_diagonal",
    "sample_projections",
]
