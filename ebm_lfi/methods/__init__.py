r"""Inference methods behind one interface: ``fit(theta, x, seed=...)`` then
``posterior(x_o, num_samples=..., seed=...)`` returning an :class:`~ebm_lfi.Posterior`.

Build one by name with :func:`get`; :func:`available` lists them.
"""

from .baselines import PosteriorMeanRegressor, RegressionABC, RejectionABC
from .common import NotFittedError
from .energy_methods import EnergyABC, make_loss
from .exchange_method import EnergyExchange, ExchangeConfig
from .ratio_method import PotentialConfig, RatioPosterior
from .registry import available, get, register
from .statistics_abc import ABCConfig, StatisticsABC

__all__ = [
    "available",
    "get",
    "register",
    "ABCConfig",
    "ExchangeConfig",
    "PotentialConfig",
    "RatioPosterior",
    "EnergyABC",
    "EnergyExchange",
    "RejectionABC",
    "RegressionABC",
    "PosteriorMeanRegressor",
    "StatisticsABC",
    "NotFittedError",
    "make_loss",
]


def _named(cls, name: str, **fixed):
    def build(**options):
        for key in fixed:
            if key in options:
                raise TypeError(f"method {name!r} fixes {key}={fixed[key]!r}; do not pass {key}")
        method = cls(**fixed, **options)
        method.name = name
        return method

    return build


register(
    "sm-abc",
    _named(EnergyABC, "sm-abc", loss="sm"),
    "ABC on statistics learned by exact score matching",
)
register(
    "ssm-abc",
    _named(EnergyABC, "ssm-abc", loss="ssm"),
    "ABC on statistics learned by sliced score matching",
)
register(
    "dsm-abc",
    _named(EnergyABC, "dsm-abc", loss="dsm"),
    "ABC on statistics learned by denoising score matching over a range of noise scales",
)
register(
    "dsm-exchange",
    _named(EnergyExchange, "dsm-exchange", loss="dsm"),
    "ABC at any tolerance: exchange MCMC on the noise-conditional DSM fit (Gaussian kernel)",
)
register(
    "nce",
    _named(RatioPosterior, "nce", loss="nce"),
    "NCE ratio model; its tractable posterior potential sampled by MCMC (no simulation)",
)
register(
    "nce-abc",
    _named(EnergyABC, "nce-abc", loss="nce"),
    "ABC on statistics learned by noise-contrastive ratio estimation",
)
register(
    "cnce-abc",
    _named(EnergyABC, "cnce-abc", loss="cnce"),
    "ABC on statistics learned by conditional NCE (Gaussian perturbations, Ceylan & Gutmann)",
)
register(
    "sm-exchange",
    _named(EnergyExchange, "sm-exchange", loss="sm"),
    "exchange MCMC with the exact-score-matching exponential family as likelihood",
)
register(
    "ssm-exchange",
    _named(EnergyExchange, "ssm-exchange", loss="ssm"),
    "exchange MCMC with the sliced-score-matching exponential family as likelihood",
)
register(
    "rejection-abc",
    _named(RejectionABC, "rejection-abc"),
    "rejection ABC on the raw data or user statistics",
)
register(
    "fp-abc",
    _named(RegressionABC, "fp-abc"),
    "ABC on regression statistics E[theta|x] (Fearnhead & Prangle 2012)",
)
