import gzip
import hashlib
import json
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import (
    AFFINE,
    phantom,
    write_brats2023_subject,
    write_brats_subject,
    write_msd_task,
)
from scipy import ndimage

from segrobust.data import (
    DataError,
    check_cohort,
    example_subjects,
    load_subject,
    raw_checksums,
    split_subjects,
)
from segrobust.layouts import LAYOUTS, discover_subjects
from segrobust.preprocessing import preprocess_subject


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
    image, labels, affine, sha256 = load_subject(subject)
    assert set(sha256) == set(subject.files) and all(len(h) == 64 for h in sha256.values())
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
            r"seg.nii.gz: 6400 of 6400 voxels have values outside .* from 3 to 3 \(e.g. 3\)",
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
    with pytest.raises(DataError, match="no subjects found under") as err:
        discover_subjects(tmp_path)
    for name, layout in LAYOUTS.items():  # every layout tried, with an example file name
        assert f"{name} (e.g. {layout.example})" in str(err.value)
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


# --- integrity: every raw file read in full, its checksum recorded --------------------------


def test_bytes_overwritten_inside_the_gzip_stream_are_an_error_naming_the_file(tmp_path):
    paths = write_brats_subject(tmp_path, "Brats17_X_1", shape=(48, 48, 40))
    raw = paths["t1ce"].read_bytes()
    rng = np.random.default_rng(0)
    for _ in range(20):  # nibabel alone loads about half of such files without complaint
        corrupt = bytearray(raw)
        start = int(rng.integers(len(raw) // 4, len(raw) - 40))
        corrupt[start : start + 16] = rng.bytes(16)
        paths["t1ce"].write_bytes(bytes(corrupt))
        (subject,) = discover_subjects(tmp_path)
        with pytest.raises(DataError, match=r"Brats17_X_1_t1ce\.nii\.gz"):
            load_subject(subject)


def test_uncompressed_nifti_shorter_than_its_header_says_is_an_error(tmp_path):
    paths = write_brats_subject(tmp_path, "Brats17_X_1")
    image = nib.load(paths["t2"])
    plain = paths["t2"].with_name("Brats17_X_1_t2.nii")
    nib.save(image, plain)
    paths["t2"].unlink()
    plain.write_bytes(plain.read_bytes()[:-100])
    (subject,) = discover_subjects(tmp_path)
    with pytest.raises(DataError, match=r"Brats17_X_1_t2\.nii: truncated: .* needs 13152"):
        load_subject(subject)


def test_interpolated_label_map_gives_a_short_summary(tmp_path):
    paths = write_brats_subject(tmp_path, "Brats17_X_1", shape=(64, 64, 48))
    labels = np.asanyarray(nib.load(paths["seg"]).dataobj).astype(np.float32)
    smooth = ndimage.gaussian_filter(labels, 1.0)  # like a linear resampling of a label map
    _rewrite(paths["seg"], smooth)
    (subject,) = discover_subjects(tmp_path)
    with pytest.raises(DataError) as err:
        load_subject(subject)
    message = str(err.value)
    bad = np.unique(smooth[~np.isin(smooth, [0, 1, 2, 4])])
    assert len(bad) > 5000 and len(message) - len(str(paths["seg"])) < 300, message
    assert str(paths["seg"]) in message
    assert f"{(~np.isin(smooth, [0, 1, 2, 4])).sum()} of {smooth.size} voxels" in message
    examples = ", ".join(f"{v:g}" for v in bad[:5])
    assert f"{len(bad)} distinct values from {bad[0]:g} to {bad[-1]:g} (e.g. {examples})" in message


def test_raw_manifest_records_checksums_and_rehashes_only_changed_files(tmp_path):
    for i in range(2):
        write_brats_subject(tmp_path / "raw", f"Brats17_X{i}_1", seed=i)
    subjects = discover_subjects(tmp_path / "raw")
    manifest = tmp_path / "results" / "raw_manifest.tsv"
    first = raw_checksums(subjects, manifest)
    inode = manifest.stat().st_ino
    assert raw_checksums(subjects, manifest) == first and manifest.stat().st_ino == inode
    table = pd.read_csv(manifest, sep="\t")
    t1 = subjects[0].files["t1"]
    row = table.index[table["path"] == str(t1.resolve())]
    assert len(table) == 10 and table.loc[row, "sha256"].item() == first["Brats17_X0_1"]["t1"]
    assert first["Brats17_X0_1"]["t1"] == hashlib.sha256(t1.read_bytes()).hexdigest()
    # a stored checksum is trusted while path, size and mtime are unchanged (no re-read) ...
    table.loc[row, "sha256"] = "cached"
    table.to_csv(manifest, sep="\t", index=False)
    assert raw_checksums(subjects, manifest)["Brats17_X0_1"]["t1"] == "cached"
    # ... and a file replaced by another one with its old mtime is hashed again
    stat = t1.stat()
    t1.write_bytes(subjects[1].files["t2"].read_bytes())
    os.utime(t1, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = raw_checksums(subjects, manifest)
    assert again["Brats17_X0_1"]["t1"] == again["Brats17_X1_1"]["t2"] != first["Brats17_X0_1"]["t1"]
    stored = pd.read_csv(manifest, sep="\t").loc[row, "sha256"].item()
    assert stored == again["Brats17_X0_1"]["t1"]


def test_preprocessing_records_raw_checksums_and_rejects_a_changed_file(tmp_path):
    write_brats_subject(tmp_path / "raw", "Brats17_X_1")
    (subject,) = discover_subjects(tmp_path / "raw")
    checksums = raw_checksums([subject], tmp_path / "manifest.tsv")["Brats17_X_1"]
    meta = preprocess_subject(subject, tmp_path / "out", (16, 16, 16), checksums=checksums)
    assert meta["raw_sha256"] == checksums
    stale = {**checksums, "flair": "0" * 64}
    with pytest.raises(DataError, match=r"Brats17_X_1_flair\.nii\.gz changed after"):
        preprocess_subject(subject, tmp_path / "out2", (16, 16, 16), checksums=stale)
    assert not (tmp_path / "out2").exists()


# --- hidden files; layouts ---------------------------------------------------------------


def test_hidden_files_and_folders_are_never_subjects(brats_tree):
    expected = [s.id for s in discover_subjects(brats_tree)]
    hgg = brats_tree / "HGG" / "Brats17_T00_1"
    (hgg / "._Brats17_T00_1_t1.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (brats_tree / "HGG" / "._Brats17_Z9_1_seg.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    (brats_tree / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    write_brats_subject(brats_tree / ".Trash", "Brats17_T00_1")  # a duplicate, if it were read
    write_brats_subject(brats_tree / "HGG" / ".snapshot", "Brats17_S_1", grade=None)
    assert [s.id for s in discover_subjects(brats_tree)] == expected


def _assert_truth(subject, seed):
    image, labels, affine, _ = load_subject(subject)
    truth_images, truth_labels = phantom(seed=seed)
    assert np.array_equal(labels, truth_labels)  # every voxel's internal label
    for channel, kind in enumerate(("t1", "t1ce", "t2", "flair")):
        assert np.array_equal(image[channel], truth_images[kind]), kind
    assert np.allclose(affine, AFFINE)


@pytest.mark.parametrize("layout", ["auto", "brats2023"])
def test_brats2023_layout_maps_files_and_labels(tmp_path, layout):
    for i in range(2):
        write_brats2023_subject(tmp_path, f"BraTS-GLI-{i:05d}-000", seed=i)
    subjects = discover_subjects(tmp_path, layout)
    assert [s.id for s in subjects] == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    assert {s.layout for s in subjects} == {"brats2023"} and subjects[0].grade is None
    for i, subject in enumerate(subjects):
        _assert_truth(subject, seed=i)


@pytest.mark.parametrize("layout", ["auto", "msd"])
def test_msd_layout_reads_channel_order_and_maps_labels(tmp_path, layout):
    write_msd_task(tmp_path, n=2)
    (tmp_path / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07")  # as in MSD
    subjects = discover_subjects(tmp_path, layout)
    assert [s.id for s in subjects] == ["BRATS_001", "BRATS_002"]
    assert subjects[0].channels == {"flair": ("image", 0), "t1": ("image", 1),
                                    "t1ce": ("image", 2), "t2": ("image", 3)}  # fmt: skip
    for i, subject in enumerate(subjects):
        _assert_truth(subject, seed=i)


def test_msd_label_values_of_another_layout_are_rejected(tmp_path):
    write_msd_task(tmp_path, n=1)
    _rewrite(tmp_path / "labelsTr" / "BRATS_001.nii.gz", np.full((20, 20, 16), 4, np.uint8))
    (subject,) = discover_subjects(tmp_path)
    with pytest.raises(DataError, match=r"outside the msd labels \[0, 1, 2, 3\]"):
        load_subject(subject)


def test_explicit_layout_that_does_not_match_names_it_with_an_example(brats_tree):
    with pytest.raises(DataError, match="layouts tried: msd \\(e.g. dataset.json"):
        discover_subjects(brats_tree, "msd")


def test_tree_matching_two_layouts_asks_for_data_layout(brats_tree):
    write_brats2023_subject(brats_tree, "BraTS-GLI-00000-000")
    with pytest.raises(DataError, match="matches the layouts brats2017, brats2023.*data.layout"):
        discover_subjects(brats_tree)


def test_msd_without_modality_names_in_dataset_json(tmp_path):
    write_msd_task(tmp_path, n=1)
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "BRATS"}))
    with pytest.raises(DataError, match="dataset.json: needs a 'modality' entry"):
        discover_subjects(tmp_path)


# --- split parts and cohort size ----------------------------------------------------------


@pytest.mark.parametrize(
    ("n_hgg", "n_lgg", "test", "val", "message"),
    [
        (4, 2, 0.2, 0.1, r"split.val_fraction = 0.1 puts none of the 6 subjects .* above 0.125"),
        (4, 2, 0.1, 0.0, r"split.test_fraction = 0.1 puts none of the 6 subjects"),
        (2, 0, 0.5, 0.4, r"leave none of the 2 subjects for training"),
    ],
)
def test_split_with_an_empty_part_names_the_config_key(n_hgg, n_lgg, test, val, message):
    with pytest.raises(ValueError, match=message):
        split_subjects(_cohort(n_hgg, n_lgg), test_fraction=test, val_fraction=val, seed=0)


def test_cohort_too_small_for_the_statistics_is_said_up_front():
    grades = dict(_cohort(8, 2).itertuples(index=False))
    warning = check_cohort(grades, test_fraction=0.3, val_fraction=0.1, alpha=0.05)
    assert warning.startswith("only 3 test subjects") and "0.25 > statistics.alpha" in warning
    assert check_cohort(grades, test_fraction=0.6, val_fraction=0.1, alpha=0.05) is None
    with pytest.raises(ValueError, match="split.val_fraction"):
        check_cohort(grades, test_fraction=0.3, val_fraction=0.01, alpha=0.05)


def _preprocessed(root, name: str, classes: tuple[int, ...]):
    """A preprocessed subject whose label map holds exactly ``classes`` besides background."""
    (root / name).mkdir(parents=True)
    label = np.zeros((6, 6, 4), np.uint8)
    for i, c in enumerate(classes):
        label[i + 1, 2, 1] = c
    np.save(root / name / "label.npy", label)
    np.save(root / name / "image.npy", np.zeros((4, 6, 6, 4), np.float32))


def test_example_subjects_put_those_with_every_region_first(tmp_path):
    kinds = {"a": (2,), "b": (1, 2), "c": (1, 2, 3), "d": (2, 3), "e": ()}  # only c, d have ET
    for name, classes in kinds.items():
        _preprocessed(tmp_path, name, classes)
    assert example_subjects(list(kinds), tmp_path, 2) == ["c", "d"]
    assert example_subjects(list(kinds), tmp_path, 4) == ["c", "d", "a", "b"]
    assert example_subjects(["e", "b", "a"], tmp_path, 2) == ["e", "b"]  # none complete: in order
    assert example_subjects(list(kinds), tmp_path, 0) == []
    with pytest.raises(FileNotFoundError, match=r"missing/image\.npy"):
        example_subjects(["missing"], tmp_path, 1)
