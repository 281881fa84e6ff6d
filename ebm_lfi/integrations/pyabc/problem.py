r"""Running ebm_lfi problems in pyabc: the prior, the simulator, and pyabc's data as our :math:`x`.

* :class:`TorchPrior` wraps any torch prior as a pyabc distribution keyed by parameter names
  (``rvs`` draws a ``pyabc.Parameter``, ``pdf`` is :math:`\exp\log\pi(\theta)`, zero outside
  the support), so that priors that are not boxes keep their exact density.
* :class:`SimulatorModel` wraps an ebm_lfi simulator as a pyabc model returning ``{key: x}``.
* :func:`data_to_x` maps pyabc's data (a dict of arrays or scalars) to one :math:`x`: the values
  of the chosen keys flattened in C order, concatenated in the order of the keys, and reshaped
  to the model's ``x_shape``; a mismatch raises a ``ValueError`` naming the shapes.

:class:`TorchPrior` and :class:`SimulatorModel` draw their seeds from numpy's global RNG, which
pyabc itself uses and reseeds in every worker process: ``np.random.seed(s)`` before a run with
pyabc's ``SingleCoreSampler`` reproduces it, and parallel workers draw independent seeds. Both
pickle (pyabc's multiprocessing samplers send them to the workers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Number
from typing import Any

import numpy as np
import pyabc
import torch
from torch import Tensor
from torch.distributions import Distribution

from ...priors import parameter_names as prior_parameter_names
from ...priors import prior_dim, prior_log_prob, validate_prior
from ...simulation.simulator import Simulator, forked_torch_rng

__all__ = ["TorchPrior", "SimulatorModel", "data_to_x"]


def data_to_x(data: Any, keys: Sequence[str] | None, x_shape: Sequence[int]) -> np.ndarray:
    r"""pyabc data as one :math:`x` of shape ``x_shape`` (float64).

    Arguments:
        data: A dict of arrays / scalars / pandas objects (pyabc's model output), or an array.
        keys: Keys whose values form :math:`x`, flattened in C order and concatenated in this
            order; ``None``: the dict must have exactly one key.
        x_shape: The shape of one :math:`x`.

    Returns:
        :math:`x`, shape ``x_shape``.
    """
    x_shape = tuple(int(s) for s in x_shape)
    if isinstance(data, Mapping):
        if keys is None:
            if len(data) != 1:
                raise ValueError(
                    f"the data has keys {list(data)}; pass keys=[...] to say which values form "
                    "x and in which order"
                )
            keys = list(data)
        missing = [k for k in keys if k not in data]
        if missing:
            raise KeyError(f"data keys {missing} not found; the data has keys {list(data)}")
        parts = [np.asarray(data[k], dtype=np.float64) for k in keys]
        described = ", ".join(f"{k!r}: {p.shape}" for k, p in zip(keys, parts))
        flat = np.concatenate([p.reshape(-1) for p in parts])
    elif isinstance(data, np.ndarray | Number | Tensor):
        flat = np.asarray(data, dtype=np.float64).reshape(-1)
        described = f"array {np.shape(data)}"
    else:
        raise TypeError(f"data must be a dict or an array, got {type(data).__name__}")
    if flat.size != math.prod(x_shape):
        raise ValueError(
            f"the data ({described}) has {flat.size} values but the model expects x of shape "
            f"{x_shape} ({math.prod(x_shape)} values)"
        )
    return flat.reshape(x_shape)


def _global_numpy_seed() -> int:
    """A seed drawn from numpy's global RNG, the RNG pyabc seeds (per worker process)."""
    return int(np.random.randint(0, 2**63 - 1, dtype=np.int64))  # noqa: NPY002


class TorchPrior(pyabc.DistributionBase):
    r"""A torch prior as a pyabc distribution over named parameters.

    Arguments:
        prior: Any torch distribution over :math:`\theta` of shape :math:`(p,)` (e.g.
            :class:`~ebm_lfi.BoxUniform`, a task's prior, ``Independent(Normal(...), 1)``).
        parameter_names: The :math:`p` names (default: the prior's own, else
            ``theta_1, ..., theta_p``); they key pyabc's ``Parameter``.

    ``rvs`` draws with torch from a seed taken from numpy's global RNG (pyabc's convention);
    ``pdf`` is :math:`\exp \log \pi(\theta)`, zero outside the support.
    """

    def __init__(self, prior: Distribution, parameter_names: Sequence[str] | None = None):
        self.prior = validate_prior(prior)
        p = prior_dim(prior)
        names = prior_parameter_names(prior, p) if parameter_names is None else parameter_names
        self.parameter_names = [str(n) for n in names]
        if len(self.parameter_names) != p or len(set(self.parameter_names)) != p:
            raise ValueError(f"need {p} distinct parameter names, got {self.parameter_names}")

    def get_parameter_names(self) -> list[str]:
        """The parameter names, in the order of :math:`\\theta`."""
        return list(self.parameter_names)

    def to_tensor(self, x: Mapping[str, float]) -> Tensor:
        r"""A pyabc parameter as :math:`\theta`, shape :math:`(p,)` (float64)."""
        if set(x) != set(self.parameter_names):
            raise ValueError(f"parameter keys {sorted(x)} differ from {self.parameter_names}")
        return torch.tensor([float(x[n]) for n in self.parameter_names], dtype=torch.float64)

    def rvs(self, *args, **kwargs) -> pyabc.Parameter:
        """One prior draw as a ``pyabc.Parameter`` (pyabc passes no arguments)."""
        with forked_torch_rng(_global_numpy_seed()):
            theta = self.prior.sample()
        return pyabc.Parameter(dict(zip(self.parameter_names, theta.tolist())))

    def pdf(self, x: Mapping[str, float]) -> float:
        r"""The prior density at the parameter ``x`` (a dict keyed by the names)."""
        return float(prior_log_prob(self.prior, self.to_tensor(x)[None])[0].exp())

    def __repr__(self) -> str:
        return f"TorchPrior({self.prior!r}, parameter_names={self.parameter_names})"


class SimulatorModel(pyabc.Model):
    r"""An ebm_lfi simulator as a pyabc model: ``sample(pars) -> {key: x}``.

    Arguments:
        simulator: An :class:`~ebm_lfi.Simulator` (e.g. a task's ``simulator``) or a plain
            callable of one :math:`\theta` (wrapped as ``Simulator(fn)``).
        parameter_names: Order of the parameters in :math:`\theta`.
        key: The data key (default ``"x"``).
        name: The model name pyabc stores.

    Each call simulates once with a seed drawn from numpy's global RNG; :math:`x` is returned
    as a float64 array of the simulator's shape.
    """

    def __init__(
        self,
        simulator: Simulator | Callable,
        parameter_names: Sequence[str],
        *,
        key: str = "x",
        name: str = "ebm_lfi",
    ):
        super().__init__(name=name)
        self.simulator = simulator if isinstance(simulator, Simulator) else Simulator(simulator)
        self.parameter_names = [str(n) for n in parameter_names]
        self.key = str(key)

    def sample(self, pars: Mapping[str, float]) -> dict[str, np.ndarray]:
        r"""One simulation at the parameter ``pars``: ``{key: x}``, :math:`x` in float64."""
        if set(pars) != set(self.parameter_names):
            raise ValueError(f"parameter keys {sorted(pars)} differ from {self.parameter_names}")
        theta = torch.tensor([float(pars[n]) for n in self.parameter_names], dtype=torch.float64)
        x = self.simulator(theta, seed=_global_numpy_seed())
        return {self.key: x.numpy().astype(np.float64, copy=False)}
