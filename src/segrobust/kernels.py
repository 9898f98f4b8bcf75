"""Which convolution kernel runs: oneDNN for every float32 3D convolution on the CPU.

PyTorch's CPU dispatch sends a float32 3D convolution with batch 1 and N·C·D·H ≤ 20480 (the
demo net at 32³: every layer) to ``aten::slow_conv3d`` (im2col + GEMM), and computes the
gradients of larger ones with its own oneDNN backward; both are slower than oneDNN's forward
convolution run three times (measured in ``benchmarks/kernels.py``: 5× per training step of
the demo net, 1.3-2× per layer at batch 2 or at 64³). :class:`Conv3d` computes the convolution
and both its gradients with ``aten::mkldnn_convolution``:

- forward: y = w ⋆ x;
- ∇x: the convolution of ∇y (zeros inserted between voxels for stride s > 1) with the kernel
  flipped and its channel axes swapped, padded by K − 1 − p;
- ∇w: the convolution of x with ∇y as the kernel (channels and batch swapped, dilation s),
  cropped to K.

Same sums in another order: results agree with the native kernel to float32 rounding, not
bitwise, so the choice is a setting (``conv_kernel``: ``onednn`` or ``native``) recorded with
every model and result; :func:`set_conv_kernel` applies it to any model's ``nn.Conv3d``. bf16
(autocast) and CUDA always take PyTorch's own path.
"""

import platform

import torch
from torch import Tensor, nn

CONV_KERNELS: tuple[str, ...] = ("onednn", "native")


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


def _onednn_applies(x: Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
    )


def set_conv_kernel(model: nn.Module, kernel: str) -> nn.Module:
    """Run every plain ``nn.Conv3d`` of ``model`` (any architecture) on ``kernel``, in place.

    ``onednn`` turns them into :class:`Conv3d` (same parameters and state dict), ``native``
    back into ``nn.Conv3d``. Returns ``model``.
    """
    if kernel not in CONV_KERNELS:
        raise ValueError(f"conv_kernel must be one of {list(CONV_KERNELS)}, got {kernel!r}")
    for module in model.modules():
        if type(module) in (nn.Conv3d, Conv3d):
            module.__class__ = Conv3d if kernel == "onednn" else nn.Conv3d
    return model


def kernel_name(model: nn.Module, device: torch.device, amp: bool) -> str:
    """What ran ``model``'s 3D convolutions: ``cudnn`` on CUDA; ``onednn`` where this module's
    :class:`Conv3d` did (float32 on the CPU); ``native`` where PyTorch's own CPU dispatch did:
    under bf16 autocast (oneDNN's bf16 kernels on CPUs with native bf16, reference kernels
    elsewhere), with ``conv_kernel: native``, or in a network without a plain ``nn.Conv3d``
    (e.g. TorchScript)."""
    if device.type == "cuda":
        return "cudnn"
    if amp or not any(isinstance(m, Conv3d) for m in model.modules()):
        return "native"
    return "onednn"


def provenance(model: nn.Module, device: torch.device, amp: bool) -> dict[str, str]:
    """``precision`` (fp32 or bf16) and ``kernel`` that ran ``model``: recorded with every
    model and result."""
    return {"precision": "bf16" if amp else "fp32", "kernel": kernel_name(model, device, amp)}


def _conv(x: Tensor, w: Tensor, padding, stride, dilation) -> Tensor:
    return torch.ops.aten.mkldnn_convolution(x, w, None, padding, stride, dilation, 1)


def _zero_insert(g: Tensor, stride: tuple[int, ...], extra: tuple[int, ...]) -> Tensor:
    """g with s − 1 zeros between neighbours along each spatial axis, ``extra`` zeros at the end."""
    if all(s == 1 for s in stride) and not any(extra):
        return g
    size = [(n - 1) * s + 1 + e for n, s, e in zip(g.shape[2:], stride, extra, strict=True)]
    out = g.new_zeros(*g.shape[:2], *size)
    out[
        (..., *(slice(0, (n - 1) * s + 1, s) for n, s in zip(g.shape[2:], stride, strict=True)))
    ] = g
    return out


class _OneDNNConv3d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, bias is not None)
        y = _conv(x, weight, padding, stride, (1, 1, 1))
        return y if bias is None else y + bias.view(1, -1, 1, 1, 1)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, has_bias = ctx.conf
        grad = grad.contiguous()
        kernel = weight.shape[2:]
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            extra = tuple(
                (n + 2 * p - k) % s
                for n, p, k, s in zip(x.shape[2:], padding, kernel, stride, strict=True)
            )
            flipped = weight.flip((2, 3, 4)).transpose(0, 1).contiguous()
            pad = tuple(k - 1 - p for k, p in zip(kernel, padding, strict=True))
            gx = _conv(_zero_insert(grad, stride, extra), flipped, pad, (1, 1, 1), (1, 1, 1))
        if ctx.needs_input_grad[1]:
            gw = _conv(x.transpose(0, 1), grad.transpose(0, 1), padding, (1, 1, 1), stride)
            gw = gw[(..., *(slice(0, k) for k in kernel))].transpose(0, 1)
        if has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3, 4))
        return gx, gw, gb, None, None


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` whose float32 CPU convolutions (zero padding, no dilation or groups) run
    on oneDNN (module docstring); identical parameters and state dict."""

    def forward(self, x: Tensor) -> Tensor:
        plain = self.padding_mode == "zeros" and not isinstance(self.padding, str)
        if plain and self.dilation == (1, 1, 1) and self.groups == 1 and _onednn_applies(x):
            return _OneDNNConv3d.apply(x, self.weight, self.bias, self.stride, self.padding)
        return super().forward(x)
