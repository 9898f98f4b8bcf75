"""Realistic MR perturbations at graded severities: motion, ghosting, bias field, spike, noise.

The paper's Discussion names as a limitation that adversarial perturbations "may not correspond
to natural variation in medical images" and proposes motion and other MR artefacts; this module
produces them with TorchIO (Rician noise in two lines: TorchIO has none) for the same metrics.

Conventions:

- **Input.** A preprocessed volume (4, D, H, W) float32, modalities t1, t1ce, t2, flair, z-scored
  in the brain with background exactly 0; the brain ``mask`` (D, H, W) defaults to voxels nonzero
  in any channel (pass ``mask.npy`` for volume-standardised inputs, whose background is not 0).
- **Pseudo-magnitude.** MR artefacts act on magnitude images: non-negative, dark background,
  bright brain. On z-scored data a multiplicative bias field would make negative voxels more
  negative, Rician noise has no meaning, and k-space artefacts would not see the brain edge (the
  brain has no contrast against a zero background). So each channel is mapped to
  ``y = (x - min_brain(x) + 1) · mask``, the artefact is applied to ``y``, and its change is added
  back: ``out = x + (artefact(y) - y)``. Inside the brain this is exactly the corrupted magnitude
  image under the clean image's normalisation (shift back); outside, the background receives the
  artefact's spill-over. Gaussian noise is additive, so the shift does not change it.
- **Background.** Motion, ghosting, spike and noise spread signal into the background, as in a
  real scan, and it is kept (no re-masking; ``out * mask`` re-masks if wanted). The bias field
  multiplies ``y``, which is 0 there, so the background stays exactly 0.
- **Same draw for every modality.** The four channels form one TorchIO ``ScalarImage``; TorchIO
  samples a transform's parameters once per image and applies them to each channel (same motion
  trajectory, ghost axis, spike position, bias field). Noise is drawn per voxel and channel (the
  modalities are separate acquisitions) at the same level relative to each channel's brain sd.
- **Seeding.** TorchIO draws from torch's global RNG: calls run inside
  ``torch.random.fork_rng`` with ``torch.manual_seed(seed)``, so results are reproducible and the
  caller's RNG state is untouched; noise uses ``numpy.random.default_rng(seed)``. The random
  draws do not depend on the severity: for one seed, the levels are the same artefact (motion
  trajectory, ghost axis, spike position, bias field shape, noise) at growing strength, and
  Gaussian and Rician noise share the real-part draw.
- **Geometry.** Array axes are LPS (axis 2 = axial slice direction). Ghosts run along an in-plane
  phase-encode axis (0 or 1); TorchIO's motion model splits k-space along axis 2. Motion
  translations are in mm: ``spacing`` defaults to the array spanning the BraTS field of view
  (240 × 240 × 155 mm), so a level means the same physical motion at every array size.

Severity table (:data:`LEVELS`, levels 1..5; level 0 returns the input unchanged):

============== ======================================= ==================================
kind           strength at levels 1, 2, 3, 4, 5        fixed
============== ======================================= ==================================
motion         rotations U(±d)° and translations       2 movements; k-space in 3 segments,
               U(±d) mm per axis, d = 0.25, 0.5, 1,    the centre one unmoved
               2, 4
ghosting       intensity 0.1, 0.2, 0.3, 0.45, 0.6      4 ghosts, axis 0 or 1; every 4th
               (k-space planes × (1 − intensity))      k-space plane scaled
bias_field     coefficients U(±c), c = 0.05, 0.1,      order 3; field = exp(polynomial);
               0.2, 0.3, 0.4                           brain p99/p1 ≈ 1.1, 1.2, 1.4, 1.6, 1.9
spike          intensity 0.1, 0.2, 0.3, 0.45, 0.6      1 spike at a uniform k-space position
               × max |k-space| (per channel)
gaussian_noise sd 0.04, 0.08, 0.12, 0.16, 0.2          every voxel
               × brain sd of the channel
rician_noise   the same sd in both quadratures         magnitude: Rayleigh in the background
============== ======================================= ==================================

Level 1 is subtle and level 5 a clearly visible but plausible artefact (checked by eye on
synthetic 128 × 128 × 83 subjects); TorchIO's defaults (motion 10°/10 mm, ghosting intensity
0.5–1, spike intensity 1–3, bias 0.5) are at or beyond level 5.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from segrobust.families import ARTEFACTS

if TYPE_CHECKING:  # imported where used: only jobs that run these artefacts pay its import
    import torchio as tio

PERTURBATIONS: tuple[str, ...] = tuple(ARTEFACTS)  # the realistic family's artefacts
MAX_SEVERITY = 5
BRATS_FOV_MM: tuple[float, float, float] = (240.0, 240.0, 155.0)

# Strength of each kind at levels 1..5 (see the module docstring) and the parameters kept fixed.
LEVELS: dict[str, dict[str, tuple[float, ...]]] = {
    "motion": {"degrees": (0.25, 0.5, 1.0, 2.0, 4.0), "translation": (0.25, 0.5, 1.0, 2.0, 4.0)},
    "ghosting": {"intensity": (0.1, 0.2, 0.3, 0.45, 0.6)},
    "bias_field": {"coefficients": (0.05, 0.1, 0.2, 0.3, 0.4)},
    "spike": {"intensity": (0.1, 0.2, 0.3, 0.45, 0.6)},
    "gaussian_noise": {"std": (0.04, 0.08, 0.12, 0.16, 0.2)},
    "rician_noise": {"std": (0.04, 0.08, 0.12, 0.16, 0.2)},
}
FIXED: dict[str, dict[str, object]] = {
    "motion": {"num_transforms": 2},
    "ghosting": {"num_ghosts": 4, "axes": (0, 1)},
    "bias_field": {"order": 3},
    "spike": {"num_spikes": 1},
    "gaussian_noise": {},
    "rician_noise": {},
}


def check_severity(severity: float | int) -> int:
    """Return ``severity`` as an int level in 0..MAX_SEVERITY, or raise ValueError."""
    if isinstance(severity, bool) or not isinstance(severity, int | float | np.number):
        raise ValueError(f"severity must be an integer 0..{MAX_SEVERITY}, got {severity!r}")
    if not float(severity).is_integer() or not 0 <= severity <= MAX_SEVERITY:
        raise ValueError(f"severity must be an integer 0..{MAX_SEVERITY}, got {severity!r}")
    return int(severity)


def perturbation_parameters(kind: str, severity: float | int) -> dict[str, object]:
    """The artefact parameters of ``kind`` at ``severity`` (to record with the results)."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"kind must be one of {PERTURBATIONS}, got {kind!r}")
    level = check_severity(severity)
    strength = {name: (0.0, *values)[level] for name, values in LEVELS[kind].items()}
    return strength | FIXED[kind]


def _check_image(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Validate the (4, D, H, W) image; return the brain mask (D, H, W)."""
    if not isinstance(image, np.ndarray) or image.ndim != 4 or image.shape[0] != 4:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image must be a numpy array (4, D, H, W), got shape {shape}")
    if not np.issubdtype(image.dtype, np.floating) or not np.isfinite(image).all():
        raise ValueError(f"image must be finite floating point, got {image.dtype}")
    if mask is None:
        mask = np.any(image != 0, axis=0)
    elif mask.dtype != np.bool_ or mask.shape != image.shape[1:]:
        raise ValueError(
            f"mask must be bool with shape {image.shape[1:]}, got {mask.dtype} {mask.shape}"
        )
    if not mask.any():
        raise ValueError("the brain mask is empty")
    return mask


def _spacing(shape: Sequence[int], spacing: Sequence[float] | None) -> np.ndarray:
    if spacing is None:
        return np.asarray(BRATS_FOV_MM) / np.asarray(shape)
    spacing = np.asarray(spacing, dtype=float)
    if spacing.shape != (3,) or not (spacing > 0).all():
        raise ValueError(f"spacing must be three positive numbers (mm), got {spacing.tolist()}")
    return spacing


def pseudo_magnitude(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per channel ``(x - min over the brain + 1) · mask``: positive brain, zero background."""
    low = np.stack([channel[mask].min() for channel in image])[:, None, None, None]
    return ((image - low + 1) * mask).astype(np.float32)


def _torchio_transform(kind: str, params: dict) -> "tio.Transform":
    import torchio as tio

    if kind == "motion":
        return tio.RandomMotion(
            degrees=params["degrees"],
            translation=params["translation"],
            num_transforms=params["num_transforms"],
        )
    if kind == "ghosting":
        return tio.RandomGhosting(
            num_ghosts=(params["num_ghosts"],) * 2,
            axes=params["axes"],
            intensity=(params["intensity"],) * 2,
        )
    if kind == "bias_field":
        return tio.RandomBiasField(coefficients=params["coefficients"], order=params["order"])
    return tio.RandomSpike(
        num_spikes=(params["num_spikes"],) * 2, intensity=(params["intensity"],) * 2
    )


def _noise(magnitude: np.ndarray, sigma: np.ndarray, seed: int, rician: bool) -> np.ndarray:
    """Gaussian noise of sd ``sigma`` (C,) per channel; Rician: magnitude of complex noise."""
    rng = np.random.default_rng(seed)
    scale = sigma.astype(np.float32)[:, None, None, None]
    real = magnitude + rng.standard_normal(magnitude.shape, np.float32) * scale
    if not rician:
        return real
    return np.hypot(real, rng.standard_normal(magnitude.shape, np.float32) * scale)


def perturb(
    image: np.ndarray,
    kind: str,
    severity: float | int,
    seed: int,
    mask: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Apply artefact ``kind`` at ``severity`` (0..5) to a (4, D, H, W) volume; float32, same shape.

    One draw of the artefact (seeded by ``seed``) is applied to all four modalities; see the
    module docstring for the severity table, the pseudo-magnitude mapping and the background.
    ``spacing`` is the voxel size in mm (default: the array spans the BraTS field of view).
    """
    params = perturbation_parameters(kind, severity)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    mask = _check_image(image, mask)
    voxel_mm = _spacing(image.shape[1:], spacing)
    if check_severity(severity) == 0:
        return image.astype(np.float32, copy=True)
    magnitude = pseudo_magnitude(image, mask)
    if kind in ("gaussian_noise", "rician_noise"):
        sigma = params["std"] * np.array([channel[mask].std() for channel in image])
        corrupted = _noise(magnitude, sigma, seed, rician=kind == "rician_noise")
    else:
        from torchio import ScalarImage

        affine = np.diag([*voxel_mm, 1.0])
        subject = ScalarImage(tensor=torch.from_numpy(magnitude), affine=affine)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            corrupted = _torchio_transform(kind, params)(subject).data.numpy()
    return (image + (corrupted - magnitude)).astype(np.float32)
