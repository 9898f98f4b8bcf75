import gzip

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import write_brats_subject

from segrobust.data import DataError, discover_subjects, load_subject, split_subjects


def test_discovers_brats2017_layout_with_grades(brats_tree):
    subjects = discover_subjects(brats_tree)
    assert [s.id for s in subjects] == [f"Brats17_T{i:02d}_1" for i in range(5)]
    assert [s.grade for s in subjects] == ["HGG"] * 3 + ["LGG"] * 2
    assert set(subjects[0].files) == {"t1", "t1ce", "t2", "flair", "seg"}


def test_discovers_brats2021_naming_without_grade_folders(tmp_path):
    for sid in ("BraTS2021_00000", "BraTS2021_00002"):
        write_brats_subject(tmp_path, sid, grade=None)
    subjects = discover_subjects(tmp_path)
    assert [s.id for s in subjects] == ["BraTS2021_00000", "BraTS2021_00002"]
    assert all(s.grade is None for s in subjects)


def test_load_subject_returns_float32_channels_and_labels(brats_tree):
    subject = discover_subjects(brats_tree)[0]
    image, labels, affine = load_subject(subject)
    assert image.dtype == np.float32 and image.shape == (4, 20, 20, 16)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 4}
    assert np.allclose(affine, np.diag([-1.0, -1.0, 1.0, 1.0]))


def _tree_with_one(tmp_path, mutate):
    paths = write_brats_subject(tmp_path, "Brats17_X_1")
    mutate(paths)
    return tmp_path


def _rewrite(path, data, affine=None):
    img = nib.load(path)
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine), path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p["t1ce"].unlink(), "missing t1ce"),
        (lambda p: p["seg"].unlink(), "missing seg"),
    ],
)
def test_missing_files_are_named(tmp_path, mutate, message):
    root = _tree_with_one(tmp_path, mutate)
    with pytest.raises(DataError, match=f"Brats17_X_1.*{message}"):
        discover_subjects(root)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: _rewrite(p["t2"], np.zeros((20, 20, 15), np.int16)), "t2.nii.gz has shape"),
        (
            lambda p: _rewrite(p["flair"], np.zeros((20, 20, 16), np.int16), np.eye(4) * 2),
            "affine of Brats17_X_1_flair.nii.gz differs",
        ),
        (
            lambda p: _rewrite(p["t1"], np.full((20, 20, 16), np.nan, np.float32)),
            "t1.nii.gz has NaN/inf",
        ),
        (
            lambda p: _rewrite(p["seg"], np.full((20, 20, 16), 3, np.uint8)),
            r"seg.nii.gz has label values \[3\]",
        ),
        (
            lambda p: p["t1"].write_bytes(gzip.compress(p["t1"].read_bytes()[:100])),
            "cannot read .*t1.nii.gz",
        ),
    ],
)
def test_bad_subjects_raise_clear_errors(tmp_path, mutate, message):
    root = _tree_with_one(tmp_path, mutate)
    (subject,) = discover_subjects(root)
    with pytest.raises(DataError, match=message):
        load_subject(subject)


def test_truncated_gzip_is_reported_with_its_path(tmp_path):
    paths = write_brats_subject(tmp_path, "Brats17_X_1")
    raw = paths["t2"].read_bytes()
    paths["t2"].write_bytes(raw[: len(raw) // 2])
    (subject,) = discover_subjects(tmp_path)
    with pytest.raises(DataError, match="Brats17_X_1_t2.nii.gz"):
        load_subject(subject)


def test_empty_and_missing_roots(tmp_path):
    with pytest.raises(DataError, match="no subjects found under"):
        discover_subjects(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        discover_subjects(tmp_path / "nope")


def test_duplicate_subject_id_in_two_folders(tmp_path):
    write_brats_subject(tmp_path, "Brats17_X_1", grade="HGG")
    write_brats_subject(tmp_path, "Brats17_X_1", grade="LGG")
    with pytest.raises(DataError, match="duplicate subject id 'Brats17_X_1'"):
        discover_subjects(tmp_path)


def test_raw_tree_is_not_modified(brats_tree):
    before = {p: p.read_bytes() for p in brats_tree.rglob("*") if p.is_file()}
    for subject in discover_subjects(brats_tree):
        load_subject(subject)
    after = {p: p.read_bytes() for p in brats_tree.rglob("*") if p.is_file()}
    assert before == after


def _cohort(n_hgg=30, n_lgg=10):
    return pd.DataFrame(
        {
            "subject": [f"s{i:03d}" for i in range(n_hgg + n_lgg)],
            "grade": ["HGG"] * n_hgg + ["LGG"] * n_lgg,
        }
    )


def test_split_is_seeded_stratified_and_complete():
    table = split_subjects(_cohort(), test_fraction=0.2, val_fraction=0.1, seed=7)
    again = split_subjects(_cohort(), test_fraction=0.2, val_fraction=0.1, seed=7)
    other = split_subjects(_cohort(), test_fraction=0.2, val_fraction=0.1, seed=8)
    pd.testing.assert_frame_equal(table, again)
    assert not table["split"].equals(other["split"])
    counts = table.groupby(["grade", "split"]).size().to_dict()
    assert counts == {
        ("HGG", "test"): 6,
        ("HGG", "val"): 3,
        ("HGG", "train"): 21,
        ("LGG", "test"): 2,
        ("LGG", "val"): 1,
        ("LGG", "train"): 7,
    }


def test_split_handles_unknown_grades():
    cohort = _cohort().assign(grade=None)
    table = split_subjects(cohort, test_fraction=0.25, val_fraction=0.0, seed=0)
    assert (table["split"] == "test").sum() == 10
    assert (table["split"] == "val").sum() == 0


@pytest.mark.parametrize(("test", "val"), [(1.5, 0.1), (0.0, 0.1), (0.5, 0.6), (0.2, -0.1)])
def test_split_rejects_bad_fractions(test, val):
    with pytest.raises(ValueError, match="split\\."):
        split_subjects(_cohort(), test_fraction=test, val_fraction=val, seed=0)
