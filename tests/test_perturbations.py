import numpy as np
import pytest
import torch

from segrobust.labels import MODALITIES
from segrobust.perturbations import (
    LEVELS,
    MAX_SEVERITY,
    PERTURBATIONS,
    perturb,
    perturbation_parameters,
    pseudo_magnitude,
)
from segrobust.preprocessing import brain_mask, standardise
from segrobust.synthetic import make_subject

SHAPE = (20, 20, 16)
NOISE = ("gaussian_noise", "rician_noise")
ARTEFACTS = tuple(k for k in PERTURBATIONS if k not in NOISE)


@pytest.fixture(scope="module")
def volume() -> tuple[np.ndarray, np.ndarray]:
    """A small preprocessed subject: (4, D, H, W) z-scored in the brain, background 0; mask."""
    images, _ = make_subject(np.random.default_rng(0), SHAPE, "HGG")
    raw = np.stack([images[m] for m in MODALITIES]).astype(np.float32)
    mask = brain_mask(raw)
    return standardise(raw, mask), mask


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).mean()))


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_severity_zero_is_identity(volume, kind):
    x, _ = volume
    out = perturb(x, kind, 0, seed=3)
    assert out is not x
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_changes_image_keeps_shape_and_dtype(volume, kind):
    x, _ = volume
    out = perturb(x, kind, 1, seed=0)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert rmse(out, x) > 1e-3


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_seeded(volume, kind):
    x, _ = volume
    a, b = perturb(x, kind, 3, seed=1), perturb(x, kind, 3, seed=1)
    np.testing.assert_array_equal(a, b)
    assert rmse(perturb(x, kind, 3, seed=2), a) > 1e-3


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_caller_rng_state_untouched(volume, kind):
    x, _ = volume
    torch.manual_seed(123)
    state = torch.get_rng_state()
    perturb(x, kind, 2, seed=5)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("kind", ARTEFACTS)
def test_same_draw_for_every_modality(volume, kind):
    """Four equal input channels stay equal: one artefact draw is applied to every modality."""
    x, _ = volume
    same = np.repeat(x[2:3], 4, axis=0)
    out = perturb(same, kind, 4, seed=0)
    assert rmse(out, same) > 1e-3
    for channel in out[1:]:
        np.testing.assert_array_equal(channel, out[0])


def test_bias_field_same_field_for_every_modality_and_zero_background(volume):
    """The multiplicative field on the pseudo-magnitude image is the same in all four channels."""
    x, mask = volume
    out = perturb(x, "bias_field", 5, seed=0)
    np.testing.assert_array_equal(out[:, ~mask], 0)
    field = 1 + (out - x)[:, mask] / pseudo_magnitude(x, mask)[:, mask]
    assert field.std() > 0.05
    np.testing.assert_allclose(field, np.broadcast_to(field[0], field.shape), rtol=1e-4)


def test_bias_field_with_explicit_mask_leaves_outside_unchanged(volume):
    """Volume-standardised input (background not 0): the field acts inside the given mask only."""
    x, mask = volume
    shifted = x - 0.7
    out = perturb(shifted, "bias_field", 4, seed=0, mask=mask)
    np.testing.assert_array_equal(out[:, ~mask], shifted[:, ~mask])
    assert rmse(out[:, mask], shifted[:, mask]) > 0.05


@pytest.mark.parametrize("kind", NOISE)
def test_noise_level_and_independence_across_modalities(volume, kind):
    """Noise: sd 0.04·level × brain sd in every channel, independent between modalities."""
    x, mask = volume
    same = np.repeat(x[:1], 4, axis=0)
    sigma = LEVELS[kind]["std"][2]
    delta = (perturb(same, kind, 3, seed=0) - same)[:, mask]
    np.testing.assert_allclose(delta.std(axis=1), sigma, rtol=0.06)
    assert abs(np.corrcoef(delta)[np.triu_indices(4, 1)]).max() < 0.1


def test_rician_noise_background_is_rayleigh(volume):
    """Magnitude noise: background ≥ 0 with mean σ·sqrt(π/2); Gaussian has mean 0 there."""
    x, mask = volume
    sigma = LEVELS["rician_noise"]["std"][4]
    rician = perturb(x, "rician_noise", 5, seed=0)[:, ~mask]
    gaussian = perturb(x, "gaussian_noise", 5, seed=0)[:, ~mask]
    assert (rician >= 0).all()
    np.testing.assert_allclose(rician.mean(), sigma * np.sqrt(np.pi / 2), rtol=0.05)
    assert abs(gaussian.mean()) < 0.1 * sigma


@pytest.mark.parametrize("kind", ("ghosting", "spike", "gaussian_noise"))
def test_levels_scale_one_draw(volume, kind):
    """Artefacts linear in their strength: a level is the same draw scaled by the table."""
    x, _ = volume
    (name,) = LEVELS[kind]
    ratio = LEVELS[kind][name][3] / LEVELS[kind][name][0]
    low, high = (perturb(x, kind, s, seed=4) - x for s in (1, 4))
    np.testing.assert_allclose(high, ratio * low, atol=1e-4 * np.abs(high).max())


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_rmse_increases_with_severity(volume, kind):
    x, _ = volume
    errors = [
        np.mean([rmse(perturb(x, kind, s, seed=seed), x) for seed in range(3)])
        for s in range(MAX_SEVERITY + 1)
    ]
    assert np.all(np.diff(errors) > 0), errors


def test_motion_translation_is_physical(volume):
    x, _ = volume
    default = perturb(x, "motion", 5, seed=0)
    brats = perturb(x, "motion", 5, seed=0, spacing=(240 / 20, 240 / 20, 155 / 16))
    np.testing.assert_array_equal(default, brats)
    # the same motion in mm moves 1-mm voxels further than 12-mm ones
    assert rmse(perturb(x, "motion", 5, seed=0, spacing=(1.0, 1.0, 1.0)), x) > rmse(default, x)


def test_parameters_table():
    for kind in PERTURBATIONS:
        zero = perturbation_parameters(kind, 0)
        assert all(zero[name] == 0 for name in LEVELS[kind])
        for name in LEVELS[kind]:
            values = [perturbation_parameters(kind, s)[name] for s in range(MAX_SEVERITY + 1)]
            assert np.all(np.diff(values) > 0)
    assert perturbation_parameters("motion", 5.0) == {
        "degrees": 4.0,
        "translation": 4.0,
        "num_transforms": 2,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "blur"}, "kind must be one of"),
        ({"severity": -1}, "severity must be an integer"),
        ({"severity": 6}, "severity must be an integer"),
        ({"severity": 1.5}, "severity must be an integer"),
        ({"severity": True}, "severity must be an integer"),
        ({"severity": "2"}, "severity must be an integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"seed": 1.0}, "seed must be a non-negative integer"),
        ({"spacing": (1.0, 1.0)}, "spacing must be three positive"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be three positive"),
        ({"mask": np.ones((4, 4, 4), bool)}, "mask must be bool with shape"),
        ({"mask": np.ones(SHAPE, np.uint8)}, "mask must be bool with shape"),
        ({"mask": np.zeros(SHAPE, bool)}, "brain mask is empty"),
    ],
)
def test_invalid_arguments(volume, kwargs, message):
    x, _ = volume
    args = {"image": x, "kind": "spike", "severity": 2, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        perturb(**args)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((3, *SHAPE), np.float32), r"image must be a numpy array \(4, D, H, W\)"),
        (np.zeros(SHAPE, np.float32), r"image must be a numpy array \(4, D, H, W\)"),
        (np.ones((4, *SHAPE), np.int16), "image must be finite floating point"),
        (np.full((4, *SHAPE), np.nan, np.float32), "image must be finite floating point"),
        (np.zeros((4, *SHAPE), np.float32), "brain mask is empty"),
    ],
)
def test_invalid_image(image, message):
    with pytest.raises(ValueError, match=message):
        perturb(image, "ghosting", 1, seed=0)
