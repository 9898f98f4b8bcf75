"""Tests of the template-anatomy subjects (MNI ICBM152 2009 from nilearn's package data).

References are independent of the generator: nilearn's own 1 mm T1 and white-matter templates,
sampled here with scipy at the subjects' template coordinates, and hand-written formulas.
"""

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from scipy import ndimage

from segrobust.cohort import write_cohort
from segrobust.template_anatomy import (
    TEMPLATE_BRAIN_MM,
    WT_FRACTION,
    check_field_of_view,
    load_template,
    make_template_subject,
    placement,
    push,
    template_factor,
    tumour,
)

DEMO = ((64, 64, 64), (3.0, 3.0, 2.5))  # config/config.yaml's raw shape and spacing
SMALL = ((32, 32, 28), (6.0, 6.0, 6.0))  # a brain-sized field of view at few voxels
NILEARN_DATA = Path(importlib.util.find_spec("nilearn").origin).parent / "datasets" / "data"


@pytest.fixture(scope="module")
def reference():
    """nilearn's 1 mm T1 and white-matter templates and their mm -> voxel map."""
    from nilearn.datasets import load_mni152_template, load_mni152_wm_template

    t1 = load_mni152_template()
    wm = load_mni152_wm_template().get_fdata(dtype=np.float32)
    return t1.get_fdata(dtype=np.float32), wm, np.linalg.inv(t1.affine)


def _at(volume: np.ndarray, to_voxel: np.ndarray, mm: np.ndarray) -> np.ndarray:
    idx = np.tensordot(to_voxel[:3, :3], mm, axes=1)
    idx += to_voxel[:3, 3].reshape(3, *([1] * (mm.ndim - 1)))
    return ndimage.map_coordinates(volume, idx, order=1)


@pytest.fixture(scope="module")
def demo_subjects():
    """Subjects at the demo's raw geometry, with the template mm of every voxel."""
    shape, spacing = DEMO
    template = load_template(template_factor(spacing))
    out = []
    for seed, grade in ((0, "HGG"), (1, "HGG"), (2, "LGG"), (3, "HGG")):
        images, labels = make_template_subject(np.random.default_rng(seed), shape, spacing, grade)
        coords = placement(np.random.default_rng(seed), shape, spacing, template)
        out.append((grade, images, labels, coords))
    return out


def test_template_comes_from_the_installed_nilearn_package():
    for name in ("gm", "wm", "t1"):
        assert (NILEARN_DATA / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz").is_file()
    template = load_template(2)
    assert tuple(template.extent) == pytest.approx(TEMPLATE_BRAIN_MM, abs=0.5)
    assert template.gm.min() >= 0 and template.wm.min() >= 0
    assert (template.gm + template.wm).max() <= 1 + 1e-5
    assert 1500 < template.volume_ml < 2200  # a brain mask with its CSF
    assert load_template(2) is template  # loaded once per process


def test_tumour_sites_lie_in_hemispheric_white_matter(reference):
    _, wm, to_voxel = reference
    template = load_template(2)
    sites = template.wm_sites.T.reshape(3, -1, 1, 1)
    assert np.median(_at(wm, to_voxel, sites)) > 0.8
    assert (np.abs(template.wm_sites[:, 0]) >= 15).all()  # away from the midline
    assert len(template.deep_sites) > len(template.wm_sites) > 1000


def test_generation_opens_no_network_connection(tmp_path):
    """A fresh process (nilearn imported under the block) writes a cohort with sockets refused."""
    script = f"""
import socket
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = socket.create_connection = refuse
from segrobust.cohort import write_cohort
write_cohort({str(tmp_path)!r}, 2, {SMALL[0]!r}, {SMALL[1]!r}, 0.5, seed=1, anatomy="template")
"""
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.rglob("*.nii.gz"))) == 10


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root, seed in ((a, 3), (b, 3), (c, 4)):
        write_cohort(root, 2, *SMALL, lgg_fraction=0.5, seed=seed, anatomy="template")
    files = sorted(p.relative_to(a) for p in a.rglob("*.nii.gz"))
    assert len(files) == 10
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert any((a / rel).read_bytes() != (c / rel).read_bytes() for rel in files)


def test_labels_layout_and_volumes_like_brats(demo_subjects):
    for grade, images, labels, _ in demo_subjects:
        brain = images["t1"] > 0
        for m, image in images.items():
            assert image.dtype == np.int16 and np.array_equal(image > 0, brain), m
        assert labels.dtype == np.uint8 and not labels[~brain].any()
        assert set(np.unique(labels)) == ({0, 1, 2, 4} if grade == "HGG" else {0, 1, 2})
        for axis in range(3):  # skull-stripped, inside the field of view
            assert not np.take(brain, [0, -1], axis=axis).any()
        volume_ml = brain.sum() * np.prod(DEMO[1]) / 1000
        assert 1000 < volume_ml < 1900
        wt = (labels > 0).sum() / brain.sum()
        assert WT_FRACTION[0] - 0.005 <= wt <= WT_FRACTION[1] + 0.005
        core = np.isin(labels, (1, 4)).sum() / (labels > 0).sum()
        assert 0.25 <= core <= 0.7
        if grade == "HGG":
            assert 0.15 <= (labels == 4).sum() / np.isin(labels, (1, 4)).sum() <= 0.9


def test_contrasts_follow_real_mr_tissue_classes(demo_subjects, reference):
    """Tissue classes from nilearn's real T1 average, away from the tumour."""
    t1_ref, _, to_voxel = reference
    for _, images, labels, coords in demo_subjects:
        ref = _at(t1_ref, to_voxel, coords)
        far = (images["t1"] > 0) & (ndimage.distance_transform_edt(labels == 0, DEMO[1]) > 25)
        classes = {
            "wm": far & (ref > 0.8),
            "gm": far & (ref > 0.55) & (ref < 0.7),
            "csf": far & (ref > 0) & (ref < 0.4),
        }
        mean = {m: {k: images[m][v].mean() for k, v in classes.items()} for m in images}
        assert mean["t1"]["wm"] > 1.15 * mean["t1"]["gm"] > 1.15 * 1.2 * mean["t1"]["csf"]
        assert mean["t2"]["csf"] > 1.3 * mean["t2"]["gm"] > 1.3 * 1.15 * mean["t2"]["wm"]
        assert min(mean["flair"]["wm"], mean["flair"]["gm"]) > 1.3 * mean["flair"]["csf"]
        assert np.corrcoef(images["t1"][far], ref[far])[0, 1] > 0.6


def test_hgg_enhances_and_lgg_does_not(demo_subjects):
    for grade, images, labels, _ in demo_subjects:
        t1ce, t2, flair = (images[m].astype(float) for m in ("t1ce", "t2", "flair"))
        healthy = (labels == 0) & (images["t1"] > 0)
        assert flair[labels == 2].mean() > 1.2 * np.median(flair[healthy])
        assert t2[labels == 2].mean() > 1.2 * np.median(t2[healthy])
        # Necrosis / non-enhancing tumour away from its border (partial volume with the rim).
        inner = ndimage.binary_erosion(labels == 1)
        assert t1ce[inner].mean() < 0.8 * np.median(t1ce[healthy])
        if grade == "HGG":
            assert t1ce[labels == 4].mean() > 1.5 * np.median(t1ce[healthy])


def test_push_makes_room_for_a_ball_and_preserves_direction():
    centre, radius = np.array([10.0, -5.0, 3.0]), 8.0
    r = np.array([0.0, 4.0, 7.9, 8.0, 9.0, 16.0, 40.0, 200.0])
    direction = np.array([2.0, -1.0, 2.0]) / 3
    points = (centre[:, None] + direction[:, None] * r[None, :]).astype(np.float32)
    source = push(points, centre, radius)
    s = np.linalg.norm(source - centre[:, None], axis=0)
    expected = np.where(r > radius, np.cbrt(np.maximum(r**3 - radius**3, 0)), 0.0)
    assert s == pytest.approx(expected, abs=1e-3)
    moved = source[:, r > radius] - centre[:, None]
    assert np.allclose(moved / np.linalg.norm(moved, axis=0), direction[:, None], atol=1e-5)
    assert r[-1] - s[-1] == pytest.approx(radius**3 / (3 * r[-1] ** 2), rel=0.01)  # far field
    assert np.array_equal(push(points, centre, 0.0), points)
    # With decay the displacement shrinks by exp(-(r - radius) / decay) and the map stays
    # monotonic along the ray.
    tapered = np.linalg.norm(push(points, centre, radius, decay=5.0) - centre[:, None], axis=0)
    factor = np.exp(-np.maximum(r - radius, 0) / 5.0)
    assert r - tapered == pytest.approx((r - expected) * factor, abs=1e-3)
    assert (np.diff(tapered[r >= radius]) > 0).all()


def test_mass_effect_moves_tissue_near_the_tumour_only(monkeypatch):
    import segrobust.template_anatomy as ta

    shape, spacing = DEMO
    pushed, labels = make_template_subject(np.random.default_rng(7), shape, spacing, "HGG")
    monkeypatch.setattr(ta, "MASS_EFFECT", {"HGG": (0.0, 0.0), "LGG": (0.0, 0.0)})
    still, still_labels = make_template_subject(np.random.default_rng(7), shape, spacing, "HGG")
    distance = ndimage.distance_transform_edt((labels == 0) & (still_labels == 0), spacing)
    brain = (pushed["t2"] > 0) & (still["t2"] > 0)
    diff = np.abs(pushed["t2"].astype(float) - still["t2"])
    near, far = brain & (distance > 0) & (distance < 10), brain & (distance > 30)
    assert diff[near].mean() > 3 * diff[far].mean()


def test_oedema_spreads_along_white_matter():
    """White matter on one side of the tumour centre, grey matter on the other."""
    shape = (40, 40, 40)
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) * 2 - 40 for n in shape],
                                  indexing="ij"))  # fmt: skip
    wm = (coords[0] < 0).astype(np.float32)
    brain = np.ones(shape, bool)
    ratios = []
    for seed in range(4):
        _, labels = tumour(np.random.default_rng(seed), coords, brain, wm, np.zeros_like(wm),
                           (0.0, 0.0, 0.0), 0.05, 0.4, 18.0, "HGG", 2.0)  # fmt: skip
        oedema = labels == 2
        ratios.append(oedema[coords[0] < 0].sum() / max(oedema[coords[0] >= 0].sum(), 1))
    assert min(ratios) > 2


def test_field_of_view_must_hold_a_brain(tmp_path):
    check_field_of_view(*DEMO)
    check_field_of_view(*SMALL)
    with pytest.raises(ValueError, match="field of view of 96 x 96 x 80 mm"):
        check_field_of_view((32, 32, 32), (3.0, 3.0, 2.5))
    with pytest.raises(ValueError, match="field of view"):
        write_cohort(tmp_path / "out", 1, (32, 32, 32), (3.0, 3.0, 2.5), 0.2, 0, anatomy="template")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"grade": "GBM"}, "grade"), ({"spacing": (3.0, 3.0)}, "spacing"),
     ({"noise": -1.0}, "noise"), ({"bias_strength": -0.1}, "bias_strength")],
)  # fmt: skip
def test_make_template_subject_validates(kwargs, match):
    args = {"shape": SMALL[0], "spacing": SMALL[1], "grade": "HGG"} | kwargs
    with pytest.raises(ValueError, match=match):
        make_template_subject(np.random.default_rng(0), **args)


def test_demo_subject_costs_well_under_a_cpu_second():
    load_template(template_factor(DEMO[1]))
    start = time.process_time()
    for seed in range(3):
        make_template_subject(np.random.default_rng(seed), *DEMO, "HGG")
    assert (time.process_time() - start) / 3 < 1.0
