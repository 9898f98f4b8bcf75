"""The real Snakefile on three architectures and two external pretrained models (one run)."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT
from monai.inferers import sliding_window_inference
from test_bundles import make_bundle
from test_workflow import (
    TINY,
    planned_fields,
    planned_jobs,
    planned_models,
    snakemake,
    write_config,
)

from segrobust.labels import MODALITIES
from segrobust.metrics import dice_regions
from segrobust.models import registry
from segrobust.models.checkpoints import load_model
from segrobust.models.kernels import apply_kernel
from segrobust.models.unet import UNet3D

DYNUNET = {"kernel_size": [3, 3, 3], "strides": [1, 2, 2], "upsample_kernel_size": [2, 2],
           "filters": [4, 8, 16]}  # fmt: skip
TRAINED = {
    f"{arch}{m}" for arch in ("", "segresnet.", "dynunet.") for m in ("baseline", "adv_eps0.05")
}
EXTERNAL = {"regions", "classes", "bundle"}


def _external_models(directory):
    """A TorchScript net with sigmoid TC/WT/ET outputs on reversed, z-scored modalities, a
    DynUNet state_dict whose softmax channels are the BraTS labels 4, 2, 1, 0, run on 8³
    sliding windows, and a MONAI bundle (tests/test_bundles.py: channels T1c, T1, T2, FLAIR,
    zscore, 16³ windows, sigmoid TC/WT/ET) named by its directory alone."""
    torch.manual_seed(0)
    regions = UNet3D(n_classes=3, base_filters=4, depth=3).eval()
    torch.jit.save(torch.jit.trace(regions, torch.randn(1, 4, 16, 16, 16)), directory / "r.ts")
    classes = registry.build("DynUNet", DYNUNET).eval()
    torch.save(registry.unwrap(classes).state_dict(), directory / "s.pth")
    config = [
        {"name": "regions", "checkpoint": str(directory / "r.ts"),
         "modalities": ["flair", "t2", "t1ce", "t1"], "normalization": "zscore",
         "output": {"type": "sigmoid", "regions": ["TC", "WT", "ET"], "threshold": 0.5}},
        {"name": "classes", "checkpoint": str(directory / "s.pth"),
         "architecture": {"network": "DynUNet", "kwargs": DYNUNET},
         "output": {"type": "softmax", "labels": [4, 2, 1, 0]},
         "inference": {"roi_size": [8, 8, 8], "overlap": 0.5}},
        {"name": "bundle", "bundle": str(directory / "bundle")},
    ]  # fmt: skip
    bundle = make_bundle(directory / "bundle")
    return {"regions": regions, "classes": classes, "bundle": bundle}, config


@pytest.fixture(scope="module")
def models_run(tmp_path_factory):
    """config/architectures.yaml over a tiny config (1 epoch, no N4), plus external models."""
    workdir = tmp_path_factory.mktemp("models")
    networks, external = _external_models(workdir)
    preprocess = {**TINY["preprocess"], "n4": {"enabled": False}}
    base = write_config(workdir / "c.yaml", **dict(TINY, preprocess=preprocess,
                        training={"seeds": [1], "epochs": 1},
                        external_models=external))  # fmt: skip
    last = workdir / "last.yaml"
    last.write_text(yaml.safe_dump({"attacks": {"families": ["fgsm"]},  # fewer jobs
                                    "statistics": {"primary": {"attack": "fgsm"}}}))  # fmt: skip
    configs = ["--configfile", str(base), str(ROOT / "config" / "architectures.yaml"), str(last)]
    snakemake(workdir, "--cores", "2", *configs)
    return workdir / "results", networks, configs, workdir


@pytest.mark.slow
def test_three_architectures_and_external_models_are_trained_attacked_and_compared(models_run):
    results, _, configs, workdir = models_run
    table = pd.read_csv(results / "results.csv")
    assert set(table["model"]) == TRAINED | EXTERNAL
    for model in TRAINED | EXTERNAL:
        assert {"none", "fgsm"} <= set(table.loc[table["model"] == model, "attack"]), model
    network, extra = load_model(results / "models" / "dynunet.adv_eps0.05" / "seed1" / "model.pt")
    assert registry.record(network)["name"] == "DynUNet"
    assert extra["settings"]["strategy"] == "adversarial" and extra["settings"]["epsilon"] == 0.05
    assert (results / "models" / "regions" / "seed0" / "model.pt").exists()  # one replicate
    assert not (results / "models" / "regions" / "seed0" / "training_log.csv").exists()
    assert set(pd.read_csv(results / "tables" / "table2.csv")["model"]) == TRAINED | EXTERNAL
    assert planned_jobs(snakemake(workdir, "-n", *configs)) == {}


def _zscore_nonzero(x: np.ndarray) -> np.ndarray:
    out = x.copy()
    for c in range(x.shape[0]):
        brain = x[c] != 0
        out[c][brain] = (x[c][brain] - x[c][brain].mean()) / x[c][brain].std()
    return out


@pytest.mark.slow
def test_external_models_give_the_dice_of_direct_inference(models_run):
    results, networks, _, _ = models_run
    apply_kernel(networks["classes"], "onednn")  # what the workflow runs on the CPU
    split = pd.read_csv(results / "split.csv")
    order = [MODALITIES.index(m) for m in ("flair", "t2", "t1ce", "t1")]
    for subject in split.loc[split["split"] == "test", "subject"]:
        image = np.load(results / "preprocessed" / subject / "image.npy")
        truth = np.load(results / "preprocessed" / subject / "label.npy")
        with torch.no_grad():
            x = torch.from_numpy(_zscore_nonzero(image[order]))[None]
            tc, wt, et = (networks["regions"](x)[0].sigmoid() > 0.5).numpy()
            x = torch.from_numpy(image)[None]
            logits = sliding_window_inference(x, (8, 8, 8), 1, networks["classes"], overlap=0.5)
            channel = logits[0].argmax(0).numpy()
            x = torch.from_numpy(_zscore_nonzero(image[[1, 0, 2, 3]]))[None]  # T1c, T1, T2, FLAIR
            logits = sliding_window_inference(x, (16, 16, 16), 1, networks["bundle"], overlap=0.5)
            btc, bwt, bet = (logits[0].sigmoid() > 0.5).numpy()
        predictions = {
            "regions": np.where(et, 3, np.where(tc, 1, np.where(wt, 2, 0))),
            "classes": np.array([3, 2, 1, 0])[channel],  # labels 4, 2, 1, 0 as classes
            "bundle": np.where(bet, 3, np.where(btc, 1, np.where(bwt, 2, 0))),
        }
        for model, pred in predictions.items():
            clean = pd.read_csv(results / "evaluation" / model / "seed0" / "clean.csv")
            got = clean[clean["subject"] == subject].set_index("region")["dice"]
            for region, dice in dice_regions(pred, truth).items():
                assert got[region] == pytest.approx(dice, abs=1e-6), (model, subject, region)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"architectures": {"resnet": {"network": "ResNet50"}}}, "ResNet50"),
        ({"architectures": {"Seg.Res": {"network": "SegResNet"}}}, "Seg.Res"),
        ({"external_models": [{"name": "baseline", "checkpoint": "m.ts"}]}, "also names of"),
        ({"external_models": [{"name": "x", "checkpoint": "m.ts", "output": {"type": "probs"}}]},
         "probs"),
        ({"inference": {"roi_size": [16, 16]}}, "roi_size"),
    ],
)  # fmt: skip
def test_bad_model_config_stops_with_the_key_named(tmp_path, sections, message):
    config = write_config(tmp_path / "c.yaml", **sections)
    result = snakemake(tmp_path, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_dry_run_plans_the_teacher_of_each_architecture(tmp_path):
    config = write_config(
        tmp_path / "c.yaml",
        architectures={"basic": {"network": "BasicUNet", "kwargs": {"features": [8] * 6}}},
        training={
            "adversarial": {"epsilons": []},
            "pgd_adversarial": {"epsilons": []},
            "noise": {"enabled": False},
        },
    )
    result = snakemake(tmp_path, "-n", "--configfile", str(config))
    assert planned_models(result, "train_model") == {
        "baseline", "teacher_T20", "distill_T20",
        "basic.baseline", "basic.teacher_T20", "basic.distill_T20",
    }  # fmt: skip
    teachers = planned_fields(result, "train_model", r"input: results/models/(\S+)/model.pt")
    assert sorted(teachers) == [  # each seed's student learns from the same seed's teacher
        "basic.teacher_T20/seed1", "basic.teacher_T20/seed2",
        "teacher_T20/seed1", "teacher_T20/seed2",
    ]  # fmt: skip
