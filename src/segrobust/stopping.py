"""The stopping rule of training, declared before it runs and the same for every strategy.

With ``patience`` None the fixed schedule of ``epochs`` runs and the model keeps the last
epoch's weights. With ``patience`` = P, training stops after the first epoch that ends P epochs
in a row without an improvement of the validation score (:func:`validation_score`: mean Dice of
WT, TC and ET over the validation subjects) by more than ``min_delta`` over the best so far, or
after ``epochs`` (then a maximum); the model keeps the weights of the best epoch. Everything the
rule needs besides those weights derives from the per-epoch scores (:func:`stopping_state`), so
a training log plus the best weights resume it exactly. Pure functions; the loop is
:func:`segrobust.training.train`.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segrobust.labels import REGIONS


@dataclass(frozen=True)
class Stopping:
    """The stopping rule's state after an epoch (module docstring)."""

    best_epoch: int | None  # None while no epoch had a finite validation score
    best_score: float
    without_improvement: int


def validation_score(dice: Mapping[str, float]) -> float:
    """The score the stopping rule follows: mean validation Dice of the regions (WT, TC, ET)."""
    return float(np.mean([dice[r] for r in REGIONS]))


def stopping_state(scores: Sequence[float], min_delta: float) -> Stopping:
    """The rule's state after epochs 1..len(scores) with these validation scores.

    An epoch improves if its score exceeds the best so far by more than ``min_delta``
    (the first finite score always does); it then becomes the best epoch.
    """
    best_epoch, best, without = None, -math.inf, 0
    for epoch, score in enumerate(scores, start=1):
        if math.isfinite(score) and score > best + min_delta:
            best_epoch, best, without = epoch, score, 0
        else:
            without += 1
    return Stopping(best_epoch, best, without)


def should_stop(state: Stopping, patience: int | None) -> bool:
    """Whether the rule stops after an epoch that left ``state`` (never without a patience)."""
    return patience is not None and state.without_improvement >= patience


def stopping_record(
    log: Sequence[Mapping[str, Any]], patience: int | None, min_delta: float, max_epochs: int
) -> dict:
    """What a model records about how its training stopped and whose weights it keeps.

    ``log``: the training log's rows (key ``val_dice_mean``), one per epoch run.
    """
    state = stopping_state([row["val_dice_mean"] for row in log], min_delta)
    best = state.best_epoch
    return {
        "rule": "fixed" if patience is None else "patience",
        "patience": patience,
        "min_delta": min_delta,
        "max_epochs": max_epochs,
        "stopped_epoch": len(log),
        "reason": "patience" if should_stop(state, patience) else "max_epochs",
        "best_epoch": best,
        "best_val_dice_mean": None if best is None else state.best_score,
        "weights_epoch": len(log) if patience is None else best,
    }


def stopping_line(record: Mapping[str, Any]) -> str:
    """The log's closing line: where training stopped, why, and whose weights the model keeps."""
    best = record["best_epoch"]
    score = "" if best is None else f" (mean val Dice {record['best_val_dice_mean']:.3f})"
    if record["rule"] == "fixed":
        return (
            f"trained the fixed {record['stopped_epoch']} epochs; best epoch {best}{score}; "
            "the model keeps the last epoch's weights"
        )
    why = (
        f"no improvement of mean val Dice by more than {record['min_delta']} for "
        f"{record['patience']} epochs"
        if record["reason"] == "patience"
        else "the maximum number of epochs"
    )
    return (
        f"stopped after epoch {record['stopped_epoch']} of at most {record['max_epochs']} ({why}); "
        f"the model keeps the weights of the best epoch {best}{score}"
    )
