"""Tests of the training loop: strategies, determinism, stopping rule, SIGKILL resumption,
checkpoints, log."""

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from segrobust.attacks import fgsm, relative_scale
from segrobust.labels import MODALITIES, labels_to_classes
from segrobust.losses import segmentation_loss
from segrobust.models.checkpoints import load_model
from segrobust.models.device import autocast, use_amp
from segrobust.models.unet import UNet3D
from segrobust.preprocessing import brain_mask, standardise
from segrobust.strategies import StepContext, adversarial_step, noise_step, pgd_adversarial_step
from segrobust.synthetic import make_subject
from segrobust.training import (
    LOG_COLUMNS,
    CheckpointError,
    TrainSettings,
    augment,
    epoch_line,
    load_checkpoint,
    open_volume,
    train,
)

SHAPE = (16, 16, 16)
NET = {"name": "UNet3D", "kwargs": {"base_filters": 4, "depth": 3}}
TINY = {"architecture": NET, "lr": 3e-3, "epochs": 3}
PGD = {"strategy": "pgd_adversarial", "epsilon": 0.05, "pgd_steps": 3, "pgd_step_size": 0.04}


def write_subject(directory: Path, rng: np.random.Generator, grade: str) -> Path:
    """A synthetic subject in the preprocessed format (z-scored in the brain, classes 0..3)."""
    images, labels = make_subject(rng, SHAPE, grade)
    image = np.stack([images[m] for m in MODALITIES]).astype(np.float32)
    mask = brain_mask(image)
    directory.mkdir(parents=True)
    np.save(directory / "image.npy", standardise(image, mask))
    np.save(directory / "label.npy", labels_to_classes(labels))
    np.save(directory / "mask.npy", mask)
    return directory


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    """Six training and two validation subjects."""
    root = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(7)
    dirs = [write_subject(root / f"s{i}", rng, ("HGG", "LGG")[i % 2]) for i in range(8)]
    return dirs[:6], dirs[6:]


def run(settings: TrainSettings, cohort, out: Path, teacher: Path | None = None) -> dict:
    """Train into ``out`` (created); return the final state dict."""
    train(settings, *cohort, out / "model.pt", out / "log.csv", out / "ckpt.pt", teacher, "cpu")
    return load_model(out / "model.pt")[0].state_dict()


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------------------------------------
# settings


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"strategy": "mixup"}, "strategy"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"loss_variant": "focal"}, "loss_variant"),
        ({"temperature": 20.0}, "temperature"),  # baseline: T must be 1
        ({"strategy": "distill_teacher", "temperature": 0.0}, "temperature"),
        ({"epsilon": 0.05}, "epsilon"),  # not adversarial
        ({"strategy": "adversarial"}, "epsilon"),  # adversarial needs ε > 0
        ({"strategy": "adversarial", "epsilon": -0.1}, "epsilon"),
        ({"alpha": 1.5}, "alpha"),
        ({"strategy": "noise", "noise_radius": 0.0}, "noise_radius"),
        ({"update": "interleaved"}, "update"),
        ({"example_mode": "test"}, "example_mode"),
        ({"strategy": "pgd_adversarial", "pgd_steps": 3, "pgd_step_size": 0.02}, "epsilon"),
        ({"strategy": "pgd_adversarial", "epsilon": 0.05, "pgd_step_size": 0.02}, "pgd_steps"),
        ({"strategy": "pgd_adversarial", "epsilon": 0.05, "pgd_steps": 3}, "pgd_step_size"),
        ({"strategy": "pgd_adversarial", "epsilon": 0.05, "pgd_steps": 1.5}, "pgd_steps"),
        (PGD | {"pgd_step_size": -0.01}, "pgd_step_size"),
        (PGD | {"random_start": 1}, "random_start"),
        ({"pgd_steps": 3}, "pgd_steps"),  # not PGD training
        ({"strategy": "adversarial", "epsilon": 0.05, "random_start": False}, "random_start"),
        ({"augment": "yes"}, "augment"),
        ({"amp": "fp16"}, "amp"),
        ({"conv_kernel": "im2col"}, "conv_kernel"),
        ({"architecture": {"name": "ResNet50", "kwargs": {}}}, "architecture"),
        ({"architecture": {"network": "UNet3D"}}, "architecture"),
        ({"patience": 0}, "patience"),
        ({"patience": 2.0}, "patience"),
        ({"patience": 2, "min_delta": -0.01}, "min_delta"),
        ({"patience": 2, "min_delta": math.inf}, "min_delta"),
        ({"min_delta": 0.01}, "min_delta"),  # meaningless on the fixed schedule
    ],
)
def test_invalid_settings_name_the_field(changes, field):
    values = {"strategy": "baseline", "epochs": 1, "lr": 1e-4} | changes
    with pytest.raises(ValueError, match=rf"TrainSettings\.{field}\b"):
        TrainSettings(**values)


def test_settings_from_dict_rejects_unknown_and_missing_keys():
    good = {"strategy": "adversarial", "epochs": 2, "lr": 1e-4, "epsilon": 0.01}
    assert TrainSettings.from_dict(good) == TrainSettings(**good)
    with pytest.raises(ValueError, match="unknown training settings.*'epsllon'"):
        TrainSettings.from_dict({**good, "epsllon": 0.1})
    with pytest.raises(ValueError, match="lack required.*'lr'"):
        TrainSettings.from_dict({"strategy": "baseline", "epochs": 2})


def test_teacher_is_required_by_students_only(cohort, tmp_path):
    student = TrainSettings(strategy="distill_student", temperature=5.0, **TINY)
    with pytest.raises(ValueError, match="needs a teacher"):
        train(student, *cohort, tmp_path / "m.pt", tmp_path / "l.csv", tmp_path / "c.pt")
    baseline = TrainSettings(strategy="baseline", **TINY)
    with pytest.raises(ValueError, match="only used by 'distill_student'"):
        train(baseline, *cohort, tmp_path / "m.pt", tmp_path / "l.csv", tmp_path / "c.pt",
              teacher=tmp_path / "t.pt")  # fmt: skip
    with pytest.raises(ValueError, match="train_dirs is empty"):
        train(baseline, [], [], tmp_path / "m.pt", tmp_path / "l.csv", tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"training\.patience = 2 .* no validation subjects"):
        train(replace(baseline, patience=2), cohort[0], [], tmp_path / "m.pt",
              tmp_path / "l.csv", tmp_path / "c.pt")  # fmt: skip


def test_bad_training_data_names_the_file(tmp_path):
    directory = tmp_path / "s0"
    directory.mkdir()
    np.save(directory / "image.npy", np.zeros((4, 8, 8, 8), np.float32))
    np.save(directory / "label.npy", np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match=r"s0/label\.npy must be uint8"):
        open_volume(directory)
    (directory / "image.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"cannot read .*s0/image\.npy"):
        open_volume(directory)


# ---------------------------------------------------------------------------------------------
# augmentation


def test_augment_gives_the_eight_axial_symmetries():
    a = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    results = [augment(a, turns, flip) for turns in range(4) for flip in (False, True)]
    assert len({r.tobytes() for r in map(np.ascontiguousarray, results)}) == 8
    for r in results:
        assert r.shape == a.shape
        # axial slices (last axis) map onto themselves, channels are untouched
        for c in range(2):
            for z in range(3):
                assert sorted(r[c, ..., z].ravel()) == sorted(a[c, ..., z].ravel())
    # flip + quarter turn = transpose of the axial plane
    assert np.array_equal(augment(a, 1, True), a.transpose(0, 2, 1, 3))


# ---------------------------------------------------------------------------------------------
# steps


def step_context(model: torch.nn.Module, optimizer=None, seed: int = 0) -> StepContext:
    return StepContext(
        optimizer or torch.optim.Adam(model.parameters(), lr=1e-3),
        partial(segmentation_loss, variant="with_background"),
        partial(autocast, torch.device("cpu"), False),
        torch.Generator().manual_seed(seed),
    )


def batch(cohort, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, label) of one training subject as a batch of one."""
    volume = open_volume(cohort[0][index])
    return tuple(torch.from_numpy(np.array(a))[None] for a in (volume.image, volume.label))


@pytest.mark.parametrize("update", ["accumulate", "sequential"])
def test_adversarial_step_uses_fgsm_input_at_the_budget(cohort, update):
    torch.manual_seed(0)
    model = UNet3D(base_filters=4, depth=3, dropout=0.0)
    image, label = batch(cohort)
    before = [p.detach().clone() for p in model.parameters()]
    result = adversarial_step(
        model, image, label, step_context(model), epsilon=0.05, alpha=0.5, update=update
    )
    distance = (result.perturbed - image).abs().amax(dim=(2, 3, 4), keepdim=True)
    torch.testing.assert_close(distance, 0.05 * relative_scale(image), rtol=1e-5, atol=0)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("example_mode", ["eval", "train"])  # no dropout: the same example
def test_accumulated_adversarial_update_is_the_gradient_of_the_weighted_loss(cohort, example_mode):
    """SGD(lr=1): the update equals −∇θ[α·L(x) + (1 − α)·L(x_adv)], x_adv from the step."""
    torch.manual_seed(1)
    model = UNet3D(base_filters=4, depth=3, dropout=0.0)
    image, label = batch(cohort, 1)
    alpha = 0.3
    reference = UNet3D(base_filters=4, depth=3, dropout=0.0)
    reference.load_state_dict(model.state_dict())
    result = adversarial_step(
        model, image, label,
        step_context(model, torch.optim.SGD(model.parameters(), lr=1.0)),
        epsilon=0.05, alpha=alpha, example_mode=example_mode,
    )  # fmt: skip
    combined = alpha * segmentation_loss(reference(image), label, "with_background") + (
        1 - alpha
    ) * segmentation_loss(reference(result.perturbed), label, "with_background")
    grads = torch.autograd.grad(combined, list(reference.parameters()))
    for p_ref, g, p_new in zip(reference.parameters(), grads, model.parameters(), strict=True):
        torch.testing.assert_close(p_new, p_ref - g, rtol=1e-4, atol=1e-6)
    assert result.loss == pytest.approx(float(combined.detach()), rel=1e-5)
    # the adversarial input really is FGSM at the weights before the update
    x = image.clone().requires_grad_(True)
    (g_x,) = torch.autograd.grad(segmentation_loss(reference(x), label, "with_background"), x)
    expected = image + 0.05 * relative_scale(image) * g_x.sign()
    assert torch.equal(result.perturbed, expected)


def test_example_mode_decides_whether_dropout_shapes_the_example(cohort):
    """With dropout, train-mode examples differ from eval-mode ones and from each other (new
    masks); eval-mode examples are the attacks' FGSM; the model is left in train mode."""
    image, label = batch(cohort)
    examples = {}
    for mode, seed in (("eval", 0), ("train", 0), ("train", 1)):
        torch.manual_seed(0)
        model = UNet3D(base_filters=4, depth=3, dropout=0.5).train()
        ctx = step_context(model, torch.optim.SGD(model.parameters(), lr=0.0))
        torch.manual_seed(seed)
        examples[mode, seed] = adversarial_step(
            model, image, label, ctx, epsilon=0.05, alpha=0.5, update="sequential",
            example_mode=mode,
        ).perturbed  # fmt: skip
        assert model.training
    reference = fgsm(model, image, label, partial(segmentation_loss, variant="with_background"),
                     0.05)  # fmt: skip
    assert torch.equal(examples["eval", 0], reference)
    assert not torch.equal(examples["train", 0], examples["eval", 0])
    assert not torch.equal(examples["train", 0], examples["train", 1])


@pytest.mark.parametrize(
    ("update", "example_mode"),
    [("accumulate", "eval"), ("sequential", "eval"), ("accumulate", "train")],
)
def test_pgd_step_changes_the_weights_with_an_example_in_the_ball(cohort, update, example_mode):
    image, label = batch(cohort)
    torch.manual_seed(0)
    model = UNet3D(base_filters=4, depth=3, dropout=0.3)
    before = [p.detach().clone() for p in model.parameters()]
    perturbed = []
    for generator_seed in (3, 3, 4):
        model.load_state_dict(dict(zip(model.state_dict(), before, strict=True)))
        result = pgd_adversarial_step(
            model, image, label, step_context(model, seed=generator_seed), epsilon=0.05,
            step_size=2.5 * 0.05 / 3, steps=3, alpha=0.5, update=update, example_mode=example_mode,
        )  # fmt: skip
        perturbed.append(result.perturbed)
        assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    bound = 0.05 * relative_scale(image)
    distance = (perturbed[0] - image).abs()
    assert (distance <= bound * (1 + 1e-5)).all()
    # PGD moved off the uniform start (mean |δ| = ε/2) towards the boundary of the ball
    on_boundary = (distance >= bound * (1 - 1e-5)).float().mean()
    assert on_boundary > 0.2 and (distance / bound).mean() > 0.6, (on_boundary, distance.mean())
    if example_mode == "eval":  # the random start comes from the step's generator
        assert torch.equal(perturbed[0], perturbed[1])
    assert not torch.equal(perturbed[0], perturbed[2])


@pytest.mark.parametrize("update", ["accumulate", "sequential"])
def test_one_pgd_step_of_size_eps_from_x_is_the_fgsm_step(cohort, update):
    """Without random start, k = 1 and α = ε, PGD training is FGSM training (same weights)."""
    image, label = batch(cohort, 3)
    results, weights = [], []
    for step, kwargs in (
        (adversarial_step, {}),
        (pgd_adversarial_step, {"step_size": 0.05, "steps": 1, "random_start": False}),
    ):
        torch.manual_seed(0)
        model = UNet3D(base_filters=4, depth=3, dropout=0.3)
        torch.manual_seed(1)  # the same dropout masks in the training passes
        results.append(step(model, image, label, step_context(model), epsilon=0.05, alpha=0.3,
                            update=update, **kwargs))  # fmt: skip
        weights.append(model.state_dict())
    torch.testing.assert_close(results[1].perturbed, results[0].perturbed, rtol=0, atol=1e-6)
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], rtol=1e-5, atol=1e-6)
    assert results[1].loss == pytest.approx(results[0].loss, rel=1e-5)


def test_sequential_update_steps_on_the_perturbed_then_the_clean_batch(cohort):
    """SGD(lr=1): θ1 = θ0 − (1 − α)·∇L(x'; θ0), then θ2 = θ1 − α·∇L(x; θ1)."""
    torch.manual_seed(2)
    model = UNet3D(base_filters=4, depth=3, dropout=0.0)
    reference = UNet3D(base_filters=4, depth=3, dropout=0.0)
    reference.load_state_dict(model.state_dict())
    image, label = batch(cohort, 2)
    alpha = 0.3
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    result = noise_step(
        model, image, label, step_context(model, sgd), radius=0.01, alpha=alpha,
        update="sequential",
    )  # fmt: skip
    with torch.no_grad():
        for x, weight in ((result.perturbed, 1 - alpha), (image, alpha)):
            with torch.enable_grad():
                loss = segmentation_loss(reference(x), label, "with_background")
                grads = torch.autograd.grad(weight * loss, list(reference.parameters()))
            for p, g in zip(reference.parameters(), grads, strict=True):
                p -= g
    for p_ref, p_new in zip(reference.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p_new, p_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("update", ["accumulate", "sequential"])
def test_noise_step_stays_within_the_radius_and_is_seeded(cohort, update):
    image, label = batch(cohort)
    perturbations = []
    for _ in range(2):
        torch.manual_seed(0)
        model = UNet3D(base_filters=4, depth=3, dropout=0.0)
        result = noise_step(
            model, image, label, step_context(model, seed=3), radius=0.01, alpha=0.5, update=update
        )
        perturbations.append(result.perturbed - image)
    bound = 0.01 * relative_scale(image)
    assert (perturbations[0].abs() <= bound * (1 + 1e-6)).all()
    assert (perturbations[0].abs() > 0.5 * bound).any()  # uniform over the whole ball
    assert torch.equal(perturbations[0], perturbations[1])


# ---------------------------------------------------------------------------------------------
# the loop


def test_same_settings_give_identical_weights_and_a_new_seed_different_ones(cohort, tmp_path):
    settings = TrainSettings(strategy="noise", **TINY)
    first = run(settings, cohort, tmp_path / "a")
    assert_same_weights(first, run(settings, cohort, tmp_path / "b"))
    other = run(replace(settings, seed=1), cohort, tmp_path / "c")
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_log_model_extra_and_checkpoint_after_completion(cohort, tmp_path):
    settings = TrainSettings(strategy="baseline", **TINY)
    weights = run(settings, cohort, tmp_path)
    rows = read_log(tmp_path / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert tuple(rows[0]) == LOG_COLUMNS
    for row in rows:
        dice = [float(row[f"val_dice_{r}"]) for r in ("WT", "TC", "ET")]
        assert all(0 <= d <= 1 for d in dice)
        assert float(row["val_dice_mean"]) == pytest.approx(sum(dice) / 3)
        assert float(row["seconds"]) > 0
    scores = [float(row["val_dice_mean"]) for row in rows]
    best = scores.index(max(scores)) + 1
    assert int(rows[-1]["best_epoch"]) == best
    assert int(rows[-1]["epochs_without_improvement"]) == 3 - best
    _, extra = load_model(tmp_path / "model.pt")
    assert extra["stopping"] == {
        "rule": "fixed", "patience": None, "min_delta": 0.0, "max_epochs": 3,
        "stopped_epoch": 3, "reason": "max_epochs", "best_epoch": best,
        "best_val_dice_mean": scores[best - 1], "weights_epoch": 3,
    }  # fmt: skip
    assert extra["settings"] == asdict(settings)
    assert extra["evaluation_temperature"] == 1.0 and extra["teacher"] is None
    assert [row["epoch"] for row in extra["log"]] == [1, 2, 3]
    # what ran on this CPU: amp "auto" trains bf16 (PyTorch's kernels) where bf16 is native
    bf16 = use_amp("auto", torch.device("cpu"))
    assert (extra["precision"], extra["kernel"]) == (
        ("bf16", "native") if bf16 else ("fp32", "onednn")
    )
    line = epoch_line(extra["log"], 3)
    assert line.startswith("epoch 3/3  loss ") and "val Dice WT " in line
    assert f"mean {scores[2]:.3f}  best epoch {best}  " in line
    assert line.endswith("~0 s left")
    line = epoch_line(extra["log"], 5, patience=4)
    assert f"best epoch {best}, {3 - best}/4 without improvement" in line
    assert line.endswith(f"<= {2 * np.mean([r['seconds'] for r in extra['log']]):.0f} s left")
    first = extra["log"][0]
    assert epoch_line([first], 3).endswith(f"~{2 * first['seconds']:.0f} s left")
    assert load_checkpoint(tmp_path / "ckpt.pt")["epoch"] == 3  # kept for a killed job's retry

    (tmp_path / "model.pt").unlink()  # as Snakemake does before retrying a failed job
    assert_same_weights(weights, run(settings, cohort, tmp_path))
    assert read_log(tmp_path / "log.csv") == rows  # no epoch trained again


def test_patience_stops_and_keeps_the_best_epochs_weights(cohort, tmp_path):
    settings = TrainSettings(strategy="baseline", patience=2, **(TINY | {"epochs": 30}))
    weights = run(settings, cohort, tmp_path / "patience")
    rows = read_log(tmp_path / "patience" / "log.csv")
    scores = [float(r["val_dice_mean"]) for r in rows]
    best = scores.index(max(scores)) + 1
    assert len(rows) == best + 2 < 30, scores  # stopped 2 epochs after its best
    for k in range(1, len(scores)):  # and no earlier: the best so far was never 2 epochs old
        assert k - (scores.index(max(scores[:k])) + 1) < 2, scores[:k]
    assert [int(r["best_epoch"]) for r in rows][-3:] == [best] * 3
    _, extra = load_model(tmp_path / "patience" / "model.pt")
    assert extra["stopping"] | {"best_val_dice_mean": None} == {
        "rule": "patience", "patience": 2, "min_delta": 0.0, "max_epochs": 30,
        "stopped_epoch": best + 2, "reason": "patience", "best_epoch": best,
        "best_val_dice_mean": None, "weights_epoch": best,
    }  # fmt: skip
    # the best epoch's weights: those of the fixed schedule stopped at that epoch
    assert_same_weights(weights, run(replace(settings, patience=None, epochs=best), cohort,
                                     tmp_path / "fixed"))  # fmt: skip
    last = run(replace(settings, patience=None, epochs=best + 2), cohort, tmp_path / "last")
    assert any(not torch.equal(weights[k], last[k]) for k in weights)

    # min_delta: an improvement must exceed it; the maximum number of epochs still applies
    run(replace(settings, min_delta=1.0), cohort, tmp_path / "delta")
    assert [int(r["best_epoch"]) for r in read_log(tmp_path / "delta" / "log.csv")] == [1] * 3
    run(replace(settings, patience=5, epochs=2), cohort, tmp_path / "max")
    assert load_model(tmp_path / "max" / "model.pt")[1]["stopping"]["reason"] == "max_epochs"


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-bf16"])
def test_amp_auto_trains_in_bf16_exactly_where_the_cpu_has_it(
    cohort, tmp_path, monkeypatch, native
):
    """With the CPU detector patched both ways, ``amp: auto`` trains the weights that
    ``amp: on`` (native bf16) or ``off`` trains, and records that precision."""
    monkeypatch.setattr("segrobust.models.device.cpu_has_native_bf16", lambda: native)
    settings = TrainSettings(strategy="baseline", **(TINY | {"epochs": 1}))
    auto = run(settings, cohort, tmp_path / "auto")
    assert load_model(tmp_path / "auto" / "model.pt")[1]["precision"] == (
        "bf16" if native else "fp32"
    )
    assert_same_weights(auto, run(replace(settings, amp="on" if native else "off"), cohort,
                                  tmp_path / "pinned"))  # fmt: skip
    other = run(replace(settings, amp="off" if native else "on"), cohort, tmp_path / "other")
    assert any(not torch.equal(auto[k], other[k]) for k in auto)  # the precision matters


@pytest.mark.parametrize(
    "changes",
    [
        {"strategy": "baseline"},
        {"strategy": "distill_teacher", "temperature": 2.0},
        {"strategy": "adversarial", "epsilon": 0.05},
        {"strategy": "adversarial", "epsilon": 0.05, "update": "sequential"},
        PGD,
        {"strategy": "noise"},
    ],
)
def test_each_strategy_reduces_the_training_loss(cohort, tmp_path, changes):
    settings = TrainSettings(**(TINY | {"epochs": 4} | changes))
    run(settings, cohort, tmp_path)
    losses = [float(r["train_loss"]) for r in read_log(tmp_path / "log.csv")]
    assert losses[-1] < losses[0] - 0.02, losses


def teacher_gap(student: torch.nn.Module, teacher: torch.nn.Module, cohort, t: float) -> float:
    """Mean |softmax(z_s/T) − softmax(z_t/T)| over the training volumes."""
    gaps = []
    with torch.no_grad():
        for d in cohort[0]:
            image = torch.from_numpy(np.array(open_volume(d).image))[None]
            gap = (student(image) / t).softmax(1) - (teacher(image) / t).softmax(1)
            gaps.append(float(gap.abs().mean()))
    return float(np.mean(gaps))


def test_student_learns_the_teachers_soft_labels(cohort, tmp_path):
    """The student's softmax(z/T) approaches the teacher's, unlike a net trained on labels.

    With the cross-entropy term: soft Dice alone is not minimised at F = Y for soft Y.
    """
    t = 5.0
    teacher_settings = TrainSettings(
        strategy="distill_teacher", temperature=t, loss_variant="with_background_ce", **TINY
    )
    run(teacher_settings, cohort, tmp_path / "teacher")
    teacher, _ = load_model(tmp_path / "teacher" / "model.pt")
    student_settings = replace(teacher_settings, strategy="distill_student", seed=1, epochs=4)
    run(student_settings, cohort, tmp_path / "student", tmp_path / "teacher" / "model.pt")
    on_labels = run(replace(student_settings, strategy="distill_teacher"), cohort, tmp_path / "l")
    student, extra = load_model(tmp_path / "student" / "model.pt")
    torch.manual_seed(0)
    nets = {
        "untrained": UNet3D(base_filters=4, depth=3).eval(),
        "labels": UNet3D(base_filters=4, depth=3).eval(),
    }
    nets["labels"].load_state_dict(on_labels)
    gap = teacher_gap(student, teacher, cohort, t)
    for name, net in nets.items():
        assert gap < 0.5 * teacher_gap(net, teacher, cohort, t), name
    assert extra["settings"]["temperature"] == t and extra["evaluation_temperature"] == 1.0
    assert extra["teacher"] == str((tmp_path / "teacher" / "model.pt").resolve())
    losses = [row["train_loss"] for row in extra["log"]]
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="trained at temperature 5.0"):
        run(replace(student_settings, temperature=2.0), cohort, tmp_path / "bad",
            tmp_path / "teacher" / "model.pt")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# fault tolerance

_CHILD = """
import json, sys, time, torch
torch.set_num_threads(1)
from segrobust import training
settings = training.TrainSettings(**json.loads(sys.argv[4]))
out, cue = sys.argv[1], int(sys.argv[5])
epoch = training._train_epoch
trained = []


def epoch_then_wait(*args, **kwargs):  # the kill's cue: epoch `cue` trained, not checkpointed
    trained.append(epoch(*args, **kwargs))
    if len(trained) == cue:
        open(out + f"/epoch{cue}-trained", "w").close()
        time.sleep(3600)
    return trained[-1]


training._train_epoch = epoch_then_wait
training.train(settings, sys.argv[2].split(","), sys.argv[3].split(","), out + "/model.pt",
               out + "/log.csv", out + "/ckpt.pt", device="cpu")
"""


@pytest.mark.parametrize(
    "strategy",
    [
        {"strategy": "noise"},
        PGD | {"update": "sequential"},  # random starts: seeded per epoch
        # stops after epoch 4 of 6 (epoch 1 stays the best) and keeps epoch 1's weights; killed
        # after epoch 2 or 3, so the checkpoint must carry the best weights and the rule's state
        {"strategy": "baseline", "patience": 3, "min_delta": 1.0, "epochs": 6},
    ],
)
def test_resume_after_sigkill_gives_the_uninterrupted_weights(cohort, tmp_path, strategy):
    """SIGKILL while epoch ``cue`` is in memory only (the child waits there: no race with a
    fast CPU); the retry resumes from epoch cue − 1's checkpoint and ends with the uninterrupted
    weights. With a patience the cue comes after the best epoch (1), so the checkpoint must
    carry the best weights and the rule's state."""
    settings = TrainSettings(**({"epochs": 3, "lr": 3e-3, "architecture": NET} | strategy))
    stop = settings.epochs if settings.patience is None else 1 + settings.patience
    cue = 2 if settings.patience is None else 3
    out = tmp_path / "killed"
    out.mkdir()
    args = [sys.executable, "-c", _CHILD, str(out), *(",".join(map(str, c)) for c in cohort),
            json.dumps(asdict(settings)), str(cue)]  # fmt: skip
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 900  # a loaded machine is slow; the child waits an hour
    while not (out / f"epoch{cue}-trained").exists():
        assert child.poll() is None, child.stderr.read().decode()
        assert time.monotonic() < deadline, f"epoch {cue} not trained within 900 s"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (out / "model.pt").exists()
    assert load_checkpoint(out / "ckpt.pt")["epoch"] == cue - 1
    assert [int(r["epoch"]) for r in read_log(out / "log.csv")] == list(range(1, cue))
    killed_checkpoint = (out / "ckpt.pt").read_bytes()

    resumed = run(settings, cohort, out)
    uninterrupted = run(settings, cohort, tmp_path / "uninterrupted")
    assert_same_weights(resumed, uninterrupted)
    log = read_log(out / "log.csv")
    assert [int(r["epoch"]) for r in log] == list(range(1, stop + 1))
    without_time = [{k: v for k, v in r.items() if k != "seconds"} for r in log]
    assert without_time == [
        {k: v for k, v in r.items() if k != "seconds"}
        for r in read_log(tmp_path / "uninterrupted" / "log.csv")
    ]
    stopping = load_model(out / "model.pt")[1]["stopping"]
    assert stopping == load_model(tmp_path / "uninterrupted" / "model.pt")[1]["stopping"]
    if settings.patience is not None:  # the kept weights are epoch 1's, not the last epoch's
        assert stopping["weights_epoch"] == 1
        first = replace(settings, patience=None, min_delta=0.0, epochs=1)
        assert_same_weights(resumed, run(first, cohort, tmp_path / "first"))

    # a checkpoint of other settings (here: fewer epochs) is ignored, not resumed
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "ckpt.pt").write_bytes(killed_checkpoint)
    one_epoch = replace(settings, epochs=1)
    assert_same_weights(run(one_epoch, cohort, stale), run(one_epoch, cohort, tmp_path / "fresh"))


def test_corrupt_checkpoint_raises_naming_the_file(cohort, tmp_path):
    settings = TrainSettings(strategy="baseline", **TINY)
    run(replace(settings, epochs=1), cohort, tmp_path / "done")
    model_bytes = (tmp_path / "done" / "model.pt").read_bytes()
    checkpoint = tmp_path / "ckpt.pt"
    for content in (os.urandom(1000), b"", model_bytes[: len(model_bytes) // 2]):
        checkpoint.write_bytes(content)
        with pytest.raises(
            CheckpointError, match=f"checkpoint {re.escape(str(checkpoint))} is corrupt"
        ):
            run(settings, cohort, tmp_path)
    checkpoint.write_bytes(model_bytes)  # readable, but a model file, not a checkpoint
    with pytest.raises(
        CheckpointError, match=f"{re.escape(str(checkpoint))} is not a segrobust training"
    ):
        run(settings, cohort, tmp_path)
