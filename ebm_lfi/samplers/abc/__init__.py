r"""ABC on statistics: rejection on a reference table (:func:`rejection_abc`), SMC-ABC
(:func:`smc_abc`), the per-statistic scaling of the distance (:class:`StatisticScaler`) and the
local-linear regression adjustment (:func:`regression_adjustment`), and the smoothed
resampling of a weighted sample (:func:`smoothed_resample`)."""

from .adjustment import AdjustmentResult, epanechnikov_weights, regression_adjustment
from .rejection import RejectionABCResult, auto_num_accepted, rejection_abc, systematic_resample
from .scaler import StatisticScaler
from .smc import SMCABCResult, smc_abc
from .smoothing import smoothed_resample, smoothing_bandwidth

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
    "smoothed_resample",
    "smoothing_bandwidth",
    "systematic_resample",
]
