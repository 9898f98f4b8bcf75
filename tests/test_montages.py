"""Tests of segrobust.montages (Figs. 1 and 5) on small synthetic volumes."""

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex
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


def _outline_segments(ax) -> int:
    """How many voxel edges the black outline of a panel draws."""
    return sum(
        len(c.get_segments())
        for c in ax.collections
        if isinstance(c, LineCollection) and to_hex(c.get_color()[0]) == "#000000"
    )


def test_figure5_grid_titles_outline_and_row_labels():
    image, truth, worse = _volumes()
    models = ["adv_eps0.05", "baseline", "distill_T20"]
    clean_preds = dict.fromkeys(models, truth)
    adversarial = {
        m: M.Segmented(image + 0.03, worse if m == "baseline" else truth) for m in models
    }
    fig = M.figure5(image, truth, clean_preds, adversarial)
    axes = np.array(fig.axes).reshape(3, 4)
    assert [ax.get_title() for ax in axes[0]] == [
        "True labels", "Adv. training\n(ε=0.05)\n1.00/1.00/1.00", "No Defense\n1.00/1.00/1.00",
        "Distillation\n(T=20)\n1.00/1.00/1.00",
    ]  # fmt: skip
    # the baseline's prediction relabels ET as ED: WT intact, TC only the NCR voxels, ET none
    n_ncr, n_core = np.count_nonzero(truth == 1), np.count_nonzero(np.isin(truth, (1, 3)))
    tc = 2 * n_ncr / (n_ncr + n_core)
    changed = np.count_nonzero(truth[:, :, 7] == 3)  # in the shown slice
    assert [ax.get_title() for ax in axes[2]] == [
        "True labels", "1.00/1.00/1.00\n0 changed", f"1.00/{tc:.2f}/0.00\n{changed} changed",
        "1.00/1.00/1.00\n0 changed",
    ]  # fmt: skip
    # outlined: the edges between changed and unchanged voxels, counted by hand
    mask = np.pad(truth[:, :, 7] == 3, 1)
    edges = np.count_nonzero(mask[1:] != mask[:-1]) + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
    assert [_outline_segments(ax) for ax in axes[2]] == [0, 0, edges, 0]
    assert edges > 0 and not any(_outline_segments(ax) for ax in axes[:2].flat)
    # row labels on the left, no title floating in the middle row
    assert [ax.get_ylabel() for ax in axes[:, 0]] == [
        "Clean\ninput", "Input\n(FLAIR)", "FGSM\nε = 0.03",
    ]  # fmt: skip
    assert [ax.get_title() for ax in axes[1]] == [""] * 4
    assert [t.get_text() for t in axes[1, 0].texts] == ["original"]
    # every panel zoomed onto one box: tumour x 7..17, y 3..13 in slice 7, margin 0.15 · 24 → 4,
    # side 11 + 2 · 4 = 19, centred (x 3..21) and clipped (y 0..18)
    assert {(ax.get_xlim(), ax.get_ylim()) for ax in axes.flat} == {((2.5, 21.5), (18.5, -0.5))}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[-1] == "class changed by the attack" and len(legend) == 4
    _texts_readable(fig)
    with pytest.raises(ValueError, match="different models"):
        M.figure5(image, truth, {"baseline": truth}, adversarial)
    note = M.SliceChoice("s01", 7, changed, 0).describe()
    fig = M.figure5(image, truth, clean_preds, adversarial, slice_index=7, note=note)
    title = fig.get_suptitle().replace("\n", " ")
    assert title.startswith(f"s01, axial slice 7: {changed} voxels") and "Dice WT/TC/ET" in title


def test_voxel_outline_known_answers():
    one = np.zeros((3, 4), bool)
    one[1, 2] = True  # imshow: x = column 2, y = row 1
    assert {tuple(map(tuple, s)) for s in M.voxel_outline(one)} == {
        ((1.5, 0.5), (2.5, 0.5)), ((1.5, 1.5), (2.5, 1.5)),
        ((1.5, 0.5), (1.5, 1.5)), ((2.5, 0.5), (2.5, 1.5)),
    }  # fmt: skip
    one[1, 3] = True  # a neighbour on the image's edge: 6 edges, one of them the image's border
    segments = {tuple(map(tuple, s)) for s in M.voxel_outline(one)}
    assert len(segments) == 6 and ((3.5, 0.5), (3.5, 1.5)) in segments
    assert ((2.5, 0.5), (2.5, 1.5)) not in segments  # no edge between two changed voxels
    assert M.voxel_outline(np.zeros((3, 4), bool)).shape == (0, 2, 2)


def test_zoom_box_known_answers():
    mask = np.zeros((20, 30), np.uint8)
    mask[5:9, 10:12] = 2  # 4 rows × 2 columns; margin 0.15 · 30 → 4 (rounded) on each side
    rows, cols = M.zoom_box([mask, np.zeros_like(mask)])
    assert (rows, cols) == (slice(1, 13), slice(5, 17))  # square: 4 + 2·4 = 12
    mask[:] = 0
    mask[0, 29] = 3  # in a corner: clipped to the slice, still square
    assert M.zoom_box([mask]) == (slice(0, 9), slice(21, 30))
    assert M.zoom_box([np.zeros((6, 8))]) == (slice(0, 6), slice(0, 8))


def test_complete_slices_need_every_region():
    _, truth, worse = _volumes()
    complete = M.complete_slices(truth)
    with_et = np.isin(np.arange(12), np.flatnonzero((truth == 3).any(axis=(0, 1))))
    assert complete.tolist() == with_et.tolist() and complete[7]
    assert not M.complete_slices(worse).any()  # no ET anywhere
    with pytest.raises(ValueError, match="3D"):
        M.complete_slices(truth[0])


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


def test_most_changed_slice_prefers_subjects_and_slices_with_every_region():
    """With the truths: a subject without ET loses to one with ET though its attack changes
    more, and within a subject a slice showing all three regions wins."""
    shape = (8, 8, 6)
    lgg = np.zeros(shape, np.uint8)
    lgg[2:6, 2:6, :] = 2
    lgg[3:5, 3:5, :] = 1  # no ET
    hgg = lgg.copy()
    hgg[3, 3, 3] = 3  # ET in slice 3 only
    clean, big = _pair(shape)
    big[2:6, 2:6, 1] = 0  # 16 voxels change in slice 1
    _, small = _pair(shape)
    small[3, 3, 3] = 0  # 1 voxel in slice 3
    small[2:6, 2:6, 5] = 0  # 16 in slice 5 (no ET there)
    candidates = {"lgg": [(clean, big)], "hgg": [(clean, small)]}
    assert M.most_changed_slice(candidates).subject == "lgg"  # without the truths
    choice = M.most_changed_slice(candidates, truths={"lgg": lgg, "hgg": hgg})
    assert (choice.subject, choice.slice_index, choice.changed) == ("hgg", 3, 1)
    # no subject with every region: all compete, every slice counts
    choice = M.most_changed_slice(candidates, truths={"lgg": lgg, "hgg": lgg})
    assert (choice.subject, choice.slice_index) == ("lgg", 1)
