"""Segmentation networks by name: the Isensee 3D UNet (default), MONAI's 3D networks, and the
networks of imported external models.

A network is described by plain data, ``{"name": ..., "kwargs": {...}}`` (the ``model:`` and
``architectures:`` config sections). :func:`build` turns it into a module that returns class
logits (B, 4, D, H, W) in train and eval mode alike, its 3D convolutions on the chosen kernel
(:mod:`segrobust.models.kernels`); :func:`record` gives back its complete description (kwargs
with the filled-in defaults), which every network carries as its ``architecture``.
Checkpoints store that record, so :func:`segrobust.models.checkpoints.load_model` rebuilds the
network with ``weights_only=True``.

A new network is one entry of :data:`NETWORKS`. Filled in unless given: ``in_channels`` = 4
modalities, ``n_classes`` / ``out_channels`` = 4 classes, ``spatial_dims`` = 3 and, for
networks with a fixed input size (UNETR), ``img_size`` = the ``input_shape`` the caller trains
on. Networks of external models (``trainable=False``) are rebuilt from their checkpoint's
record, never trained; their modules are imported when one is built.
"""

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from segrobust.labels import MODALITIES, N_CLASSES
from segrobust.models import monai_nets, unet
from segrobust.models.kernels import apply_kernel

Shape = Sequence[int] | None


@dataclass(frozen=True)
class Network:
    """``build(name, kwargs, input_shape)`` makes the network; ``trainable``: the config may
    train it (else it is the network of an external model)."""

    build: Callable[[str, Mapping[str, Any], Shape], nn.Module]
    trainable: bool = True


def defaults(cls: Callable[..., nn.Module], input_shape: Shape) -> dict:
    """The channel counts, dimensionality and fixed input size that ``cls`` accepts."""
    params = inspect.signature(cls).parameters
    filled = {"in_channels": len(MODALITIES), "spatial_dims": 3}
    filled |= {"out_channels" if "out_channels" in params else "n_classes": N_CLASSES}
    if "img_size" in params and input_shape is not None:
        filled["img_size"] = [int(s) for s in input_shape]
    return {k: v for k, v in filled.items() if k in params}


def _construct(
    name: str, cls: Callable[..., nn.Module], kwargs: Mapping[str, Any], input_shape: Shape
) -> tuple[nn.Module, dict]:
    """``cls`` with ``kwargs`` over :func:`defaults`, and those full kwargs; ValueError naming
    the architecture when ``cls`` refuses them."""
    full = {**defaults(cls, input_shape), **dict(kwargs)}
    try:
        return cls(**full), full
    except (TypeError, ValueError, AssertionError) as err:
        raise ValueError(f"architecture {name} with kwargs {full}: {err}") from err


def _unet(name: str, kwargs: Mapping[str, Any], input_shape: Shape) -> nn.Module:
    return _construct(name, unet.UNet3D, kwargs, input_shape)[0]


def _monai(name: str, kwargs: Mapping[str, Any], input_shape: Shape) -> nn.Module:
    net, full = _construct(name, monai_nets.network_class(name), kwargs, input_shape)
    return monai_nets.MonaiNetwork(name, net, full)


def _nnunet(name: str, kwargs: Mapping[str, Any], input_shape: Shape) -> nn.Module:
    from segrobust.nnunet import NnunetModel  # nnU-Net's packages: for its models only

    return NnunetModel(**kwargs)


def _bundle(name: str, kwargs: Mapping[str, Any], input_shape: Shape) -> nn.Module:
    from segrobust.bundles import build_network  # MONAI's bundle parser: for bundles only

    return build_network(**kwargs)


NETWORKS: dict[str, Network] = {
    unet.NAME: Network(_unet),
    **{name: Network(_monai) for name in monai_nets.NAMES},
    "nnUNet": Network(_nnunet, trainable=False),
    "MonaiBundle": Network(_bundle, trainable=False),
}
DEFAULT = unet.NAME
NAMES: tuple[str, ...] = tuple(n for n, net in NETWORKS.items() if net.trainable)


def build(
    name: str,
    kwargs: Mapping[str, Any] | None = None,
    input_shape: Shape = None,
    conv_kernel: str = "native",
) -> nn.Module:
    """The network ``name`` with ``kwargs``, its float32 CPU convolutions on ``conv_kernel``
    (``onednn`` or ``native``, :mod:`segrobust.models.kernels`); see the module docstring.

    Raises ValueError naming the architecture for an unknown name or rejected arguments.
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown architecture {name!r}; expected one of {NAMES}")
    return apply_kernel(NETWORKS[name].build(name, dict(kwargs or {}), input_shape), conv_kernel)


def record(model: nn.Module) -> dict[str, Any]:
    """The ``{"name", "kwargs"}`` that rebuilds ``model`` with :func:`build` (plain data)."""
    architecture = getattr(model, "architecture", None)
    if isinstance(architecture, Mapping) and {"name", "kwargs"} <= architecture.keys():
        return {"name": architecture["name"], "kwargs": dict(architecture["kwargs"])}
    raise ValueError(f"{type(model).__name__} is not a network of segrobust.models.registry")


def unwrap(model: nn.Module) -> nn.Module:
    """The network itself (whose state_dict keys a MONAI checkpoint uses)."""
    return model.net if isinstance(model, monai_nets.MonaiNetwork) else model
