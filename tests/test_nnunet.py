"""nnU-Net v2 result folders: nnU-Net's inference re-done in torch, checked against nnU-Net.

The oracle test builds a real result folder with nnU-Net's own planner, preprocessor and
trainer (a short epoch) and compares segrobust's prediction with ``nnUNetPredictor``'s; it
runs where the ``nnunet`` extra is installed (CI installs ``[test]`` only).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import phantom
from scipy.ndimage import gaussian_filter

from segrobust import attacks, external
from segrobust.inference import check_spacing, wrap
from segrobust.labels import labels_to_classes
from segrobust.losses import segmentation_loss
from segrobust.metrics import dice_regions
from segrobust.models.checkpoints import load_model
from segrobust.nnunet import (
    configuration,
    declared_settings,
    gaussian_weights,
    nonzero_box,
    window_starts,
)

HAS_NNUNET = importlib.util.find_spec("nnunetv2") is not None
needs_nnunet = pytest.mark.skipif(
    not HAS_NNUNET, reason="nnunetv2 not installed (pip install -e '.[test,nnunet]')"
)
SPACING = (1.0, 1.2, 1.0)  # NIfTI voxel axes; nnU-Net transposes the coarse axis first
MODALITY_KEYS = ("t1", "t1ce", "t2", "flair")
TO_NNUNET = np.zeros(5, np.uint8)
TO_NNUNET[[0, 2, 1, 4]] = [0, 1, 2, 3]  # BraTS -> nnU-Net's BraTS convention


def entry(folder, **nnunet) -> dict:
    spec = {"folder": str(folder), "configuration": "3d_fullres", "folds": None,
            "checkpoint": "checkpoint_final.pth", "mirroring": True, "step_size": 0.5,
            "gaussian": True, "labels": [0, 2, 1, 4]} | nnunet  # fmt: skip
    return {"name": "nn", "nnunet": spec, "modalities": None, "normalization": None,
            "output": None, "inference": None}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# pieces, against hand-computed values and scipy


@pytest.mark.parametrize(
    ("size", "patch", "step", "expected"),
    [(28, 28, 0.5, [0]), (40, 28, 0.5, [0, 12]), (64, 28, 0.5, [0, 12, 24, 36]),
     (110, 64, 0.5, [0, 23, 46]), (30, 16, 1.0, [0, 14])],
)  # fmt: skip
def test_windows_are_placed_as_nnunet_places_them(size, patch, step, expected):
    # 110/64/0.5 is the example in nnU-Net's compute_steps_for_sliding_window docstring
    assert window_starts(size, patch, step) == expected


def test_gaussian_weights_are_a_blurred_impulse_scaled_to_one():
    weights = gaussian_weights((9, 16, 12)).numpy()
    impulse = np.zeros((9, 16, 12))
    impulse[4, 8, 6] = 1
    blurred = gaussian_filter(impulse, (9 / 8, 2.0, 1.5), mode="constant")
    np.testing.assert_allclose(weights, blurred / blurred.max(), rtol=1e-6)
    assert weights.max() == 1 and weights.min() > 0


def test_nonzero_box_fills_holes_and_crops():
    x = torch.zeros(2, 10, 10, 10)
    x[0, 2:7, 3:8, 4:9] = 1
    x[0, 4, 5, 6] = 0  # a hole, filled as nnU-Net fills it
    x[1, 8, 8, 8] = -2  # nonzero in another channel only
    mask, box = nonzero_box(x)
    assert box == (slice(2, 9), slice(3, 9), slice(4, 9))
    assert mask[2, 2, 2] and mask[6, 5, 4] and not mask[6, 0, 0]


def _dataset_json(folder: Path, labels: dict, regions=None, names=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = names or {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}  # MSD Task01
    dataset = {"channel_names": names, "labels": labels, "file_ending": ".nii.gz"}
    if regions is not None:
        dataset["regions_class_order"] = regions
    (folder / "dataset.json").write_text(json.dumps(dataset))


def test_conventions_come_from_dataset_json(tmp_path):
    _dataset_json(tmp_path / "l", {"background": 0, "edema": 1, "non-enhancing": 2, "enh": 3})
    declared, source = declared_settings(entry(tmp_path / "l"))
    assert declared["modalities"] == ["flair", "t1", "t1ce", "t2"] and "dataset.json" in source
    assert declared["output"] == {"type": "softmax", "labels": [0, 2, 1, 4]}
    regions = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "ET": 3}
    _dataset_json(tmp_path / "r", regions, [1, 2, 3], {"0": "T1", "1": "T1ce", "2": "T2",
                                                       "3": "Flair"})  # fmt: skip
    settings = external.settings(entry(tmp_path / "r"))
    assert settings["modalities"] == ["t1", "t1ce", "t2", "flair"]
    assert settings["output"] == {"type": "sigmoid", "regions": ["WT", "TC", "ET"],
                                  "threshold": 0.5}  # fmt: skip


def test_bad_folders_and_contradictions_are_named(tmp_path):
    regions = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "ET": 3}
    _dataset_json(tmp_path / "r", regions, [3, 2, 1])
    with pytest.raises(ValueError, match="regions_class_order"):
        declared_settings(entry(tmp_path / "r"))
    _dataset_json(tmp_path / "l", {"background": 0, "edema": 1, "ncr": 2, "et": 3})
    contradiction = entry(tmp_path / "l") | {"modalities": ["t1", "t1ce", "t2", "flair"]}
    with pytest.raises(ValueError, match="nn: modalities .* contradicts .*dataset.json"):
        external.settings(contradiction)
    with pytest.raises(ValueError, match="normalization"):
        external.settings(entry(tmp_path / "l") | {"normalization": "zscore"})
    with pytest.raises(FileNotFoundError, match="missing/dataset.json"):
        declared_settings(entry(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="fold_"):
        external.files(entry(tmp_path / "l"))
    plans = {"configurations": {"3d_fullres": {"patch_size": [8, 8], "architecture": {}},
                                "3d_cascade_fullres": {"inherits_from": "3d_fullres",
                                                       "previous_stage": "3d_lowres"}}}  # fmt: skip
    with pytest.raises(ValueError, match="not 3D"):
        configuration(plans, "3d_fullres", Path("plans.json"))
    with pytest.raises(ValueError, match="cascade"):
        configuration(plans, "3d_cascade_fullres", Path("plans.json"))
    with pytest.raises(ValueError, match="no configuration '2d'"):
        configuration(plans, "2d", Path("plans.json"))


def test_a_grid_at_another_spacing_is_refused():
    model = torch.nn.Identity()
    model.voxel_spacing = [1.0, 1.2, 1.0]
    check_spacing(model, (1.0, 1.2, 1.0), "S0")
    check_spacing(model, (1.0, 1.2, 155 / 160), "S0")  # BraTS' 155 slices resized to 160
    with pytest.raises(ValueError, match="subject S0: voxel spacing .* preprocess.shape"):
        check_spacing(model, (1.0, 1.2, 1.1), "S0")


# ---------------------------------------------------------------------------------------------
# the oracle: nnU-Net's own folder and predictor


def _raw_dataset(root: Path, dataset_id: int, n: int = 6) -> Path:
    """nnU-Net raw dataset of ``n`` phantom cases (NIfTI, spacing SPACING, nnU-Net labels)."""
    folder = root / f"Dataset{dataset_id:03d}_Tiny"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    affine = np.diag([*SPACING, 1.0])
    for i in range(n):
        images, labels = phantom((32, 28, 32), seed=i)
        for c, key in enumerate(MODALITY_KEYS):
            path = folder / "imagesTr" / f"case{i:03d}_{c:04d}.nii.gz"
            nib.save(nib.Nifti1Image(images[key], affine), path)
        nib.save(
            nib.Nifti1Image(TO_NNUNET[labels], affine), folder / "labelsTr" / f"case{i:03d}.nii.gz"
        )
    return folder


SPECS = {
    "regions": {"dataset_id": 101, "channel_names": {"0": "T1", "1": "T1ce", "2": "T2",
                                                     "3": "Flair"},
                "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                           "enhancing tumor": 3},
                "regions_class_order": [1, 2, 3], "folds": [0, 1]},
    "labels": {"dataset_id": 102, "channel_names": {"0": "T1", "1": "T1ce", "2": "T2",
                                                    "3": "Flair"},
               "labels": {"background": 0, "edema": 1, "non-enhancing tumor": 2,
                          "enhancing tumour": 3},
               "regions_class_order": None, "folds": [0]},
}  # fmt: skip


@pytest.fixture(scope="module")
def result_folders(tmp_path_factory) -> dict[str, Path]:
    """Result folders made by nnU-Net's planner, preprocessor and trainer (nnunet_folder.py)."""
    root = tmp_path_factory.mktemp("nnunet")
    env = os.environ | {f"nnUNet_{k}": str(root / k) for k in ("raw", "preprocessed", "results")}
    env |= {"nnUNet_compile": "false", "OMP_NUM_THREADS": "1"}
    folders = {}
    for kind, spec in SPECS.items():
        _raw_dataset(root / "raw", spec["dataset_id"])
        spec_path = root / f"{kind}.json"
        spec_path.write_text(json.dumps(spec | {"name": "Tiny", "n_cases": 6, "iterations": 10}))
        script = Path(__file__).parent / "nnunet_folder.py"
        done = subprocess.run([sys.executable, str(script), str(spec_path)], env=env,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        folders[kind] = Path(done.stdout.strip().splitlines()[-1])
    return folders


def _nnunet_predictor(folder: Path, mirroring: bool):
    """nnU-Net's own predictor of ``folder`` (network built by its trainer class, weights
    loaded as nnU-Net loads them)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans, dataset = (json.loads((folder / f).read_text()) for f in ("plans.json", "dataset.json"))
    manager = PlansManager(plans)
    config = manager.get_configuration("3d_fullres")
    checkpoints = [torch.load(p, map_location="cpu", weights_only=False)
                   for p in sorted(folder.glob("fold_*/checkpoint_final.pth"))]  # fmt: skip
    network = nnUNetTrainer.build_network_architecture(
        config.network_arch_class_name, config.network_arch_init_kwargs,
        config.network_arch_init_kwargs_req_import,
        determine_num_input_channels(manager, config, dataset),
        manager.get_label_manager(dataset).num_segmentation_heads, enable_deep_supervision=False,
    )  # fmt: skip
    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
        device=torch.device("cpu"), verbose=False, allow_tqdm=False,
    )  # fmt: skip
    predictor.manual_initialization(
        network, manager, config, [c["network_weights"] for c in checkpoints], dataset,
        checkpoints[0]["trainer_name"], checkpoints[0]["inference_allowed_mirroring_axes"],
    )  # fmt: skip
    return predictor


@pytest.mark.slow
@needs_nnunet
@pytest.mark.parametrize(("kind", "mirroring"), [("regions", True), ("labels", False)])
def test_segrobust_predicts_what_nnunet_predicts_and_fgsm_changes_it(
    result_folders, kind, mirroring, tmp_path
):
    """Volumes larger than the patch (several Gaussian windows), nnU-Net's transposed axes,
    two folds averaged and mirroring (regions), one fold without it (labels)."""
    folder = result_folders[kind]
    config = entry(folder, mirroring=mirroring)
    external.write_model(config, tmp_path / "model.pt")
    network, _ = load_model(tmp_path / "model.pt")
    model = wrap(network, external.settings(config)).eval()
    assert model.voxel_spacing == pytest.approx(SPACING)
    predictor = _nnunet_predictor(folder, mirroring)
    to_brats = np.array([0, 2, 1, 4])
    for seed in (10, 11):
        images, labels = phantom((44, 36, 40), seed=seed)
        raw = np.stack([images[k] for k in MODALITY_KEYS]).astype(np.float32)
        theirs = predictor.predict_single_npy_array(  # nnU-Net's reader: axes reversed
            raw.transpose(0, 3, 2, 1).copy(), {"spacing": list(SPACING[::-1])}
        )
        theirs = labels_to_classes(to_brats[np.asarray(theirs).transpose(2, 1, 0)])
        x = torch.from_numpy(raw)[None]
        with torch.no_grad():
            ours = model(x).argmax(1)[0].numpy()
        agreement = (ours == theirs).mean()
        truth = labels_to_classes(labels)
        dice_ours, dice_theirs = dice_regions(ours, truth), dice_regions(theirs, truth)
        print(f"{kind} seed {seed}: label agreement {agreement:.6f}, Dice ours {dice_ours}, "
              f"nnU-Net {dice_theirs}")  # fmt: skip
        assert len(np.unique(theirs)) > 1  # the short training predicts tumour
        assert agreement >= 0.999
        for region, dice in dice_theirs.items():
            assert dice_ours[region] == pytest.approx(dice, abs=1e-3), region
        target = torch.from_numpy(truth)[None].long()
        loss = lambda logits, y: segmentation_loss(logits, y, "with_background")  # noqa: E731
        adversarial = attacks.fgsm(model, x, target, loss, 0.05)
        with torch.no_grad():
            attacked = model(adversarial).argmax(1)[0].numpy()
        assert (attacked != ours).mean() > 0.001  # the attack reaches through all of it
