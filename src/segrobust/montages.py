"""Slice montages of the paper (Figs. 1 and 5): images, predictions and their changes.

Each montage takes 3D volumes and shows one axial slice of one modality in grey with the class
map on top; all panels of a montage share the clean slice's grey window, so a visible change is
a real change. Styling and saving are those of :mod:`segrobust.plots` (:func:`plots.with_style`,
:func:`plots.save_figure`).
"""

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from segrobust.labels import MODALITIES, N_CLASSES
from segrobust.metrics import dice_regions
from segrobust.plots import OKABE_ITO, new_figure, with_style
from segrobust.statistics import CLEAN_ATTACK
from segrobust.tables import REGION_NAMES, attack_label, model_label

# Network classes 1..3 (BraTS labels 1, 2, 4); class 0 (background) is left transparent.
CLASS_COLOURS: dict[int, str] = {
    1: OKABE_ITO["blue"],
    2: OKABE_ITO["yellow"],
    3: OKABE_ITO["vermillion"],
}
CLASS_NAMES: dict[int, str] = {1: "NCR/NET (label 1)", 2: "ED (label 2)", 3: "ET (label 4)"}
_OVERLAY_ALPHA = 0.6


# --------------------------------------------------------------------------- image figures


@dataclass(frozen=True)
class Segmented:
    """An input image (C, X, Y, Z), channels in MODALITIES order, and the class map
    (X, Y, Z), classes 0..3, that a model predicted from it."""

    image: np.ndarray
    prediction: np.ndarray


def tumour_slice(classes: np.ndarray, axis: int = 2) -> int:
    """Index along ``axis`` (default 2: axial for BraTS arrays) of the slice with most tumour."""
    classes = np.asarray(classes)
    if classes.ndim != 3:
        raise ValueError(f"classes must be a 3D class map, got shape {classes.shape}")
    if not -3 <= axis < 3:
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    other = tuple(a for a in range(3) if a != axis % 3)
    counts = np.count_nonzero(classes, axis=other)
    if not counts.any():
        raise ValueError("the class map holds no tumour (all background)")
    return int(np.argmax(counts))


def changed_voxels(clean: np.ndarray, adversarial: np.ndarray, axis: int = 2) -> np.ndarray:
    """Per slice along ``axis``: how many voxels the attack moves to another predicted class."""
    clean, adversarial = np.asarray(clean), np.asarray(adversarial)
    if clean.shape != adversarial.shape or clean.ndim != 3:
        raise ValueError(
            f"predictions must be 3D class maps of one shape, got {clean.shape} {adversarial.shape}"
        )
    if not -3 <= axis < 3:
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    other = tuple(a for a in range(3) if a != axis % 3)
    return np.count_nonzero(clean != adversarial, axis=other)


@dataclass(frozen=True)
class SliceChoice:
    """The example subject and slice a montage shows, and why: ``changed`` voxels (summed over
    the models) change predicted class there; ``ties`` other (subject, slice) pairs change as
    many."""

    subject: str
    slice_index: int
    changed: int
    ties: int

    def describe(self) -> str:
        """One sentence for the figure title naming subject, slice and changed-voxel count."""
        where = f"{self.subject}, axial slice {self.slice_index}"
        if self.changed == 0:
            return (
                f"{where} (most predicted tumour): the attack changes no voxel's predicted "
                "class in any example subject"
            )
        tie = f", tied with {self.ties} other slices" if self.ties else ""
        return f"{where}: {self.changed} voxels change predicted class (all models{tie})"


def most_changed_slice(
    candidates: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], axis: int = 2
) -> SliceChoice:
    """The subject and slice where the attack changes the predicted segmentation most.

    ``candidates`` maps each example subject to (clean prediction, adversarial prediction) pairs,
    one per model; a slice's score is the number of voxels whose predicted class differs, summed
    over the models. Ties go to the first subject (in ``candidates``' order) and the lowest slice,
    and are counted. Without any change: the first subject's slice with most predicted tumour.
    """
    if not candidates or not all(candidates.values()):
        raise ValueError("candidates must give at least one subject, each with prediction pairs")
    scores = {
        subject: sum(changed_voxels(c, a, axis) for c, a in pairs)
        for subject, pairs in candidates.items()
    }
    best = max(int(v.max()) for v in scores.values())
    if best == 0:
        subject, pairs = next(iter(candidates.items()))
        clean = np.asarray(pairs[0][0])
        index = tumour_slice(clean, axis) if clean.any() else clean.shape[axis % 3] // 2
        return SliceChoice(subject, index, 0, 0)
    hits = [(s, int(i)) for s, v in scores.items() for i in np.flatnonzero(v == best)]
    return SliceChoice(hits[0][0], hits[0][1], best, len(hits) - 1)


def _channel(image: np.ndarray, modality: str, what: str) -> np.ndarray:
    _check_choice(modality, MODALITIES, "modality")
    image = np.asarray(image)
    if image.ndim != 4 or image.shape[0] != len(MODALITIES):
        raise ValueError(
            f"{what} must have shape ({len(MODALITIES)}, X, Y, Z) with channels "
            f"{MODALITIES}, got {image.shape}"
        )
    return image[MODALITIES.index(modality)]


def _axial(volume: np.ndarray, index: int, axis: int) -> np.ndarray:
    """Slice for display: patient anterior up and patient right on the image left
    (radiological convention) for arrays in LPS order, as BraTS and the synthetic cohort."""
    if not 0 <= index < volume.shape[axis]:
        raise ValueError(f"slice_index {index} outside 0..{volume.shape[axis] - 1}")
    return np.take(volume, index, axis=axis).T


def _check_class_map(classes: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    classes = np.asarray(classes)
    if classes.shape != shape:
        raise ValueError(f"{what} has shape {classes.shape}, the image has {shape}")
    if (
        not np.issubdtype(classes.dtype, np.integer)
        or classes.min() < 0
        or classes.max() >= N_CLASSES
    ):
        raise ValueError(f"{what} must be an integer class map with values 0..{N_CLASSES - 1}")
    return classes


_CLASS_CMAP = ListedColormap(
    [(0, 0, 0, 0), *[mpl.colors.to_rgba(CLASS_COLOURS[c]) for c in range(1, N_CLASSES)]]
)


def _show(
    ax: Axes, image2d: np.ndarray, window: tuple[float, float], classes2d: np.ndarray | None = None
) -> None:
    """Grey image with the class map overlaid (background transparent), without ticks."""
    ax.imshow(image2d, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
    if classes2d is not None:
        ax.imshow(
            classes2d,
            cmap=_CLASS_CMAP,
            vmin=0,
            vmax=N_CLASSES - 1,
            alpha=np.where(classes2d > 0, _OVERLAY_ALPHA, 0.0),
            interpolation="nearest",
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _window(image2d: np.ndarray) -> tuple[float, float]:
    """Grey-level window: 1st-99.5th percentile of the clean slice, shared by all panels."""
    lo, hi = np.percentile(image2d, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def _class_legend(fig: Figure, loc: str) -> None:
    handles = [
        Patch(facecolor=CLASS_COLOURS[c], alpha=_OVERLAY_ALPHA, label=CLASS_NAMES[c])
        for c in range(1, N_CLASSES)
    ]
    fig.legend(handles=handles, loc=loc, ncols=len(handles), frameon=False)


def _wrap(text: str, width: int = 18) -> str:
    return textwrap.fill(text, width, break_long_words=False)


@with_style
def figure1(
    truth: np.ndarray,
    examples: Mapping[str, Segmented],
    *,
    modality: str = "flair",
    slice_index: int | None = None,
    axis: int = 2,
) -> Figure:
    """Paper's Fig. 1: inputs (top row) and their segmentations (bottom row) per attack.

    ``examples`` maps attack keys (e.g. "none", "fgsm", "ifgsm", "tifgsm", drawn in that order)
    to the (perturbed) input and the prediction from it. Bottom titles give the 3D Dice of each
    region against ``truth`` (class map). All panels share the clean slice's grey window, so a
    visible change is a real change. ``slice_index=None`` takes the slice with most true tumour.
    """
    if not examples:
        raise ValueError("examples must hold at least one attack")
    first = _channel(next(iter(examples.values())).image, modality, "image")
    truth = _check_class_map(truth, first.shape, "truth")
    if slice_index is None:
        slice_index = tumour_slice(truth, axis)
    window = _window(_axial(first, slice_index, axis))
    fig = new_figure((1.8 * len(examples) + 0.3, 4.3))
    axes = fig.subplots(2, len(examples), squeeze=False)
    for col, (attack, ex) in enumerate(examples.items()):
        image = _channel(ex.image, modality, f"image of {attack!r}")
        pred = _check_class_map(ex.prediction, image.shape, f"prediction of {attack!r}")
        scores = dice_regions(pred, truth)
        top, bottom = axes[0, col], axes[1, col]
        _show(top, _axial(image, slice_index, axis), window)
        top.set_title("No attack" if attack == CLEAN_ATTACK else attack_label(attack))
        _show(bottom, _axial(image, slice_index, axis), window, _axial(pred, slice_index, axis))
        bottom.set_title(
            "Dice " + "/".join(scores) + "\n" + "/".join(f"{v:.2f}" for v in scores.values())
        )
    axes[0, 0].set_ylabel(f"Input ({modality.upper()})")
    axes[1, 0].set_ylabel("Segmentation")
    _class_legend(fig, "outside lower center")
    return fig


@with_style
def figure5(
    image: np.ndarray,
    truth: np.ndarray,
    clean_predictions: Mapping[str, np.ndarray],
    adversarial: Mapping[str, Segmented],
    *,
    eps: float = 0.03,
    attack: str = "fgsm",
    region: str = "ET",
    reference_model: str = "baseline",
    modality: str = "flair",
    slice_index: int | None = None,
    axis: int = 2,
    note: str = "",
) -> Figure:
    """Paper's Fig. 5: each model on the clean input and on its own adversarial input.

    Columns: true labels, then one per model (in ``adversarial``'s order). Top row: true labels
    and each model's prediction on the clean ``image``; middle row: the clean image and each
    model's adversarial input (``attack`` at ``eps``); bottom row: true labels and each model's
    prediction on its adversarial input. Titles give the 3D Dice of ``region`` (default ET) and,
    at the bottom, how many voxels of the shown slice change predicted class. ``slice_index=None``
    takes the slice with most true tumour (:func:`most_changed_slice` picks one where the attack
    shows); ``note`` (e.g. :meth:`SliceChoice.describe`) heads the title.
    """
    if not adversarial:
        raise ValueError("adversarial must hold at least one model")
    if set(clean_predictions) != set(adversarial):
        raise ValueError(
            f"clean_predictions and adversarial name different models: "
            f"{sorted(clean_predictions)} vs {sorted(adversarial)}"
        )
    clean = _channel(image, modality, "image")
    truth = _check_class_map(truth, clean.shape, "truth")
    if slice_index is None:
        slice_index = tumour_slice(truth, axis)
    clean2d = _axial(clean, slice_index, axis)
    truth2d = _axial(truth, slice_index, axis)
    window = _window(clean2d)
    ncols = 1 + len(adversarial)
    fig = new_figure((0.98 * ncols + 0.35, 4.6))
    axes = fig.subplots(3, ncols, squeeze=False)
    _show(axes[0, 0], clean2d, window, truth2d)
    axes[0, 0].set_title("True labels\n")
    _show(axes[1, 0], clean2d, window)
    axes[1, 0].set_title("Original image")
    _show(axes[2, 0], clean2d, window, truth2d)
    axes[2, 0].set_title("True labels\n")
    for col, (model, ex) in enumerate(adversarial.items(), start=1):
        adv = _channel(ex.image, modality, f"adversarial image of {model!r}")
        pred_clean = _check_class_map(
            clean_predictions[model], clean.shape, f"prediction of {model!r}"
        )
        pred_adv = _check_class_map(
            ex.prediction, clean.shape, f"adversarial prediction of {model!r}"
        )
        d_clean = dice_regions(pred_clean, truth)[region]
        d_adv = dice_regions(pred_adv, truth)[region]
        _show(axes[0, col], clean2d, window, _axial(pred_clean, slice_index, axis))
        axes[0, col].set_title(
            f"{_wrap(_short_model_label(model, reference_model), 16)}\n{region} {d_clean:.2f}"
        )
        _show(axes[1, col], _axial(adv, slice_index, axis), window)
        _show(
            axes[2, col],
            _axial(adv, slice_index, axis),
            window,
            _axial(pred_adv, slice_index, axis),
        )
        changed = np.count_nonzero(
            _axial(pred_clean, slice_index, axis) != _axial(pred_adv, slice_index, axis)
        )
        axes[2, col].set_title(f"{region} {d_adv:.2f}\n{changed} changed")
    axes[0, 0].set_ylabel("Clean input")
    axes[1, 0].set_ylabel(f"{attack_label(attack)} ε = {eps:g}")
    axes[2, 0].set_ylabel("On adversarial input")
    dice_note = (
        f"Dice of {REGION_NAMES.get(region, region)} ({region}) in each title; bottom: voxels of "
        "this slice whose predicted class the attack changes"
    )
    title = f"{note}. {dice_note}" if note else dice_note
    fig.suptitle(_wrap(title, int(10 * fig.get_figwidth())))  # about 10 characters an inch
    _class_legend(fig, "outside lower center")
    return fig


def _short_model_label(model: str, reference_model: str) -> str:
    """Model label short enough for a narrow image column ('Adv. training (ε=0.05)')."""
    return model_label(model, reference_model).replace("Adversarial Training", "Adv. training")


def _check_choice(value: object, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
