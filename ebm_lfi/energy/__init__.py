r"""The energy model: :class:`ExpFamEBM`, its statistics networks and its data transforms.

``model``: the conditional exponential family
:math:`\log \tilde p(x \mid \theta) = \eta(\theta)^\top s(x) + b(x)`. ``nets``, ``mlp``,
``pooled_nets``: the statistics networks (MLP, exchangeable, Markov). ``transforms``, ``tails``:
the map of the data to :math:`\mathbb{R}` (support, heavy tails, standardisation).
"""

from .mlp import MLP
from .model import ExpFamEBM
from .pooled_nets import ExchangeableNet, MarkovNet
from .transforms import DataTransform

__all__ = ["ExpFamEBM", "MLP", "ExchangeableNet", "MarkovNet", "DataTransform"]
