r"""Training losses: one small module per family, called as ``loss(model, *batch) -> scalar``.

Score matching (:mod:`.score_matching`): :class:`ScoreMatching` (exact Hyvärinen),
:class:`SlicedScoreMatching` and :class:`DenoisingScoreMatching`.
"""

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
    "score_and_hessian_diagonal",
    "batched_score_and_hessian_diagonal",
    "hessian_diagonal",
    "sample_projections",
]
