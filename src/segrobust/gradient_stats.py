"""Gradient-masking symptoms of a model on the test subjects: zero input gradients, saturation.

Sign attacks (FGSM, i-FGSM, PGD) step along sign(∇ₓ loss); where that gradient is exactly zero
they do not move at all. Two shares per subject, over its brain voxels (``mask.npy``):

- ``zero_gradient``: input elements (voxel × modality) whose gradient of the attacks' loss
  (``attacks.loss``, ``attacks.gamma``, at T = 1) is exactly 0 in the precision the attacks run
  (``zero_gradient_tempered``: the same through logits / T, for a distilled student);
- ``saturated``: voxels whose largest softmax probability is exactly 1.0 in float32, where the
  softmax Jacobian underflows to zero (a network distilled at T and deployed at T = 1).

:mod:`segrobust.audit` flags a model whose mean share exceeds a threshold.
"""

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from segrobust import attacks as atk
from segrobust.data import open_volume
from segrobust.inference import check_spacing
from segrobust.losses import segmentation_loss
from segrobust.models.device import autocast
from segrobust.surface import voxel_spacing

GRADIENT_COLUMNS: list[str] = [
    "model", "seed", "subject", "temperature", "n_voxels",
    "zero_gradient", "zero_gradient_tempered", "saturated", "precision", "kernel",
]  # fmt: skip


def gradient_stats(
    model: nn.Module, x: Tensor, target: Tensor, loss_fn: atk.LossFn, mask: Tensor | None = None
) -> dict[str, float]:
    """Shares of exactly-zero input gradients and of saturated softmax voxels of one batch.

    ``x`` (B, C, *spatial), ``target`` (B, *spatial), ``mask`` (B, 1, *spatial) bool: the
    voxels counted (all when None). The model must be in the mode it is attacked in (eval).
    """
    objective = lambda logits, t, step: atk.per_sample_loss(loss_fn, logits, t)  # noqa: E731
    grad, logits = atk.input_gradient(model, x, target, objective)
    saturated = torch.softmax(logits.float(), dim=1).amax(dim=1, keepdim=True) == 1.0
    zero = grad == 0
    if mask is None:
        mask = torch.ones_like(saturated)
    n_voxels = int(mask.sum())
    if n_voxels == 0:
        raise ValueError("the mask selects no voxel")
    return {
        "n_voxels": n_voxels,
        "zero_gradient": float((zero & mask).sum() / (n_voxels * x.shape[1])),
        "saturated": float((saturated & mask).sum() / n_voxels),
    }


def evaluate_gradients(
    model: nn.Module,
    model_name: str,
    subject_dirs: Sequence[str | Path],
    settings: Mapping,
    device: torch.device,
    *,
    amp: bool = False,
    temperature: float = 1.0,
    tags: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """:func:`gradient_stats` of ``model`` on each subject (one row each, :data:`GRADIENT_COLUMNS`).

    ``settings``: the ``attacks`` config (``loss``, ``gamma``). With ``temperature`` ≠ 1 the
    zero-gradient share is also taken through logits / T (``zero_gradient_tempered``; NaN
    otherwise). ``tags`` (``seed``, ``precision``, ``kernel``) go into every row.
    """
    if not 0 < temperature < float("inf"):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    loss = partial(segmentation_loss, variant=settings["loss"], gamma=settings["gamma"])
    model.eval()
    rows = []
    for directory in map(Path, subject_dirs):
        volume = open_volume(directory)
        check_spacing(model, voxel_spacing(directory), volume.name)
        x = torch.from_numpy(np.array(volume.image))[None].to(device)
        y = torch.from_numpy(np.array(volume.label))[None].to(device).long()
        mask = torch.from_numpy(np.load(directory / "mask.npy"))[None, None].to(device)
        with autocast(device, amp):
            stats = gradient_stats(model, x, y, loss, mask)
            tempered = np.nan
            if temperature != 1.0:
                tempered_loss = atk.with_temperature(loss, temperature)
                tempered = gradient_stats(model, x, y, tempered_loss, mask)["zero_gradient"]
        rows.append({
            "model": model_name, "subject": volume.name, "temperature": float(temperature),
            **stats, "zero_gradient_tempered": tempered, **(tags or {}),
        })  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=GRADIENT_COLUMNS)
