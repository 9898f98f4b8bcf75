"""Tests of the stopping rule (the training loop's use of it: tests/test_training.py)."""

import math

import pytest

from segrobust.stopping import (
    should_stop,
    stopping_line,
    stopping_record,
    stopping_state,
    validation_score,
)


@pytest.mark.parametrize(
    ("scores", "min_delta", "expected"),
    [
        ([0.5, 0.6, 0.6, 0.59], 0.0, (2, 0.6, 2)),  # a tie is no improvement
        ([0.5, 0.6, 0.6, 0.59, 0.7], 0.0, (5, 0.7, 0)),
        ([0.5, 0.54, 0.56, 0.6], 0.05, (3, 0.56, 1)),  # measured from the best, not the last
        ([0.5, 0.4, 0.3], 0.0, (1, 0.5, 2)),
        ([math.nan, 0.2, math.nan], 0.0, (2, 0.2, 1)),
        ([math.nan, math.nan], 0.0, (None, -math.inf, 2)),  # no validation subjects
        ([], 0.0, (None, -math.inf, 0)),
    ],
)
def test_stopping_state_known_answers(scores, min_delta, expected):
    state = stopping_state(scores, min_delta)
    assert (state.best_epoch, state.best_score, state.without_improvement) == expected


def test_should_stop_after_patience_epochs_without_improvement_only_with_a_patience():
    state = stopping_state([0.5, 0.4, 0.45], 0.0)
    assert [should_stop(state, p) for p in (1, 2, 3, None)] == [True, True, False, False]


def test_validation_score_is_the_mean_of_the_three_regions():
    assert validation_score({"WT": 0.9, "TC": 0.6, "ET": 0.3, "other": 0.0}) == pytest.approx(0.6)
    with pytest.raises(KeyError):
        validation_score({"WT": 0.9, "TC": 0.6})


def rows(*scores):
    return [{"epoch": i + 1, "val_dice_mean": s} for i, s in enumerate(scores)]


def test_stopping_record_and_line():
    early = stopping_record(rows(0.5, 0.7, 0.6, 0.65), patience=2, min_delta=0.0, max_epochs=9)
    assert early == {
        "rule": "patience", "patience": 2, "min_delta": 0.0, "max_epochs": 9,
        "stopped_epoch": 4, "reason": "patience", "best_epoch": 2, "best_val_dice_mean": 0.7,
        "weights_epoch": 2,
    }  # fmt: skip
    assert stopping_line(early) == (
        "stopped after epoch 4 of at most 9 (no improvement of mean val Dice by more than 0.0 "
        "for 2 epochs); the model keeps the weights of the best epoch 2 (mean val Dice 0.700)"
    )
    at_max = stopping_record(rows(0.5, 0.7, 0.6), patience=2, min_delta=0.0, max_epochs=3)
    assert (at_max["reason"], at_max["weights_epoch"]) == ("max_epochs", 2)
    assert "(the maximum number of epochs)" in stopping_line(at_max)
    fixed = stopping_record(rows(0.5, 0.7, 0.6), patience=None, min_delta=0.0, max_epochs=3)
    assert (fixed["rule"], fixed["reason"], fixed["best_epoch"], fixed["weights_epoch"]) == (
        "fixed", "max_epochs", 2, 3,
    )  # fmt: skip
    assert stopping_line(fixed) == (
        "trained the fixed 3 epochs; best epoch 2 (mean val Dice 0.700); "
        "the model keeps the last epoch's weights"
    )
