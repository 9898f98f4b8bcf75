"""Tests of segrobust.montages (Figs. 1 and 5) on small synthetic volumes."""

import numpy as np
import pytest
from matplotlib.text import Text

from segrobust import montages as M


def _texts_readable(fig) -> None:
    """Every visible text of the drawn figure is at least 8 pt."""
    fig.canvas.draw()
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    assert sizes and min(sizes) >= 8


# --------------------------------------------------------------------------- image figures


def _volumes(shape=(24, 20, 12)):
    """A (4, X, Y, Z) image, a true class map with a two-layer tumour and a worse prediction."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    r2 = ((grid - np.array([12, 8, 7])[:, None, None, None]) ** 2).sum(0)
    truth = np.zeros(shape, np.uint8)
    truth[r2 < 30] = 2
    truth[r2 < 12] = 3
    truth[r2 < 3] = 1
    image = rng.normal(0, 1, (4, *shape)).astype(np.float32) + truth
    worse = truth.copy()
    worse[worse == 3] = 2
    return image, truth, worse


def test_tumour_slice_known_answer():
    _, truth, _ = _volumes()
    assert M.tumour_slice(truth) == 7
    assert M.tumour_slice(truth, axis=0) == 12
    with pytest.raises(ValueError, match="no tumour"):
        M.tumour_slice(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="3D"):
        M.tumour_slice(truth[0])


def test_figure1_rows_titles_and_dice():
    image, truth, worse = _volumes()
    examples = {
        "none": M.Segmented(image, truth),
        "fgsm": M.Segmented(image + 0.05, worse),
        "ifgsm": M.Segmented(image - 0.05, worse),
        "tifgsm": M.Segmented(image, worse),
    }
    fig = M.figure1(truth, examples, modality="t1ce")
    assert len(fig.axes) == 8
    assert [ax.get_title() for ax in fig.axes[:4]] == ["No attack", "FGSM", "i-FGSM", "ti-FGSM"]
    assert fig.axes[4].get_title() == "Dice WT/TC/ET\n1.00/1.00/1.00"
    assert fig.axes[5].get_title().endswith("/0.00")  # ET relabelled as ED: ET Dice 0
    assert fig.axes[0].get_ylabel() == "Input (T1CE)"
    assert len(fig.legends[0].get_texts()) == 3
    assert fig.axes[0].get_images()[0].get_array().shape == (20, 24)  # axial slice, transposed
    _texts_readable(fig)
    with pytest.raises(ValueError, match="modality"):
        M.figure1(truth, examples, modality="dwi")
    with pytest.raises(ValueError, match="prediction of 'fgsm'"):
        M.figure1(truth, {"fgsm": M.Segmented(image, worse[:-1])})
    with pytest.raises(ValueError, match="shape \\(4, X, Y, Z\\)"):
        M.figure1(truth, {"none": M.Segmented(image[0], truth)})
    with pytest.raises(ValueError, match="slice_index"):
        M.figure1(truth, examples, slice_index=99)


def test_figure5_grid_and_titles():
    image, truth, worse = _volumes()
    models = ["adv_eps0.05", "baseline", "distill_T20"]
    clean_preds = dict.fromkeys(models, truth)
    adversarial = {
        m: M.Segmented(image + 0.03, worse if m == "baseline" else truth) for m in models
    }
    fig = M.figure5(image, truth, clean_preds, adversarial)
    assert len(fig.axes) == 3 * (1 + len(models))
    top = [ax.get_title() for ax in fig.axes[:4]]
    assert top[2].startswith("No Defense") and top[2].endswith("ET 1.00")
    bottom = [ax.get_title() for ax in fig.axes[8:]]
    changed = np.count_nonzero(truth[:, :, 7] == 3)  # ET relabelled as ED in the shown slice
    assert bottom == [
        "True labels\n", "ET 1.00\n0 changed", f"ET 0.00\n{changed} changed", "ET 1.00\n0 changed",
    ]  # fmt: skip
    assert fig.axes[4].get_ylabel() == "FGSM ε = 0.03"
    assert fig.legends
    _texts_readable(fig)
    with pytest.raises(ValueError, match="different models"):
        M.figure5(image, truth, {"baseline": truth}, adversarial)
    note = M.SliceChoice("s01", 7, changed, 0).describe()
    fig = M.figure5(image, truth, clean_preds, adversarial, slice_index=7, note=note)
    assert fig.get_suptitle().replace("\n", " ").startswith(f"s01, axial slice 7: {changed} voxels")


def _pair(shape=(8, 8, 6)) -> tuple[np.ndarray, np.ndarray]:
    """A clean prediction with a tumour in every slice and an identical adversarial one."""
    clean = np.zeros(shape, np.uint8)
    clean[2:6, 2:6, :] = 2
    clean[3:5, 3:5, :] = 3
    return clean, clean.copy()


def test_changed_voxels_counts_per_slice():
    clean, adv = _pair()
    adv[3:5, 3:5, 4] = 2  # ET → ED in slice 4
    assert M.changed_voxels(clean, adv).tolist() == [0, 0, 0, 0, 4, 0]
    assert M.changed_voxels(clean, adv, axis=0).tolist() == [0, 0, 0, 2, 2, 0, 0, 0]
    with pytest.raises(ValueError, match="one shape"):
        M.changed_voxels(clean, adv[:, :, :3])


def test_most_changed_slice_picks_the_slice_the_attack_changes():
    quiet = [_pair(), _pair()]  # two models, no change anywhere
    clean, adv = _pair()
    adv[3:5, 3:5, 4] = 2  # one model changes 4 voxels in slice 4
    choice = M.most_changed_slice({"s00": quiet, "s01": [_pair(), (clean, adv)]})
    assert (choice.subject, choice.slice_index, choice.changed, choice.ties) == ("s01", 4, 4, 0)
    assert choice.describe() == "s01, axial slice 4: 4 voxels change predicted class (all models)"
    # counts add up over models: 1 + 2 voxels in slice 1 lose to 4 in slice 4, 1 + 4 win
    c2, a2 = _pair()
    a2[3, 3, 1] = 0
    c3, a3 = _pair()
    a3[2:4, 2, 1] = 0
    choice = M.most_changed_slice({"s01": [(clean, adv), (c2, a2), (c3, a3)]})
    assert (choice.slice_index, choice.changed) == (4, 4)
    a3[2:6, 2, 1] = 0  # now 1 + 4 = 5 voxels in slice 1
    assert M.most_changed_slice({"s01": [(clean, adv), (c2, a2), (c3, a3)]}).slice_index == 1


def test_most_changed_slice_says_so_on_ties_and_no_change():
    clean, adv = _pair()
    adv[3, 3, [1, 4]] = 0
    tie = M.most_changed_slice({"s00": [(clean, adv)]})
    assert (tie.slice_index, tie.changed, tie.ties) == (1, 1, 1)
    assert "tied with 1 other slices" in tie.describe()
    none = M.most_changed_slice({"s00": [_pair()], "s01": [_pair()]})
    assert (none.subject, none.changed) == ("s00", 0)
    assert "changes no voxel" in none.describe()
    with pytest.raises(ValueError, match="at least one subject"):
        M.most_changed_slice({})
    with pytest.raises(ValueError, match="at least one subject"):
        M.most_changed_slice({"s00": []})
