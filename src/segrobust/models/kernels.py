"""Which convolution kernel runs: oneDNN for every float32 3D convolution on the CPU.

PyTorch's CPU dispatch sends a float32 3D convolution with batch 1 and N·C·D·H ≤ 20480 (the
demo net at 32³: every layer) to ``aten::slow_conv3d`` (im2col + GEMM), and computes the
gradients of larger ones with its own oneDNN backward; both are slower than oneDNN's forward
convolution run three times (measured in ``benchmarks/kernels.py``: 5× per training step of
the demo net, 1.3-2× per layer at batch 2 or at 64³). :class:`OneDNNConv3d` computes the
convolution and both its gradients with ``aten::mkldnn_convolution``:

- forward: y = w ⋆ x;
- ∇x: the convolution of ∇y (zeros inserted between voxels for stride s > 1) with the kernel
  flipped and its channel axes swapped, padded by K − 1 − p;
- ∇w: the convolution of x with ∇y as the kernel (channels and batch swapped, dilation s),
  cropped to K.

Same sums in another order: results agree with the native kernel to float32 rounding, not
bitwise, so the choice is a setting (``conv_kernel``: ``onednn`` or ``native``), made when a
network is built (:func:`segrobust.models.registry.build` calls :func:`apply_kernel`: every
plain ``nn.Conv3d`` becomes an :class:`OneDNNConv3d` with the same parameters, state-dict keys
and name in the model's repr) and recorded with every model and result (:func:`kernel_name`:
per layer, the path it takes). A layer takes PyTorch's own path where oneDNN does not apply:
bf16 (autocast), CUDA, non-zero padding modes, dilation, groups, oneDNN switched off
(``torch.backends.mkldnn.enabled`` / ``.flags(enabled=False)``), or a PyTorch without the
private ``aten::mkldnn_convolution``.
"""

import torch
from torch import Tensor, nn

CONV_KERNELS: tuple[str, ...] = ("onednn", "native")
# PyTorch's private oneDNN convolution (present in torch 2.13, the version tested); a torch
# without it runs every layer on PyTorch's own path (and records that)
_MKLDNN_CONVOLUTION = hasattr(torch.ops.aten, "mkldnn_convolution")


def _onednn_on(device: torch.device, amp: bool) -> bool:
    """Whether oneDNN float32 convolutions can run on ``device`` (``amp``: bf16 autocast on)."""
    return (
        device.type == "cpu"
        and not amp
        and _MKLDNN_CONVOLUTION
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


def apply_kernel(model: nn.Module, kernel: str) -> nn.Module:
    """``model`` with every 3D convolution running on ``kernel``: ``onednn`` replaces each plain
    ``nn.Conv3d`` by an :class:`OneDNNConv3d`, ``native`` each :class:`OneDNNConv3d` by an
    ``nn.Conv3d``; the new layer holds the same parameter tensors (no copy, no random
    initialisation) under the same name. Returns ``model`` (the new layer when ``model`` is one
    convolution)."""
    if kernel not in CONV_KERNELS:
        raise ValueError(f"conv_kernel must be one of {list(CONV_KERNELS)}, got {kernel!r}")
    target = OneDNNConv3d if kernel == "onednn" else nn.Conv3d
    done: dict[int, nn.Module] = {}

    def converted(conv: nn.Module) -> nn.Module:
        if type(conv) not in (nn.Conv3d, OneDNNConv3d) or type(conv) is target:
            return conv
        if id(conv) not in done:  # a layer used twice stays one layer
            done[id(conv)] = _like(conv, target)
        return done[id(conv)]

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if converted(child) is not child:
                setattr(parent, name, converted(child))
    return converted(model)


def _like(conv: nn.Conv3d, cls: type[nn.Conv3d]) -> nn.Conv3d:
    """A ``cls`` layer configured as ``conv`` and holding its parameters (built on the meta
    device: nothing is initialised, the random number generators are left alone)."""
    new = cls(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta",
    )  # fmt: skip
    new.weight, new.bias = conv.weight, conv.bias
    return new.train(conv.training)


def kernel_name(model: nn.Module, device: torch.device, amp: bool) -> str:
    """What runs ``model``'s 3D convolutions on ``device`` (``amp``: under bf16 autocast):
    ``cudnn`` on CUDA; else per layer ``onednn`` where an :class:`OneDNNConv3d` takes the
    oneDNN path, ``native`` where PyTorch's own CPU dispatch runs it (bf16, ``conv_kernel:
    native``, a layer oneDNN does not apply to, oneDNN switched off, TorchScript); ``onednn+
    native`` when the layers differ."""
    if device.type == "cuda":
        return "cudnn"
    paths = {
        "onednn" if isinstance(m, OneDNNConv3d) and m.takes_onednn(device, amp) else "native"
        for m in model.modules()
        if isinstance(m, nn.Conv3d)
    }
    return "+".join(k for k in CONV_KERNELS if k in paths) or "native"


def provenance(model: nn.Module, device: torch.device, amp: bool) -> dict[str, str]:
    """``precision`` (fp32 or bf16) and ``kernel`` that run ``model``: recorded with every
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


class OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` whose float32 CPU convolutions (zero padding, no dilation or groups) run
    on oneDNN (module docstring); identical parameters and state dict."""

    def takes_onednn(self, device: torch.device, amp: bool) -> bool:
        """Whether this layer runs float32 input on ``device`` with oneDNN (``amp``: under
        bf16 autocast, where PyTorch's own path runs)."""
        plain = self.padding_mode == "zeros" and not isinstance(self.padding, str)
        return plain and self.dilation == (1, 1, 1) and self.groups == 1 and _onednn_on(device, amp)

    def forward(self, x: Tensor) -> Tensor:
        amp = torch.is_autocast_enabled(x.device.type)
        if x.dtype == torch.float32 and self.takes_onednn(x.device, amp):
            return _OneDNNConv3d.apply(x, self.weight, self.bias, self.stride, self.padding)
        return super().forward(x)
