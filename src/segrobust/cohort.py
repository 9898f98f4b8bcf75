"""The synthetic cohort: its subjects and grades, their anatomy, written in the BraTS 2017 layout.

Subjects are drawn by an anatomy of :data:`ANATOMIES` (config ``data.synthetic.anatomy``): the
phantom (:mod:`segrobust.synthetic`) or the MNI template (:mod:`segrobust.template_anatomy`).
"""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from segrobust.fileio import atomic_dir
from segrobust.synthetic import _affine, _check_shape, make_subject
from segrobust.template_anatomy import check_field_of_view, make_template_subject

log = logging.getLogger(__name__)


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Save a NIfTI with scanner qform/sform in mm. nibabel gzips with mtime 0 and no file
    name, so equal data give byte-identical files."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.set_data_dtype(data.dtype)
    nib.save(img, path)


def subject_grade(index: int, lgg_fraction: float) -> str:
    """Grade of subject ``index`` (0-based): LGG spread evenly at rate ``lgg_fraction``.

    Depends on the index only, so adding subjects does not change earlier ones.
    """
    return "LGG" if np.floor((index + 1) * lgg_fraction) > np.floor(index * lgg_fraction) else "HGG"


def cohort_plan(n_subjects: int, lgg_fraction: float) -> list[tuple[str, str]]:
    """(subject id, grade) of each subject :func:`write_cohort` writes, without writing."""
    return [
        (f"Brats17_SYN{i + 1:03d}_1", subject_grade(i, lgg_fraction)) for i in range(n_subjects)
    ]


def _phantom_subject(rng, shape, spacing, grade, bias_strength, noise):
    """The phantom anatomy (:func:`make_subject`); it fills any field of view (``spacing``
    unused)."""
    return make_subject(rng, shape, grade, bias_strength, noise)


@dataclass(frozen=True)
class Anatomy:
    """How subjects of one anatomy are drawn: ``make(rng, shape, spacing, grade, bias_strength,
    noise)`` gives (images, labels); ``check(shape, spacing)`` raises ValueError when that field
    of view cannot hold the anatomy."""

    make: Callable
    check: Callable


# The anatomies of the synthetic cohort (config data.synthetic.anatomy).
ANATOMIES: dict[str, Anatomy] = {
    "template": Anatomy(make_template_subject, check_field_of_view),
    "phantom": Anatomy(_phantom_subject, lambda shape, spacing: None),
}


def check_anatomy(anatomy: str, shape, spacing) -> None:
    """Raise ValueError for an unknown ``anatomy`` or a field of view that cannot hold it."""
    if anatomy not in ANATOMIES:
        raise ValueError(f"anatomy must be one of {list(ANATOMIES)}, got {anatomy!r}")
    ANATOMIES[anatomy].check(shape, spacing)


def write_cohort(
    root: str | os.PathLike,
    n_subjects: int,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    lgg_fraction: float,
    seed: int,
    bias_strength: float = 0.2,
    noise: float = 0.04,
    anatomy: str = "template",
) -> list[str]:
    """Write a synthetic cohort in the BraTS 2017 layout and return the subject ids.

    Files: ``<root>/{HGG,LGG}/Brats17_SYN<NNN>_1/Brats17_SYN<NNN>_1_{t1,t1ce,t2,flair,seg}.nii.gz``.
    Subject i is drawn from ``np.random.default_rng([seed, i])``, so it does not depend on how many
    subjects are written; the same seed gives byte-identical files. Each subject directory is
    written atomically. ``anatomy`` is a key of ANATOMIES; ``bias_strength`` and ``noise`` are
    passed to its generator. Logs each subject's generation cost (CPU seconds of this process).
    """
    if int(n_subjects) != n_subjects or n_subjects < 1:
        raise ValueError(f"n_subjects must be an integer >= 1, got {n_subjects!r}")
    shape = _check_shape(shape)
    if len(spacing) != 3 or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers, got {spacing!r}")
    if not 0 <= lgg_fraction <= 1:
        raise ValueError(f"lgg_fraction must be in [0, 1], got {lgg_fraction!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    check_anatomy(anatomy, shape, spacing)

    make = ANATOMIES[anatomy].make
    affine = _affine(shape, spacing)
    ids = []
    for i, (subject, grade) in enumerate(cohort_plan(int(n_subjects), lgg_fraction)):
        start = time.process_time()
        rng = np.random.default_rng([int(seed), i])
        images, labels = make(rng, shape, spacing, grade, bias_strength, noise)
        with atomic_dir(Path(root) / grade / subject) as tmp:
            for modality, data in images.items():
                _save(data, affine, tmp / f"{subject}_{modality}.nii.gz")
            _save(labels, affine, tmp / f"{subject}_seg.nii.gz")
        log.info("%s (%s, %s): %.2f CPU s", subject, grade, anatomy, time.process_time() - start)
        ids.append(subject)
    return ids
