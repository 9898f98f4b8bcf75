"""External models: safe import of TorchScript and state_dict files, input/output conventions."""

import numpy as np
import pytest
import torch
from monai.transforms import NormalizeIntensity, ScaleIntensity

from segrobust.inference import ClassLogits, InputAdapter, RegionLogits, wrap
from segrobust.models import registry
from segrobust.models.checkpoints import import_model, load_model
from segrobust.models.unet import UNet3D

NET = {"name": "BasicUNet", "kwargs": {"features": [4, 4, 8, 8, 16, 4], "out_channels": 3}}


def test_region_logits_argmax_is_the_thresholded_label_map_and_has_a_gradient():
    g = torch.Generator().manual_seed(0)
    raw = (3 * torch.randn(2, 3, 6, 6, 6, generator=g)).requires_grad_(True)  # ET, TC, WT
    threshold = 0.3
    logits = RegionLogits(["ET", "TC", "WT"], threshold)(raw)
    p = raw.detach().sigmoid() > threshold
    et, tc, wt = p[:, 0], p[:, 1], p[:, 2]
    expected = torch.where(et, 3, torch.where(tc, 1, torch.where(wt, 2, 0)))
    assert torch.equal(logits.argmax(1), expected)
    assert len(set(expected.unique().tolist())) == 4
    (grad,) = torch.autograd.grad(logits.log_softmax(1).mean(), raw)
    assert (grad != 0).any(dim=(0, 2, 3, 4)).all()  # every region channel gets a gradient


def test_class_logits_reorder_to_brats_classes():
    x = torch.arange(4.0).view(1, 4, 1, 1, 1)  # channel i has BraTS label [4, 0, 2, 1][i]
    assert ClassLogits([4, 0, 2, 1])(x).flatten().tolist() == [1.0, 3.0, 2.0, 0.0]
    with pytest.raises(ValueError, match="labels"):
        ClassLogits([0, 1, 2, 3])


def test_input_adapter_orders_modalities_and_normalises_as_monai():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, 8, generator=g) * 5 + 3
    x[..., :2] = 0  # background
    swap = InputAdapter(["flair", "t2", "t1ce", "t1"])(x)
    assert torch.equal(swap, x.flip(1))
    z = InputAdapter(None, "zscore")(x)
    torch.testing.assert_close(z[0], NormalizeIntensity(nonzero=True, channel_wise=True)(x[0]))
    m = InputAdapter(None, "minmax")(x)
    torch.testing.assert_close(m[0], ScaleIntensity(channel_wise=True)(x[0]))
    with pytest.raises(ValueError, match="modalities"):
        InputAdapter(["t1", "t1", "t2", "flair"])


def test_torchscript_and_state_dict_import_to_the_same_model(tmp_path):
    torch.manual_seed(0)
    net = registry.unwrap(registry.build(NET["name"], NET["kwargs"])).eval()
    torch.jit.save(torch.jit.script(net), tmp_path / "net.ts")
    torch.save({"state_dict": net.state_dict()}, tmp_path / "net.pth")
    import_model(tmp_path / "net.ts", tmp_path / "ts" / "model.pt")
    import_model(tmp_path / "net.pth", tmp_path / "sd" / "model.pt", NET)
    scripted, extra = load_model(tmp_path / "ts" / "model.pt")
    rebuilt, _ = load_model(tmp_path / "sd" / "model.pt")
    assert extra == {} and registry.record(rebuilt)["name"] == "BasicUNet"
    x = torch.randn(1, 4, 32, 32, 32)
    settings = {"output": {"type": "sigmoid", "regions": ["TC", "WT", "ET"]}}
    with torch.no_grad():
        expected = net(x)
        assert torch.allclose(scripted(x), expected, atol=1e-5)
        assert torch.allclose(rebuilt(x), expected, atol=1e-5)
        assert wrap(scripted, settings)(x).shape == (1, 4, 32, 32, 32)


def test_bad_external_files_are_named(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save(UNet3D(base_filters=4, depth=3).state_dict(), plain)
    with pytest.raises(ValueError, match="plain.pt is not TorchScript"):
        import_model(plain, tmp_path / "out.pt")
    with pytest.raises(ValueError, match="plain.pt into BasicUNet"):
        import_model(plain, tmp_path / "out.pt", NET)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": np.zeros(3, dtype=object)}, pickled)  # needs unpickling code
    with pytest.raises(ValueError, match="pickled.pt"):
        import_model(pickled, tmp_path / "out.pt", NET)
    assert not (tmp_path / "out.pt").exists()
