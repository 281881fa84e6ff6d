r"""Saving and loading :class:`~ebm_lfi.ExpFamEBM` models built from known networks.

A model file is a ``torch.save``'d dict of strings and tensors (no pickled code), readable with
``torch.load(weights_only=True)``: a format tag, a version, a JSON description of the
architecture (:func:`model_config`) and the weights and transform buffers.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import torch

from .nets import build_net, net_config

if TYPE_CHECKING:  # pragma: no cover
    from .model import ExpFamEBM

__all__ = ["FORMAT", "FORMAT_VERSION", "model_config", "save_model", "load_model"]

FORMAT = "ebm_lfi.ExpFamEBM"
FORMAT_VERSION = 2  # 2: heavy-tail stage in the data transform, pooled-feature nets


def model_config(model: ExpFamEBM) -> dict:
    r"""JSON-able description of the architecture (raises ``TypeError`` for user modules)."""
    marginal = model.marginal_net
    return {
        "x_shape": list(model.x_shape),
        "theta_dim": model.theta_dim,
        "num_statistics": model.num_statistics,
        "shared_dims": list(model.shared_dims),
        "statistics_net": net_config(model.statistics_net),
        "natural_net": net_config(model.natural_net),
        "base_net": None if model.base_net is None else net_config(model.base_net),
        "normalizer": model.has_normalizer,
        "marginal_net": None if marginal is None else net_config(marginal),
        "noise_conditional": model.noise_conditional,
        "dtype": str(model.dtype).removeprefix("torch."),
    }


def save_model(model: ExpFamEBM, path: str | os.PathLike) -> None:
    r"""Write ``model`` to ``path`` (see the module docstring).

    Raises:
        TypeError: If a network is a user module (not rebuildable from a config).
    """
    config = json.dumps(model_config(model))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(
        {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config, "state": state},
        os.fspath(path),
    )


def load_model(
    cls: type[ExpFamEBM], path: str | os.PathLike, device: str | torch.device | None = None
) -> ExpFamEBM:
    r"""Read a model written by :func:`save_model`.

    Raises:
        ValueError: If the file is unreadable, corrupt, of another format or version, or its
            weights do not match its config.
    """
    path = os.fspath(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # corrupt archives raise many different types
        raise ValueError(f"cannot read an ExpFamEBM from {path!r} (corrupt file?): {e}") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not an ebm_lfi ExpFamEBM file")
    version = blob.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path!r} has format version {version!r}; this version of ebm_lfi reads "
            f"version {FORMAT_VERSION}"
        )
    try:
        config = json.loads(blob["config"])
        base_cfg, marginal_cfg = config["base_net"], config.get("marginal_net")
        model = cls(
            build_net(config["statistics_net"]),
            build_net(config["natural_net"]),
            x_shape=config["x_shape"],
            theta_dim=config["theta_dim"],
            num_statistics=config["num_statistics"],
            shared_dims=config["shared_dims"],
            base_net=None if base_cfg is None else build_net(base_cfg),
            normalizer=bool(config.get("normalizer", False)),
            marginal_net=None if marginal_cfg is None else build_net(marginal_cfg),
            noise_conditional=bool(config.get("noise_conditional", False)),
        )
        model = model.to(getattr(torch, config["dtype"]))
        model.load_state_dict(blob["state"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise ValueError(f"{path!r} holds an invalid or mismatched model: {e}") from e
    return model if device is None else model.to(device)
