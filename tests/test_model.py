from pathlib import Path

import numpy as np
import pytest
import torch

from segrobust.losses import segmentation_loss
from segrobust.models.checkpoints import load_model, save_model
from segrobust.models.device import autocast, predict_classes, select_device
from segrobust.models.registry import record
from segrobust.models.unet import UNet3D

TINY = {"base_filters": 4, "depth": 3}


def tiny_model(seed: int = 0, **kwargs) -> UNet3D:
    torch.manual_seed(seed)
    return UNet3D(**{**TINY, **kwargs})


def tiny_batch(seed: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 4-channel image whose classes follow from its first channel (learnable)."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(2, 4, size, size, size, generator=generator)
    classes = torch.bucketize(image[:, 0].contiguous(), torch.tensor([-0.5, 0.5, 1.2]))
    return image, classes


@pytest.mark.parametrize("depth", [3, 4])
def test_output_shape(depth):
    model = tiny_model(depth=depth, n_classes=4)
    image, _ = tiny_batch(size=16)
    logits = model(image)
    assert logits.shape == (2, 4, 16, 16, 16)
    assert logits.dtype == torch.float32


def test_non_cubic_input():
    model = tiny_model()
    assert model(torch.randn(1, 4, 8, 16, 12)).shape == (1, 4, 8, 16, 12)


@pytest.mark.parametrize(("depth", "n_seg"), [(3, 2), (4, 3)])
def test_deep_supervision_layers_all_reach_the_output(depth, n_seg):
    model = tiny_model(depth=depth)
    assert len(model.segmentation) == n_seg
    image, classes = tiny_batch()
    segmentation_loss(model(image), classes).backward()
    for layer in model.segmentation:
        assert layer.kernel_size == (1, 1, 1)
        assert layer.weight.grad.abs().sum() > 0


def test_default_parameter_count():
    with torch.device("meta"):  # no memory or init cost
        model = UNet3D()
    n_params = sum(p.numel() for p in model.parameters())
    assert 9.0e6 < n_params < 10.0e6


def test_dropout_only_in_training():
    model = tiny_model(dropout=0.3)
    image, _ = tiny_batch()
    model.eval()
    assert torch.equal(model(image), model(image))
    model.train()
    assert not torch.equal(model(image), model(image))


def test_input_validation():
    model = tiny_model()  # depth 3: sizes must be divisible by 4
    with pytest.raises(ValueError, match=r"\(18, 16, 16\)"):
        model(torch.randn(1, 4, 18, 16, 16))
    with pytest.raises(ValueError, match=r"\(1, 3, 16, 16, 16\)"):
        model(torch.randn(1, 3, 16, 16, 16))
    with pytest.raises(ValueError, match="single voxel"):
        model(torch.randn(1, 4, 4, 4, 4))
    with pytest.raises(ValueError, match="depth"):
        UNet3D(depth=1)
    with pytest.raises(ValueError, match="dropout"):
        UNet3D(dropout=1.0)


def test_save_load_round_trip(tmp_path):
    model = tiny_model(seed=1)
    path = tmp_path / "sub" / "model.pt"
    save_model(model, path, extra={"loss": "paper", "epochs": 3})
    loaded, extra = load_model(path)
    assert extra == {"loss": "paper", "epochs": 3}
    assert (
        record(loaded)
        == record(model)
        == {"name": "UNet3D", "kwargs": {**TINY, "in_channels": 4, "n_classes": 4, "dropout": 0.3}}
    )
    assert not loaded.training
    image, _ = tiny_batch()
    assert torch.equal(loaded(image), model.eval()(image))
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary left over


def test_load_model_rejects_bad_files(tmp_path):
    good = tmp_path / "good.pt"
    save_model(tiny_model(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    mismatched = tmp_path / "mismatched.pt"
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["arch"]["kwargs"]["base_filters"] = 8
    torch.save(checkpoint, mismatched)
    for path in (truncated, garbage, foreign, mismatched):
        with pytest.raises(ValueError, match=path.name):
            load_model(path)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


def test_training_steps_reduce_loss():
    model = tiny_model(seed=2, dropout=0.0)
    image, classes = tiny_batch(seed=3)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_now() -> float:
        with torch.no_grad():
            return segmentation_loss(model(image), classes, "with_background").item()

    before = loss_now()
    for _ in range(20):
        optimiser.zero_grad()
        segmentation_loss(model(image), classes, "with_background").backward()
        optimiser.step()
    assert loss_now() < 0.8 * before


def test_predict_classes():
    model = tiny_model()
    model.train()
    image, _ = tiny_batch()
    classes = predict_classes(model, image)
    assert classes.shape == (2, 16, 16, 16) and classes.dtype == torch.uint8
    assert model.training  # mode restored
    with torch.no_grad():
        assert torch.equal(classes, model.eval()(image).argmax(1).to(torch.uint8))


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            select_device("cuda")
    with pytest.raises(ValueError, match="tpu"):
        select_device("tpu")


def test_autocast():
    model = tiny_model()
    image, _ = tiny_batch()
    cpu = torch.device("cpu")
    with autocast(cpu, enabled=True):
        assert model(image).dtype == torch.bfloat16
    with autocast(cpu, enabled=False):
        assert model(image).dtype == torch.float32


@pytest.mark.parametrize("depth", [2, 3])
def test_scripted_network_computes_the_same_logits(depth):
    """torch.jit.script compiles the network (users export it as TorchScript), same logits."""
    model = tiny_model(depth=depth).eval()
    scripted = torch.jit.script(model)
    image, _ = tiny_batch()
    with torch.no_grad():
        assert torch.equal(scripted(image), model(image))


DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["UNet3D", "DynUNet"])
def test_checkpoints_written_before_the_models_package_still_load(name):
    """tests/data: model files saved by segrobust at c6367a0 (segrobust.model, plain
    nn.Conv3d) and the logits those networks gave on one input then."""
    path = DATA / f"{name.lower()}_c6367a0.pt"
    saved = torch.load(path, weights_only=True)
    reference = torch.load(DATA / "logits_c6367a0.pt", weights_only=True)
    for kernel in ("native", "onednn"):
        model, extra = load_model(path, conv_kernel=kernel)
        assert record(model) == saved["arch"] and extra == saved["extra"]
        assert list(model.state_dict()) == list(saved["state_dict"])
        with torch.no_grad():
            logits = model(reference["input"])
        if kernel == "native":  # the same kernels as then: the same numbers
            assert torch.equal(logits, reference[name])
        else:  # oneDNN sums in another order
            torch.testing.assert_close(logits, reference[name], rtol=1e-4, atol=1e-5)
