"""The paper's 3D UNet: the Isensee et al. 2017 BraTS network (arXiv 1802.10508).

Context pathway: per level a 3×3×3 conv (stride 2 below the first level) and a residual context
module (conv → Dropout3d → conv, added to that conv's output). Localisation pathway: per level an
upsampling module (×2 nearest + 3×3×3 conv halving the features), concatenation with the skip,
and a localisation module (3×3×3 conv, then 1×1×1 conv halving the features) — also at the last
level, where Isensee has a single 3×3×3 conv, as the supplement has two conv blocks after every
concatenation. Deep supervision: 1×1×1 segmentation layers on the last three decoder levels,
upsampled (nearest) and summed element-wise.

Every conv block is conv → instance norm → LeakyReLU(0.01) (post-activation, as in the
supplement's "convolution, instance normalization, and Leaky ReLU" blocks and the Keras
implementation it describes; Isensee's own code puts norm → LeakyReLU before the conv).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NAME = "UNet3D"  # its key in segrobust.models.registry and in checkpoints
N_SEGMENTATION_LEVELS = 3


def conv_block(
    in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1
) -> nn.Sequential:
    """Conv3d → InstanceNorm3d → LeakyReLU(0.01).

    Symmetric padding (kernel // 2): the supplement's asymmetric padding is an artefact of
    TensorFlow's "same" padding with stride 2, not a design choice. No conv bias: the instance
    norm that follows removes it.
    """
    return nn.Sequential(
        nn.Conv3d(
            in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False
        ),
        nn.InstanceNorm3d(out_channels, affine=True),
        nn.LeakyReLU(1e-2, inplace=True),
    )


class ContextModule(nn.Module):
    """Residual context module: x + conv_block(dropout(conv_block(x)))."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            conv_block(channels, channels), nn.Dropout3d(dropout), conv_block(channels, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def upsampling_module(in_channels: int, out_channels: int) -> nn.Sequential:
    """×2 nearest upsampling, then a 3×3×3 conv block."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), conv_block(in_channels, out_channels)
    )


def localisation_module(channels: int) -> nn.Sequential:
    """3×3×3 conv block on the concatenation (2·channels), then a 1×1×1 block halving it."""
    return nn.Sequential(
        conv_block(2 * channels, 2 * channels), conv_block(2 * channels, channels, 1)
    )


class UNet3D(nn.Module):
    """Isensee 2017 3D UNet returning logits (B, n_classes, D, H, W); no softmax inside."""

    __jit_unused_properties__ = ["architecture"]  # plain data: torch.jit.script skips it

    def __init__(
        self,
        in_channels: int = 4,
        n_classes: int = 4,
        base_filters: int = 16,
        depth: int = 5,
        dropout: float = 0.3,
    ):
        super().__init__()
        if min(in_channels, n_classes, base_filters) < 1:
            raise ValueError(
                f"in_channels, n_classes and base_filters must be >= 1, got "
                f"{in_channels}, {n_classes}, {base_filters}"
            )
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.arch = {
            "in_channels": in_channels,
            "n_classes": n_classes,
            "base_filters": base_filters,
            "depth": depth,
            "dropout": dropout,
        }
        filters = [base_filters * 2**level for level in range(depth)]
        self.encoder = nn.ModuleList(
            nn.Sequential(
                conv_block(c_in, f, stride=1 if level == 0 else 2), ContextModule(f, dropout)
            )
            for level, (c_in, f) in enumerate(
                zip([in_channels, *filters[:-1]], filters, strict=True)
            )
        )
        decoder_filters = filters[-2::-1]  # deepest decoder level first
        self.upsampling = nn.ModuleList(upsampling_module(2 * f, f) for f in decoder_filters)
        self.localisation = nn.ModuleList(localisation_module(f) for f in decoder_filters)
        self.segmentation = nn.ModuleList(
            nn.Conv3d(f, n_classes, 1) for f in decoder_filters[-N_SEGMENTATION_LEVELS:]
        )

    @property
    def architecture(self) -> dict:
        """``{"name", "kwargs"}`` that rebuilds this network (segrobust.models.registry)."""
        return {"name": NAME, "kwargs": dict(self.arch)}

    @torch.jit.unused  # plain Python; a scripted UNet3D skips it (see forward)
    def check_input(self, x: Tensor) -> None:
        """Raise ValueError unless x is (B, in_channels, D, H, W), each of D, H, W divisible."""
        factor = 2 ** (self.arch["depth"] - 1)
        if x.ndim != 5 or x.shape[1] != self.arch["in_channels"]:
            raise ValueError(
                f"input must have shape (B, {self.arch['in_channels']}, D, H, W), "
                f"got {tuple(x.shape)}"
            )
        if any(s % factor for s in x.shape[2:]):
            raise ValueError(
                f"input spatial shape {tuple(x.shape[2:])} is not divisible by "
                f"2**(depth-1) = {factor} (depth {self.arch['depth']})"
            )
        if all(s == factor for s in x.shape[2:]):
            raise ValueError(
                f"input spatial shape {tuple(x.shape[2:])} leaves a single voxel at the deepest "
                f"level (depth {self.arch['depth']}); instance norm needs more than one"
            )

    def forward(self, x: Tensor) -> Tensor:
        # written so that torch.jit.script compiles it (ModuleLists indexed only by the
        # unrolled loops over them); scripted, the input is not checked
        if not torch.jit.is_scripting():
            self.check_input(x)
        skips: list[Tensor] = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        skips.pop()  # the deepest level has no skip connection
        first_seg = len(self.localisation) - len(self.segmentation)
        features: list[Tensor] = []  # of the decoder levels with a segmentation layer
        # zip without strict=: TorchScript's zip takes no keywords (equal lengths by __init__)
        for i, (up, loc) in enumerate(zip(self.upsampling, self.localisation)):  # noqa: B905
            x = loc(torch.cat([skips.pop(), up(x)], dim=1))
            if i >= first_seg:
                features.append(x)
        out: Tensor | None = None
        for i, segmentation in enumerate(self.segmentation):
            seg = segmentation(features[i])
            out = seg if out is None else seg + F.interpolate(out, scale_factor=2.0)
        assert out is not None  # at least one segmentation layer (depth >= 2)
        return out
