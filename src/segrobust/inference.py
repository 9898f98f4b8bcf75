"""The forward that evaluation and every attack run: input adaptation, network, output logits.

:func:`wrap` composes one ``nn.Module`` from a loaded network and the plain-data ``inference``
settings of its model (config ``inference:``, or an external model's own), so the attacks
differentiate through the whole pipeline, never window by window:

1. the input as the model expects it (external models: modality order, intensity
   normalisation; :class:`InputAdapter`);
2. the network, over sliding windows when ``roi_size`` is set (MONAI's
   ``sliding_window_inference``: windows of ``roi_size`` overlapping by the fraction
   ``overlap``, blended with ``mode`` "constant" or "gaussian" weights, ``sw_batch_size``
   windows per forward) — for networks trained on patches smaller than the volume;
3. the output as 4-class logits (external models: softmax channel order, or TC/WT/ET sigmoid
   channels; :func:`output_adapter`).

The conventions these steps apply are those of :mod:`segrobust.external`'s entries.
"""

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from segrobust.labels import BRATS_LABELS, MODALITIES

logger = logging.getLogger(__name__)

BLEND_MODES: tuple[str, ...] = ("constant", "gaussian")
NORMALIZATIONS: tuple[str, ...] = ("none", "zscore", "minmax")
# the nested regions' sigmoid channels, by default in this order (MONAI's BraTS bundle)
REGION_CHANNELS: tuple[str, ...] = ("TC", "WT", "ET")


# --------------------------------------------------------------------------- adapters


class InputAdapter(nn.Module):
    """segrobust's input (channels in :data:`MODALITIES` order) as an external model expects it."""

    def __init__(self, modalities: Sequence[str] | None, normalization: str = "none"):
        super().__init__()
        modalities = list(MODALITIES if modalities is None else modalities)
        if sorted(modalities) != sorted(MODALITIES):
            raise ValueError(f"modalities must order {list(MODALITIES)}, got {modalities}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
            )
        self.order = [MODALITIES.index(m) for m in modalities]
        self.normalization = normalization

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, self.order]
        axes = tuple(range(2, x.ndim))
        if self.normalization == "zscore":
            nonzero = (x != 0).to(x.dtype)
            n = nonzero.sum(axes, keepdim=True).clamp_min(1)
            mean = (x * nonzero).sum(axes, keepdim=True) / n
            var = (((x - mean) * nonzero) ** 2).sum(axes, keepdim=True) / n
            std = var.sqrt()
            return torch.where(nonzero.bool(), (x - mean) / torch.where(std > 0, std, 1), x)
        if self.normalization == "minmax":
            low, high = x.amin(axes, keepdim=True), x.amax(axes, keepdim=True)
            return (x - low) / torch.where(high > low, high - low, 1)
        return x


class ClassLogits(nn.Module):
    """Softmax logits whose channels are the BraTS ``labels`` listed, in segrobust's order."""

    def __init__(self, labels: Sequence[int]):
        super().__init__()
        if sorted(labels) != sorted(BRATS_LABELS):
            raise ValueError(f"output.labels must order {list(BRATS_LABELS)}, got {labels}")
        self.order = [list(labels).index(label) for label in BRATS_LABELS]

    def forward(self, logits: Tensor) -> Tensor:
        return logits[:, self.order]


class RegionLogits(nn.Module):
    """4-class logits from one sigmoid logit per nested region (TC, WT, ET in ``regions`` order).

    With s_r = logit_r − logit(t): z_ET = s_ET, z_NCR = min(−s_ET, s_TC),
    z_ED = min(−s_ET, −s_TC, s_WT), z_BG = min(−s_ET, −s_TC, −s_WT). Exactly one z is positive
    (ties aside), the class of the thresholded label map; every z is piecewise linear in the
    network's logits, so the attack losses have a gradient.
    """

    def __init__(self, regions: Sequence[str], threshold: float = 0.5):
        super().__init__()
        if sorted(regions) != sorted(REGION_CHANNELS):
            raise ValueError(f"output.regions must order {list(REGION_CHANNELS)}, got {regions}")
        if not 0 < threshold < 1:
            raise ValueError(f"output.threshold must be in (0, 1), got {threshold}")
        self.index = {r: list(regions).index(r) for r in REGION_CHANNELS}
        self.offset = math.log(threshold / (1 - threshold))

    def forward(self, logits: Tensor) -> Tensor:
        s = {r: logits[:, i] - self.offset for r, i in self.index.items()}
        tc, wt, et = s["TC"], s["WT"], s["ET"]
        ncr = torch.minimum(-et, tc)
        edema = torch.minimum(torch.minimum(-et, -tc), wt)
        background = torch.minimum(torch.minimum(-et, -tc), -wt)
        return torch.stack([background, ncr, edema, et], dim=1)


def output_adapter(output: Mapping[str, Any]) -> nn.Module:
    """:class:`ClassLogits` or :class:`RegionLogits` for an ``output`` config entry."""
    if output.get("type") == "softmax":
        return ClassLogits(output.get("labels", BRATS_LABELS))
    if output.get("type") == "sigmoid":
        return RegionLogits(output.get("regions", REGION_CHANNELS), output.get("threshold", 0.5))
    raise ValueError(f"output.type must be softmax or sigmoid, got {output.get('type')!r}")


# --------------------------------------------------------------------------- the pipeline


class SlidingWindow(nn.Module):
    """``network`` over overlapping windows of ``roi_size``, stitched (differentiably)."""

    def __init__(
        self,
        network: nn.Module,
        roi_size: Sequence[int],
        overlap: float = 0.25,
        mode: str = "constant",
        sw_batch_size: int = 1,
    ):
        super().__init__()
        if len(roi_size) != 3 or min(roi_size) < 1:
            raise ValueError(f"inference.roi_size must be three sizes >= 1, got {roi_size}")
        if not 0 <= overlap < 1:
            raise ValueError(f"inference.overlap must be in [0, 1), got {overlap}")
        if mode not in BLEND_MODES:
            raise ValueError(f"inference.mode must be one of {BLEND_MODES}, got {mode!r}")
        self.network = network
        self.roi_size = [int(s) for s in roi_size]
        self.overlap, self.mode, self.sw_batch_size = float(overlap), mode, int(sw_batch_size)

    def _window(self, x: Tensor) -> Tensor:
        # a copy: MONAI weights the window output in place, which must not touch a tensor the
        # network's backward needs
        return self.network(x).clone()

    def forward(self, x: Tensor) -> Tensor:
        from monai.inferers import sliding_window_inference  # MONAI's import time: used here only

        return sliding_window_inference(
            x, self.roi_size, self.sw_batch_size, self._window, overlap=self.overlap,
            mode=self.mode,
        )  # fmt: skip


def wrap(network: nn.Module, settings: Mapping[str, Any] | None = None) -> nn.Module:
    """``network`` with the steps of the module docstring that ``settings`` asks for.

    Keys (all optional): ``roi_size`` (null: the whole volume in one forward), ``overlap``,
    ``mode``, ``sw_batch_size``; external models also ``modalities``, ``normalization`` and
    ``output``. Without any, ``network`` itself is returned.
    """
    settings = dict(settings or {})
    steps = []
    normalization = settings.get("normalization") or "none"
    if settings.get("modalities") is not None or normalization != "none":
        steps.append(InputAdapter(settings.get("modalities"), normalization))
    if settings.get("roi_size") is not None:
        steps.append(SlidingWindow(
            network, settings["roi_size"], settings.get("overlap", 0.25),
            settings.get("mode", "constant"), settings.get("sw_batch_size", 1),
        ))  # fmt: skip
    else:
        steps.append(network)
    if settings.get("output") is not None:
        steps.append(output_adapter(settings["output"]))
    if len(steps) == 1:
        return steps[0]
    pipeline = nn.Sequential(*steps).eval()
    pipeline.voxel_spacing = getattr(network, "voxel_spacing", None)
    return pipeline


SPACING_TOLERANCE = 0.05  # relative; beyond it a fixed-resolution model sees another scale


def check_spacing(model: nn.Module, spacing: Sequence[float], subject: str) -> None:
    """Check ``subject``'s voxel spacing (mm) against the one ``model`` was trained at (its
    ``voxel_spacing`` attribute; models without one take any grid). nnU-Net resamples to it;
    segrobust does not, so a grid more than :data:`SPACING_TOLERANCE` off is refused
    (ValueError naming ``preprocess.shape``) and any difference is logged: BraTS' 155 slices
    at 1 mm, for one, fit no network depth's divisibility, and 160 slices are 3 % finer."""
    expected = getattr(model, "voxel_spacing", None)
    if expected is None or np.allclose(spacing, expected, rtol=1e-3):
        return
    message = (
        f"subject {subject}: voxel spacing {tuple(round(float(s), 4) for s in spacing)} mm, "
        f"the model was trained at {tuple(expected)} mm"
    )
    if not np.allclose(spacing, expected, rtol=SPACING_TOLERANCE):
        raise ValueError(f"{message}; choose preprocess.shape so the grid keeps that spacing")
    logger.warning("%s (within %g %%, not resampled)", message, 100 * SPACING_TOLERANCE)
