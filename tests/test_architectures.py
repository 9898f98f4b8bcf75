"""The architecture registry: MONAI networks built from config data, trained and attacked."""

from functools import partial

import numpy as np
import pytest
import torch
from test_training import write_subject

from segrobust import attacks
from segrobust.losses import segmentation_loss
from segrobust.models import registry
from segrobust.models.checkpoints import load_model, save_model
from segrobust.training import train

TINY_NETS = {
    "SegResNet": ({"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}, 16),
    "SegResNetDS": ({"init_filters": 8, "blocks_down": [1, 1, 1], "dsdepth": 2}, 16),
    "DynUNet": (
        {"kernel_size": [3, 3, 3], "strides": [1, 2, 2], "upsample_kernel_size": [2, 2],
         "filters": [4, 8, 16], "deep_supervision": True, "deep_supr_num": 1},
        16,
    ),
    "UNETR": ({"feature_size": 4, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4}, 16),
    "BasicUNet": ({"features": [4, 4, 8, 8, 16, 4]}, 32),
}  # fmt: skip
DYNUNET = {"name": "DynUNet", "kwargs": TINY_NETS["DynUNet"][0]}


@pytest.mark.parametrize("name", TINY_NETS)
def test_network_gives_one_logits_tensor_in_both_modes_and_round_trips(name, tmp_path):
    kwargs, size = TINY_NETS[name]
    torch.manual_seed(0)
    model = registry.build(name, kwargs, input_shape=(size,) * 3)
    x = torch.randn(1, 4, size, size, size)
    assert model.train()(x).shape == (1, 4, size, size, size)  # deep supervision: main head
    with torch.no_grad():
        expected = model.eval()(x)
    assert expected.shape == (1, 4, size, size, size)
    save_model(model, tmp_path / "model.pt")
    loaded, _ = load_model(tmp_path / "model.pt", conv_kernel="native")  # weights_only=True
    assert registry.record(loaded) == registry.record(model)
    filled = {"in_channels": 4, "out_channels": 4, "spatial_dims": 3}
    assert filled.items() <= registry.record(model)["kwargs"].items() or name == "UNETR"
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)


def test_unetr_gets_the_training_shape_and_swinunetr_runs_on_its_minimum_size():
    unetr = registry.build("UNETR", TINY_NETS["UNETR"][0], input_shape=(16, 16, 32))
    assert registry.record(unetr)["kwargs"]["img_size"] == [16, 16, 32]
    swin = registry.build("SwinUNETR", {"feature_size": 12, "depths": [1, 1, 1, 1],
                                             "num_heads": [1, 1, 1, 1]}).eval()  # fmt: skip
    with torch.no_grad():
        assert swin(torch.randn(1, 4, 64, 64, 64)).shape == (1, 4, 64, 64, 64)


def test_unknown_network_or_bad_kwargs_are_named():
    with pytest.raises(ValueError, match="unknown architecture 'ResNet'"):
        registry.build("ResNet")
    with pytest.raises(ValueError, match="architecture SegResNet .*num_groups"):
        registry.build("SegResNet", {"init_filters": 4})
    with pytest.raises(ValueError, match="architecture DynUNet"):
        registry.build("DynUNet", {"kernel_size": [3, 3]})


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(3)
    dirs = [write_subject(root / f"s{i}", rng, ("HGG", "LGG")[i % 2]) for i in range(4)]
    return dirs[:3], dirs[3:]


def test_monai_network_trains_with_every_strategy_and_is_attacked_by_every_attack(cohort, tmp_path):
    common = {"epochs": 1, "lr": 3e-3, "architecture": DYNUNET}
    runs = {
        "baseline": {"epochs": 6},  # long enough to see it learn (0.07 s an epoch)
        "adversarial": {"epsilon": 0.05},
        "noise": {},
        "distill_teacher": {"temperature": 5.0},
        "distill_student": {"temperature": 5.0},
    }
    for strategy, extra in runs.items():
        out = tmp_path / strategy
        teacher = (
            tmp_path / "distill_teacher" / "model.pt" if strategy == "distill_student" else None
        )
        train({"strategy": strategy, **common, **extra}, *cohort, out / "model.pt",
              out / "log.csv", out / "ckpt.pt", teacher, "cpu")  # fmt: skip
        model, settings = load_model(out / "model.pt")
        assert registry.record(model)["name"] == "DynUNet"
        assert settings["settings"]["architecture"] == DYNUNET
        if strategy == "baseline":  # it learns: the loss falls, validation Dice rises
            log = settings["log"]
            losses = [row["train_loss"] for row in log]
            assert losses[-1] < losses[0] - 0.03, log
            assert log[-1]["val_dice_WT"] > log[0]["val_dice_WT"], log
    image = torch.from_numpy(np.load(cohort[1][0] / "image.npy"))[None]
    target = torch.from_numpy(np.load(cohort[1][0] / "label.npy"))[None].long()
    loss = partial(segmentation_loss, variant="with_background")
    scale = attacks.relative_scale(image)
    generator = torch.Generator().manual_seed(0)
    adversarial = {
        "fgsm": attacks.fgsm(model, image, target, loss, 0.05),
        "ifgsm": attacks.ifgsm(model, image, target, loss, 0.05, 0.02, 3),
        "tifgsm": attacks.ifgsm(
            model, image, attacks.constant_target(image), loss, 0.05, 0.02, 3, targeted=True
        ),
        "pgd": attacks.pgd(model, image, target, loss, 0.05, 0.02, 2, generator=generator),
        "segpgd": attacks.segpgd(model, image, target, 0.05, 0.02, 2, generator=generator),
        "fgsm_T": attacks.fgsm(model, image, target, attacks.with_temperature(loss, 5.0), 0.05),
    }
    for name, x_adv in adversarial.items():
        change = (x_adv - image).abs() / scale
        assert change.max() <= 0.05 + 1e-6 and change.max() > 0.01, name
