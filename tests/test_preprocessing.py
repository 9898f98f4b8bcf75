import json

import nibabel as nib
import numpy as np
import pytest

from segrobust.layouts import discover_subjects
from segrobust.preprocessing import (
    brain_mask,
    n4_correct,
    preprocess_subject,
    resize,
    resized_affine,
    standardise,
)


def _phantom_with_bias(shape=(48, 48, 40), seed=0):
    """Brain ellipsoid: white matter (1000) around grey-matter blobs (700), times a smooth
    multiplicative bias field of about ±30 %, plus 1 % noise."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = x**2 + y**2 + z**2 < 0.85
    gm = brain & (np.sin(6 * x) * np.cos(5 * y) > 0.6)
    wm = brain & ~gm
    clean = np.where(gm, 700.0, 1000.0) * brain
    bias = np.exp(0.3 * x - 0.2 * y + 0.15 * z**2)
    noisy = clean * bias * (1 + 0.01 * rng.standard_normal(shape))
    return (noisy * brain).astype(np.float32), brain, wm


def _cv(values):
    return values.std() / values.mean()


def test_n4_removes_known_multiplicative_bias():
    volume, brain, wm = _phantom_with_bias()
    corrected = n4_correct(volume, brain, spacing=(2.0, 2.0, 2.0), shrink_factor=2)
    before, after = _cv(volume[wm]), _cv(corrected[wm])
    assert after <= 0.5 * before, (before, after)
    assert np.array_equal(corrected[~brain], volume[~brain])


def test_n4_rejects_empty_mask():
    volume, brain, _ = _phantom_with_bias((16, 16, 16))
    with pytest.raises(ValueError, match="non-empty mask"):
        n4_correct(volume, np.zeros_like(brain), spacing=(1.0, 1.0, 1.0))


def test_resize_shapes_and_nearest_labels_keep_values():
    labels = np.zeros((40, 40, 30), np.uint8)
    labels[10:30, 10:30, 5:25] = 3
    small = resize(labels, (16, 16, 16), order=0)
    assert small.shape == (16, 16, 16)
    assert set(np.unique(small)) == {0, 3}


def centres(affine: np.ndarray, shape) -> np.ndarray:
    """World coordinates (3, *shape) of the voxel centres of a grid."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ index + affine[:3, 3:]).reshape(3, *shape)


# downsampling by 2.5, 2.25 and 1.875: every new voxel centre lies between old ones
OLD, NEW = (40, 36, 30), (16, 16, 16)
AFFINE = np.array([[-1.2, 0, 0, 90], [0, 0.9, 0, -126], [0, 0, 1.5, -72], [0, 0, 0, 1]])


def test_linear_resize_of_a_ramp_equals_the_ramp_at_the_new_voxel_centres():
    """A function linear in world coordinates, linearly resampled, is the same function at
    the new centres (:func:`resized_affine`): values and geometry checked together."""
    gradient = np.array([0.3, -0.7, 1.1])
    ramp = np.tensordot(gradient, centres(AFFINE, OLD), 1).astype(np.float32)
    expected = np.tensordot(gradient, centres(resized_affine(AFFINE, OLD, NEW), NEW), 1)
    resized = resize(ramp, NEW, order=1)
    np.testing.assert_allclose(resized, expected, rtol=0, atol=1e-3)
    assert np.ptp(resized) > 50  # a ramp, not a constant


def test_nearest_resize_takes_the_old_voxel_nearest_each_new_centre():
    ids = np.arange(np.prod(OLD), dtype=np.int32).reshape(OLD)  # every old voxel its own value
    # new centre j sits at old index (j + 1/2)·old/new − 1/2; never half-way at these factors
    nearest = [
        np.rint((np.arange(n) + 0.5) * o / n - 0.5).astype(int)
        for o, n in zip(OLD, NEW, strict=True)
    ]
    expected = ids[np.ix_(*nearest)]
    np.testing.assert_array_equal(resize(ids, NEW, order=0), expected)


def test_resized_affine_keeps_the_physical_extent():
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [10, 20, -5]
    new = resized_affine(affine, (240, 240, 155), (120, 120, 155))
    # the corners of the field of view (voxel edges) map to the same world points
    old_corner = affine @ np.array([-0.5, -0.5, -0.5, 1])
    new_corner = new @ np.array([-0.5, -0.5, -0.5, 1])
    assert np.allclose(old_corner, new_corner)
    assert np.allclose(nib.affines.voxel_sizes(new), [2.0, 2.0, 1.0])


def test_standardise_brain_zscores_inside_and_zeroes_background():
    rng = np.random.default_rng(0)
    image = rng.normal(300, 50, (2, 12, 12, 12)).astype(np.float32)
    mask = np.zeros((12, 12, 12), bool)
    mask[2:10, 2:10, 2:10] = True
    image[:, ~mask] = 0
    out = standardise(image, mask, "brain")
    assert np.allclose(out[:, mask].mean(axis=1), 0, atol=1e-5)
    assert np.allclose(out[:, mask].std(axis=1), 1, atol=1e-4)
    assert (out[:, ~mask] == 0).all()
    volume = standardise(image, mask, "volume")
    assert np.allclose(volume.reshape(2, -1).mean(axis=1), 0, atol=1e-5)
    with pytest.raises(ValueError, match="preprocess.standardise"):
        standardise(image, mask, "global")


def test_preprocess_subject_writes_training_and_viewing_formats(brats_tree, tmp_path):
    subject = discover_subjects(brats_tree)[0]
    out = tmp_path / "pre" / subject.id
    before = {p: p.read_bytes() for p in brats_tree.rglob("*.nii.gz")}
    meta = preprocess_subject(
        subject, out, shape=(16, 16, 16), n4={"enabled": True, "shrink_factor": 2}
    )
    assert meta["grade"] == "HGG" and meta["raw_shape"] == [20, 20, 16]
    image = np.load(out / "image.npy", mmap_mode="r")
    labels = np.load(out / "label.npy")
    mask = np.load(out / "mask.npy")
    assert image.dtype == np.float32 and image.shape == (4, 16, 16, 16)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 3} and 3 in labels
    assert mask.dtype == bool and mask.any() and not mask.all()
    assert np.allclose(image[:, mask].mean(axis=1), 0, atol=1e-4)
    seg = nib.load(out / "seg.nii.gz")
    assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1, 2, 4}
    assert nib.load(out / "image.nii.gz").shape == (16, 16, 16, 4)
    assert json.loads((out / "meta.json").read_text())["subject"] == subject.id
    assert np.allclose(seg.affine, meta["affine"])
    assert brain_mask(image).sum() <= mask.sum()
    assert {p: p.read_bytes() for p in brats_tree.rglob("*.nii.gz")} == before
    assert sorted(p.name for p in out.parent.iterdir()) == [subject.id]  # no temp left behind


def test_failed_preprocessing_leaves_no_output(brats_tree, tmp_path):
    subject = discover_subjects(brats_tree)[0]
    subject.files["t1"].write_bytes(b"not a nifti")
    out = tmp_path / "pre" / subject.id
    with pytest.raises(ValueError, match="t1.nii.gz"):
        preprocess_subject(subject, out, shape=(16, 16, 16))
    assert not (tmp_path / "pre").exists()
