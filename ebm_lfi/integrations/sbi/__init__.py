r"""sbi interoperability (imported on demand: ``import ebm_lfi`` needs no sbi).

``embedding``: the statistics network as an sbi embedding net (:func:`embedding`,
:func:`parameter_embedding`) and sbi's estimators built on it. ``posterior``:
:class:`SBIPosterior`, one of our methods behind sbi's posterior interface.
"""

from .embedding import (
    ParameterEmbedding,
    StatisticsEmbedding,
    embedding,
    likelihood_estimator,
    parameter_embedding,
    posterior_estimator,
)
from .posterior import SBIPosterior

__all__ = [
    "StatisticsEmbedding",
    "ParameterEmbedding",
    "embedding",
    "parameter_embedding",
    "posterior_estimator",
    "likelihood_estimator",
    "SBIPosterior",
]
