"""Slice montages of the paper (Figs. 1 and 5): images, predictions and their changes.

Each montage takes 3D volumes and shows one axial slice of one modality in grey with the class
map on top; all panels of a montage share the clean slice's grey window, so a visible change is
a real change. Fig. 5 zooms every panel onto the tumour (the box around all true and predicted
tumour of the slice, plus a margin) and outlines the regions of voxels whose predicted class the
attack changes in black on a thin white halo, along voxel edges, so that they stay visible at
print size. Styling
and saving are those of :mod:`segrobust.plots` (:func:`plots.with_style`,
:func:`plots.save_figure`).
"""

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from segrobust.labels import MODALITIES, N_CLASSES, REGIONS, regions_present
from segrobust.metrics import dice_regions
from segrobust.plots import OKABE_ITO, new_figure, with_style
from segrobust.results import attack_label, model_label

# Network classes 1..3 (BraTS labels 1, 2, 4); class 0 (background) is left transparent.
CLASS_COLOURS: dict[int, str] = {
    1: OKABE_ITO["blue"],
    2: OKABE_ITO["yellow"],
    3: OKABE_ITO["vermillion"],
}
CLASS_NAMES: dict[int, str] = {1: "NCR/NET (label 1)", 2: "ED (label 2)", 3: "ET (label 4)"}
_OVERLAY_ALPHA = 0.6
# the outline of changed voxels: black on a thin white halo, readable on every class colour and
# on the grey image
_OUTLINE = {"color": OKABE_ITO["black"], "linewidth": 0.7}
_HALO = {"color": "white", "linewidth": 1.6}
_PANEL_INCH = 0.95  # side of one Fig. 5 panel


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


def complete_slices(truth: np.ndarray, axis: int = 2) -> np.ndarray:
    """Per slice along ``axis``: whether the true class map holds every region (WT, TC, ET)."""
    truth = np.asarray(truth)
    if truth.ndim != 3:
        raise ValueError(f"truth must be a 3D class map, got shape {truth.shape}")
    slices = np.moveaxis(truth, axis, 0)
    return np.array([regions_present(s) == tuple(REGIONS) for s in slices])


def most_changed_slice(
    candidates: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    axis: int = 2,
    truths: Mapping[str, np.ndarray] | None = None,
) -> SliceChoice:
    """The subject and slice where the attack changes the predicted segmentation most.

    ``candidates`` maps each example subject to (clean prediction, adversarial prediction) pairs,
    one per model; a slice's score is the number of voxels whose predicted class differs, summed
    over the models. With the subjects' true class maps (``truths``), only subjects whose truth
    holds all three regions compete if any does, and within a subject only the slices that show
    all three if it has any (:func:`complete_slices`), so the Dice of every region means
    something in the figure. Ties go to the first subject (in ``candidates``' order) and the
    lowest slice, and are counted. Without any change: the first subject's slice with most
    predicted tumour.
    """
    if not candidates or not all(candidates.values()):
        raise ValueError("candidates must give at least one subject, each with prediction pairs")
    if truths is not None:
        complete = [s for s in candidates if regions_present(truths[s]) == tuple(REGIONS)]
        candidates = {s: candidates[s] for s in complete} if complete else candidates
    scores = {}
    for subject, pairs in candidates.items():
        score = sum(changed_voxels(c, a, axis) for c, a in pairs)
        allowed = None if truths is None else complete_slices(truths[subject], axis)
        scores[subject] = score if allowed is None or not allowed.any() else score * allowed
    best = max(int(v.max()) for v in scores.values())
    if best == 0:
        subject, pairs = next(iter(candidates.items()))
        shown = np.asarray(pairs[0][0] if truths is None else truths[subject])
        index = tumour_slice(shown, axis) if shown.any() else shown.shape[axis % 3] // 2
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


def _class_legend(fig: Figure, loc: str, changed: bool = False, ncols: int | None = None) -> None:
    handles = [
        Patch(facecolor=CLASS_COLOURS[c], alpha=_OVERLAY_ALPHA, label=CLASS_NAMES[c])
        for c in range(1, N_CLASSES)
    ]
    if changed:
        halo = [patheffects.withStroke(linewidth=_HALO["linewidth"], foreground="white")]
        handles.append(
            Line2D([], [], label="class changed by the attack", path_effects=halo, **_OUTLINE)
        )
    fig.legend(handles=handles, loc=loc, ncols=ncols or len(handles), frameon=False)


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
        top.set_title(attack_label(attack))
        _show(bottom, _axial(image, slice_index, axis), window, _axial(pred, slice_index, axis))
        bottom.set_title(
            "Dice " + "/".join(scores) + "\n" + "/".join(f"{v:.2f}" for v in scores.values())
        )
    axes[0, 0].set_ylabel(f"Input ({modality.upper()})")
    axes[1, 0].set_ylabel("Segmentation")
    _class_legend(fig, "outside lower center")
    return fig


def voxel_outline(mask2d: np.ndarray) -> np.ndarray:
    """Line segments (N, 2, 2) in imshow's (x, y) pixel coordinates along the edges between
    pixels in ``mask2d`` and pixels outside it (or outside the image)."""
    mask2d = np.pad(np.asarray(mask2d, dtype=bool), 1)
    segments = []
    rows, cols = np.nonzero(mask2d[1:, :] != mask2d[:-1, :])  # between rows r-1 and r
    segments += [((c - 1.5, r - 0.5), (c - 0.5, r - 0.5)) for r, c in zip(rows, cols, strict=True)]
    rows, cols = np.nonzero(mask2d[:, 1:] != mask2d[:, :-1])  # between columns c-1 and c
    segments += [((c - 0.5, r - 1.5), (c - 0.5, r - 0.5)) for r, c in zip(rows, cols, strict=True)]
    return np.array(segments, dtype=float).reshape(-1, 2, 2)


def _outline(ax: Axes, mask2d: np.ndarray) -> None:
    """Draw the outline of ``mask2d`` (see the module docstring), above the image."""
    segments = voxel_outline(mask2d)
    for style, zorder in ((_HALO, 3), (_OUTLINE, 4)):  # every halo below every line
        lines = LineCollection(segments, capstyle="projecting", zorder=zorder, **style)
        ax.add_collection(lines, autolim=False)


def zoom_box(masks2d: Sequence[np.ndarray], margin: float = 0.15) -> tuple[slice, slice]:
    """A square (where the slice allows) box of (rows, columns) around every nonzero pixel of
    ``masks2d``, widened by ``margin`` of the slice's longer side on each side (at least 2
    pixels) and clipped to the slice; the whole slice when all masks are empty."""
    union = np.any([np.asarray(m) > 0 for m in masks2d], axis=0)
    if not union.any():
        return slice(0, union.shape[0]), slice(0, union.shape[1])
    pad = max(2, round(margin * max(union.shape)))
    spans = [np.flatnonzero(union.any(axis=1 - a)) for a in (0, 1)]
    side = max(int(s[-1] - s[0]) + 1 for s in spans) + 2 * pad
    box = []
    for span, n in zip(spans, union.shape, strict=True):
        size = min(side, n)
        start = min(max((int(span[0]) + int(span[-1]) + 1 - size) // 2, 0), n - size)
        box.append(slice(start, start + size))
    return box[0], box[1]


def _zoom(ax: Axes, box: tuple[slice, slice]) -> None:
    rows, cols = box
    ax.set_xlim(cols.start - 0.5, cols.stop - 0.5)
    ax.set_ylim(rows.stop - 0.5, rows.start - 0.5)  # imshow: row 0 on top


def _dice_title(scores: Mapping[str, float]) -> str:
    return "/".join(f"{scores[r]:.2f}" for r in REGIONS)


def _corner_label(ax: Axes, text: str) -> None:
    ax.text(0.04, 0.96, text, transform=ax.transAxes, ha="left", va="top", color="white",
            bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "linewidth": 0})  # fmt: skip


@with_style
def figure5(
    image: np.ndarray,
    truth: np.ndarray,
    clean_predictions: Mapping[str, np.ndarray],
    adversarial: Mapping[str, Segmented],
    *,
    eps: float = 0.03,
    attack: str = "fgsm",
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
    prediction on its adversarial input, the voxels whose predicted class the attack changes
    outlined. Titles give the 3D Dice of WT/TC/ET of the subject and, at the bottom, how many
    voxels of the shown slice change class. ``slice_index=None`` takes the slice with most true
    tumour (:func:`most_changed_slice` picks one where the attack shows); ``note`` (e.g.
    :meth:`SliceChoice.describe`) heads the title.
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
    width = max(_PANEL_INCH * ncols + 1.0, 3.6)  # room for the row labels, title and legend
    fig = new_figure((width, 3 * _PANEL_INCH + 2.0))
    axes = fig.subplots(3, ncols, squeeze=False)
    for row in (0, 2):
        _show(axes[row, 0], clean2d, window, truth2d)
        axes[row, 0].set_title("True labels", fontsize=8)
    _show(axes[1, 0], clean2d, window)
    _corner_label(axes[1, 0], "original")
    for col, (model, ex) in enumerate(adversarial.items(), start=1):
        adv = _channel(ex.image, modality, f"adversarial image of {model!r}")
        pred_clean = _check_class_map(
            clean_predictions[model], clean.shape, f"prediction of {model!r}"
        )
        pred_adv = _check_class_map(
            ex.prediction, clean.shape, f"adversarial prediction of {model!r}"
        )
        clean_slice = _axial(pred_clean, slice_index, axis)
        adv_slice = _axial(pred_adv, slice_index, axis)
        label = _wrap(_short_model_label(model, reference_model), 16)
        _show(axes[0, col], clean2d, window, clean_slice)
        axes[0, col].set_title(
            f"{label}\n{_dice_title(dice_regions(pred_clean, truth))}", fontsize=8
        )
        _show(axes[1, col], _axial(adv, slice_index, axis), window)
        _show(axes[2, col], _axial(adv, slice_index, axis), window, adv_slice)
        changed = clean_slice != adv_slice
        _outline(axes[2, col], changed)
        axes[2, col].set_title(
            f"{_dice_title(dice_regions(pred_adv, truth))}\n{np.count_nonzero(changed)} changed",
            fontsize=8,
        )
    box = zoom_box(
        [
            truth2d,
            *(_axial(m, slice_index, axis) for m in clean_predictions.values()),
            *(_axial(ex.prediction, slice_index, axis) for ex in adversarial.values()),
        ]
    )
    for ax in axes.flat:
        _zoom(ax, box)
    row_labels = (
        "Clean\ninput",
        f"Input\n({modality.upper()})",
        f"{attack_label(attack)}\nε = {eps:g}",
    )
    for ax, text in zip(axes[:, 0], row_labels, strict=True):
        ax.set_ylabel(text, rotation=0, ha="right", va="center", labelpad=4)
    dice_note = (
        f"Titles: Dice {'/'.join(REGIONS)} on this subject (3D). Middle row: each model's own "
        f"adversarial input; bottom: its prediction there, voxels that change class outlined"
    )
    title = f"{note}. {dice_note}" if note else dice_note
    fig.suptitle(_wrap(title, int(13 * width)))  # about 13 characters an inch
    _class_legend(fig, "outside lower center", changed=True, ncols=4 if width > 6.5 else 2)
    return fig


def _short_model_label(model: str, reference_model: str) -> str:
    """Model label short enough for a narrow image column ('Adv. training (ε=0.05)')."""
    return model_label(model, reference_model).replace("Adversarial Training", "Adv. training")


def _check_choice(value: object, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
