"""Boundary metrics in mm: 95th-percentile Hausdorff distance (HD95) and normalised surface Dice.

Both come from one set of boundary distances, computed once for both metrics (half the cost) by
the steps :func:`monai.metrics.compute_hausdorff_distance` (``percentile=95``) and
:func:`monai.metrics.compute_surface_dice` take on the CPU, done here with the scipy functions
MONAI calls for them (MONAI's import alone cost each attack job about 1 CPU s; the tests check
that the numbers equal MONAI's and medpy's). The boundary voxels of a mask are those with a
6-neighbour outside it or on the array's edge (``scipy.ndimage.binary_erosion`` on the masks'
common bounding box plus one voxel, as :func:`monai.metrics.get_mask_edges`); the distance from
each boundary voxel to the other mask's boundary is the exact Euclidean one between voxel
coordinates scaled by the grid's spacing (a ``scipy.spatial.KDTree`` nearest neighbour, rounded
to float32, as :func:`monai.metrics.get_surface_distance`), so every distance is in mm:

- **HD95** = max(p95 of distances pred → true boundary, p95 of true → pred), each percentile
  linearly interpolated (MONAI's and DeepMind surface-distance's convention; medpy's ``hd95``
  instead takes one percentile over both directions' distances pooled, which can differ).
- **NSD** (normalised surface Dice, Nikolov et al. 2021) with tolerance τ mm = the fraction of
  boundary voxels of both masks lying within τ of the other mask's boundary, in [0, 1].

Empty masks follow the BraTS convention (never NaN): both empty → HD95 0 mm and NSD 1; exactly
one empty → HD95 = :data:`HD95_EMPTY_MM` (373.13 mm, the diagonal of the 240×240×155 1-mm BraTS
grid, the BraTS evaluation's penalty) and NSD 0.

The spacing of a preprocessed subject is read from its ``meta.json`` (:func:`voxel_spacing`):
the column norms of the 3×3 part of the affine, i.e. the raw voxel size scaled by the resize.
"""

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import KDTree

from segrobust.labels import REGIONS
from segrobust.metrics import region_masks

HD95_EMPTY_MM = 373.13
NSD_TOLERANCE_MM = 2.0  # the schema's default of metrics.nsd_tolerance_mm


def voxel_spacing(subject_dir: str | Path) -> tuple[float, float, float]:
    """Voxel size (mm) of a preprocessed subject: column norms of its ``meta.json`` affine."""
    path = Path(subject_dir) / "meta.json"
    try:
        affine = np.asarray(json.loads(path.read_text())["affine"], dtype=float)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"preprocessed metadata not found: {path}") from err
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: cannot read a numeric 'affine' ({err})") from err
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"{path}: 'affine' must be a finite 4×4 matrix, got shape {affine.shape}")
    return _check_spacing(nib.affines.voxel_sizes(affine), str(path))


def _check_spacing(spacing: Sequence[float], where: str = "spacing") -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(
            f"{where}: voxel spacing must be three positive numbers (mm), got {values}"
        )
    return values


def _box(mask: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The corner of a non-empty mask's bounding box widened by one voxel (-1 where it leaves the
    array: MONAI's crop pads there), and that box as slices clipped to the array.

    The margin is background, so erosion inside the box equals erosion of the whole array.
    """
    lo, hi = [], []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo.append(int(hits[0]) - 1)
        hi.append(int(hits[-1]) + 2)
    return np.array(lo), tuple(slice(max(a, 0), b) for a, b in zip(lo, hi, strict=True))


def _edge_coordinates(mask: np.ndarray, box: tuple[slice, ...], origin: np.ndarray) -> np.ndarray:
    """Voxel coordinates, relative to ``origin``, of the boundary voxels of ``mask``: in the
    mask with a 6-neighbour outside it or beyond the array's edge."""
    inside = mask[box]
    edges = inside & ~ndimage.binary_erosion(inside, border_value=0)
    start = np.array([b.start for b in box])
    return (np.argwhere(edges) + start - origin).astype(np.float64)


def _distances(source: np.ndarray, target: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm, float32) from each ``source`` coordinate to the nearest ``target`` one."""
    tree = KDTree(target * spacing, leafsize=32)
    return tree.query(source * spacing, k=1)[0].astype(np.float32).astype(np.float64)


def surface_metrics(
    pred: np.ndarray, true: np.ndarray, spacing: Sequence[float], tolerance: float
) -> dict[str, float]:
    """HD95 (mm) and NSD at ``tolerance`` mm of two 3-D boolean masks on a grid of ``spacing``.

    Empty masks: both empty → HD95 0, NSD 1; one empty → HD95 :data:`HD95_EMPTY_MM`, NSD 0.
    """
    pred, true = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {true.shape}")
    if pred.ndim != 3:
        raise ValueError(f"masks must be 3-D, got shape {pred.shape}")
    spacing = _check_spacing(spacing)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"NSD tolerance must be a finite number of mm >= 0, got {tolerance}")
    has_pred, has_true = bool(pred.any()), bool(true.any())
    if not (has_pred and has_true):
        return (
            {"hd95": 0.0, "nsd": 1.0}
            if has_pred == has_true
            else {"hd95": HD95_EMPTY_MM, "nsd": 0.0}
        )
    origin, box = _box(pred | true)  # coordinates from MONAI's crop corner: the same floats
    edges_pred = _edge_coordinates(pred, box, origin)
    edges_true = _edge_coordinates(true, box, origin)
    scale = np.asarray(spacing, dtype=np.float64)
    to_true = _distances(edges_pred, edges_true, scale)
    to_pred = _distances(edges_true, edges_pred, scale)
    hd95 = max(np.percentile(to_true, 95), np.percentile(to_pred, 95))
    within = np.count_nonzero(to_true <= tolerance) + np.count_nonzero(to_pred <= tolerance)
    return {"hd95": float(hd95), "nsd": float(within / (to_true.size + to_pred.size))}


def surface_regions(
    pred_classes: np.ndarray,
    true_classes: np.ndarray,
    spacing: Sequence[float],
    tolerance: float,
    regions: Mapping[str, tuple[int, ...]] = REGIONS,
) -> dict[str, dict[str, float]]:
    """HD95 (mm) and NSD at ``tolerance`` mm per region (default WT, TC, ET) between predicted
    and true class maps on a grid of ``spacing`` mm: ``{region: {"hd95": .., "nsd": ..}}``."""
    return {
        name: surface_metrics(pred, true, spacing, tolerance)
        for name, (pred, true) in region_masks(pred_classes, true_classes, regions).items()
    }
