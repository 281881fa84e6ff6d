r"""ABC on statistics: rejection on a reference table (:func:`rejection_abc`), SMC-ABC
(:func:`smc_abc`), the per-statistic scaling of the distance (:class:`StatisticScaler`) and the
local-linear regression adjustment (:func:`regression_adjustment`)."""

from .adjustment import AdjustmentResult, epanechnikov_weights, regression_adjustment
from .rejection import RejectionABCResult, auto_num_accepted, rejection_abc, systematic_resample
from .scaler import StatisticScaler
from .smc import SMCABCResult, smc_abc

__all__ = [
    "AdjustmentResult",
    "RejectionABCResult",
    "SMCABCResult",
    "StatisticScaler",
    "auto_num_accepted",
    "epanechnikov_weights",
    "regression_adjustment",
    "rejection_abc",
    "smc_abc",
    "systematic_resample",
]
