"""Synthetic subjects on real anatomy: the MNI ICBM152 2009 template that ships inside nilearn.

Each subject starts from the template's grey- and white-matter probability maps and brain mask
(CSF = brain - GM - WM: ventricles, sulci and the subarachnoid space), placed in the output
field of view by a seeded small affine (scale, rotation, shift) and a smooth random deformation,
and sampled at the output voxels (skull-stripped, as BraTS data are). A glioma is grown in
hemispheric white matter (mostly): oedema spreading preferentially along white matter around a
core of necrosis and an enhancing rim (HGG) or of non-enhancing tumour (LGG), and it pushes the
surrounding tissue away (mass effect: a radial deformation that makes room for part of its
volume). Intensities come from :func:`segrobust.synthetic.render`, as for the phantom: partial
volume from the probability maps, per-subject contrast, bias field, Rician noise.

The template files are read from the installed nilearn package, never downloaded; they are
downsampled once per process and kept in memory. All geometry is in millimetres; array axes of
the output are those of the synthetic cohort (LPS, :func:`segrobust.synthetic._affine`).
"""

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from segrobust.synthetic import (
    GRADES,
    _affine,
    _check_shape,
    _ellipsoid,
    _quantile_threshold,
    render,
    smooth_field,
    tumour_classes,
)

# Brain bounding box of the template in mm (x, y, z), after the cut below INFERIOR_CUT_MM; a test
# checks it against the data. The parse-time field-of-view check uses it without loading.
TEMPLATE_BRAIN_MM = (145.0, 181.0, 148.0)
INFERIOR_CUT_MM = -65.0  # MNI z: below the cerebellum, as a BraTS volume ends at the medulla
SCALE = (0.86, 0.98)  # isotropic brain size relative to the template (MNI brains are large)
CLOSING_MM = 8.0  # radius of the closing that turns the template's brain mask into a BraTS-like one
MIN_SCALE = 0.8  # a smaller field of view than this scale of the template brain is refused
ROTATION_SD_DEG = 2.0  # per axis, truncated at twice that
SHIFT_SD_MM = 2.0
WARP_MM = (1.5, 3.5)  # standard deviation of the smooth deformation per axis
WARP_CELLS = 5  # blobs of the deformation per axis of the field of view
# Whole tumour / brain volume, drawn log-uniformly (BraTS: tens to a few hundred ml).
WT_FRACTION = (0.03, 0.15)
CORE_FRACTION = {"HGG": (0.35, 0.65), "LGG": (0.30, 0.60)}  # core / whole tumour
RIM_MM = (3.0, 7.0)  # enhancing rim thickness (HGG)
# Share of core (+ a third of the oedema) volume that displaces tissue rather than replacing it.
MASS_EFFECT = {"HGG": (0.4, 0.9), "LGG": (0.2, 0.6)}
MASS_EFFECT_DECAY = 1.5  # the displacement decays over this many ball radii (the skull holds)
WM_SITE_SHARE = 0.85  # tumour centres in hemispheric white matter; the rest anywhere deep
SITE_DEPTH_MM = 15.0  # tumour centres at least this far inside the brain
# Oedema level penalties (in tumour radii): it spreads along white matter, hardly into CSF.
OEDEMA_NOT_WM = 0.6
OEDEMA_CSF = 1.5


@dataclass(frozen=True)
class Template:
    """The template downsampled by ``factor``: maps on a RAS grid and what is derived from them."""

    factor: int
    gm: np.ndarray  # grey-matter probability, float32
    wm: np.ndarray  # white-matter probability, float32
    brain: np.ndarray  # brain fraction (block mean of the 1 mm mask), float32
    to_voxel: np.ndarray  # 4x4: template mm (RAS) -> voxel index of these arrays
    centre: np.ndarray  # mm, centre of the brain's bounding box
    extent: np.ndarray  # mm, size of the brain's bounding box
    volume_ml: float  # brain volume
    wm_sites: np.ndarray  # (n, 3) mm: deep hemispheric white matter
    deep_sites: np.ndarray  # (n, 3) mm: any supratentorial brain this deep


def _block_mean(data: np.ndarray, factor: int) -> np.ndarray:
    crop = tuple(slice(0, n - n % factor) for n in data.shape)
    d = data[crop]
    x, y, z = (n // factor for n in d.shape)
    return d.reshape(x, factor, y, factor, z, factor).mean(axis=(1, 3, 5), dtype=np.float32)


def _close(fraction: np.ndarray, radius: float) -> np.ndarray:
    """The brain fraction with the mask closed by a ball of ``radius`` voxels and its holes
    filled: the basal cisterns, which nilearn's threshold of the T1 template leaves out, become
    brain (CSF), as in a skull-stripping mask."""
    r = max(1, int(round(radius)))
    grid = np.indices((2 * r + 1,) * 3) - r
    ball = (grid**2).sum(axis=0) <= r * r
    mask = np.pad(fraction >= 0.5, r + 1)
    closed = ndimage.binary_fill_holes(ndimage.binary_closing(mask, ball))
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    closed = ndimage.binary_fill_holes(closed, in_plane)  # per axial slice: cisterns open below
    closed = closed[(slice(r + 1, -(r + 1)),) * 3]
    return np.where(closed, np.maximum(fraction, 0.6), fraction).astype(np.float32)


@functools.lru_cache(maxsize=2)
def load_template(factor: int = 2) -> Template:
    """The packaged MNI ICBM152 2009 maps, block-averaged by ``factor`` (cached per process).

    Read by nilearn's loaders from the files inside its wheel (nilearn/datasets/data); nothing
    is fetched.
    """
    if int(factor) != factor or not 1 <= factor <= 8:
        raise ValueError(f"factor must be an integer in 1..8, got {factor!r}")
    # Imported here, not at module level: nilearn.datasets costs about a CPU second to import.
    from nilearn.datasets import (
        load_mni152_brain_mask,
        load_mni152_gm_template,
        load_mni152_wm_template,
    )

    images = {
        "gm": load_mni152_gm_template(),
        "wm": load_mni152_wm_template(),
        "brain": load_mni152_brain_mask(),
    }
    affine = images["gm"].affine
    for name, img in images.items():
        if not np.allclose(img.affine, affine) or img.shape != images["gm"].shape:
            raise ValueError(f"nilearn's MNI152 {name} map is not on the grey-matter map's grid")
    if (
        not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3])))
        or (np.diag(affine)[:3] <= 0).any()
    ):
        raise ValueError("nilearn's MNI152 template is expected on a RAS grid without rotation")
    data = {name: img.get_fdata(dtype=np.float32) for name, img in images.items()}
    z_mm = affine[2, 2] * np.arange(data["brain"].shape[2]) + affine[2, 3]
    brain = (data["brain"] > 0) & (z_mm >= INFERIOR_CUT_MM)[None, None, :]
    gm = np.clip(data["gm"], 0, 1) * brain
    wm = np.clip(data["wm"], 0, 1) * brain
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]

    idx = np.argwhere(brain)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    spacing = np.diag(affine)[:3]
    lo_mm, hi_mm = affine[:3, 3] + spacing * lo, affine[:3, 3] + spacing * hi
    volume_ml = float(brain.sum() * np.prod(spacing) / 1000)

    f = int(factor)
    scale = np.diag([f, f, f, 1.0]).astype(float)
    scale[:3, 3] = (f - 1) / 2
    ds_affine = affine @ scale
    small = {k: _block_mean(v.astype(np.float32), f) for k, v in (("gm", gm), ("wm", wm))}
    small_brain = _close(_block_mean(brain.astype(np.float32), f), CLOSING_MM / (f * spacing.min()))

    # Candidate tumour centres: supratentorial (above the tentorium, outside the cerebellum)
    # and at least SITE_DEPTH_MM inside the brain; the white-matter ones away from the midline.
    depth = ndimage.distance_transform_edt(small_brain >= 0.5) * f * spacing.min()
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in small_brain.shape), indexing="ij"), axis=-1)
    mm = grid @ ds_affine[:3, :3].T + ds_affine[:3, 3]
    x, y, z = mm[..., 0], mm[..., 1], mm[..., 2]
    supratentorial = (z > -30) & ~((z < -10) & (y < -40))
    deep = supratentorial & (depth >= SITE_DEPTH_MM)
    wm_sites = deep & (small["wm"] > 0.7) & (np.abs(x) >= 15)
    return Template(
        factor=f,
        gm=small["gm"],
        wm=small["wm"],
        brain=small_brain,
        to_voxel=np.linalg.inv(ds_affine),
        centre=(lo_mm + hi_mm) / 2,
        extent=hi_mm - lo_mm + spacing,  # voxel edges, not centres
        volume_ml=volume_ml,
        wm_sites=mm[wm_sites].astype(float),
        deep_sites=mm[deep].astype(float),
    )


def template_factor(spacing) -> int:
    """Downsampling of the 1 mm template for an output voxel size: about half the smallest
    spacing (2 for the demo's 3 x 3 x 2.5 mm), at least 1, at most 4."""
    return int(np.clip(np.floor(min(float(s) for s in spacing) / 1.25), 1, 4))


def check_field_of_view(shape, spacing) -> None:
    """Raise ValueError unless ``shape`` x ``spacing`` (mm) holds a template brain scaled by
    MIN_SCALE, with a voxel to spare on each side."""
    fov = np.asarray(shape, float) * np.asarray(spacing, float)
    need = MIN_SCALE * np.asarray(TEMPLATE_BRAIN_MM) + 2 * np.asarray(spacing, float)
    if (fov < need).any():
        size = " x ".join(f"{v:g}" for v in fov)
        needed = " x ".join(f"{v:.0f}" for v in need)
        raise ValueError(
            f"a field of view of {size} mm (shape x spacing) cannot hold the template brain, "
            f"which needs at least {needed} mm: raise shape or spacing, or use the phantom anatomy"
        )


def _output_mm(shape: tuple[int, int, int], spacing) -> list[np.ndarray]:
    """World (RAS) mm of the output voxel centres along each axis, broadcastable 1-D arrays."""
    affine = _affine(shape, spacing)
    out = []
    for axis, n in enumerate(shape):
        c = (affine[axis, axis] * np.arange(n) + affine[axis, 3]).astype(np.float32)
        out.append(c.reshape([-1 if a == axis else 1 for a in range(3)]))
    return out


def placement(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing, template: Template
) -> np.ndarray:
    """Template mm (3, X, Y, Z) of each output voxel: a seeded affine and smooth deformation.

    The brain is scaled (SCALE, less where it would not fit the field of view), rotated a few
    degrees, shifted a few mm from the centre and warped by a smooth random displacement.
    """
    spacing = np.asarray(spacing, float)
    half_fov = np.asarray(shape) * spacing / 2
    rotation = Rotation.from_euler(
        "xyz",
        np.clip(rng.normal(0, ROTATION_SD_DEG, 3), -2 * ROTATION_SD_DEG, 2 * ROTATION_SD_DEG),
        degrees=True,
    ).as_matrix()
    scale = rng.uniform(*SCALE) * np.exp(np.clip(rng.normal(0, 0.02, 3), -0.04, 0.04))
    shift = np.clip(rng.normal(0, SHIFT_SD_MM, 3), -2 * SHIFT_SD_MM, 2 * SHIFT_SD_MM)
    warp_sd = rng.uniform(*WARP_MM)
    # Output mm w of template mm y: w = shift + diag(scale) R^T (y - centre); keep the rotated
    # bounding box a voxel and two warp sd inside the field of view.
    reach = np.abs(rotation.T) @ (template.extent / 2)
    room = half_fov - spacing - 2 * warp_sd - np.abs(shift)
    scale = np.minimum(scale, room / reach)
    to_template = rotation @ np.diag(1 / scale)
    w = _output_mm(shape, spacing)
    y = np.empty((3, *shape), np.float32)
    for i in range(3):
        y[i] = template.centre[i] + sum(
            float(to_template[i, j]) * (w[j] - float(shift[j])) for j in range(3)
        )
        y[i] += np.float32(warp_sd) * smooth_field(rng, shape, WARP_CELLS)
    return y


def push(coords: np.ndarray, centre, radius: float, decay: float | None = None) -> np.ndarray:
    """Mass effect: where the tissue now at ``coords`` (3, ...) mm came from, for a tumour at
    ``centre`` that made room for a ball of ``radius`` mm.

    Radial. Without ``decay`` it preserves volume outside the ball: the point at distance r came
    from s = (r^3 - radius^3)^(1/3), a displacement r - s that falls off as radius^3 / (3 r^2)
    and would move the far side of the brain too. The skull stops that (the brain compresses,
    sulci and ventricles are effaced): with ``decay`` (mm) the displacement is multiplied by
    exp(-(r - radius) / decay). Either way it shrinks with r, so the map never folds; points
    inside the ball map to the centre.
    """
    if radius <= 0:
        return coords
    c = np.asarray(centre, np.float32).reshape(3, *([1] * (coords.ndim - 1)))
    d = coords - c
    r = np.sqrt((d**2).sum(axis=0))
    radius = np.float32(radius)
    s = np.cbrt(np.maximum(r**3 - radius**3, 0))
    if decay is not None:
        s = r - (r - s) * np.exp(-np.maximum(r - radius, 0) / np.float32(decay))
    ratio = np.divide(s, r, out=np.zeros_like(r), where=r > 0)
    return c + d * ratio


def _sample(volume: np.ndarray, coords: np.ndarray, to_voxel: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``volume`` at template mm ``coords`` (3, ...), 0 outside."""
    idx = np.tensordot(to_voxel[:3, :3].astype(np.float32), coords, axes=1)
    idx += to_voxel[:3, 3].astype(np.float32).reshape(3, *([1] * (coords.ndim - 1)))
    return ndimage.map_coordinates(volume, idx, order=1, mode="constant", cval=0.0)


def tumour(
    rng: np.random.Generator,
    coords: np.ndarray,
    brain: np.ndarray,
    wm: np.ndarray,
    csf: np.ndarray,
    centre,
    wt_fraction: float,
    core_fraction: float,
    radius: float,
    grade: str,
    width: float,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Oedema / necrosis / enhancing fractions and the BraTS label map of one glioma.

    ``coords`` (3, X, Y, Z) are the voxels' template mm, ``radius`` (mm) the whole tumour's
    equivalent radius and ``width`` one voxel in mm. The core is a union of rotated ellipsoids
    deformed by smooth fields around ``centre``; the oedema level is raised outside white matter
    (``wm``) and in CSF, so oedema spreads along white matter. The whole tumour takes
    ``wt_fraction`` of ``brain`` and the core ``core_fraction`` of the whole tumour, exactly
    (quantile thresholds).
    """
    shape = brain.shape
    c = np.asarray(centre, float)
    level = None
    for k in range(rng.integers(1, 4)):
        offset = 0 if k == 0 else rng.normal(0, 0.3 * radius, 3)
        lobe = _ellipsoid(
            list(coords),
            c + offset,
            0.7 * radius * rng.uniform(0.6, 1.3, 3),
            Rotation.random(rng=rng).as_matrix(),
        )
        level = lobe if level is None else np.minimum(level, lobe)
    level = level + radius * (
        0.2 * smooth_field(rng, shape, 5) + 0.08 * smooth_field(rng, shape, 12)
    )
    level = level.astype(np.float32)

    not_wm = np.clip(1 - wm, 0, 1)
    oedema_level = level + radius * (
        0.15 * smooth_field(rng, shape, 10) + OEDEMA_NOT_WM * not_wm + OEDEMA_CSF * csf
    )
    wt_thr = _quantile_threshold(oedema_level, brain, wt_fraction)
    wt = brain & (oedema_level < wt_thr)

    core_level = level + np.float32(0.05 * radius) * smooth_field(rng, shape, 8)
    core_thr = _quantile_threshold(core_level, wt, core_fraction)
    core = wt & (core_level < core_thr)

    # Oedema signal fades over a band centred on the annotated border (its half-maximum).
    band = np.float32(1.2 * width)
    oedema = np.clip((wt_thr + band - oedema_level) / (2 * band), 0, 1) * brain
    return tumour_classes(
        rng, grade, brain=brain, wt=wt, core=core, oedema=oedema, oedema_level=oedema_level,
        wt_thr=wt_thr, core_level=core_level, core_thr=core_thr, width=width,
        necrosis_noise=np.float32(0.05 * radius), rim=RIM_MM,
    )  # fmt: skip


def make_template_subject(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing,
    grade: str,
    bias_strength: float = 0.2,
    noise: float = 0.04,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Draw one subject on the template anatomy (arguments and outputs as
    :func:`segrobust.synthetic.make_subject`, plus the voxel ``spacing`` in mm).

    The first draws from ``rng`` are those of :func:`placement`, so a test can recover the
    subject's template coordinates from the same seed.
    """
    shape = _check_shape(shape)
    if grade not in GRADES:
        raise ValueError(f"grade must be one of {GRADES}, got {grade!r}")
    if not bias_strength >= 0:
        raise ValueError(f"bias_strength must be >= 0, got {bias_strength!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    if len(spacing) != 3 or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers, got {spacing!r}")
    check_field_of_view(shape, spacing)
    template = load_template(template_factor(spacing))

    coords = placement(rng, shape, spacing, template)
    brain = _sample(template.brain, coords, template.to_voxel) >= 0.5
    sites = template.wm_sites if rng.uniform() < WM_SITE_SHARE else template.deep_sites
    centre = sites[rng.integers(len(sites))] + rng.uniform(-1, 1, 3) * template.factor
    wt_fraction = float(np.exp(rng.uniform(*np.log(WT_FRACTION))))
    core_fraction = rng.uniform(*CORE_FRACTION[grade])

    # Mass effect: the tumour makes room for `share` of its core and a third of its oedema;
    # volumes in template mm^3 (the brain's volume there is the template's).
    wt_mm3 = wt_fraction * template.volume_ml * 1e3
    ball_mm3 = rng.uniform(*MASS_EFFECT[grade]) * wt_mm3 * (core_fraction + (1 - core_fraction) / 3)
    ball = float(np.cbrt(3 * ball_mm3 / (4 * np.pi)))
    pushed = push(coords, centre, ball, decay=MASS_EFFECT_DECAY * ball)
    gm = _sample(template.gm, pushed, template.to_voxel)
    wm = _sample(template.wm, pushed, template.to_voxel)
    csf = np.clip(1 - gm - wm, 0, 1)

    radius = float(np.cbrt(3 * wt_mm3 / (4 * np.pi)))
    width = float(np.mean(spacing))
    fractions, labels = tumour(
        rng, coords, brain, wm, csf, centre, wt_fraction, core_fraction, radius, grade, width
    )
    normal = (1 - fractions["ed"] - fractions["ncr"] - fractions["et"]) * brain
    tissue = [normal * wm, normal * gm, normal * csf]
    tissue += [fractions[k] * brain for k in ("ed", "ncr", "et")]
    images = render(rng, tissue, normal, brain, grade, bias_strength, noise)
    return images, labels
