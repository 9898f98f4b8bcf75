"""MONAI's 3D segmentation networks as segrobust networks: one logits tensor, their own record.

Deep supervision (DynUNet, SegResNetDS) is reduced to the full-resolution head: the training
loop and the attacks see one logits tensor. The registry (:mod:`segrobust.models.registry`)
fills in the channel counts and dimensionality.
"""

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

NAMES: tuple[str, ...] = (
    "SegResNet", "SegResNetDS", "DynUNet", "UNETR", "SwinUNETR", "BasicUNet", "UNet",
    "AttentionUnet", "VNet",
)  # fmt: skip


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


def network_class(name: str) -> Callable[..., nn.Module]:
    """The class ``monai.networks.nets.<name>``."""
    from monai import networks  # imported here: only MONAI architectures pay its import time

    return getattr(networks.nets, name)
