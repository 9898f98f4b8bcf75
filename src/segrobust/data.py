"""Raw subjects: reading them whole and validating them, their checksums; the split.

Where subjects are found and what their labels mean depends on the raw layout
(:mod:`segrobust.layouts`); a :class:`Subject` carries both, so reading it needs nothing else.
Every raw file is read in full exactly once per ingestion: the gzip CRC and length are checked
(nibabel alone reads only the bytes it needs, so a corrupt stream often loads) and the NIfTI
data must be as long as its header says. The raw tree is only ever read.
"""

import gzip
import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from segrobust.fileio import atomic_path, sha256_file
from segrobust.labels import BRATS_LABELS, MODALITIES, REGIONS, regions_present

FILE_KINDS: tuple[str, ...] = (*MODALITIES, "seg")
# Affines of the four modalities and the label map must agree to this tolerance (mm).
AFFINE_ATOL = 1e-3
# Bad label values quoted in an error message (the rest are counted).
EXAMPLES = 5


class DataError(ValueError):
    """Raw input that cannot be used, with the subject or file that is wrong."""


@dataclass(frozen=True)
class Subject:
    """One subject's raw files and how to read them.

    ``files`` maps a file key (t1, t1ce, t2, flair, seg; or image, seg) to a path; ``channels``
    maps each modality to (file key, channel of a 4-D file or None); ``labels`` maps the raw
    label values to internal BraTS labels {0, 1, 2, 4}. The defaults are BraTS 2017's.
    """

    id: str
    grade: str | None
    files: dict[str, Path]
    channels: dict[str, tuple[str, int | None]] = field(
        default_factory=lambda: {m: (m, None) for m in MODALITIES}
    )
    labels: dict[int, int] = field(default_factory=lambda: {v: v for v in BRATS_LABELS})
    layout: str = "brats2017"

    def to_dict(self) -> dict:
        """Plain JSON-able form (a Snakemake param); :meth:`from_dict` reverses it."""
        return {
            "id": self.id,
            "grade": self.grade,
            "files": {k: str(p) for k, p in self.files.items()},
            "channels": {m: list(c) for m, c in self.channels.items()},
            "labels": sorted(self.labels.items()),
            "layout": self.layout,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Subject":
        return cls(
            d["id"],
            d["grade"],
            {k: Path(p) for k, p in d["files"].items()},
            {m: (key, index) for m, (key, index) in d["channels"].items()},
            {int(raw): int(label) for raw, label in d["labels"]},
            d["layout"],
        )


def read_nifti(path: Path) -> tuple[nib.Nifti1Image, str]:
    """Read ``path`` whole, once; return the image (voxels in memory) and the file's SHA-256.

    DataError naming the file when the gzip stream is corrupt or truncated (CRC and length are
    checked at its end), the header is not NIfTI-1, or the data is shorter than the header says.
    """
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    data = raw
    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupt or truncated gzip stream ({err})") from err
    try:
        img = nib.Nifti1Image.from_bytes(data)
    except Exception as err:  # nibabel raises several types for a foreign or broken header
        raise DataError(f"cannot read {path}: {err}") from err
    needed = img.dataobj.offset + img.get_data_dtype().itemsize * int(np.prod(img.shape))
    if len(data) < needed:
        raise DataError(
            f"{path}: truncated: {len(data)} bytes, its header ({img.shape} "
            f"{img.get_data_dtype()}) needs {needed}"
        )
    return img, digest


def _check_labels(raw: np.ndarray, subject: Subject) -> np.ndarray:
    """Internal labels of a raw label map, or a short DataError summarising the bad values."""
    allowed = np.array(sorted(subject.labels))
    bad = ~np.isin(raw, allowed)
    if bad.any():
        values = np.unique(raw[bad])
        shown = ", ".join(f"{v:g}" for v in values[:EXAMPLES])
        raise DataError(
            f"subject {subject.id}: {subject.files['seg']}: {int(bad.sum())} of {raw.size} voxels "
            f"have values outside the {subject.layout} labels {allowed.tolist()}: "
            f"{len(values)} distinct values from {values.min():g} to {values.max():g} "
            f"(e.g. {shown}); an interpolated (resampled) label map?"
        )
    lut = np.zeros(int(allowed.max()) + 1, dtype=np.uint8)
    for value, label in subject.labels.items():
        lut[value] = label
    return lut[raw.astype(np.intp)]


def load_subject(
    subject: Subject, checksums: dict[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    """Read every raw file of ``subject`` in full, once, and validate the subject.

    Returns ``(image, labels, affine, sha256)``: image float32 (4, X, Y, Z) in MODALITIES order,
    labels uint8 internal BraTS labels {0,1,2,4} (X, Y, Z), the shared voxel-to-world affine and
    the SHA-256 of each file by key. ``checksums`` (file key -> SHA-256, from the raw manifest)
    must match what is read. Raises DataError naming the subject and file when a file is
    corrupt or changed, shapes or affines disagree, voxels are not finite or a label value is
    not one of the layout's.
    """
    imgs, digests = {}, {}
    for key, path in subject.files.items():
        imgs[key], digests[key] = read_nifti(path)
        expected = (checksums or {}).get(key)
        if expected is not None and expected != digests[key]:
            raise DataError(
                f"{path} changed after its checksum was recorded when the workflow started; "
                "run the workflow again (the subject is then re-run)"
            )
    ref = imgs["seg"]
    if ref.ndim != 3:
        raise DataError(f"subject {subject.id}: label map {subject.files['seg']} is not 3-D")
    for key, img in imgs.items():
        path = subject.files[key]
        if img.shape[:3] != ref.shape:
            raise DataError(
                f"subject {subject.id}: {path.name} has shape {img.shape}, "
                f"the label map has {ref.shape}"
            )
        if not np.allclose(img.affine, ref.affine, atol=AFFINE_ATOL):
            raise DataError(
                f"subject {subject.id}: the affine of {path.name} differs from the label map's"
            )
    image = np.empty((len(MODALITIES), *ref.shape), dtype=np.float32)
    for channel, modality in enumerate(MODALITIES):
        key, index = subject.channels[modality]
        img, path = imgs[key], subject.files[key]
        if img.ndim != (3 if index is None else 4) or (index or 0) >= img.shape[-1]:
            want = "3-D" if index is None else f"4-D with channel {index} ({modality})"
            raise DataError(f"subject {subject.id}: {path.name} has shape {img.shape}, not {want}")
        image[channel] = np.asanyarray(img.dataobj if index is None else img.dataobj[..., index])
        if not np.isfinite(image[channel]).all():
            raise DataError(f"subject {subject.id}: {path.name} has NaN/inf voxels ({modality})")
    labels = _check_labels(np.asanyarray(ref.dataobj), subject)
    return image, labels, ref.affine, digests


MANIFEST_COLUMNS = ["subject", "file", "path", "size", "mtime_ns", "sha256"]


def raw_checksums(subjects: list[Subject], manifest: str | Path) -> dict[str, dict[str, str]]:
    """SHA-256 of every raw file by subject and file key, recorded in the TSV ``manifest``.

    A file whose path, size and mtime equal its manifest row is not read again; any other is
    hashed and the manifest rewritten (atomically). As a param of a subject's preprocessing,
    the checksum re-runs the subject when its raw data is replaced, even by an older file (a
    restored backup, ``rsync -t``, ``tar x``), which Snakemake's mtime check misses.
    """
    manifest = Path(manifest)
    old = pd.read_csv(manifest, sep="\t") if manifest.is_file() else None
    stored = [] if old is None else old.itertuples()
    known = {(r.path, r.size, r.mtime_ns): r.sha256 for r in stored}
    rows = []
    for subject in subjects:
        for key, path in subject.files.items():
            path = str(Path(path).resolve())
            stat = Path(path).stat()
            sha = known.get((path, stat.st_size, stat.st_mtime_ns)) or sha256_file(path)
            rows.append([subject.id, key, path, stat.st_size, stat.st_mtime_ns, sha])
    new = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    if old is None or not new.equals(old):
        with atomic_path(manifest) as tmp:
            new.to_csv(tmp, sep="\t", index=False)
    checksums: dict[str, dict[str, str]] = {}
    for row in new.itertuples():
        checksums.setdefault(row.subject, {})[row.file] = row.sha256
    return checksums


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
    _check_parts(table, test_fraction, val_fraction)
    return table


def _check_parts(table: pd.DataFrame, test_fraction: float, val_fraction: float) -> None:
    """ValueError naming the config key when a split part later rules need is empty."""
    counts = table["split"].value_counts()
    largest = table["grade"].fillna("unknown").value_counts().max()
    why = (
        f"of the {len(table)} subjects (fractions are rounded per grade; the largest grade has "
        f"{largest}): raise it above {0.5 / largest:.3g}"
    )
    if not counts.get("test", 0):
        raise ValueError(f"split.test_fraction = {test_fraction} puts none {why}")
    if val_fraction > 0 and not counts.get("val", 0):
        raise ValueError(
            f"split.val_fraction = {val_fraction} puts none {why}, or set it to 0 to train "
            "without validation"
        )
    if not counts.get("train", 0):
        raise ValueError(
            f"split.test_fraction = {test_fraction} and split.val_fraction = {val_fraction} "
            f"leave none of the {len(table)} subjects for training: lower them"
        )


def check_cohort(
    grades: dict[str, str | None], test_fraction: float, val_fraction: float, alpha: float
) -> str | None:
    """Check the configured split of a cohort before anything runs.

    Raises ValueError (naming the config key) when the split would leave train, test or a
    requested val part empty; returns a warning when there are too few test subjects for any
    Wilcoxon signed-rank test to reach ``alpha`` (its smallest two-sided p-value with n pairs
    is 2^(1-n)), else None.
    """
    cohort = pd.DataFrame(list(grades.items()), columns=["subject", "grade"])
    table = split_subjects(cohort, test_fraction, val_fraction, seed=0)  # sizes: seed-free
    n_test = int((table["split"] == "test").sum())
    p_min = 2.0 ** (1 - n_test)
    if p_min <= alpha:
        return None
    return (
        f"only {n_test} test subjects: the smallest possible Wilcoxon signed-rank p-value is "
        f"{p_min:.3g} > statistics.alpha = {alpha} even before multiple-testing correction, so "
        "no comparison can be significant; use more subjects or a larger split.test_fraction"
    )


def read_split(path: str | Path, which: str) -> list[str]:
    """Subject ids of split ``which`` (train, val or test) in a split table written by the
    workflow; ValueError naming the file when the table is malformed."""
    table = pd.read_csv(path)
    if not {"subject", "split"} <= set(table.columns):
        raise ValueError(f"{path}: a split table needs the columns subject and split")
    return sorted(table.loc[table["split"] == which, "subject"])


def example_subjects(subjects: list[str], preprocessed: str | Path, n: int) -> list[str]:
    """The ``n`` test subjects whose perturbed inputs are saved and drawn (Figs. 1 and 5).

    Subjects whose true labels hold every region (WT, TC, ET: an LGG without enhancing tumour
    does not) come first, each group in the order of ``subjects``, so the figures can show all
    three regions whenever a test subject has them.
    """
    complete = [
        s for s in subjects
        if regions_present(open_volume(Path(preprocessed) / s).label) == tuple(REGIONS)
    ]  # fmt: skip
    return (complete + [s for s in subjects if s not in complete])[:n]


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
