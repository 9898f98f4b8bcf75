"""Per-subject preprocessing: N4 bias correction, resize, standardisation; training format.

Order: N4 (ANTsPy, on each modality at its native resolution, masked by the brain = nonzero
voxels) → resize to the network's shape (linear for images, nearest for labels and mask) →
standardisation per subject and modality.

Standardisation ("global standardization" in the paper) is computed per subject and per
modality over the whole volume, never across subjects: no statistic of a test subject can leak
into training, and a subject's preprocessing does not depend on which split it falls in.
``brain`` (default) z-scores with the mean and sd of brain voxels and sets the background to 0;
``volume`` z-scores over every voxel of the volume.

Output per subject (one directory): ``image.npy`` float32 (4, D, H, W), ``label.npy`` uint8
classes 0..3, ``mask.npy`` bool brain mask — memory-mappable for training — plus
``image.nii.gz`` (4-D, modalities last) and ``seg.nii.gz`` (BraTS labels) with an affine whose
voxel size is scaled so the physical extent is kept, for viewing in ITK-SNAP or 3D Slicer.
"""

import json
import os
from pathlib import Path

# N4's result depends on ITK's thread count, which ITK reads once, when ANTsPy first runs a filter.
# One thread everywhere makes the preprocessed arrays identical on a laptop, a CI runner and a
# SLURM node (which sees only the CPUs it asked for).
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"

import ants  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from segrobust.data import Subject, load_subject  # noqa: E402
from segrobust.fileio import atomic_dir  # noqa: E402
from segrobust.labels import MODALITIES, classes_to_labels, labels_to_classes  # noqa: E402

STANDARDISATIONS = ("brain", "volume")


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Brain mask of a skull-stripped (C, X, Y, Z) volume: voxels nonzero in any modality."""
    return np.any(image != 0, axis=0)


def n4_correct(
    volume: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, ...],
    shrink_factor: int = 4,
    iterations: tuple[int, ...] = (50, 50, 50, 50),
    spline_distance: float | None = None,
) -> np.ndarray:
    """N4 bias-field correction of one 3-D volume with ANTsPy, restricted to ``mask``.

    Returns float32 with the same shape; voxels outside the mask are returned unchanged.
    """
    if not mask.any():
        raise ValueError("N4 needs a non-empty mask")
    img = ants.from_numpy(np.ascontiguousarray(volume, dtype=np.float32), spacing=spacing)
    mask_img = ants.from_numpy(mask.astype(np.float32), spacing=spacing)
    corrected = ants.n4_bias_field_correction(
        img,
        mask=mask_img,
        shrink_factor=shrink_factor,
        convergence={"iters": list(iterations), "tol": 1e-7},
        spline_param=spline_distance,
    ).numpy()
    return np.where(mask, corrected, volume).astype(np.float32)


def resize(volume: np.ndarray, shape: tuple[int, int, int], order: int) -> np.ndarray:
    """Resize a 3-D volume to ``shape`` (order 1: linear, order 0: nearest), voxel grids aligned."""
    zoom = [new / old for new, old in zip(shape, volume.shape, strict=True)]
    # grid_mode aligns voxel edges (not centres), as an image resampler should.
    return ndimage.zoom(volume, zoom, order=order, mode="grid-constant", grid_mode=True)


def standardise(image: np.ndarray, mask: np.ndarray, method: str = "brain") -> np.ndarray:
    """Z-score each modality of a (C, D, H, W) volume (see the module docstring)."""
    if method not in STANDARDISATIONS:
        raise ValueError(
            f"preprocess.standardise must be one of {STANDARDISATIONS}, got {method!r}"
        )
    region = mask if method == "brain" else np.ones_like(mask)
    out = np.zeros_like(image, dtype=np.float32)
    for channel, volume in enumerate(image):
        values = volume[region]
        sd = values.std()
        out[channel] = (volume - values.mean()) / (sd if sd > 0 else 1.0)
        if method == "brain":
            out[channel][~mask] = 0.0
    return out


def resized_affine(affine: np.ndarray, old_shape, new_shape) -> np.ndarray:
    """Affine of a volume resampled from ``old_shape`` to ``new_shape`` over the same extent."""
    scale = np.array(old_shape, dtype=float) / np.array(new_shape, dtype=float)
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * scale
    # voxel centres move: the first new centre sits half a new voxel inside the old extent
    out[:3, 3] = affine[:3, :3] @ ((scale - 1) / 2) + affine[:3, 3]
    return out


def preprocess_subject(
    subject: Subject,
    out_dir: str | Path,
    shape: tuple[int, int, int],
    standardisation: str = "brain",
    n4: dict | None = None,
    checksums: dict[str, str] | None = None,
) -> dict:
    """Preprocess one subject into ``out_dir`` (written atomically); return its metadata.

    ``n4`` holds keyword arguments for :func:`n4_correct` (``None`` or ``{"enabled": False}``
    skips N4); ``checksums`` the raw files' expected SHA-256 (see :func:`load_subject`). The
    raw files are only read; their SHA-256 is recorded in the metadata.
    """
    n4 = dict(n4 or {"enabled": False})
    image, labels, affine, sha256 = load_subject(subject, checksums)
    spacing = tuple(float(s) for s in nib.affines.voxel_sizes(affine))
    mask = brain_mask(image)
    if n4.pop("enabled", True):
        image = np.stack([n4_correct(vol, mask, spacing, **n4) for vol in image])
    image = np.stack([resize(vol, shape, order=1) for vol in image])
    classes = resize(labels_to_classes(labels), shape, order=0)
    small_mask = resize(mask.astype(np.uint8), shape, order=0).astype(bool)
    image = standardise(image, small_mask, standardisation)
    new_affine = resized_affine(affine, labels.shape, shape)
    meta = {
        "subject": subject.id,
        "grade": subject.grade,
        "layout": subject.layout,
        "raw_files": {key: str(path) for key, path in subject.files.items()},
        "raw_sha256": sha256,
        "raw_shape": list(labels.shape),
        "raw_spacing": list(spacing),
        "shape": list(shape),
        "standardisation": standardisation,
        "modalities": list(MODALITIES),
        "affine": new_affine.tolist(),
    }
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "image.npy", image)
        np.save(tmp / "label.npy", classes)
        np.save(tmp / "mask.npy", small_mask)
        nib.save(nib.Nifti1Image(np.moveaxis(image, 0, -1), new_affine), tmp / "image.nii.gz")
        seg = nib.Nifti1Image(classes_to_labels(classes), new_affine)
        seg.set_data_dtype(np.uint8)
        nib.save(seg, tmp / "seg.nii.gz")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta
