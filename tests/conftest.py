from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


def write_brats_subject(
    root: Path,
    sid: str,
    grade: str | None = "HGG",
    shape: tuple[int, int, int] = (20, 20, 16),
    seed: int = 0,
) -> dict[str, Path]:
    """Write a small valid BraTS-layout subject (brain ellipsoid + tumour blob); return paths."""
    rng = np.random.default_rng(seed)
    folder = root / grade / sid if grade else root / sid
    folder.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    labels = np.zeros(shape, np.uint8)
    tumour = ((grid - 0.2) ** 2).sum(0)
    labels[(tumour < 0.15) & brain] = 2
    labels[(tumour < 0.07) & brain] = 4
    labels[(tumour < 0.02) & brain] = 1
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    paths = {}
    for i, kind in enumerate(("t1", "t1ce", "t2", "flair")):
        vol = (rng.normal(500 + 100 * i, 30, shape) + 200 * labels) * brain
        paths[kind] = folder / f"{sid}_{kind}.nii.gz"
        nib.save(nib.Nifti1Image(vol.astype(np.int16), affine), paths[kind])
    paths["seg"] = folder / f"{sid}_seg.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), paths["seg"])
    return paths


@pytest.fixture
def brats_tree(tmp_path: Path) -> Path:
    """A tiny BraTS 2017 tree: 3 HGG and 2 LGG subjects."""
    root = tmp_path / "brats17"
    for i in range(5):
        grade = "HGG" if i < 3 else "LGG"
        write_brats_subject(root, f"Brats17_T{i:02d}_1", grade, seed=i)
    return root
