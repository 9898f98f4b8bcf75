"""Synthetic BraTS-like subjects: the benchmark's built-in data (no download).

Each subject is a skull-stripped brain (background exactly 0 in every modality) with white
matter, cortical and deep grey matter, ventricles and sulcal CSF, and a glioma: oedema (label 2)
around a tumour core that is an enhancing rim (label 4) around necrosis (label 1) in HGG-like
subjects, or non-enhancing solid tumour (label 1) without enhancement in LGG-like ones.

To make the task realistic rather than trivial (attacks barely bite on crisp, well-separated
intensities), tissues are mixed by soft partial-volume fractions, every tissue has a smooth random
texture and per-subject contrast jitter, marginal intensity distributions overlap, each modality
has a smooth multiplicative bias field, and Rician noise is added inside the brain. Compartments
stay identifiable from the joint four-modality contrast plus spatial context.

All coordinates are normalised to [-1, 1] per array axis, so a subject looks the same at 32³ and
240×240×155. Array axes run right→left, anterior→posterior, inferior→superior (LPS, as the
ITK-written BraTS files).

This module draws one phantom subject and renders any anatomy's tissue fractions as MR images
(:func:`render`, also used by :mod:`segrobust.template_anatomy`); the cohort of either anatomy
is written by :mod:`segrobust.cohort`.
"""

import numpy as np
from scipy.spatial.transform import Rotation

from segrobust.labels import MODALITIES

GRADES: tuple[str, ...] = ("HGG", "LGG")
TISSUES: tuple[str, ...] = ("wm", "gm", "csf", "ed", "ncr", "et")
MIN_SIZE = 16

# Relative mean intensity of each tissue (order TISSUES) per modality, roughly as in real MR:
# T1 WM > GM > CSF; T1ce as T1 with a bright enhancing rim and dark necrosis; T2 CSF > GM > WM
# with bright oedema and necrosis; FLAIR with suppressed CSF and bright oedema.
_CONTRAST: dict[str, tuple[float, ...]] = {
    "t1": (1.00, 0.78, 0.35, 0.76, 0.50, 0.80),
    "t1ce": (1.00, 0.80, 0.38, 0.78, 0.45, 2.10),
    "t2": (0.55, 0.75, 1.60, 1.12, 1.35, 0.95),
    "flair": (0.85, 1.00, 0.35, 1.45, 1.05, 1.20),
}
# LGG-like label 1 is solid non-enhancing tumour rather than necrosis: T1- and T1ce-hypointense
# (a little less dark than necrosis), bright on T2 and FLAIR, and more homogeneous.
_LGG_CORE: dict[str, float] = {"t1": 0.58, "t1ce": 0.52, "t2": 1.38, "flair": 1.30}
# Relative standard deviation of each tissue's smooth texture (order TISSUES), HGG and LGG.
_TEXTURE = np.array([0.05, 0.06, 0.06, 0.12, 0.18, 0.12], dtype=np.float32)
_LGG_TEXTURE = np.array([0.05, 0.06, 0.06, 0.12, 0.08, 0.12], dtype=np.float32)
# Per-subject log-normal jitter of tissue means (normal tissue, tumour).
_JITTER = (0.05, 0.08)
_WT_FRACTION = (0.06, 0.15)  # whole tumour / brain volume
_CORE_FRACTION = {"HGG": (0.40, 0.70), "LGG": (0.30, 0.60)}  # core / whole tumour
_RIM = (0.16, 0.24)  # enhancing rim thickness, normalised units (HGG)
MIN_NECROSIS = (0.10, 0.30)  # lowest necrosis / core fraction (HGG), wins over the rim


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(s) != s or s < MIN_SIZE for s in shape):
        raise ValueError(f"shape must be three integers >= {MIN_SIZE}, got {shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _axis_weights(n: int, cells: int) -> np.ndarray:
    """(n, cells) periodic Gaussian weights (width one cell) from grid nodes to voxel centres.

    Rows have unit sum of squares, so unit-variance white noise on the grid gives a
    unit-variance field.
    """
    x = (np.arange(n) + 0.5) / n * cells
    d = x[:, None] - (np.arange(cells) + 0.5)[None, :]
    d = (d + cells / 2) % cells - cells / 2
    w = np.exp(-0.5 * d**2)
    return (w / np.sqrt((w**2).sum(axis=1, keepdims=True))).astype(np.float32)


def _upsample(grid: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth field at ``shape`` from white noise on a small (cells, cells, cells) grid.

    Separable Gaussian interpolation as three small products: much faster than a large-kernel
    filter or spline zoom at full resolution. einsum (not BLAS matmul) because multithreaded
    BLAS is up to 100x slower on these thin products when the cores are busy.
    """
    w0, w1, w2 = (_axis_weights(n, c) for n, c in zip(shape, grid.shape, strict=True))
    out = np.einsum("abc,zc->abz", grid.astype(np.float32), w2)
    out = np.einsum("yb,abz->ayz", w1, out)
    return np.einsum("xa,ayz->xyz", w0, out)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], cells: int) -> np.ndarray:
    """Smooth, periodic, zero-mean, unit-variance random field with ~``cells`` blobs per axis."""
    return _upsample(rng.standard_normal((cells,) * 3), shape)


def _coords(shape: tuple[int, int, int]) -> list[np.ndarray]:
    """Normalised voxel-centre coordinates in (-1, 1), as broadcastable 1-D arrays."""
    out = []
    for axis, n in enumerate(shape):
        c = ((np.arange(n, dtype=np.float32) + 0.5) / n) * 2 - 1
        out.append(c.reshape([-1 if a == axis else 1 for a in range(3)]))
    return out


def _ellipsoid(coords: list[np.ndarray], centre, axes, rotation: np.ndarray | None = None):
    """Approximate signed distance (normalised units) to an ellipsoid, negative inside."""
    d = [c - float(o) for c, o in zip(coords, centre, strict=True)]
    if rotation is not None:
        d = [sum(float(rotation[i, j]) * d[j] for j in range(3)) for i in range(3)]
    r = np.sqrt(sum((di / float(a)) ** 2 for di, a in zip(d, axes, strict=True)))
    return (r - 1) * float(min(axes))


def _soft(level: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume fraction of the region ``level < 0``: a linear ramp ``width`` wide, as
    a voxel of that size cut by a planar boundary."""
    return np.clip(np.float32(0.5) - level / np.float32(width), 0, 1)


def _anatomy(
    rng: np.random.Generator, shape: tuple[int, int, int], coords: list[np.ndarray], width: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brain mask and the grey-matter and CSF fractions (white matter is the rest)."""
    x, _, z = coords
    axes = np.array([0.72, 0.86, 0.80]) * rng.uniform(0.94, 1.04, 3)
    level = _ellipsoid(coords, rng.normal(0, 0.02, 3), axes)
    level = level + 0.03 * smooth_field(rng, shape, 5)
    brain = level < 0

    # Cortex: a grey-matter ribbon under the surface that folds around sulci. Sulci are the zero
    # sheets of a random field f; |f| / |grad f| approximates the distance to them, with
    # |grad f| ~ 0.6 * cells for these Gaussian fields.
    depth = -level
    thickness = rng.uniform(0.045, 0.06)
    cells = 16
    sulcus_dist = np.abs(smooth_field(rng, shape, cells)) / np.float32(0.6 * cells)
    sulcus_depth = 0.16 + 0.05 * smooth_field(rng, shape, 6)
    in_folds = _soft(depth - sulcus_depth, width)
    sulci = _soft(sulcus_dist - 0.4 * width, width) * in_folds
    cortex = np.maximum(
        _soft(depth - thickness, width),
        _soft(sulcus_dist - thickness, width) * _soft(depth - sulcus_depth - thickness, width),
    )
    fissure = _soft(np.abs(x - 0.015 * smooth_field(rng, shape, 4)) - 0.4 * width, width)
    fissure = fissure * _soft(depth - 0.3, width) * _soft(-(z + 0.1), width)
    surface = _soft(depth - 0.3 * width, width)

    # Lateral ventricles (size varies with atrophy) and deep grey matter.
    scale = rng.uniform(0.8, 1.4)
    vent_def = 0.015 * smooth_field(rng, shape, 6)
    ventricles = np.zeros(shape, np.float32)
    deep_gm = np.zeros(shape, np.float32)
    for side in (-1, 1):
        c = (side * rng.uniform(0.07, 0.10), rng.uniform(-0.05, 0.05), rng.uniform(0.05, 0.15))
        v = _ellipsoid(coords, c, np.array([0.06, 0.30, 0.10]) * scale)
        ventricles = np.maximum(ventricles, _soft(v + vent_def, width))
        c = (side * rng.uniform(0.15, 0.22), rng.uniform(-0.05, 0.05), rng.uniform(-0.12, 0.0))
        deep_gm = np.maximum(deep_gm, 0.7 * _soft(_ellipsoid(coords, c, (0.09, 0.16, 0.10)), width))

    csf = np.maximum.reduce([ventricles, sulci, fissure, surface])
    gm = np.maximum(cortex, deep_gm) * (1 - csf)
    return brain, gm, csf


def _quantile_threshold(level: np.ndarray, mask: np.ndarray, fraction: float) -> float:
    """Threshold t such that ``level < t`` holds on ``fraction`` of ``mask``."""
    return float(np.quantile(level[mask], fraction))


def _tumour(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    coords: list[np.ndarray],
    brain: np.ndarray,
    gm: np.ndarray,
    grade: str,
    width: float,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Oedema/necrosis/enhancing tissue fractions and the BraTS label map of one tumour.

    The shape is a union of randomly rotated ellipsoids deformed by smooth fields; compartment
    thresholds are quantiles, so volumes follow the drawn fractions exactly.
    """
    centre = np.array(
        [
            rng.choice([-1, 1]) * rng.uniform(0.12, 0.42),
            rng.uniform(-0.45, 0.45),
            rng.uniform(-0.3, 0.4),
        ]
    )
    level = None
    for k in range(rng.integers(1, 4)):
        offset = 0 if k == 0 else rng.normal(0, 0.14, 3)
        lobe = _ellipsoid(
            coords,
            centre + offset,
            0.3 * rng.uniform(0.6, 1.3, 3),
            Rotation.random(rng=rng).as_matrix(),
        )
        level = lobe if level is None else np.minimum(level, lobe)
    level = level + 0.07 * smooth_field(rng, shape, 5) + 0.03 * smooth_field(rng, shape, 12)

    # Oedema spreads along white matter and less into the cortex (finger-like).
    oedema_level = level + 0.06 * smooth_field(rng, shape, 10) + 0.12 * gm
    wt_thr = _quantile_threshold(oedema_level, brain, rng.uniform(*_WT_FRACTION))
    wt = brain & (oedema_level < wt_thr)

    core_level = level + 0.02 * smooth_field(rng, shape, 8)
    core_thr = _quantile_threshold(core_level, wt, rng.uniform(*_CORE_FRACTION[grade]))
    core = wt & (core_level < core_thr)

    # Oedema signal fades over a band centred on the annotated border (its half-maximum), so
    # the border lies on a gradient as in real MR rather than on an edge.
    inner, tail = 0.035, 0.035
    oedema = np.clip((wt_thr + tail - oedema_level) / np.float32(inner + tail), 0, 1) * brain
    return tumour_classes(
        rng, grade, brain=brain, wt=wt, core=core, oedema=oedema, oedema_level=oedema_level,
        wt_thr=wt_thr, core_level=core_level, core_thr=core_thr, width=width,
        necrosis_noise=0.03, rim=_RIM,
    )  # fmt: skip


def tumour_classes(
    rng: np.random.Generator,
    grade: str,
    *,
    brain: np.ndarray,
    wt: np.ndarray,
    core: np.ndarray,
    oedema: np.ndarray,
    oedema_level: np.ndarray,
    wt_thr: float,
    core_level: np.ndarray,
    core_thr: float,
    width: float,
    necrosis_noise: float,
    rim: tuple[float, float],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Partial-volume fractions (``ed``, ``ncr``, ``et``) and BraTS labels of a tumour whose
    whole tumour ``wt`` lies below ``wt_thr`` of ``oedema_level`` and core ``core`` below
    ``core_thr`` of ``core_level`` (``oedema``: the oedema signal). HGG: a necrotic centre
    (``core_level`` plus smooth noise of amplitude ``necrosis_noise``) inside an enhancing rim
    of thickness drawn from ``rim`` (units of ``core_level``), leaving at least a fraction drawn
    from MIN_NECROSIS of the core necrotic; LGG: the whole core NCR/NET, no enhancement."""
    f_core = _soft(core_level - core_thr, width) * _soft(oedema_level - wt_thr, width) * brain
    labels = np.where(wt, 2, 0).astype(np.uint8)
    if grade == "HGG":
        # Enhancing rim of varying thickness around necrosis; small cores get a thinner rim.
        nec_level = core_level + necrosis_noise * smooth_field(rng, core_level.shape, 8)
        nec_thr = max(
            core_thr - rng.uniform(*rim),
            _quantile_threshold(nec_level, core, rng.uniform(*MIN_NECROSIS)),
        )
        f_ncr = f_core * _soft(nec_level - nec_thr, width)
        labels[core] = 4
        labels[core & (nec_level < nec_thr)] = 1
    else:
        f_ncr = f_core
        labels[core] = 1
    fractions = {"ed": oedema * (1 - f_core), "ncr": f_ncr, "et": f_core - f_ncr}
    return fractions, labels


def _tissue_means(rng: np.random.Generator, grade: str) -> np.ndarray:
    """Per-subject mean intensity of each tissue (rows MODALITIES, columns TISSUES)."""
    means = np.array([_CONTRAST[m] for m in MODALITIES], dtype=np.float32)
    if grade == "LGG":
        means[:, TISSUES.index("ncr")] = [_LGG_CORE[m] for m in MODALITIES]
    n_normal = 3
    jitter = np.empty_like(means)
    jitter[:, :n_normal] = rng.normal(0, _JITTER[0], (len(MODALITIES), n_normal))
    jitter[:, n_normal:] = rng.normal(0, _JITTER[1], (len(MODALITIES), len(TISSUES) - n_normal))
    return means * np.exp(jitter).astype(np.float32)


def _correlated_fields(
    rng: np.random.Generator, shape: tuple[int, int, int], cells: int, n: int, rho: float
) -> list[np.ndarray]:
    """``n`` unit-variance smooth fields with pairwise correlation about ``rho``."""
    shared = rng.standard_normal((cells,) * 3)
    own = rng.standard_normal((n,) + (cells,) * 3)
    return [_upsample(np.sqrt(rho) * shared + np.sqrt(1 - rho) * g, shape) for g in own]


def _vessels(rng: np.random.Generator, shape: tuple[int, int, int], width: float) -> np.ndarray:
    """Fraction of thin tubes (intersections of two random sheets) in a random third of space."""
    cells = 12
    d1, d2 = (np.abs(smooth_field(rng, shape, cells)) / np.float32(0.6 * cells) for _ in range(2))
    region = _soft(0.4 - smooth_field(rng, shape, 4), 0.5)
    return _soft(np.maximum(d1, d2) - 0.5 * width, width) * region


def _rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma``."""
    if sigma == 0:
        return signal
    real = signal + rng.standard_normal(signal.shape, np.float32) * np.float32(sigma)
    imag = rng.standard_normal(signal.shape, np.float32) * np.float32(sigma)
    return np.hypot(real, imag)


def make_subject(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    grade: str,
    bias_strength: float = 0.2,
    noise: float = 0.04,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Draw one synthetic subject.

    ``bias_strength`` is the standard deviation of each modality's log bias field; ``noise`` is
    the Rician noise level relative to the white-matter intensity. Returns (images, labels):
    images maps each of MODALITIES to an int16 array, zero exactly outside the brain and positive
    inside; labels is a uint8 BraTS label map with values in {0, 1, 2, 4}.
    """
    shape = _check_shape(shape)
    if grade not in GRADES:
        raise ValueError(f"grade must be one of {GRADES}, got {grade!r}")
    if not bias_strength >= 0:
        raise ValueError(f"bias_strength must be >= 0, got {bias_strength!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")

    coords = _coords(shape)
    width = 2 / float(np.mean(shape))  # partial-volume edge: one voxel
    brain, gm, csf = _anatomy(rng, shape, coords, width)
    tumour, labels = _tumour(rng, shape, coords, brain, gm, grade, width)

    normal = 1 - tumour["ed"] - tumour["ncr"] - tumour["et"]  # tumour displaces normal tissue
    fractions = [
        normal * (1 - gm - csf),
        normal * gm,
        normal * csf,
        tumour["ed"],
        tumour["ncr"],
        tumour["et"],
    ]
    images = render(rng, fractions, normal, brain, grade, bias_strength, noise)
    return images, labels


def render(
    rng: np.random.Generator,
    fractions: list[np.ndarray],
    normal: np.ndarray,
    brain: np.ndarray,
    grade: str,
    bias_strength: float,
    noise: float,
) -> dict[str, np.ndarray]:
    """The four MR images of a subject from its tissue fractions (order TISSUES).

    Each voxel mixes the tissues' mean intensities by their fractions (partial volume), with a
    smooth texture per tissue and per-subject contrast jitter; T1ce gets enhancing vessels in
    normal tissue (``normal`` > 0.5); each modality a smooth multiplicative bias field, Rician
    noise in the ``brain`` mask and a random scale. Images are int16, zero exactly outside the
    brain, >= 1 inside.
    """
    shape = brain.shape
    width = 2 / float(np.mean(shape))  # one voxel in normalised coordinates (the vessels')
    means = _tissue_means(rng, grade)
    textures = _correlated_fields(rng, shape, 16, len(MODALITIES), rho=0.5)
    tumour_textures = _correlated_fields(rng, shape, 10, len(MODALITIES), rho=0.5)
    biases = _correlated_fields(rng, shape, 4, len(MODALITIES), rho=0.3)
    vessels = _vessels(rng, shape, width) * (normal > 0.5)
    scales = rng.uniform(600, 1400, len(MODALITIES))

    texture_sd = _LGG_TEXTURE if grade == "LGG" else _TEXTURE
    images = {}
    for m, modality in enumerate(MODALITIES):
        signal = np.zeros(shape, np.float32)
        for t, frac in enumerate(fractions):
            texture = textures[m] if t < 3 else tumour_textures[m]
            signal += frac * (means[m, t] * (1 + texture_sd[t] * texture))
        if modality == "t1ce":
            signal *= 1 + 0.5 * vessels  # enhancing vessels: bright on T1ce but not tumour
        signal *= np.exp(np.float32(bias_strength) * biases[m])
        inside = _rician(rng, signal[brain], noise * float(means[m, 0]))
        image = np.zeros(shape, np.int16)
        image[brain] = np.clip(np.rint(inside * scales[m]), 1, np.iinfo(np.int16).max)
        images[modality] = image
    return images


def _affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """LPS-oriented affine (RAS world, as nibabel reads ITK files) centred on the volume."""
    signs = np.array([-1.0, -1.0, 1.0])
    diag = signs * np.asarray(spacing, float)
    affine = np.diag([*diag, 1.0])
    affine[:3, 3] = -diag * (np.asarray(shape) - 1) / 2
    return affine
