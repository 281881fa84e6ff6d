r"""The energy model: :class:`ExpFamEBM`, its statistics networks and its data transforms.

``model``: the conditional exponential family
:math:`\log \tilde p(x \mid \theta) = \eta(\theta)^\top s(x) + b(x)` (its default builder,
ratio and noise-conditional heads and save / load). ``nets``: the factory of the statistics
networks, built from ``mlp`` (MLP), ``pooled_nets`` (exchangeable, Markov) and ``ring_nets``
(Markov in time, equivariant around a ring of sites). ``transforms``,
``tails``: the map of the data to :math:`\mathbb{R}` (support, heavy tails, standardisation).
"""

from .mlp import MLP
from .model import ExpFamEBM
from .pooled_nets import ExchangeableNet, MarkovNet
from .ring_nets import RingMarkovNet
from .transforms import DataTransform

__all__ = [
    "ExpFamEBM",
    "MLP",
    "ExchangeableNet",
    "MarkovNet",
    "RingMarkovNet",
    "DataTransform",
]
