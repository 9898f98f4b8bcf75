"""Segmentation networks by name: the Isensee 3D UNet (default) and MONAI's 3D networks.

A network is described by plain data, ``{"name": ..., "kwargs": {...}}`` (the ``model:`` and
``architectures:`` config sections). :func:`build` turns it into a module that returns class
logits (B, 4, D, H, W) in train and eval mode alike; :func:`record` gives back its complete
description (kwargs with the filled-in defaults). Checkpoints store that record, so
:func:`segrobust.model.load_model` rebuilds the network with ``weights_only=True``.

Filled in unless given: ``in_channels`` = 4 modalities, ``n_classes`` / ``out_channels`` = 4
classes, ``spatial_dims`` = 3 and, for networks with a fixed input size (UNETR), ``img_size``
= the ``input_shape`` the caller trains on. Deep supervision (DynUNet, SegResNetDS) is reduced
to the full-resolution head: the training loop and the attacks see one logits tensor.
"""

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from segrobust.labels import MODALITIES, N_CLASSES
from segrobust.model import UNet3D

DEFAULT = "UNet3D"
MONAI_NETWORKS: tuple[str, ...] = (
    "SegResNet", "SegResNetDS", "DynUNet", "UNETR", "SwinUNETR", "BasicUNet", "UNet",
    "AttentionUnet", "VNet",
)  # fmt: skip
NAMES: tuple[str, ...] = (DEFAULT, *MONAI_NETWORKS)
# Networks of external models, rebuilt from their checkpoint's record, never trained:
# name -> (module, builder), imported only when such a model is loaded.
EXTERNAL_NETWORKS: dict[str, tuple[str, str]] = {
    "nnUNet": ("segrobust.nnunet", "NnunetModel"),
    "MonaiBundle": ("segrobust.bundles", "build_network"),
}


class MonaiNetwork(nn.Module):
    """A MONAI network returning one logits tensor (the full-resolution deep-supervision head)."""

    def __init__(self, name: str, net: nn.Module, kwargs: Mapping[str, Any]):
        super().__init__()
        self.net = net
        self.architecture = {"name": name, "kwargs": dict(kwargs)}

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        if isinstance(out, list | tuple):  # SegResNetDS in training: full resolution first
            return out[0]
        if out.ndim == x.ndim + 1:  # DynUNet in training: heads stacked on dim 1, main first
            return out[:, 0]
        return out


def _monai_class(name: str) -> Callable[..., nn.Module]:
    from monai import networks  # imported here: only MONAI architectures pay its import time

    return getattr(networks.nets, name)


def _defaults(cls: Callable[..., nn.Module], input_shape: Sequence[int] | None) -> dict:
    """The channel counts, dimensionality and fixed input size that ``cls`` accepts."""
    params = inspect.signature(cls).parameters
    filled = {"in_channels": len(MODALITIES), "spatial_dims": 3}
    filled |= {"out_channels" if "out_channels" in params else "n_classes": N_CLASSES}
    if "img_size" in params and input_shape is not None:
        filled["img_size"] = [int(s) for s in input_shape]
    return {k: v for k, v in filled.items() if k in params}


def build(
    name: str, kwargs: Mapping[str, Any] | None = None, input_shape: Sequence[int] | None = None
) -> nn.Module:
    """The network ``name`` (one of :data:`NAMES`) with ``kwargs``; see the module docstring.

    Raises ValueError naming the architecture for an unknown name or rejected arguments.
    """
    if name in EXTERNAL_NETWORKS:
        module, builder = EXTERNAL_NETWORKS[name]
        return getattr(importlib.import_module(module), builder)(**dict(kwargs or {}))
    if name not in NAMES:
        raise ValueError(f"unknown architecture {name!r}; expected one of {NAMES}")
    cls = UNet3D if name == DEFAULT else _monai_class(name)
    full = {**_defaults(cls, input_shape), **dict(kwargs or {})}
    try:
        net = cls(**full)
    except (TypeError, ValueError, AssertionError) as err:
        raise ValueError(f"architecture {name} with kwargs {full}: {err}") from err
    return net if name == DEFAULT else MonaiNetwork(name, net, full)


def record(model: nn.Module) -> dict[str, Any]:
    """The ``{"name", "kwargs"}`` that rebuilds ``model`` with :func:`build` (plain data)."""
    if isinstance(model, UNet3D):
        return {"name": DEFAULT, "kwargs": dict(model.arch)}
    architecture = getattr(model, "architecture", None)  # MonaiNetwork, external networks
    if isinstance(architecture, dict):
        return {"name": architecture["name"], "kwargs": dict(architecture["kwargs"])}
    raise ValueError(f"{type(model).__name__} is not a network of segrobust.architectures")


def unwrap(model: nn.Module) -> nn.Module:
    """The network itself (whose state_dict keys a MONAI checkpoint uses)."""
    return model.net if isinstance(model, MonaiNetwork) else model
