"""Where and in which precision a network runs: the device and bf16 policy of every stage.

- :func:`select_device`: "auto" (CUDA when available), "cpu" or "cuda";
- :func:`use_amp`: training's ``amp`` ("auto" = bf16 on CUDA and on CPUs with native bf16);
  :func:`evaluation_amp`: evaluation's and the attacks' ``attacks.precision`` (fp32 unless
  asked: attacks are only as good as their gradients);
- :func:`autocast`: the bf16 autocast context, or none;
- :func:`model_device` and :func:`predict_classes`: a model's device, and its argmax class map;
- :func:`cpu_model`: the CPU's name, recorded with timings and results.

Which kernel runs a float32 CPU convolution is chosen when the network is built
(:mod:`segrobust.models.kernels`).
"""

import platform
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor, nn

AMP_MODES: tuple[str, ...] = ("auto", "on", "off")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")


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


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
