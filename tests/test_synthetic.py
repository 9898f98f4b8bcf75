"""Tests of the synthetic BraTS-like cohort generator."""

import logging
import time

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import ROOT

from segrobust.cohort import ANATOMIES, cohort_plan, subject_grade, write_cohort
from segrobust.labels import MODALITIES
from segrobust.synthetic import make_subject

SHAPE = (40, 40, 36)
SPACING = (1.2, 1.2, 1.5)


def _subject(seed: int, grade: str, **kwargs):
    return make_subject(np.random.default_rng(seed), SHAPE, grade, **kwargs)


def _tissue_masks(images: dict[str, np.ndarray], labels: np.ndarray):
    """Rough normal-tissue masks from contrast (the generator does not return them)."""
    brain = images["t1"] > 0
    healthy = brain & (labels == 0)
    t1, t2 = images["t1"].astype(float), images["t2"].astype(float)
    wm = healthy & (t1 > np.percentile(t1[healthy], 60)) & (t2 < np.percentile(t2[healthy], 40))
    csf = healthy & (t2 > np.percentile(t2[healthy], 97))
    return brain, wm, csf


@pytest.fixture(scope="module")
def hgg():
    return _subject(3, "HGG")


@pytest.fixture(scope="module")
def lgg():
    return _subject(4, "LGG")


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_gives_byte_identical_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ids = write_cohort(a, 2, (24, 24, 20), SPACING, 0.5, seed=7, anatomy="phantom")
    time.sleep(1.1)  # a gzip header holding the time would now differ
    assert write_cohort(b, 2, (24, 24, 20), SPACING, 0.5, seed=7, anatomy="phantom") == ids
    assert _files(a) == _files(b) and len(_files(a)) == 10
    for rel in _files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_different_seed_gives_different_data():
    (img_a, lab_a), (img_b, lab_b) = _subject(1, "HGG"), _subject(2, "HGG")
    assert not np.array_equal(lab_a, lab_b)
    assert not np.array_equal(img_a["t1"], img_b["t1"])


def test_layout_dtypes_affine_and_prefix_stability(tmp_path):
    ids = write_cohort(tmp_path, 4, (24, 24, 20), SPACING, 0.25, seed=0, anatomy="phantom")
    assert ids == [f"Brats17_SYN{i:03d}_1" for i in range(1, 5)]
    assert [subject_grade(i, 0.25) for i in range(4)] == ["HGG", "HGG", "HGG", "LGG"]
    assert cohort_plan(4, 0.25) == [(sid, subject_grade(i, 0.25)) for i, sid in enumerate(ids)]
    for i, sid in enumerate(ids):
        folder = tmp_path / subject_grade(i, 0.25) / sid
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f"{sid}_{m}.nii.gz" for m in (*MODALITIES, "seg")
        )
        for m in (*MODALITIES, "seg"):
            img = nib.load(folder / f"{sid}_{m}.nii.gz")
            data = np.asanyarray(img.dataobj)
            assert data.shape == (24, 24, 20)
            assert data.dtype == (np.uint8 if m == "seg" else np.int16)
            assert img.header.get_zooms() == pytest.approx(SPACING)
            assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
            assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
            centre = img.affine @ np.array([11.5, 11.5, 9.5, 1.0])
            assert centre[:3] == pytest.approx(0.0, abs=1e-5)
        assert set(np.unique(np.asanyarray(nib.load(folder / f"{sid}_seg.nii.gz").dataobj))) <= {
            0,
            1,
            2,
            4,
        }
    # Subject i does not depend on how many subjects are written.
    small = tmp_path.parent / (tmp_path.name + "_small")
    write_cohort(small, 2, (24, 24, 20), SPACING, 0.25, seed=0, anatomy="phantom")
    rel = "HGG/Brats17_SYN002_1/Brats17_SYN002_1_flair.nii.gz"
    assert (small / rel).read_bytes() == (tmp_path / rel).read_bytes()


@pytest.mark.parametrize(("fraction", "n_lgg"), [(0.0, 0), (0.25, 25), (0.3, 30), (1.0, 100)])
def test_subject_grade_spreads_lgg_evenly(fraction, n_lgg):
    grades = [subject_grade(i, fraction) for i in range(100)]
    assert grades.count("LGG") == n_lgg
    assert grades[:10].count("LGG") == int(10 * fraction)


def test_background_is_exactly_zero_and_brain_is_positive(hgg):
    images, labels = hgg
    brain = images["t1"] > 0
    for m in MODALITIES:
        assert images[m].dtype == np.int16
        assert np.array_equal(images[m] > 0, brain), m  # one nonzero mask = the brain
        assert images[m].min() == 0
    assert not labels[~brain].any()
    # A skull-stripped brain: background all around, touching no face of the volume.
    for axis in range(3):
        assert not np.take(brain, [0, -1], axis=axis).any()
    assert 0.2 < brain.mean() < 0.5


def test_grades_have_expected_labels(hgg, lgg):
    assert set(np.unique(hgg[1])) == {0, 1, 2, 4}
    assert set(np.unique(lgg[1])) == {0, 1, 2}
    assert hgg[1].dtype == lgg[1].dtype == np.uint8


@pytest.mark.parametrize("seed", range(6))
def test_tumour_fraction_in_range(seed):
    grade = "LGG" if seed % 3 == 0 else "HGG"
    images, labels = _subject(seed, grade)
    brain = images["t1"] > 0
    wt = (labels > 0).sum() / brain.sum()
    assert 0.03 <= wt <= 0.15
    core = np.isin(labels, (1, 4)).sum() / (labels > 0).sum()
    assert 0.3 <= core <= 0.85
    if grade == "HGG":
        assert 0.3 <= (labels == 4).sum() / np.isin(labels, (1, 4)).sum() <= 0.9


def test_contrasts_follow_real_mr(hgg):
    images, labels = hgg
    brain, wm, csf = _tissue_masks(images, labels)
    mean = {m: images[m].astype(float) for m in MODALITIES}
    assert mean["t1ce"][labels == 4].mean() > 1.1 * mean["t1ce"][wm].mean()
    assert mean["t1ce"][labels == 1].mean() < 0.8 * mean["t1ce"][wm].mean()
    assert mean["flair"][labels == 2].mean() > 1.2 * mean["flair"][wm].mean()
    assert mean["t2"][labels == 2].mean() > 1.2 * mean["t2"][wm].mean()
    assert mean["t2"][csf].mean() > 1.5 * mean["t2"][wm].mean()
    assert mean["t1"][wm].mean() > 1.5 * mean["t1"][csf].mean()
    assert mean["flair"][csf].mean() < mean["flair"][wm].mean()


def test_intensities_overlap_between_classes(hgg):
    """Not trivially separable: oedema and healthy brain overlap on FLAIR alone."""
    images, labels = hgg
    flair = images["flair"]
    healthy = flair[(flair > 0) & (labels == 0)]
    oedema = flair[labels == 2]
    assert (oedema < np.percentile(healthy, 99)).mean() > 0.05


def test_bias_field_and_noise_raise_variation():
    kwargs = {"grade": "HGG"}
    clean_img, labels = _subject(5, noise=0.0, bias_strength=0.0, **kwargs)
    biased_img, _ = _subject(5, noise=0.0, **kwargs)
    noisy_img, _ = _subject(5, bias_strength=0.0, **kwargs)
    _, wm, _ = _tissue_masks(clean_img, labels)

    def cv(img):
        v = img["t1"][wm].astype(float)
        return v.std() / v.mean()

    assert cv(biased_img) > 1.5 * cv(clean_img)
    assert cv(noisy_img) > 1.05 * cv(clean_img)
    # Bias is multiplicative and smooth: the ratio biased/clean varies across the brain.
    ratio = biased_img["t1"][wm] / clean_img["t1"][wm].astype(float)
    assert ratio.std() > 0.05


def test_make_subject_at_other_shapes():
    images, labels = make_subject(np.random.default_rng(0), (16, 16, 16), "HGG")
    assert labels.shape == (16, 16, 16) and images["t2"].shape == (16, 16, 16)
    assert (labels > 0).any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (15, 32, 32)}, "shape"),
        ({"shape": (32, 32)}, "shape"),
        ({"grade": "GBM"}, "grade"),
        ({"bias_strength": -0.1}, "bias_strength"),
        ({"noise": -1.0}, "noise"),
    ],
)
def test_make_subject_validates(kwargs, match):
    args = {"shape": (32, 32, 32), "grade": "HGG"} | kwargs
    with pytest.raises(ValueError, match=match):
        make_subject(np.random.default_rng(0), **args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_subjects": 0}, "n_subjects"),
        ({"shape": (8, 32, 32)}, "shape"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, 1.0)}, "spacing"),
        ({"lgg_fraction": 1.5}, "lgg_fraction"),
        ({"lgg_fraction": -0.1}, "lgg_fraction"),
        ({"seed": -1}, "seed"),
        ({"anatomy": "atlas"}, "anatomy must be one of"),
        ({"anatomy": "template"}, "field of view"),  # 16 mm cannot hold a brain
    ],
)
def test_write_cohort_validates(tmp_path, kwargs, match):
    args = {
        "n_subjects": 1,
        "shape": (16, 16, 16),
        "spacing": (1.0, 1.0, 1.0),
        "lgg_fraction": 0.2,
        "seed": 0,
        "anatomy": "phantom",
    } | kwargs
    with pytest.raises(ValueError, match=match):
        write_cohort(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_phantom_cohort_holds_make_subject_data_and_logs_its_cost(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="segrobust")
    write_cohort(tmp_path, 2, (24, 24, 20), SPACING, 0.0, seed=9, anatomy="phantom")
    images, labels = make_subject(np.random.default_rng([9, 1]), (24, 24, 20), "HGG")
    folder = tmp_path / "HGG" / "Brats17_SYN002_1"
    for m in MODALITIES:
        data = np.asanyarray(nib.load(folder / f"Brats17_SYN002_1_{m}.nii.gz").dataobj)
        assert np.array_equal(data, images[m]), m
    assert np.array_equal(np.asanyarray(nib.load(folder / "Brats17_SYN002_1_seg.nii.gz").dataobj),
                          labels)  # fmt: skip
    costs = [r.getMessage() for r in caplog.records if "CPU s" in r.getMessage()]
    assert len(costs) == 2 and costs[1].startswith("Brats17_SYN002_1 (HGG, phantom): ")


def test_schema_lists_the_anatomies_and_the_demo_uses_the_template():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    synthetic = schema["properties"]["data"]["properties"]["synthetic"]["properties"]
    assert synthetic["anatomy"]["enum"] == list(ANATOMIES)
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert config["data"]["synthetic"]["anatomy"] == synthetic["anatomy"]["default"] == "template"
