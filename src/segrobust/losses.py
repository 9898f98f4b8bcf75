"""The supplement's soft Dice loss and the variants that train from scratch.

D = (1/N) Σ_{i=1}^{N-1} (2 Σ F·Y + γ) / (Σ F + Σ Y + γ), loss = 1 − D, with F = softmax(z / T)
and Y a one-hot truth or a teacher's probabilities (defensive distillation). Sums run over the
voxels of each sample; D is averaged over the batch. Variants ("paper" alone collapsed when
training from scratch: docs/pipeline.md, "Loss"):

- ``paper``: classes 1..N-1 summed and divided by N, as printed (a perfect prediction scores
  D = (N-1)/N, loss 1/N);
- ``with_background``: mean over all N classes;
- ``with_background_ce``: ``with_background`` plus cross-entropy (soft for soft targets), at T.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

LOSS_VARIANTS = ("paper", "with_background", "with_background_ce")


def one_hot(classes: Tensor, n_classes: int) -> Tensor:
    """(B, *spatial) integer class map → (B, n_classes, *spatial) float32 one-hot."""
    if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
        raise ValueError(f"class map must have an integer dtype, got {classes.dtype}")
    if classes.numel() and (classes.min() < 0 or classes.max() >= n_classes):
        raise ValueError(
            f"class map values must lie in 0..{n_classes - 1}, "
            f"got range {int(classes.min())}..{int(classes.max())}"
        )
    return F.one_hot(classes.long(), n_classes).movedim(-1, 1).float()


def soft_dice(probs: Tensor, target: Tensor, gamma: float, include_background: bool) -> Tensor:
    """Soft Dice D of probabilities vs one-hot or soft ``target``, both (B, C, *spatial).

    ``include_background``: mean over all C classes; otherwise classes 1..C-1 summed and divided
    by C (the supplement's formula). Returns the batch mean (scalar).
    """
    if probs.shape != target.shape or probs.ndim < 3:
        raise ValueError(
            f"probs and target must share a shape (B, C, *spatial), got "
            f"{tuple(probs.shape)} and {tuple(target.shape)}"
        )
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    dims = tuple(range(2, probs.ndim))
    intersection = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    per_class = (2 * intersection + gamma) / (total + gamma)  # (B, C)
    if include_background:
        return per_class.mean(1).mean()
    return (per_class[:, 1:].sum(1) / probs.shape[1]).mean()


def _target_probabilities(target: Tensor, logits: Tensor) -> Tensor:
    """Turn a class map (B, *spatial) or probabilities (B, C, *spatial) into float32 (B, C, ...)."""
    n_classes = logits.shape[1]
    if not target.is_floating_point():
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(
                f"class-map target must have shape {tuple(logits.shape[:1] + logits.shape[2:])} "
                f"for logits {tuple(logits.shape)}, got {tuple(target.shape)}"
            )
        return one_hot(target, n_classes)
    if target.shape != logits.shape:
        raise ValueError(
            f"probability target must have the logits' shape {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if target.min() < 0 or target.max() > 1:
        raise ValueError("probability target values must lie in [0, 1]")
    return target.float()


def segmentation_loss(
    logits: Tensor,
    target: Tensor,
    variant: str = "paper",
    gamma: float = 1e-5,
    temperature: float = 1.0,
) -> Tensor:
    """Training/attack loss of ``logits`` (B, C, *spatial) against ``target``.

    ``target`` is an integer class map (B, *spatial) or float probabilities (B, C, *spatial)
    (one-hot or a teacher's soft labels). Computed in float32 even under autocast.
    """
    if variant not in LOSS_VARIANTS:
        raise ValueError(f"loss variant must be one of {LOSS_VARIANTS}, got {variant!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.ndim < 3:
        raise ValueError(f"logits must have shape (B, C, *spatial), got {tuple(logits.shape)}")
    target = _target_probabilities(target, logits)
    with torch.autocast(logits.device.type, enabled=False):
        scaled = logits.float() / temperature
        dice = soft_dice(scaled.softmax(1), target, gamma, include_background=variant != "paper")
        loss = 1 - dice
        if variant == "with_background_ce":
            loss = loss + F.cross_entropy(scaled, target)
    return loss
