import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def phantom(
    shape: tuple[int, int, int] = (20, 20, 16), seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Int16 modalities {t1, t1ce, t2, flair} and internal BraTS labels {0,1,2,4} of a brain
    ellipsoid with a tumour blob (each modality at its own intensity level)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    labels = np.zeros(shape, np.uint8)
    tumour = ((grid - 0.2) ** 2).sum(0)
    labels[(tumour < 0.15) & brain] = 2
    labels[(tumour < 0.07) & brain] = 4
    labels[(tumour < 0.02) & brain] = 1
    images = {
        kind: (
            (rng.normal(500 + 100 * i, 30, shape) + 200 * labels.astype(np.int32)) * brain
        ).astype(np.int16)
        for i, kind in enumerate(("t1", "t1ce", "t2", "flair"))
    }
    return images, labels


def write_brats_subject(
    root: Path,
    sid: str,
    grade: str | None = "HGG",
    shape: tuple[int, int, int] = (20, 20, 16),
    seed: int = 0,
) -> dict[str, Path]:
    """Write a small valid BraTS-2017-layout subject (:func:`phantom`); return its paths."""
    folder = root / grade / sid if grade else root / sid
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = phantom(shape, seed)
    paths = {kind: folder / f"{sid}_{kind}.nii.gz" for kind in (*images, "seg")}
    for kind, vol in images.items():
        nib.save(nib.Nifti1Image(vol, AFFINE), paths[kind])
    nib.save(nib.Nifti1Image(labels, AFFINE), paths["seg"])
    return paths


BRATS2023_KINDS = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
BRATS2023_LABELS = {0: 0, 1: 1, 2: 2, 4: 3}  # internal -> BraTS 2023


def write_brats2023_subject(root: Path, sid: str, seed: int = 0) -> None:
    """A BraTS 2023 subject ``<sid>/<sid>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` of :func:`phantom`."""
    folder = root / sid
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = phantom(seed=seed)
    for kind, vol in images.items():
        nib.save(nib.Nifti1Image(vol, AFFINE), folder / f"{sid}-{BRATS2023_KINDS[kind]}.nii.gz")
    seg = np.vectorize(BRATS2023_LABELS.get, otypes=[np.uint8])(labels)
    nib.save(nib.Nifti1Image(seg, AFFINE), folder / f"{sid}-seg.nii.gz")


MSD_ORDER = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}  # Task01's dataset.json
MSD_INTERNAL = {"FLAIR": "flair", "T1w": "t1", "t1gd": "t1ce", "T2w": "t2"}
MSD_LABELS = {0: 0, 2: 1, 1: 2, 4: 3}  # internal -> MSD (1 oedema, 2 non-enhancing, 3 ET)


def write_msd_task(root: Path, n: int = 2) -> None:
    """An MSD Task01 tree: dataset.json, imagesTr 4-D (FLAIR, T1w, T1gd, T2w), labelsTr."""
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"name": "BRATS", "modality": MSD_ORDER}))
    for i in range(n):
        images, labels = phantom(seed=i)
        stack = np.stack([images[MSD_INTERNAL[MSD_ORDER[str(c)]]] for c in range(4)], axis=-1)
        name = f"BRATS_{i + 1:03d}.nii.gz"
        nib.save(nib.Nifti1Image(stack, AFFINE), root / "imagesTr" / name)
        seg = np.vectorize(MSD_LABELS.get, otypes=[np.uint8])(labels)
        nib.save(nib.Nifti1Image(seg, AFFINE), root / "labelsTr" / name)


@pytest.fixture
def brats_tree(tmp_path: Path) -> Path:
    """A tiny BraTS 2017 tree: 3 HGG and 2 LGG subjects."""
    root = tmp_path / "brats17"
    for i in range(5):
        grade = "HGG" if i < 3 else "LGG"
        write_brats_subject(root, f"Brats17_T{i:02d}_1", grade, seed=i)
    return root


REGIONS = ("WT", "TC", "ET")
N_SUBJECTS = 12
# Long-format results for the statistics and tables tests. Mean Dice drop per (model, attack,
# eps); baseline drops a lot, defended models little.
DROPS = {
    "baseline": {0.05: 0.25, 0.1: 0.35},
    "distill_T20": {0.05: 0.05, 0.1: 0.08},
    "adv_eps0.05": {0.05: 0.25, 0.1: 0.35},  # as bad as the baseline: no asterisk expected
}


def _rows(model, attack, eps, iteration, dice, quality=np.nan, source=None):
    """Long-format rows of one condition: ``dice[region]`` arrays over subjects."""
    subjects = [f"s{i:02d}" for i in range(N_SUBJECTS)]
    return [
        {
            "model": model,
            "attack": attack,
            "eps": eps,
            "iteration": iteration,
            "subject": subj,
            "region": region,
            "dice": dice[region][i],
            "psnr": quality if np.isscalar(quality) else quality[i],
            "ssim": np.nan if np.isscalar(quality) else 1 - eps * 5,
            "rmse": np.nan if np.isscalar(quality) else eps,
            "linf": eps,
            "l2": eps * 10,
            "source_model": ("" if attack == "none" else model) if source is None else source,
            "severity": np.nan,
        }
        for region in REGIONS
        for i, subj in enumerate(subjects)
    ]


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    """12 subjects, 3 regions, baseline + two defences, FGSM at 0/0.05/0.1, i-FGSM, ti-FGSM."""
    rng = np.random.default_rng(42)
    clean = {r: rng.uniform(0.7, 0.9, N_SUBJECTS) for r in REGIONS}
    rows = []
    for model, drops in DROPS.items():
        rows += _rows(model, "none", 0.0, 0, clean)
        for eps, drop in drops.items():
            attacked = {r: clean[r] - drop + rng.normal(0, 0.01, N_SUBJECTS) for r in REGIONS}
            rows += _rows(model, "fgsm", eps, 1, attacked, 30 - 100 * eps + rng.normal(0, 1, 12))
    for attack, drop in (("ifgsm", 0.4), ("tifgsm", 0.3)):
        for it in (1, 5, 10):
            attacked = {r: clean[r] - drop * it / 10 + rng.normal(0, 0.01, 12) for r in REGIONS}
            rows += _rows("baseline", attack, 0.05, it, attacked, 28 + rng.normal(0, 1, 12))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def full_results(results) -> pd.DataFrame:
    """``results`` plus a transfer attack (crafted on another model) and a realistic
    perturbation (eps NaN): neither belongs in the white-box tables."""
    shifted = {r: np.full(N_SUBJECTS, 0.5) for r in REGIONS}
    extra = _rows("baseline", "fgsm", 0.05, 1, shifted, 29.0, source="distill_T20")
    extra += _rows("baseline", "motion", np.nan, 0, shifted, 33.0, source="")
    return pd.concat([results, pd.DataFrame(extra)], ignore_index=True)
