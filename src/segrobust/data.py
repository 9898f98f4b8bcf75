"""BraTS ingestion: find subjects under a raw data root, validate and read them; the split.

Supported layouts (the raw tree is only ever read):

- BraTS 2017: ``<root>/{HGG,LGG}/Brats17_<id>_1/Brats17_<id>_1_{t1,t1ce,t2,flair,seg}.nii.gz``
- BraTS 2018-2021: ``<root>[/{HGG,LGG}]/<id>/<id>_{t1,t1ce,t2,flair,seg}.nii.gz`` with ids such as
  ``BraTS20_Training_001`` or ``BraTS2021_00000``.

A subject is the set of files ``<id>_<kind>.nii[.gz]`` in one directory. The grade (HGG/LGG) is
taken from an enclosing ``HGG``/``LGG`` folder when there is one.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from segrobust.labels import BRATS_LABELS, MODALITIES

FILE_KINDS: tuple[str, ...] = (*MODALITIES, "seg")
GRADES: tuple[str, ...] = ("HGG", "LGG")
_FILE_RE = re.compile(r"^(?P<id>.+)_(?P<kind>t1|t1ce|t2|flair|seg)\.nii(\.gz)?$")
# Affines of the four modalities and the label map must agree to this tolerance (mm).
AFFINE_ATOL = 1e-3


class DataError(ValueError):
    """Raw input that cannot be used, with the subject or file that is wrong."""


@dataclass(frozen=True)
class Subject:
    """One subject's raw files: ``files`` maps t1/t1ce/t2/flair/seg to a path."""

    id: str
    grade: str | None
    files: dict[str, Path]


def discover_subjects(root: str | Path) -> list[Subject]:
    """List the subjects under ``root``, sorted by id, checking that each has all five files.

    Reads no image data (only names), so it is cheap enough to call when Snakemake builds its DAG.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a directory")
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(root.rglob("*.nii*")):
        match = _FILE_RE.match(path.name)
        if match is None:
            continue
        sid, kind = match["id"], match["kind"]
        files = found.setdefault(sid, {})
        if kind in files or (files and next(iter(files.values())).parent != path.parent):
            other = files.get(kind) or next(iter(files.values()))
            raise DataError(f"duplicate subject id {sid!r}: {other} and {path}")
        files[kind] = path
    if not found:
        raise DataError(
            f"no subjects found under {root}: expected files named <id>_{{{','.join(FILE_KINDS)}}}"
            ".nii.gz (BraTS 2017-2021 layout)"
        )
    subjects = []
    for sid in sorted(found):
        files = found[sid]
        missing = [kind for kind in FILE_KINDS if kind not in files]
        if missing:
            where = next(iter(files.values())).parent
            raise DataError(f"subject {sid} in {where}: missing {', '.join(missing)}")
        subjects.append(Subject(sid, _grade(files["seg"], root), dict(sorted(files.items()))))
    return subjects


def _grade(path: Path, root: Path) -> str | None:
    for part in path.relative_to(root).parts[:-1]:
        if part.upper() in GRADES:
            return part.upper()
    return None


def _load_nifti(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(path)
        img.dataobj  # noqa: B018  (touch the proxy so a bad header fails here)
    except Exception as err:
        raise DataError(f"cannot read {path}: {err}") from err
    return img


def _read_array(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    """Read voxels in their stored dtype (int16 stays int16; no float64 copy)."""
    try:
        return np.asanyarray(img.dataobj)
    except Exception as err:  # truncated or corrupt gzip stream
        raise DataError(f"cannot read voxels of {path}: {err}") from err


def load_subject(subject: Subject) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read and validate one subject.

    Returns ``(image, labels, affine)``: image float32 (4, X, Y, Z) in MODALITIES order, labels
    uint8 BraTS labels {0,1,2,4} (X, Y, Z), and the shared voxel-to-world affine. Raises
    DataError naming the subject and file when shapes or affines disagree, voxels are not finite
    or labels are outside {0, 1, 2, 4}.
    """
    imgs = {kind: _load_nifti(subject.files[kind]) for kind in FILE_KINDS}
    ref = imgs["seg"]
    for kind, img in imgs.items():
        path = subject.files[kind]
        if img.shape != ref.shape:
            raise DataError(
                f"subject {subject.id}: {path.name} has shape {img.shape}, "
                f"the label map has {ref.shape}"
            )
        if not np.allclose(img.affine, ref.affine, atol=AFFINE_ATOL):
            raise DataError(
                f"subject {subject.id}: the affine of {path.name} differs from the label map's"
            )
    image = np.empty((len(MODALITIES), *ref.shape), dtype=np.float32)
    for channel, kind in enumerate(MODALITIES):
        image[channel] = _read_array(imgs[kind], subject.files[kind])
        if not np.isfinite(image[channel]).all():
            raise DataError(f"subject {subject.id}: {subject.files[kind].name} has NaN/inf voxels")
    raw_labels = _read_array(ref, subject.files["seg"])
    values = np.unique(raw_labels)
    bad = sorted(set(values.tolist()) - set(BRATS_LABELS))
    if bad:
        raise DataError(
            f"subject {subject.id}: {subject.files['seg'].name} has label values {bad}; "
            f"expected a subset of {list(BRATS_LABELS)}"
        )
    return image, raw_labels.astype(np.uint8), ref.affine


def split_subjects(
    subjects: pd.DataFrame, test_fraction: float, val_fraction: float, seed: int
) -> pd.DataFrame:
    """Assign each subject to train, val or test, stratified by grade where grades are known.

    ``subjects`` has columns ``subject`` and ``grade`` (None/NaN when unknown). Within each grade
    stratum the subjects are shuffled with a generator seeded by ``seed`` and the first
    round(n·test_fraction) go to test, the next round(n·val_fraction) to val (validation during
    training), the rest to train. Returns the table sorted by subject with a ``split`` column.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"split.test_fraction must be in (0, 1), got {test_fraction}")
    if not 0 <= val_fraction < 1 - test_fraction:
        raise ValueError(
            f"split.val_fraction must be in [0, 1 - test_fraction), got {val_fraction}"
        )
    if subjects["subject"].duplicated().any():
        dup = subjects.loc[subjects["subject"].duplicated(), "subject"].iloc[0]
        raise ValueError(f"duplicate subject id {dup!r} in the split input")
    rng = np.random.default_rng(seed)
    table = subjects.sort_values("subject").reset_index(drop=True).copy()
    table["split"] = "train"
    strata = table["grade"].fillna("unknown")
    for grade in sorted(strata.unique()):
        index = rng.permutation(table.index[strata == grade].to_numpy())
        n_test = round(len(index) * test_fraction)
        n_val = round(len(index) * val_fraction)
        table.loc[index[:n_test], "split"] = "test"
        table.loc[index[n_test : n_test + n_val], "split"] = "val"
    return table


def read_split(path: str | Path, which: str) -> list[str]:
    """Subject ids of split ``which`` (train, val or test) in a split table written by the
    workflow; ValueError naming the file when the table is malformed."""
    table = pd.read_csv(path)
    if not {"subject", "split"} <= set(table.columns):
        raise ValueError(f"{path}: a split table needs the columns subject and split")
    return sorted(table.loc[table["split"] == which, "subject"])


@dataclass(frozen=True)
class Volume:
    """One preprocessed subject, memory-mapped: image (4, X, Y, Z) float32, label uint8."""

    name: str
    image: np.ndarray
    label: np.ndarray


def open_volume(directory: str | Path) -> Volume:
    """Memory-map ``<directory>/image.npy`` and ``label.npy``; ValueError naming a bad file."""
    directory = Path(directory)
    arrays = {}
    for name in ("image", "label"):
        path = directory / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"training data file not found: {path}")
        try:
            arrays[name] = np.load(path, mmap_mode="r")
        except Exception as err:  # numpy raises several types for truncated or foreign files
            raise ValueError(f"cannot read {path}: {err}") from err
    image, label = arrays["image"], arrays["label"]
    if image.dtype != np.float32 or image.ndim != 4 or image.shape[0] != len(MODALITIES):
        raise ValueError(
            f"{directory / 'image.npy'} must be float32 ({len(MODALITIES)}, X, Y, Z), "
            f"got {image.dtype} {image.shape}"
        )
    if label.dtype != np.uint8 or label.shape != image.shape[1:]:
        raise ValueError(
            f"{directory / 'label.npy'} must be uint8 {image.shape[1:]} (the image's grid), "
            f"got {label.dtype} {label.shape}"
        )
    return Volume(directory.name, image, label)
