"""MONAI bundles: network and weights from the bundle's own config, conventions, safety."""

import json
from pathlib import Path

import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import SegResNet
from monai.transforms import NormalizeIntensity

from segrobust import external
from segrobust.inference import wrap
from segrobust.models.checkpoints import load_model

NET = {"blocks_down": [1, 1], "blocks_up": [1], "init_filters": 8, "out_channels": 3,
       "dropout_prob": 0.2}  # fmt: skip
INFERENCE = {  # MONAI's BraTS bundle's configs/inference.json, with a small network
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "ckpt_dir": "$@bundle_root + '/models'",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "in_channels": 4,
    "network_def": {"_target_": "SegResNet", "in_channels": "@in_channels", **NET},
    "network": "$@network_def.to(@device)",
    "preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True,
         "channel_wise": True},
    ]},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16],
                "sw_batch_size": 1, "overlap": 0.5},
    "postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing",
         "orig_keys": "image"},
        {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
        {"_target_": "Lambdad", "keys": "pred", "func": "$lambda x: torch.where(x[[2]] > 0, 4, "
         "torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))"},
        {"_target_": "SaveImaged", "keys": "pred", "output_dir": "$@bundle_root + '/eval'"},
    ]},
}  # fmt: skip
METADATA = {"network_data_format": {
    "inputs": {"image": {"num_channels": 4, "channel_def": {"0": "T1c", "1": "T1", "2": "T2",
                                                            "3": "FLAIR"}}},
    "outputs": {"pred": {"num_channels": 3, "channel_def": {
        "0": "Tumor core", "1": "Whole tumor", "2": "Enhancing tumor"}}},
}}  # fmt: skip


def make_bundle(root: Path, weights: str = "pt", config: dict = INFERENCE) -> SegResNet:
    """A bundle directory in MONAI's format with a trained-looking (random) small SegResNet."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    (root / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    torch.manual_seed(0)
    net = SegResNet(in_channels=4, **NET).eval()
    if weights == "pt":  # MONAI's CheckpointSaver writes {"model": state_dict}
        torch.save({"model": net.state_dict()}, root / "models" / "model.pt")
    else:
        torch.jit.save(torch.jit.script(net), root / "models" / "model.ts")
    return net


def entry(root: Path, **keys) -> dict:
    return {"name": "brats", "bundle": str(root), "modalities": None, "normalization": None,
            "output": None, "inference": None} | keys  # fmt: skip


@pytest.mark.parametrize("weights", ["pt", "ts"])
def test_bundle_runs_as_its_own_config_says(tmp_path, weights):
    net = make_bundle(tmp_path / "b", weights)
    config = entry(tmp_path / "b")
    settings = external.settings(config)
    assert settings == {
        "roi_size": [16, 16, 16], "sw_batch_size": 1, "overlap": 0.5,
        "modalities": ["t1ce", "t1", "t2", "flair"], "normalization": "zscore",
        "output": {"type": "sigmoid", "threshold": 0.5, "regions": ["TC", "WT", "ET"]},
    }  # fmt: skip
    assert external.files(config)["weights"].endswith(f"model.{weights}")
    external.write_model(config, tmp_path / "model.pt")
    model = wrap(load_model(tmp_path / "model.pt")[0], settings)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 24, 24, 24, generator=g)  # segrobust's order t1, t1ce, t2, flair
    x[..., :3] = 0
    with torch.no_grad():  # the bundle's own pipeline, by hand with MONAI
        image = x[:, [1, 0, 2, 3]]
        image = torch.stack([NormalizeIntensity(nonzero=True, channel_wise=True)(i) for i in image])
        p = sliding_window_inference(image, (16, 16, 16), 1, net, overlap=0.5).sigmoid() > 0.5
        tc, wt, et = p[:, 0], p[:, 1], p[:, 2]  # the bundle's Lambdad, as classes 0..3
        expected = torch.where(et, 3, torch.where(tc, 1, torch.where(wt, 2, 0)))
        got = model(x).argmax(1)
    assert (got == expected).float().mean() > 0.999
    assert len(expected.unique()) > 1
    x = x.requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).logsumexp(1).mean(), x)
    assert grad.abs().sum() > 0  # attacks differentiate through normalisation and windows


def test_nothing_but_network_classes_is_instantiated(tmp_path):
    evil = dict(INFERENCE, network_def={"_target_": "os.system", "command": "touch pwned"})
    make_bundle(tmp_path / "os", config=evil)
    with pytest.raises(ValueError, match="network_def::_target_: 'os.system'"):
        external.write_model(entry(tmp_path / "os"), tmp_path / "m.pt")
    expr = dict(INFERENCE, network_def={"_target_": "SegResNet", "in_channels": "$4 + 0"})
    make_bundle(tmp_path / "expr", config=expr)
    with pytest.raises(ValueError, match="in_channels.*expression"):
        external.write_model(entry(tmp_path / "expr"), tmp_path / "m.pt")
    run = dict(INFERENCE, network_def={"_target_": "monai.bundle.run"})
    make_bundle(tmp_path / "run", config=run)
    with pytest.raises(ValueError, match="monai.bundle.run"):
        external.write_model(entry(tmp_path / "run"), tmp_path / "m.pt")
    assert not Path("pwned").exists() and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("preprocessing", {"_target_": "Compose", "transforms": [
            {"_target_": "Spacingd", "keys": "image", "pixdim": [1, 1, 1]}]},
         "preprocessing::transforms::0 \\(Spacingd\\)"),
        ("inferer", {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16],
                     "padding_mode": "reflect"}, "inferer::padding_mode"),
        ("inferer", {"_target_": "SaliencyInferer"}, "inferer::_target_"),
        ("postprocessing", {"_target_": "Compose", "transforms": [
            {"_target_": "KeepLargestConnectedComponentd", "keys": "pred"}]},
         "postprocessing::transforms::0"),
    ],
)  # fmt: skip
def test_settings_without_a_counterpart_name_the_bundle_key(tmp_path, key, value, message):
    make_bundle(tmp_path / "b", config=dict(INFERENCE, **{key: value}))
    with pytest.raises(ValueError, match=message):
        external.settings(entry(tmp_path / "b"))


def test_entry_keys_must_agree_with_the_bundle(tmp_path):
    make_bundle(tmp_path / "b")
    with pytest.raises(ValueError, match="brats: normalization minmax contradicts zscore"):
        external.settings(entry(tmp_path / "b", normalization="minmax"))
    same = external.settings(entry(tmp_path / "b", modalities=["t1ce", "t1", "t2", "flair"]))
    assert same["modalities"] == ["t1ce", "t1", "t2", "flair"]
    with pytest.raises(FileNotFoundError, match="configs/inference.json"):
        external.files(entry(tmp_path / "nowhere"))
