"""Sliding-window inference: attacks differentiate through the stitched output."""

import itertools
from functools import partial

import pytest
import torch

from segrobust import attacks
from segrobust.inference import SlidingWindow, wrap
from segrobust.losses import segmentation_loss
from segrobust.models.unet import UNet3D

LOSS = partial(segmentation_loss, variant="with_background")


def network(dtype: torch.dtype = torch.float32) -> UNet3D:
    torch.manual_seed(0)
    return UNet3D(base_filters=4, depth=3, dropout=0.0).to(dtype).eval()


def batch(size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, size, size, size, generator=g, dtype=dtype)
    return x, torch.randint(0, 4, (1, size, size, size), generator=g)


def input_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(LOSS(model(x), y), x)
    return grad


def test_one_window_over_the_volume_has_the_plain_forwards_gradient():
    net = network()
    x, y = batch(16, torch.float32)
    windowed = wrap(net, {"roi_size": [16, 16, 16], "overlap": 0.5})
    assert isinstance(windowed, SlidingWindow)
    plain = input_gradient(net, x, y)
    assert plain.abs().max() > 0
    torch.testing.assert_close(input_gradient(windowed, x, y), plain, atol=1e-6, rtol=0)


def stitched(net: torch.nn.Module, x: torch.Tensor, roi: int, starts: list[int]) -> torch.Tensor:
    """Average of the network's outputs over every window covering a voxel (written here
    independently of MONAI)."""
    out = torch.zeros(x.shape[0], 4, *x.shape[2:], dtype=x.dtype)
    count = torch.zeros(x.shape[2:], dtype=x.dtype)
    for i, j, k in itertools.product(starts, repeat=3):
        window = (..., slice(i, i + roi), slice(j, j + roi), slice(k, k + roi))
        out[window] = out[window] + net(x[window])
        count[window[1:]] += 1
    return out / count


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_through_overlapping_windows_is_the_sign_of_the_stitched_losss_gradient(targeted):
    net = network(torch.float64)  # float64: no gradient entry is near enough 0 to flip sign
    x, y = batch(16, torch.float64)
    windowed = wrap(net, {"roi_size": [8, 8, 8], "overlap": 0.5, "sw_batch_size": 3})
    reference = partial(stitched, net, roi=8, starts=[0, 4, 8])  # 27 windows, each voxel 1-8×
    torch.testing.assert_close(windowed(x), reference(x), atol=1e-10, rtol=0)
    assert not torch.allclose(windowed(x), net(x))  # the windows do change the output

    eps = 0.05
    x_adv = attacks.fgsm(windowed, x, y, LOSS, eps, targeted=targeted)
    x_ref = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(LOSS(reference(x_ref), y), x_ref)
    direction = -grad.sign() if targeted else grad.sign()
    assert (grad != 0).float().mean() > 0.99
    torch.testing.assert_close(x_adv, x + eps * attacks.relative_scale(x) * direction)


def test_gaussian_blending_and_bad_settings():
    net = network()
    x, _ = batch(16, torch.float32)
    out = wrap(net, {"roi_size": [8, 8, 8], "overlap": 0.25, "mode": "gaussian"})(x)
    assert out.shape == (1, 4, 16, 16, 16) and torch.isfinite(out).all()
    for settings, message in [
        ({"roi_size": [8, 8]}, "roi_size"),
        ({"roi_size": [8, 8, 8], "overlap": 1.0}, "overlap"),
        ({"roi_size": [8, 8, 8], "mode": "mean"}, "mode"),
    ]:
        with pytest.raises(ValueError, match=message):
            wrap(net, settings)
    assert wrap(net, {"roi_size": None}) is net
