r"""The multi-layer perceptron and the activations of the networks.

Activations are smooth by default: score matching needs :math:`\partial^2_{x_i} f`, and a
piecewise-linear activation such as ReLU has zero curvature almost everywhere, so the Hessian
diagonal it yields is the zero function (:func:`piecewise_linear_modules` finds them).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["MLP", "ACTIVATIONS", "piecewise_linear_modules"]


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
}

_PIECEWISE_LINEAR = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Threshold,
)


def piecewise_linear_modules(module: nn.Module) -> list[str]:
    r"""Names of the submodules of ``module`` that are piecewise-linear activations.

    Such activations (ReLU, LeakyReLU, Hardtanh, ...) have zero second derivative almost
    everywhere, which makes the score-matching objectives degenerate.

    Arguments:
        module: Any module.

    Returns:
        The qualified names (``"stats.net.1"``, ...) of the offending submodules.
    """
    return [
        name or "<root>" for name, m in module.named_modules() if isinstance(m, _PIECEWISE_LINEAR)
    ]


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    r"""Multi-layer perceptron :math:`\mathbb{R}^{D_{in}} \to \mathbb{R}^{D_{out}}`.

    Arguments:
        in_features: Input size :math:`D_{in}`.
        out_features: Output size :math:`D_{out}`.
        hidden: Widths of the hidden layers (``()`` gives a single linear layer).
        activation: One of :data:`ACTIVATIONS` (``"softplus"``, ``"tanh"``, ``"silu"``,
            ``"elu"``, ``"gelu"``; ``"relu"`` is allowed but refused by the score-matching losses).
        flatten: If ``True``, an input :math:`(n, *event)` is first flattened to
            :math:`(n, \prod event)`; otherwise the network acts on the last axis, shape
            :math:`(*, D_{in}) \to (*, D_{out})`.

    Example:
        >>> import torch
        >>> net = MLP(3, 2, hidden=(8,))
        >>> net(torch.randn(5, 3)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "softplus",
        flatten: bool = False,
    ):
        super().__init__()
        hidden = [int(h) for h in hidden]
        self.config = {
            "in_features": int(in_features),
            "out_features": int(out_features),
            "hidden": hidden,
            "activation": str(activation),
            "flatten": bool(flatten),
        }
        self.in_features, self.out_features, self.flatten = in_features, out_features, flatten
        layers: list[nn.Module] = []
        widths = [int(in_features), *hidden]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), _activation(activation)]
        layers.append(nn.Linear(widths[-1], int(out_features)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        r"""Apply the network.

        Arguments:
            x: Inputs, shape :math:`(*, D_{in})`, or :math:`(n, *event)` with
                :math:`\prod event = D_{in}` if ``flatten``.

        Returns:
            The outputs, shape :math:`(*, D_{out})` (:math:`(n, D_{out})` if ``flatten``).

        Raises:
            ValueError: If the last axis (after flattening) is not of size :math:`D_{in}`.
        """
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"MLP expects inputs with last axis of size {self.in_features}, got shape "
                f"{tuple(x.shape)}"
            )
        return self.net(x)
