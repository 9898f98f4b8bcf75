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

import os
import zipfile
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrobust.fileio import atomic_path
from segrobust.kernels import set_conv_kernel

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


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Atomically save architecture record, weights and ``extra`` (plain Python values)."""
    from segrobust.architectures import record  # that module imports this one

    checkpoint = {"arch": record(model), "state_dict": model.state_dict(), "extra": extra or {}}
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def is_torchscript(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (torch.jit.save) rather than a torch.save file."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())


def load_model(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    conv_kernel: str = "onednn",
) -> tuple[nn.Module, dict]:
    """Load a checkpoint written by :func:`save_model`; return (model in eval mode, extra).

    A TorchScript archive (an external model) loads with ``torch.jit.load`` and extra = {}:
    neither way executes pickled Python code. ``conv_kernel``: what runs the float32 CPU
    convolutions of a rebuilt network (:mod:`segrobust.kernels`).
    """
    from segrobust.architectures import build  # that module imports this one

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        if is_torchscript(path):
            return torch.jit.load(path, map_location=map_location).eval(), {}
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise ValueError(
            f"cannot read model checkpoint {path}: corrupt, truncated or not a torch file "
            f"({type(err).__name__})"
        ) from err
    if not isinstance(checkpoint, dict) or not {"arch", "state_dict", "extra"} <= checkpoint.keys():
        raise ValueError(
            f"{path} is not a segrobust model checkpoint (keys arch, state_dict, extra)"
        )
    arch = checkpoint["arch"]
    if not isinstance(arch, dict) or not {"name", "kwargs"} <= arch.keys():
        raise ValueError(f"{path}: arch must record the architecture's name and kwargs")
    try:
        model = build(arch["name"], arch["kwargs"])
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"checkpoint {path} does not match its architecture: {err}") from err
    return set_conv_kernel(model.to(map_location).eval(), conv_kernel), checkpoint["extra"]


def select_device(prefer: str = "auto") -> torch.device:
    """Pick "auto" (CUDA if available, else CPU), "cpu" or "cuda" (ValueError if unavailable)."""
    if prefer not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {prefer!r}")
    if prefer == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if prefer == "auto":
        prefer = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(prefer)


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled``, else a no-op context (see :func:`use_amp`)."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


AMP_MODES: tuple[str, ...] = ("auto", "on", "off")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16; every AMX CPU has it too).

    Not ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``: that is true on any AVX-512 CPU
    (AVX512BW/VL/DQ, e.g. Skylake-SP), where oneDNN emulates bf16, slower than float32.
    """
    return torch.backends.mkldnn.is_available() and torch.cpu._is_avx512_bf16_supported()


def use_amp(mode: str, device: torch.device) -> bool:
    """Whether to autocast to bf16: "auto" on CUDA and on CPUs with native bf16, "on"
    everywhere, "off" never."""
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {mode!r}")
    native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
    return mode == "on" or (mode == "auto" and native)


PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")


def evaluation_amp(precision: str, device: torch.device) -> bool:
    """Whether evaluation and attacks autocast to bf16 (config ``attacks.precision``): "fp32"
    never, "bf16" always, "auto" as training's ``amp: auto``. Separate from training because
    attacks are only as good as their gradients."""
    if precision not in PRECISIONS:
        raise ValueError(f"attacks.precision must be one of {PRECISIONS}, got {precision!r}")
    return use_amp({"fp32": "off", "bf16": "on", "auto": "auto"}[precision], device)


def model_device(model: nn.Module, default: torch.device) -> torch.device:
    """The device of ``model``'s first parameter or buffer; ``default`` when it has none (a
    frozen TorchScript module keeps its weights as constants)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return default


@torch.no_grad()  # not inference_mode: see segrobust.attacks.forward_only
def predict_classes(model: nn.Module, image: Tensor) -> Tensor:
    """Argmax class map (B, D, H, W) uint8 of ``image``, with dropout off (eval mode).

    No temperature argument: dividing logits by T > 0 never changes the argmax.
    """
    was_training = model.training
    model.eval()
    try:
        return model(image.to(model_device(model, image.device))).argmax(dim=1).to(torch.uint8)
    finally:
        model.train(was_training)
