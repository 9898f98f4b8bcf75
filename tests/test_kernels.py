"""The oneDNN convolution: forward and both gradients against PyTorch's own (float64) result."""

from pathlib import Path

import pytest
import torch
from torch import nn

from segrobust.losses import segmentation_loss
from segrobust.models import device as model_module
from segrobust.models import registry
from segrobust.models.device import cpu_has_native_bf16, use_amp
from segrobust.models.kernels import (
    CONV_KERNELS,
    OneDNNConv3d,
    apply_kernel,
    kernel_name,
    provenance,
)
from segrobust.models.unet import UNet3D


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
    fast = OneDNNConv3d(c_in, c_out, kernel, stride, padding, bias=bias)
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
    conv = OneDNNConv3d(2, 3, 3, padding=1)
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
    apply_kernel(model, "onednn")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(type(m) is OneDNNConv3d for m in convs)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    onednn = input_gradient()
    assert not torch.equal(onednn, native)  # another summation order ...
    assert _relative_error(onednn, native.double()) < 1e-3  # ... of the same arithmetic
    assert (onednn.sign() == native.sign()).float().mean() > 0.99
    apply_kernel(model, "native")
    assert all(type(m) is nn.Conv3d for m in model.modules() if isinstance(m, nn.Conv3d))
    assert torch.equal(input_gradient(), native)


def test_bf16_autocast_takes_pytorchs_own_path():
    conv = OneDNNConv3d(2, 2, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(1, 2, 4, 4, 4)).dtype == torch.bfloat16


def test_bad_kernel_name_is_rejected():
    with pytest.raises(ValueError, match="conv_kernel must be one of"):
        apply_kernel(nn.Sequential(), "fast")


def test_recorded_precision_and_kernel_say_what_ran():
    cpu = torch.device("cpu")
    net = UNet3D(4, 4, base_filters=4, depth=3).eval()
    traced = torch.jit.trace(apply_kernel(net, "native"), torch.randn(1, 4, 16, 16, 16))
    assert provenance(net, cpu, False) == {"precision": "fp32", "kernel": "native"}
    assert provenance(traced, cpu, False) == {"precision": "fp32", "kernel": "native"}
    apply_kernel(net, "onednn")
    assert provenance(net, cpu, False) == {"precision": "fp32", "kernel": "onednn"}
    # under bf16 autocast PyTorch's own dispatch runs, never OneDNNConv3d's
    assert provenance(net, cpu, True) == {"precision": "bf16", "kernel": "native"}
    assert kernel_name(net, torch.device("cuda"), True) == "cudnn"


def observed_kernel(model: nn.Module, x: torch.Tensor, amp: bool = False) -> str:
    """What ran the 3D convolutions of one forward, read off each layer's autograd node
    (``onednn``, ``native`` or ``onednn+native``)."""
    ran = []
    hooks = [m.register_forward_hook(lambda m, a, out: ran.append(type(out.grad_fn).__name__))
             for m in model.modules() if isinstance(m, nn.Conv3d)]  # fmt: skip
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        model(x.detach().requires_grad_(True))
    for hook in hooks:
        hook.remove()
    onednn = {"_OneDNNConv3dBackward"} & set(ran)
    return "onednn+native" if onednn and len(set(ran)) > 1 else "onednn" if onednn else "native"


def test_the_kernel_is_chosen_when_the_network_is_built_and_named_in_its_repr():
    nets, after = {}, {}
    for kernel in CONV_KERNELS:
        torch.manual_seed(3)
        nets[kernel] = registry.build("UNet3D", {"base_filters": 4, "depth": 3}, conv_kernel=kernel)
        after[kernel] = torch.rand(3)  # the build drew the same random numbers
    native, onednn = nets["native"], nets["onednn"]
    assert torch.equal(after["native"], after["onednn"])
    assert list(native.state_dict()) == list(onednn.state_dict())
    assert all(torch.equal(v, onednn.state_dict()[k]) for k, v in native.state_dict().items())
    n_convs = sum(type(m) is nn.Conv3d for m in native.modules())
    assert n_convs == 17 and repr(onednn).count("OneDNNConv3d(") == n_convs
    assert "OneDNNConv3d" not in repr(native)
    x = torch.randn(1, 4, 16, 16, 16)
    assert observed_kernel(onednn, x) == "onednn" and observed_kernel(native, x) == "native"
    monai = registry.build("BasicUNet", {"features": [4, 4, 8, 8, 16, 4]}, conv_kernel="onednn")
    assert observed_kernel(monai.eval(), torch.randn(1, 4, 32, 32, 32)) == "onednn"


def test_the_recorded_kernel_is_what_each_layer_ran():
    """oneDNN switched off, bf16, a dilated layer oneDNN does not take: the record says what
    the forward ran, layer by layer."""
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    net = UNet3D(4, 4, base_filters=4, depth=3).eval()
    apply_kernel(net, "onednn")
    x = torch.randn(1, 4, 16, 16, 16)
    assert kernel_name(net, cpu, False) == observed_kernel(net, x) == "onednn"
    assert kernel_name(net, cpu, True) == observed_kernel(net, x, amp=True) == "native"
    with torch.backends.mkldnn.flags(enabled=False):
        assert kernel_name(net, cpu, False) == observed_kernel(net, x) == "native"
    dilated = nn.Conv3d(2, 2, 3, padding=2, dilation=2)  # oneDNN's path takes no dilation
    mixed = apply_kernel(nn.Sequential(nn.Conv3d(2, 2, 3, padding=1), dilated), "onednn")
    assert all(type(m) is OneDNNConv3d for m in mixed)
    y = torch.randn(1, 2, 6, 6, 6)
    assert kernel_name(mixed, cpu, False) == observed_kernel(mixed, y) == "onednn+native"


def test_switching_onednn_off_gives_pytorchs_own_result():
    torch.manual_seed(0)
    plain = nn.Conv3d(3, 4, 3, padding=1)
    fast = apply_kernel(nn.Conv3d(3, 4, 3, padding=1), "onednn")
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 6, 6, 6)
    with torch.backends.mkldnn.flags(enabled=False):
        assert torch.equal(fast(x), plain(x))


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
    monkeypatch.setattr("segrobust.models.device.cpu_has_native_bf16", lambda: native)
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
