"""The oneDNN convolution: forward and both gradients against PyTorch's own (float64) result."""

from pathlib import Path

import pytest
import torch
from torch import nn

from segrobust import model as model_module
from segrobust.kernels import Conv3d, kernel_name, provenance, set_conv_kernel
from segrobust.losses import segmentation_loss
from segrobust.model import UNet3D, cpu_has_native_bf16, use_amp


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach()).abs().max() / b.detach().abs().max())


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "stride", "padding", "bias", "shape", "batch"),
    [
        (4, 8, 3, 1, 1, False, (16, 16, 16), 1),
        (8, 16, 3, 2, 1, False, (16, 16, 16), 1),  # encoder downsampling
        (8, 16, 3, 2, 1, False, (9, 10, 11), 2),  # odd sizes: ∇x needs trailing zeros
        (16, 4, 1, 1, 0, True, (8, 8, 8), 1),  # segmentation layer
        (3, 5, 3, 1, 1, True, (7, 9, 6), 3),
    ],
)
def test_onednn_conv_and_its_gradients_equal_the_exact_convolution(
    c_in, c_out, kernel, stride, padding, bias, shape, batch
):
    torch.manual_seed(0)
    exact = nn.Conv3d(c_in, c_out, kernel, stride, padding, bias=bias).double()
    fast = Conv3d(c_in, c_out, kernel, stride, padding, bias=bias)
    fast.load_state_dict({k: v.float() for k, v in exact.state_dict().items()})
    x = torch.randn(batch, c_in, *shape, dtype=torch.float64, requires_grad=True)
    y = exact(x)
    grad = torch.randn_like(y)
    y.backward(grad)
    x32 = x.detach().float().requires_grad_(True)
    y32 = fast(x32)
    y32.backward(grad.float())
    assert y32.shape == y.shape
    assert _relative_error(y32, y.detach()) < 1e-5
    assert _relative_error(x32.grad, x.grad) < 1e-5
    assert _relative_error(fast.weight.grad, exact.weight.grad) < 1e-5
    if bias:
        assert _relative_error(fast.bias.grad, exact.bias.grad) < 1e-5


def test_input_gradient_only_leaves_the_weights_without_gradient():
    conv = Conv3d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 6, 6, 6, requires_grad=True)
    (grad,) = torch.autograd.grad(conv(x).square().sum(), x)
    assert grad.abs().sum() > 0 and conv.weight.grad is None


def test_set_conv_kernel_switches_every_conv_and_keeps_the_weights():
    torch.manual_seed(1)
    model = UNet3D(4, 4, base_filters=4, depth=3).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 4, 16, 16, 16)
    y = torch.randint(0, 4, (1, 16, 16, 16))

    def input_gradient() -> torch.Tensor:
        xi = x.clone().requires_grad_(True)
        loss = segmentation_loss(model(xi), y, variant="with_background_ce", gamma=1.0)
        return torch.autograd.grad(loss, xi)[0]

    native = input_gradient()
    set_conv_kernel(model, "onednn")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(type(m) is Conv3d for m in convs)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    onednn = input_gradient()
    assert not torch.equal(onednn, native)  # another summation order ...
    assert _relative_error(onednn, native.double()) < 1e-3  # ... of the same arithmetic
    assert (onednn.sign() == native.sign()).float().mean() > 0.99
    set_conv_kernel(model, "native")
    assert all(type(m) is nn.Conv3d for m in model.modules() if isinstance(m, nn.Conv3d))
    assert torch.equal(input_gradient(), native)


def test_bf16_autocast_takes_pytorchs_own_path():
    conv = Conv3d(2, 2, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(1, 2, 4, 4, 4)).dtype == torch.bfloat16


def test_bad_kernel_name_is_rejected():
    with pytest.raises(ValueError, match="conv_kernel must be one of"):
        set_conv_kernel(nn.Sequential(), "fast")


def test_recorded_precision_and_kernel_say_what_ran():
    cpu = torch.device("cpu")
    net = UNet3D(4, 4, base_filters=4, depth=3).eval()
    traced = torch.jit.trace(set_conv_kernel(net, "native"), torch.randn(1, 4, 16, 16, 16))
    assert provenance(net, cpu, False) == {"precision": "fp32", "kernel": "native"}
    assert provenance(traced, cpu, False) == {"precision": "fp32", "kernel": "native"}
    set_conv_kernel(net, "onednn")
    assert provenance(net, cpu, False) == {"precision": "fp32", "kernel": "onednn"}
    # under bf16 autocast PyTorch's own dispatch runs, never segrobust.kernels.Conv3d
    assert provenance(net, cpu, True) == {"precision": "bf16", "kernel": "native"}
    assert kernel_name(net, torch.device("cuda"), True) == "cudnn"


@pytest.mark.parametrize(("precision", "native", "amp"), [
    ("fp32", True, False), ("fp32", False, False), ("bf16", False, True), ("bf16", True, True),
    ("auto", True, True), ("auto", False, False),
])  # fmt: skip
def test_evaluation_precision_is_fp32_unless_asked(monkeypatch, precision, native, amp):
    monkeypatch.setattr(model_module, "cpu_has_native_bf16", lambda: native)
    assert model_module.evaluation_amp(precision, torch.device("cpu")) is amp
    with pytest.raises(ValueError, match="attacks.precision must be one of"):
        model_module.evaluation_amp("fp16", torch.device("cpu"))


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-bf16"])
def test_amp_auto_follows_the_cpus_native_bf16(monkeypatch, native):
    monkeypatch.setattr("segrobust.model.cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert use_amp("auto", cpu) is native
    assert use_amp("on", cpu) and not use_amp("off", cpu)
    assert use_amp("auto", torch.device("cuda")) and not use_amp("off", torch.device("cuda"))
    with pytest.raises(ValueError, match="amp must be one of"):
        use_amp("bf16", cpu)


def cpu_flags() -> set[str]:
    """The x86 feature flags of the first processor in /proc/cpuinfo (empty elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in lines
                 if line.startswith("flags")), set())  # fmt: skip


def test_native_bf16_detector_agrees_with_the_kernels_cpu_flags():
    """Native bf16 = the AVX512-BF16 (or AMX-BF16) flag; plain AVX-512 only emulates it."""
    flags = cpu_flags()
    if not flags:
        pytest.skip("no x86 flags in /proc/cpuinfo")
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"}), sorted(flags)
