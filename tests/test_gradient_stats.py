import json
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from segrobust.gradient_stats import GRADIENT_COLUMNS, evaluate_gradients, gradient_stats
from segrobust.losses import segmentation_loss

LOSS = partial(segmentation_loss, variant="paper", gamma=1e-5)
SETTINGS = {"loss": "paper", "gamma": 1e-5}


def local_net(scale: float = 1.0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv3d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 4, 1))

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x) * scale

    return Scaled().eval()


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, 12, 12, 12, generator=g), torch.randint(
        0, 4, (1, 12, 12, 12), generator=g
    )


def test_plain_network_has_no_zero_gradients_nor_saturation():
    x, y = batch()
    stats = gradient_stats(local_net(), x, y, LOSS)
    assert stats == {"n_voxels": 12**3, "zero_gradient": 0.0, "saturated": 0.0}


def test_saturated_softmax_zeroes_the_gradient():
    x, y = batch()
    stats = gradient_stats(local_net(1e4), x, y, LOSS)
    assert stats["saturated"] > 0.95 and stats["zero_gradient"] > 0.3


def test_rounded_input_has_zero_gradient_everywhere_and_mask_restricts_the_count():
    x, y = batch()
    net = local_net()
    quantised = nn.Sequential(
        type("Round", (nn.Module,), {"forward": lambda s, v: torch.round(v)})(), net
    )
    mask = torch.zeros(1, 1, 12, 12, 12, dtype=torch.bool)
    mask[..., :6, :, :] = True
    stats = gradient_stats(quantised, x, y, LOSS, mask)
    assert stats["zero_gradient"] == 1.0 and stats["n_voxels"] == 6 * 12 * 12
    with pytest.raises(ValueError, match="no voxel"):
        gradient_stats(net, x, y, LOSS, torch.zeros_like(mask))


def test_evaluate_gradients_over_subjects(tmp_path):
    dirs = []
    for i in range(2):
        x, y = batch(i)
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        np.save(folder / "image.npy", x[0].numpy())
        np.save(folder / "label.npy", y[0].numpy().astype(np.uint8))
        np.save(folder / "mask.npy", np.ones((12, 12, 12), bool))
        (folder / "meta.json").write_text(json.dumps({"affine": np.eye(4).tolist()}))
        dirs.append(folder)
    cpu = torch.device("cpu")
    plain = evaluate_gradients(local_net(), "m", dirs, SETTINGS, cpu, tags={"seed": 3})
    assert list(plain.columns) == GRADIENT_COLUMNS and list(plain["subject"]) == ["s0", "s1"]
    assert (plain["seed"] == 3).all() and plain["zero_gradient_tempered"].isna().all()
    student = evaluate_gradients(local_net(1e4), "m", dirs, SETTINGS, cpu, temperature=1e4)
    assert (student["zero_gradient"] > 0.3).all()
    assert (student["zero_gradient_tempered"] == 0).all()  # logits / T: the gradient is back
    with pytest.raises(ValueError, match="temperature"):
        evaluate_gradients(local_net(), "m", dirs, SETTINGS, cpu, temperature=0.0)
