import math

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy.spatial.distance import dice as dice_dissimilarity
from skimage.metrics import peak_signal_noise_ratio

from segrobust.labels import REGIONS, labels_to_classes
from segrobust.metrics import dice, dice_regions, image_quality, region_masks
from segrobust.results import (
    QUALITY_KEYS,
    RESULT_COLUMNS,
    SURFACE_KEYS,
    result_rows,
    results_frame,
)
from segrobust.surface import surface_regions


def random_classes(seed: int, shape=(16, 16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, shape).astype(np.uint8)


def perturbed_pair(seed: int, shape=(3, 16, 16, 16)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = rng.normal(size=shape) * np.array([1.0, 3.0, 0.5]).reshape(-1, 1, 1, 1)
    adv = clean + 0.05 * np.abs(clean).max() * rng.uniform(-1, 1, size=shape)
    return clean.astype(np.float32), adv.astype(np.float32)


def ssim_reference(a: np.ndarray, b: np.ndarray, data_range: float, win: int = 7) -> float:
    """Wang et al. 2004 SSIM: mean over all fully-inside 7³ uniform windows, sample statistics."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    axes = tuple(range(-a.ndim, 0))
    wa, wb = sliding_window_view(a, (win,) * a.ndim), sliding_window_view(b, (win,) * b.ndim)
    mu_a, mu_b = wa.mean(axes), wb.mean(axes)
    var_a, var_b = wa.var(axes, ddof=1), wb.var(axes, ddof=1)
    n = win**a.ndim
    cov = ((wa - mu_a[..., None, None, None]) * (wb - mu_b[..., None, None, None])).sum(axes)
    cov /= n - 1
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(s.mean())


# --- Dice -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_dice_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random(500) < rng.random(), rng.random(500) < rng.random()
    assert dice(a, b) == pytest.approx(1 - dice_dissimilarity(a, b), abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_dice_regions_match_scipy(seed):
    pred, true = random_classes(seed), random_classes(seed + 10)
    scores = dice_regions(pred, true)
    assert list(scores) == ["WT", "TC", "ET"]
    for name, classes in REGIONS.items():
        p, t = np.isin(pred, classes).ravel(), np.isin(true, classes).ravel()
        assert scores[name] == pytest.approx(1 - dice_dissimilarity(p, t), abs=1e-6)
        assert isinstance(scores[name], float)


def test_dice_empty_conventions():
    empty = np.zeros((8, 8, 8), dtype=np.uint8)
    assert dice_regions(empty, empty) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    true = empty.copy()
    true[2:4, 2:4, 2:4] = 3  # enhancing tumour only
    assert dice_regions(empty, true) == {"WT": 0.0, "TC": 0.0, "ET": 0.0}
    oedema = empty.copy()
    oedema[2:4, 2:4, 2:4] = 2  # whole tumour but no core: TC and ET both empty → 1.0
    assert dice_regions(oedema, oedema) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    assert dice_regions(true, oedema) == {"WT": 1.0, "TC": 0.0, "ET": 0.0}


def test_dice_regions_identity_and_labels_conversion():
    labels = np.array([[[0, 1, 2, 4]]], dtype=np.uint8)
    classes = labels_to_classes(labels)
    assert dice_regions(classes, classes) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    with pytest.raises(ValueError, match="labels_to_classes"):
        dice_regions(labels, labels)


@pytest.mark.parametrize(
    "pred, true, message",
    [
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5), np.uint8),
         r"class maps differ in shape: \(4, 4, 4\) vs \(4, 4, 5\)"),
        (np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), np.uint8),
         "pred_classes must be an integer class map, got dtype float32"),
        (np.full((4, 4, 4), -1, np.int64), np.zeros((4, 4, 4), np.int64),
         r"pred_classes values must be classes 0\.\.3 \(BraTS label 4 is class 3"),
        (np.zeros((4, 4, 4), np.int64), np.full((4, 4, 4), 4, np.int64),
         r"true_classes values must be classes 0\.\.3 .* got range 4\.\.4"),
    ],
    ids=["shape", "dtype", "negative", "label 4 in truth"],
)  # fmt: skip
def test_dice_regions_bad_input(pred, true, message):
    with pytest.raises(ValueError, match="^" + message):
        dice_regions(pred, true)


def test_dice_of_masks_of_other_shapes_is_refused_and_regions_can_be_chosen():
    with pytest.raises(ValueError, match=r"masks differ in shape: \(3,\) vs \(4,\)"):
        dice(np.zeros(3, bool), np.zeros(4, bool))
    pred, true = random_classes(2), random_classes(3)
    core = dice_regions(pred, true, {"core": (1, 3)})
    assert list(core) == ["core"] and core["core"] == dice_regions(pred, true)["TC"]


# --- image quality ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_psnr_rmse_match_hand_formula(seed):
    clean, adv = perturbed_pair(seed)
    c64, a64 = clean.astype(np.float64), adv.astype(np.float64)
    scale = np.abs(c64).max(axis=(1, 2, 3))
    mse = ((a64 - c64) ** 2).mean(axis=(1, 2, 3))
    quality = image_quality(clean, adv)
    assert quality["psnr"] == pytest.approx(np.mean(10 * np.log10(scale**2 / mse)), abs=1e-4)
    assert quality["rmse"] == pytest.approx(np.mean(np.sqrt(mse) / scale), abs=1e-6)
    # and exactly scikit-image's PSNR, which the results used before (its import is costly)
    skimage_psnr = [peak_signal_noise_ratio(c64[c], a64[c], data_range=scale[c]) for c in range(3)]
    assert quality["psnr"] == float(np.mean(skimage_psnr))


@pytest.mark.parametrize("seed", range(2))
def test_ssim_matches_independent_implementation(seed):
    clean, adv = perturbed_pair(seed)
    scale = np.abs(clean.astype(np.float64)).max(axis=(1, 2, 3))
    expected = np.mean([ssim_reference(clean[c], adv[c], scale[c]) for c in range(3)])
    assert image_quality(clean, adv)["ssim"] == pytest.approx(expected, abs=1e-4)
    assert expected < 0.999  # the perturbation is visible to SSIM
    without = image_quality(clean, adv, ssim=False)
    assert math.isnan(without["ssim"])
    assert without["psnr"] == image_quality(clean, adv)["psnr"]


def test_norms_known_answer_for_a_sign_perturbation():
    eps = 0.05
    clean, _ = perturbed_pair(0)
    scale = np.abs(clean.astype(np.float64)).max(axis=(1, 2, 3)).reshape(-1, 1, 1, 1)
    signs = np.sign(np.random.default_rng(1).normal(size=clean.shape))
    adv = clean + eps * scale * signs
    quality = image_quality(clean, adv)
    assert quality["linf"] == pytest.approx(eps, rel=1e-6)
    assert quality["rmse"] == pytest.approx(eps, rel=1e-6)
    assert quality["psnr"] == pytest.approx(-20 * np.log10(eps), abs=1e-4)
    assert quality["l2"] == pytest.approx(eps * np.sqrt(clean.size), rel=1e-6)
    assert quality["linf_abs"] == pytest.approx(eps * scale.max(), rel=1e-6)
    assert quality["l2_abs"] == pytest.approx(eps * np.sqrt((scale**2).sum() * 16**3), rel=1e-6)


def test_identical_images():
    clean, _ = perturbed_pair(0)
    quality = image_quality(clean, clean.copy())
    assert quality["psnr"] == math.inf
    assert quality["ssim"] == pytest.approx(1.0)
    assert quality["rmse"] == quality["linf"] == quality["l2"] == quality["l2_abs"] == 0.0


def test_image_quality_bad_input():
    clean, adv = perturbed_pair(0)
    with pytest.raises(ValueError, match="^clean and adv must share a shape"):
        image_quality(clean, adv[:, :-1])
    with pytest.raises(ValueError, match="^clean and adv must share a shape"):
        image_quality(clean[0, 0], adv[0, 0])  # (H, W): no channel axis
    zero_channel = clean.copy()
    zero_channel[1] = 0
    with pytest.raises(ValueError, match=r"^channels \[1\] of the clean image are all zero: "
                       "relative metrics are undefined"):  # fmt: skip
        image_quality(zero_channel, adv)
    adv[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="^clean and adv must be finite$"):
        image_quality(clean, adv)


def test_image_quality_of_2d_channels_matches_the_hand_formula():
    clean, adv = (a[:, 0] for a in perturbed_pair(3))  # (C, H, W)
    scale = np.abs(clean.astype(np.float64)).max(axis=(1, 2))
    mse = ((adv.astype(np.float64) - clean) ** 2).mean(axis=(1, 2))
    quality = image_quality(clean, adv)
    assert quality["rmse"] == pytest.approx(np.mean(np.sqrt(mse) / scale), rel=1e-6)
    assert quality["psnr"] == pytest.approx(np.mean(10 * np.log10(scale**2 / mse)), abs=1e-4)


# --- results schema ---------------------------------------------------------------------------


def test_result_rows_and_frame():
    clean, adv = perturbed_pair(0)
    pred, true = random_classes(0), random_classes(1)
    quality = image_quality(clean, adv)
    surface = surface_regions(pred, true, (6.0, 6.0, 5.0), 2.0)
    rows = result_rows(
        model="unet", attack="fgsm", subject="s1", dice=dice_regions(pred, true), eps=0.05,
        iteration=1, quality=quality, source_model="unet", surface=surface,
    )  # fmt: skip
    rows += result_rows(
        model="unet", attack="none", subject="s1", dice=dice_regions(true, true), eps=0.0,
        iteration=0,
    )  # fmt: skip
    frame = results_frame(rows)
    assert list(frame.columns) == RESULT_COLUMNS
    assert len(frame) == 6 and set(frame.region) == set(REGIONS)
    attacked = frame[frame.attack == "fgsm"]
    assert (attacked.psnr == quality["psnr"]).all() and attacked.severity.isna().all()
    assert frame[frame.attack == "none"][list(QUALITY_KEYS)].isna().all().all()
    by_region = attacked.set_index("region")
    for region, values in surface.items():
        assert by_region.loc[region, "hd95"] == values["hd95"] > 0
        assert by_region.loc[region, "nsd"] == values["nsd"] < 1
    assert frame[frame.attack == "none"][list(SURFACE_KEYS)].isna().all().all()  # not given
    assert (frame[list(SURFACE_KEYS)].dtypes == np.float64).all()
    assert frame.iteration.dtype == np.int64 and frame.eps.dtype == np.float64
    means = frame.groupby(["attack", "region"]).dice.mean()
    assert means[("none", "WT")] == 1.0 and means[("fgsm", "ET")] < 1.0


def test_results_frame_round_trips_through_csv(tmp_path):
    rows = result_rows(
        model="m", attack="none", subject="s", dice={"WT": 0.5}, eps=0.0, iteration=0
    )
    path = tmp_path / "results.csv"
    results_frame(rows).to_csv(path, index=False)
    back = pd.read_csv(path)
    assert list(back.columns) == RESULT_COLUMNS and back.dice.iloc[0] == 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dice": {}}, "dice must hold at least one region"),
        ({"iteration": -1}, "iteration must be an integer >= 0, got -1"),
        ({"quality": {"psnr": 30.0, "fid": 1.0}}, r"unknown quality keys \['fid'\]"),
        ({"surface": {"TC": {"hd95": 1.0, "nsd": 1.0}}},
         r"surface has regions \['TC'\] not in dice"),
        ({"surface": {"WT": {"hd95": 1.0}}}, r"surface values must have keys .*, got \['hd95'\]"),
    ],
    ids=["no regions", "iteration", "quality key", "surface region", "surface key"],
)  # fmt: skip
def test_result_rows_bad_input(kwargs, message):
    args = dict(model="m", attack="a", subject="s", dice={"WT": 1.0}, eps=0.0, iteration=0)
    with pytest.raises(ValueError, match="^" + message):
        result_rows(**(args | kwargs))


def test_result_rows_defaults_and_float_columns():
    """Untagged rows: seed 0, fp32, no kernel, no source model; numbers become float64."""
    (row,) = result_rows(model="m", attack="a", subject="s", dice={"WT": 1}, eps=0, iteration=0)
    assert (row["seed"], row["precision"], row["kernel"], row["source_model"]) == (
        0,
        "fp32",
        "",
        "",
    )
    frame = results_frame([{**row, "dice": 1, "eps": 0, "psnr": 30, "hd95": 2}])
    float_columns = ["eps", "severity", "dice", *SURFACE_KEYS, *QUALITY_KEYS]
    assert (frame[float_columns].dtypes == np.float64).all()


def test_results_frame_reads_tables_written_before_the_surface_columns():
    """collect_results goes through results_frame: a table from before hd95/nsd gets NaN."""
    row = result_rows(model="m", attack="a", subject="s", dice={"WT": 1.0}, eps=0.0, iteration=0)
    old = {k: v for k, v in row[0].items() if k not in SURFACE_KEYS}
    frame = results_frame([old])
    assert list(frame.columns) == RESULT_COLUMNS and frame[list(SURFACE_KEYS)].isna().all().all()


def test_region_masks_are_the_dice_regions():
    pred, true = random_classes(4), random_classes(5)
    masks = region_masks(pred, true)
    assert list(masks) == list(REGIONS)
    for name, (p, t) in masks.items():
        assert p.dtype == bool and (p == np.isin(pred, REGIONS[name])).all()
        assert (t == np.isin(true, REGIONS[name])).all()
        assert dice_regions(pred, true)[name] == dice(p, t)


def test_results_frame_bad_rows():
    row = result_rows(model="m", attack="a", subject="s", dice={"WT": 1.0}, eps=0.0, iteration=0)
    with pytest.raises(ValueError, match="outside RESULT_COLUMNS"):
        results_frame([{**row[0], "extra": 1}])
    with pytest.raises(ValueError, match="dice"):
        results_frame([{k: v for k, v in row[0].items() if k != "dice"}])
