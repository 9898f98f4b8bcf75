"""Per-subject metrics: what every row of the results table (:mod:`segrobust.results`) scores.

- **Dice** per BraTS region (WT, TC, ET: unions of network classes, ``labels.REGIONS``) between
  predicted and true class maps, with the BraTS convention that two empty masks score 1.0
  (never NaN) and an empty vs non-empty pair scores 0.0.
- **HD95** (mm) and **NSD** (normalised surface Dice at tolerance τ mm) per region on the
  preprocessed grid's voxel spacing: :mod:`segrobust.surface` (BraTS empty-mask conventions:
  both empty → 0 mm / 1; one empty → 373.13 mm / 0).
- **Image quality** of a perturbed input vs the clean one, relative to the attacks' intensity
  scale (:func:`segrobust.attacks.relative_scale`): per channel ``scale_c = max |clean_c|``.
  PSNR (dB, data_range = scale_c: 10·log10(scale_c² / MSE), scikit-image's formula, whose
  import would pull in scipy.stats), SSIM (3D, scikit-image, imported where it is computed:
  defaults 7-voxel uniform window, K1 = 0.01, K2 = 0.03, sample covariance; data_range =
  scale_c) and RMSE / scale_c are computed
  per channel and averaged over channels. Perturbation norms: ``linf`` = max_c max|δ_c| / scale_c
  (equals ε for FGSM), ``l2`` = ‖δ_c / scale_c‖₂ over all channels and voxels, and their absolute
  counterparts ``linf_abs``, ``l2_abs`` in input units.
"""

import math
from collections.abc import Mapping

import numpy as np

from segrobust.labels import N_CLASSES, REGIONS


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice 2|P∩T| / (|P| + |T|) of two boolean masks; 1.0 when both are empty."""
    if pred.shape != true.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {true.shape}")
    total = np.count_nonzero(pred) + np.count_nonzero(true)
    if total == 0:
        return 1.0
    return float(2 * np.count_nonzero(np.logical_and(pred, true)) / total)


def _check_classes(name: str, classes: np.ndarray) -> None:
    if not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"{name} must be an integer class map, got dtype {classes.dtype}")
    if classes.size and (classes.min() < 0 or classes.max() >= N_CLASSES):
        raise ValueError(
            f"{name} values must be classes 0..{N_CLASSES - 1} (BraTS label 4 is class 3: use "
            f"labels_to_classes), got range {classes.min()}..{classes.max()}"
        )


def region_masks(
    pred_classes: np.ndarray,
    true_classes: np.ndarray,
    regions: Mapping[str, tuple[int, ...]] = REGIONS,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Boolean (predicted, true) masks per region (default WT, TC, ET) of two class maps."""
    if pred_classes.shape != true_classes.shape:
        raise ValueError(
            f"class maps differ in shape: {pred_classes.shape} vs {true_classes.shape}"
        )
    _check_classes("pred_classes", pred_classes)
    _check_classes("true_classes", true_classes)
    masks = {}
    for name, classes in regions.items():
        in_region = np.zeros(N_CLASSES, dtype=bool)
        in_region[list(classes)] = True
        masks[name] = (in_region[pred_classes], in_region[true_classes])
    return masks


def dice_regions(
    pred_classes: np.ndarray,
    true_classes: np.ndarray,
    regions: Mapping[str, tuple[int, ...]] = REGIONS,
) -> dict[str, float]:
    """Dice per region (default WT, TC, ET) between predicted and true class maps."""
    return {
        name: dice(pred, true)
        for name, (pred, true) in region_masks(pred_classes, true_classes, regions).items()
    }


def intensity_scale(clean: np.ndarray) -> np.ndarray:
    """Max |clean| per channel, shape (C,): the attacks' relative-ε scale."""
    return np.abs(clean).reshape(clean.shape[0], -1).max(axis=1)


def image_quality(clean: np.ndarray, adv: np.ndarray, ssim: bool = True) -> dict[str, float]:
    """PSNR, SSIM, RMSE and perturbation norms of ``adv`` vs ``clean``, both (C, *spatial).

    Relative to the per-channel scale max|clean_c| (see the module docstring). Identical
    inputs give PSNR = inf, SSIM = 1, RMSE = 0. SSIM dominates the cost (≈ 1 s per 128³
    channel on one CPU core): ``ssim=False`` leaves it NaN.
    """
    if clean.shape != adv.shape or clean.ndim < 3:
        raise ValueError(
            f"clean and adv must share a shape (C, *spatial), got {clean.shape} and {adv.shape}"
        )
    if not (np.isfinite(clean).all() and np.isfinite(adv).all()):
        raise ValueError("clean and adv must be finite")
    clean = clean.astype(np.float64, copy=False)
    adv = adv.astype(np.float64, copy=False)
    scale = intensity_scale(clean)
    if (scale == 0).any():
        raise ValueError(
            f"channels {np.flatnonzero(scale == 0).tolist()} of the clean image are all zero: "
            "relative metrics are undefined"
        )
    if ssim:
        from skimage.metrics import structural_similarity  # import cost: only where computed
    delta = adv - clean
    rel = delta / scale.reshape(-1, *[1] * (clean.ndim - 1))
    psnr, ssims, rmse = [], [], []
    for c in range(clean.shape[0]):
        mse = np.mean(delta[c] ** 2)
        psnr.append(math.inf if mse == 0 else float(10 * np.log10(scale[c] ** 2 / mse)))
        if ssim:
            ssims.append(structural_similarity(clean[c], adv[c], data_range=scale[c]))
        rmse.append(math.sqrt(mse) / scale[c])
    return {
        "psnr": float(np.mean(psnr)),
        "ssim": float(np.mean(ssims)) if ssim else math.nan,
        "rmse": float(np.mean(rmse)),
        "linf": float(np.abs(rel).max()),
        "l2": float(np.linalg.norm(rel.ravel())),
        "linf_abs": float(np.abs(delta).max()),
        "l2_abs": float(np.linalg.norm(delta.ravel())),
    }
