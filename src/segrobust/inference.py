"""The forward that evaluation and every attack run: input adaptation, network, output logits.

:func:`wrap` composes one ``nn.Module`` from a loaded network and the plain-data ``inference``
settings of its model (config ``inference:``, or an external model's own), so the attacks
differentiate through the whole pipeline, never window by window:

1. the input as the model expects it (external models: modality order, intensity
   normalisation; :class:`segrobust.external.InputAdapter`);
2. the network, over sliding windows when ``roi_size`` is set (MONAI's
   ``sliding_window_inference``: windows of ``roi_size`` overlapping by the fraction
   ``overlap``, blended with ``mode`` "constant" or "gaussian" weights, ``sw_batch_size``
   windows per forward) — for networks trained on patches smaller than the volume;
3. the output as 4-class logits (external models: softmax channel order, or TC/WT/ET sigmoid
   channels; :func:`segrobust.external.output_adapter`).
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from segrobust.external import InputAdapter, output_adapter

logger = logging.getLogger(__name__)

BLEND_MODES: tuple[str, ...] = ("constant", "gaussian")


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
