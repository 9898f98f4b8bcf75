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
    assert bottom == ["True labels", "ET 1.00", "ET 0.00", "ET 1.00"]
    assert fig.axes[4].get_ylabel() == "FGSM ε = 0.03"
    assert fig.legends
    _texts_readable(fig)
    with pytest.raises(ValueError, match="different models"):
        M.figure5(image, truth, {"baseline": truth}, adversarial)
