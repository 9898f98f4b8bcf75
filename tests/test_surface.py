"""HD95 and NSD (segrobust.surface) against medpy's surface distances, known answers, the BraTS
empty-mask conventions and the spacing of the preprocessed grid."""

import json
import math

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from segrobust.labels import REGIONS
from segrobust.metrics import region_masks
from segrobust.preprocessing import resized_affine
from segrobust.surface import (
    HD95_EMPTY_MM,
    surface_metrics,
    surface_regions,
    voxel_spacing,
)

SPACING = (6.0, 6.0, 5.0)  # the demo's preprocessed grid: 64³ at 3 × 3 × 2.5 mm resized to 32³
# medpy's directed distances from each boundary voxel of the first mask to the second's boundary
# (6-connected boundaries, exact Euclidean distance scaled by the voxel spacing)
medpy_directed = getattr(medpy_binary, "__surface_distances")


def blobs(seed: int, fraction: float, shape=(24, 24, 20)) -> np.ndarray:
    """A random mask of smooth blobs covering about ``fraction`` of the volume."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2.0)
    return field > np.quantile(field, 1 - fraction)


def cube(shape, start, size) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def medpy_reference(pred, true, spacing, tolerance) -> tuple[float, float]:
    """HD95 = max of the directed 95th percentiles and NSD = the fraction of both boundaries
    within ``tolerance``, from medpy's distances."""
    to_true = medpy_directed(pred, true, spacing, 1)
    to_pred = medpy_directed(true, pred, spacing, 1)
    hd95 = max(np.percentile(to_true, 95), np.percentile(to_pred, 95))
    within = np.count_nonzero(to_true <= tolerance) + np.count_nonzero(to_pred <= tolerance)
    return hd95, within / (to_true.size + to_pred.size)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tolerance", [0.0, 6.5, 8.0, 12.5])  # none is a possible distance
def test_matches_medpy_on_random_masks_with_anisotropic_spacing(seed, tolerance):
    pred, true = blobs(seed, 0.15), blobs(seed + 100, 0.08)
    got = surface_metrics(pred, true, SPACING, tolerance)
    hd95, nsd = medpy_reference(pred, true, SPACING, tolerance)
    assert got["hd95"] == pytest.approx(hd95, rel=1e-6)  # MONAI keeps float32 distances
    assert got["nsd"] == pytest.approx(nsd, abs=1e-12)
    assert 0 < got["hd95"] and 0 <= got["nsd"] <= 1


def test_matches_medpy_on_speckled_masks_touching_the_border():
    rng = np.random.default_rng(7)
    pred, true = rng.random((16, 16, 16)) < 0.3, rng.random((16, 16, 16)) < 0.1
    got = surface_metrics(pred, true, (1.0, 2.0, 3.0), 3.0)
    hd95, nsd = medpy_reference(pred, true, (1.0, 2.0, 3.0), 3.0)
    assert got["hd95"] == pytest.approx(hd95, rel=1e-6)
    assert got["nsd"] == pytest.approx(nsd, abs=1e-12)


def test_spacing_changes_the_distances_and_swapping_masks_does_not():
    pred, true = blobs(1, 0.15), blobs(2, 0.1)
    iso = surface_metrics(pred, true, (1.0, 1.0, 1.0), 2.0)
    aniso = surface_metrics(pred, true, SPACING, 2.0)
    assert aniso["hd95"] > 4 * iso["hd95"]
    assert surface_metrics(true, pred, SPACING, 2.0) == pytest.approx(aniso)


@pytest.mark.parametrize(("axis", "k"), [(0, 1), (0, 3), (2, 2)])
def test_shifted_cube_known_answer(axis, k):
    """A cube and a copy shifted by k voxels along ``axis``: more than 5% of each boundary
    (the whole leading / trailing face) lies exactly k voxels away, nothing further."""
    start = np.array([5, 5, 5])
    shift = np.zeros(3, dtype=int)
    shift[axis] = k
    true = cube((24, 24, 24), start, 8)
    pred = cube((24, 24, 24), start + shift, 8)
    step = SPACING[axis] * k
    got = surface_metrics(pred, true, SPACING, step)
    assert got["hd95"] == pytest.approx(step, rel=1e-6)
    assert got["nsd"] == 1.0  # every boundary voxel within k voxels
    assert surface_metrics(pred, true, SPACING, step - 0.01)["nsd"] < 1.0
    assert surface_metrics(true, true, SPACING, 0.0) == {"hd95": 0.0, "nsd": 1.0}


def test_empty_masks_follow_brats():
    empty, full = np.zeros((8, 8, 8), bool), cube((8, 8, 8), (2, 2, 2), 3)
    assert surface_metrics(empty, empty, SPACING, 2.0) == {"hd95": 0.0, "nsd": 1.0}
    assert surface_metrics(empty, full, SPACING, 2.0) == {"hd95": HD95_EMPTY_MM, "nsd": 0.0}
    assert surface_metrics(full, empty, SPACING, 2.0) == {"hd95": HD95_EMPTY_MM, "nsd": 0.0}
    assert HD95_EMPTY_MM == pytest.approx(math.hypot(240, 240, 155), abs=0.005)


@pytest.mark.parametrize(
    ("pred_shape", "spacing", "tolerance", "match"),
    [
        ((8, 8, 7), SPACING, 2.0, "shape"),
        ((8, 8), SPACING, 2.0, "shape"),  # differs from the 3-D truth
        ((8, 8, 8), (1.0, 1.0), 2.0, "spacing"),
        ((8, 8, 8), (1.0, 0.0, 1.0), 2.0, "spacing"),
        ((8, 8, 8), (1.0, float("nan"), 1.0), 2.0, "spacing"),
        ((8, 8, 8), SPACING, -1.0, "tolerance"),
        ((8, 8, 8), SPACING, float("inf"), "tolerance"),
    ],
)
def test_bad_input_raises(pred_shape, spacing, tolerance, match):
    true = cube((8, 8, 8), (2, 2, 2), 3)
    with pytest.raises(ValueError, match=match):
        surface_metrics(np.ones(pred_shape, bool), true, spacing, tolerance)


def test_two_dimensional_masks_raise():
    with pytest.raises(ValueError, match="3-D"):
        surface_metrics(np.ones((8, 8), bool), np.ones((8, 8), bool), SPACING, 2.0)


def test_regions_match_the_region_masks():
    rng = np.random.default_rng(3)
    true = np.zeros((20, 20, 20), np.uint8)
    true[4:14, 4:14, 4:14] = 2
    true[6:12, 6:12, 6:12] = 1
    true[8:10, 8:10, 8:10] = 3
    pred = np.where(rng.random(true.shape) < 0.05, rng.integers(0, 4, true.shape), true)
    pred = pred.astype(np.uint8)
    got = surface_regions(pred, true, SPACING, 6.0)
    assert list(got) == list(REGIONS)
    for name, (p, t) in region_masks(pred, true).items():
        assert got[name] == surface_metrics(p, t, SPACING, 6.0)
    assert got["WT"]["nsd"] < 1.0 and got["WT"]["hd95"] > 0
    with pytest.raises(ValueError, match="classes"):
        surface_regions(pred + 4, true, SPACING, 2.0)
    with pytest.raises(ValueError, match="shape"):
        surface_regions(pred[:-1], true, SPACING, 2.0)


def test_voxel_spacing_of_a_preprocessed_grid(tmp_path):
    """LPS affine of a 64 × 64 × 64 volume at 3 × 3 × 2.5 mm resized to 32³ (as
    preprocess_subject writes it), rotated: spacing = column norms = 6 × 6 × 5 mm."""
    raw = np.diag([-3.0, -3.0, 2.5, 1.0])
    angle = 0.3
    rotation = np.eye(4)
    rotation[:2, :2] = [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    affine = resized_affine(rotation @ raw, (64, 64, 64), (32, 32, 32))
    (tmp_path / "meta.json").write_text(json.dumps({"affine": affine.tolist()}))
    assert voxel_spacing(tmp_path) == pytest.approx(SPACING)


def test_voxel_spacing_bad_metadata(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.json"):
        voxel_spacing(tmp_path)
    meta = tmp_path / "meta.json"
    for text in ("{}", '{"affine": [[1, 0], [0, 1]]}', '{"affine": "x"}', "not json"):
        meta.write_text(text)
        with pytest.raises(ValueError, match="meta.json"):
            voxel_spacing(tmp_path)
    meta.write_text(json.dumps({"affine": np.diag([1.0, 0.0, 1.0, 1.0]).tolist()}))
    with pytest.raises(ValueError, match="positive"):
        voxel_spacing(tmp_path)


@pytest.mark.parametrize("seed", range(3))
def test_matches_monai_on_masks_touching_the_array_edge(seed):
    """Exactly the numbers of MONAI's boundary voxels and distances (this module's earlier
    implementation), also where the masks touch the array's edge."""
    from monai.metrics import get_mask_edges, get_surface_distance

    shape = (20, 18, 16)
    pred, true = blobs(seed, 0.3, shape), blobs(seed + 10, 0.25, shape)
    pred[0, :4, :4] = True  # on the array's edge
    spacing = (1.5, 2.0, 2.5)
    edges = get_mask_edges(pred, true)
    to_true = np.asarray(get_surface_distance(*edges, spacing=spacing), float)
    to_pred = np.asarray(get_surface_distance(*edges[::-1], spacing=spacing), float)
    within = np.count_nonzero(to_true <= 3.0) + np.count_nonzero(to_pred <= 3.0)
    got = surface_metrics(pred, true, spacing, 3.0)
    assert got["hd95"] == max(np.percentile(to_true, 95), np.percentile(to_pred, 95))
    assert got["nsd"] == within / (to_true.size + to_pred.size)
