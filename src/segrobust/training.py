"""One resumable, deterministic training loop with pluggable per-step strategies.

Strategies (the supplement's defences, :mod:`segrobust.strategies`; :func:`make_step` maps a
name to its step function): ``baseline``, ``distill_teacher``, ``distill_student`` (against the
teacher's soft labels, computed once per process start on the un-augmented training volumes
and augmented with each batch), ``adversarial``, ``pgd_adversarial`` and ``noise``.

Augmentation: per batch one of the 8 symmetries of the axial plane (rotations by multiples of
90° within axial slices, flips, transposes), applied identically to image, label and teacher
logits. Preprocessed arrays keep NIfTI voxel order (x, y, z), so axial slices are z = const and
the axial plane is spatial axes 0 and 1 (array axes -3, -2).

Determinism and resumption: all randomness derives from ``settings.seed`` via
``np.random.SeedSequence(seed, spawn_key=...)``: one stream for the weight initialisation and,
per epoch, fresh streams for data order and augmentation (numpy), dropout (the global torch
RNG, re-seeded at each epoch start) and perturbation noise (a CPU torch.Generator). An epoch
therefore depends only on (seed, epoch, weights, optimiser state), so the checkpoint written
after each epoch (model, optimiser, epoch, log, settings; atomic) needs no RNG streams and a
run killed at any point ends with bitwise the same weights on CPU as an uninterrupted one. The
caller's global torch RNG state is restored on return. On CUDA cuDNN/atomics may still differ
run to run.

Stopping: ``patience`` and ``min_delta`` choose the rule of :mod:`segrobust.stopping` (None =
the fixed schedule of ``epochs``; else stop when the mean validation Dice stops improving and
keep the best epoch's weights). The log rows carry the score, the best epoch so far and the
epochs without improvement, and the checkpoint also carries the best weights, so a killed run
resumes the rule where it stopped.
"""

import csv
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from segrobust.data import Volume, open_volume
from segrobust.fileio import atomic_path
from segrobust.labels import REGIONS
from segrobust.losses import LOSS_VARIANTS, segmentation_loss
from segrobust.metrics import dice_regions
from segrobust.models import registry
from segrobust.models.checkpoints import load_model, save_model
from segrobust.models.device import AMP_MODES, autocast, predict_classes, select_device, use_amp
from segrobust.models.kernels import CONV_KERNELS, provenance
from segrobust.stopping import (
    should_stop,
    stopping_line,
    stopping_record,
    stopping_state,
    validation_score,
)
from segrobust.strategies import (
    EXAMPLE_MODES,
    UPDATES,
    Step,
    StepContext,
    adversarial_step,
    clean_step,
    noise_step,
    pgd_adversarial_step,
)

logger = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = (
    "baseline",
    "distill_teacher",
    "distill_student",
    "adversarial",
    "pgd_adversarial",
    "noise",
)
DISTILLATION: tuple[str, ...] = ("distill_teacher", "distill_student")
ADVERSARIAL: tuple[str, ...] = ("adversarial", "pgd_adversarial")
AXIAL_AXES: tuple[int, int] = (-3, -2)
LOG_COLUMNS: tuple[str, ...] = (
    "epoch",
    "train_loss",
    *(f"val_dice_{region}" for region in REGIONS),
    "val_dice_mean",
    "best_epoch",
    "epochs_without_improvement",
    "seconds",
)
CHECKPOINT_FORMAT = 2  # 2: best weights ("best_model") and the stopping columns of the log
_CHECKPOINT_KEYS = {"format", "fingerprint", "epoch", "model", "best_model", "optimizer", "log"}
_INIT_STREAM, _EPOCH_STREAM = 0, 1


# ---------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class TrainSettings:
    """Everything that determines a trained model; validated on construction.

    ``epochs`` and ``lr`` are final values (per-T overrides are resolved by the caller).
    ``temperature`` applies to the distillation strategies only (else it must be 1),
    ``epsilon`` to ``adversarial`` and ``pgd_adversarial`` only (else 0); ``pgd_steps`` (k),
    ``pgd_step_size`` (α, relative like ε) and ``random_start`` to ``pgd_adversarial`` only
    (else 0, 0 and true); ``alpha`` weighs the clean loss, ``update`` chooses the two-pass
    scheme of the adversarial strategies and ``noise``, ``example_mode`` the network mode
    adversarial examples are crafted in (module docstring).
    ``patience`` (None = the fixed schedule of ``epochs``) and ``min_delta`` (0 unless
    ``patience`` is set): the stopping rule, ``epochs`` then being the maximum (module docstring).
    ``amp``: "auto" = bf16 autocast on CUDA and on CPUs with native bf16, else float32; "on" =
    bf16 everywhere; "off". ``conv_kernel``: what runs float32 CPU convolutions
    (:mod:`segrobust.models.kernels`). ``architecture``: the network, ``{name, kwargs}``
    (:func:`segrobust.models.registry.build`).
    """

    strategy: str
    epochs: int
    lr: float
    patience: int | None = None
    min_delta: float = 0.0
    batch_size: int = 1
    seed: int = 0
    loss_variant: str = "with_background"
    gamma: float = 1e-5
    temperature: float = 1.0
    epsilon: float = 0.0
    alpha: float = 0.5
    noise_radius: float = 0.01
    update: str = "accumulate"
    example_mode: str = "eval"
    pgd_steps: int = 0
    pgd_step_size: float = 0.0
    random_start: bool = True
    augment: bool = True
    amp: str = "auto"
    conv_kernel: str = "onednn"
    architecture: Mapping[str, Any] = field(
        default_factory=lambda: {"name": registry.DEFAULT, "kwargs": {}}
    )

    def __post_init__(self) -> None:
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_int("epochs", self.epochs, 1)
        _check_real("lr", self.lr, "> 0", self.lr > 0)
        if self.patience is not None:
            _check_int("patience", self.patience, 1)
        _check_real("min_delta", self.min_delta, ">= 0", self.min_delta >= 0)
        if self.patience is None and self.min_delta != 0:
            _invalid("min_delta", self.min_delta, "must be 0 unless patience is set")
        _check_int("batch_size", self.batch_size, 1)
        _check_int("seed", self.seed, 0)
        _check_choice("loss_variant", self.loss_variant, LOSS_VARIANTS)
        _check_real("gamma", self.gamma, "> 0", self.gamma > 0)
        _check_real("temperature", self.temperature, "> 0", self.temperature > 0)
        if self.strategy not in DISTILLATION and self.temperature != 1:
            _invalid("temperature", self.temperature, f"must be 1 for strategy {self.strategy!r}")
        adversarial = self.strategy in ADVERSARIAL
        _check_real("epsilon", self.epsilon, ">= 0", self.epsilon >= 0)
        if adversarial != (self.epsilon > 0):
            need = f"> 0 for strategy {self.strategy!r}" if adversarial else "0 unless adversarial"
            _invalid("epsilon", self.epsilon, f"must be {need}")
        self._check_pgd()
        _check_real("alpha", self.alpha, "in [0, 1]", 0 <= self.alpha <= 1)
        _check_real("noise_radius", self.noise_radius, ">= 0", self.noise_radius >= 0)
        if self.strategy == "noise" and self.noise_radius == 0:
            _invalid("noise_radius", self.noise_radius, "must be > 0 for strategy 'noise'")
        _check_choice("update", self.update, UPDATES)
        _check_choice("example_mode", self.example_mode, EXAMPLE_MODES)
        if not isinstance(self.augment, bool):
            _invalid("augment", self.augment, "must be true or false")
        _check_choice("amp", self.amp, AMP_MODES)
        _check_choice("conv_kernel", self.conv_kernel, CONV_KERNELS)
        arch = self.architecture
        if not isinstance(arch, Mapping) or set(arch) != {"name", "kwargs"}:
            _invalid("architecture", arch, "must be a mapping {name, kwargs}")
        _check_choice("architecture name", arch["name"], registry.NAMES)

    def _check_pgd(self) -> None:
        pgd = self.strategy == "pgd_adversarial"
        _check_int("pgd_steps", self.pgd_steps, 1 if pgd else 0)
        _check_real("pgd_step_size", self.pgd_step_size, ">= 0", self.pgd_step_size >= 0)
        if not isinstance(self.random_start, bool):
            _invalid("random_start", self.random_start, "must be true or false")
        if pgd and self.pgd_step_size == 0:
            _invalid("pgd_step_size", 0, "must be > 0 for strategy 'pgd_adversarial'")
        if not pgd:
            for name, default in (("pgd_steps", 0), ("pgd_step_size", 0), ("random_start", True)):
                if getattr(self, name) != default:
                    _invalid(name, getattr(self, name), f"must be {default} unless pgd_adversarial")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainSettings":
        """Build from a config mapping; unknown keys are an error (typos must not pass)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
        missing = sorted({"strategy", "epochs", "lr"} - set(values))
        if missing:
            raise ValueError(f"training settings lack required {missing}")
        return cls(**values)


def _invalid(name: str, value: Any, requirement: str) -> None:
    raise ValueError(f"TrainSettings.{name} {requirement}, got {value!r}")


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        _invalid(name, value, f"must be one of {list(choices)}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    # plain int/float only: the settings are stored in checkpoints read with weights_only=True
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _invalid(name, value, f"must be an integer >= {minimum}")


def _check_real(name: str, value: Any, requirement: str, ok: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _invalid(name, value, "must be a number")
    if not (math.isfinite(value) and ok):
        _invalid(name, value, f"must be finite and {requirement}")


# ---------------------------------------------------------------------------------------------
# data


def draw_augmentation(rng: np.random.Generator) -> tuple[int, bool]:
    """One of the 8 axial-plane symmetries: (quarter turns 0-3, flip or not)."""
    return int(rng.integers(4)), bool(rng.integers(2))


def augment(array: np.ndarray, quarter_turns: int, flip: bool) -> np.ndarray:
    """Rotate the axial plane (axes -3, -2) by quarter_turns·90°, then optionally flip axis -3.

    Rotations and one flip generate all 8 symmetries, transposes included. Returns a view:
    the single copy happens when a batch is stacked (torch.rot90/flip copy at every call and
    cost 8x as much at 128³).
    """
    array = np.rot90(array, quarter_turns, AXIAL_AXES)
    return np.flip(array, AXIAL_AXES[0]) if flip else array


def _read(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.array(array))  # copy: the memory map is read-only


def _augmented_batch(arrays: Sequence[np.ndarray], quarter_turns: int, flip: bool) -> Tensor:
    return torch.from_numpy(np.stack([augment(a, quarter_turns, flip) for a in arrays]))


def epoch_batches(
    volumes: Sequence[Volume],
    batch_size: int,
    rng: np.random.Generator,
    augment_data: bool,
    logits: Sequence[np.ndarray] | None = None,
) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    """Shuffled batches (image, label, teacher logits or None) as CPU tensors.

    The order and one augmentation per batch are drawn from ``rng``; the last batch may be
    smaller.
    """
    order = rng.permutation(len(volumes))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        aug = draw_augmentation(rng) if augment_data else (0, False)
        images = _augmented_batch([volumes[i].image for i in index], *aug)
        labels = _augmented_batch([volumes[i].label for i in index], *aug)
        batch_logits = (
            None if logits is None else _augmented_batch([logits[i] for i in index], *aug)
        )
        yield images, labels, batch_logits


def make_step(settings: TrainSettings) -> Step:
    """The step function of ``settings.strategy``."""
    common = {"alpha": settings.alpha, "update": settings.update}
    if settings.strategy == "adversarial":
        return partial(
            adversarial_step, epsilon=settings.epsilon, example_mode=settings.example_mode,
            **common,
        )  # fmt: skip
    if settings.strategy == "pgd_adversarial":
        return partial(
            pgd_adversarial_step, epsilon=settings.epsilon, step_size=settings.pgd_step_size,
            steps=settings.pgd_steps, random_start=settings.random_start,
            example_mode=settings.example_mode, **common,
        )  # fmt: skip
    if settings.strategy == "noise":
        return partial(noise_step, radius=settings.noise_radius, **common)
    return clean_step


# ---------------------------------------------------------------------------------------------
# checkpoints and log


class CheckpointError(ValueError):
    """A training checkpoint that cannot be used; the message names the file."""


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`train` (``weights_only=True``)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"training checkpoint {path} is corrupt or unreadable ({type(err).__name__}: {err}); "
            "delete it to restart training from scratch"
        ) from err
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} is not a segrobust training checkpoint")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {state['format']}, expected {CHECKPOINT_FORMAT}: "
            "delete it to restart training from scratch"
        )
    if not _CHECKPOINT_KEYS <= state.keys():
        raise CheckpointError(f"{path} is not a segrobust training checkpoint")
    return state


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def write_log(path: str | Path, rows: Sequence[Mapping[str, float]]) -> None:
    """Write the per-epoch log (:data:`LOG_COLUMNS`) atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as stream:
        writer = csv.DictWriter(stream, LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def epoch_line(log: Sequence[Mapping[str, float]], epochs: int, patience: int | None = None) -> str:
    """One progress line for the last epoch of ``log``: loss, validation Dice, the stopping
    rule's state, time and time left (at most, under a patience rule)."""
    row = log[-1]
    dice = " ".join(f"{r} {row[f'val_dice_{r}']:.3f}" for r in REGIONS)
    left = (epochs - row["epoch"]) * float(np.mean([r["seconds"] for r in log]))
    rule = f"best epoch {row['best_epoch']}"
    if patience is not None:
        rule += f", {row['epochs_without_improvement']}/{patience} without improvement"
    return (
        f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  val Dice {dice} "
        f"mean {row['val_dice_mean']:.3f}  {rule}  {row['seconds']:.1f} s  "
        f"{'~' if patience is None else '<= '}{left:.0f} s left"
    )


# ---------------------------------------------------------------------------------------------
# the loop


def _seed_sequence(seed: int, *key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=key)


def _torch_seed(sequence: np.random.SeedSequence) -> int:
    return int(sequence.generate_state(1, np.uint64)[0])


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    # channels_last_3d is for cuDNN's bf16 kernels; measured: no gain on the CPU (untimed on GPU)
    if device.type == "cuda" and t.ndim == 5:
        return t.to(device, memory_format=torch.channels_last_3d, non_blocking=True)
    return t.to(device)


@torch.no_grad()
def teacher_logits(
    teacher: nn.Module, volumes: Sequence[Volume], device: torch.device, amp: bool
) -> list[np.ndarray]:
    """The teacher's logits (C, X, Y, Z) per volume, float32 (bf16 converts losslessly)."""
    teacher.eval()
    out = []
    for volume in volumes:
        with autocast(device, amp):
            logits = teacher(_to_device(_read(volume.image)[None], device))[0]
        out.append(logits.float().cpu().numpy())
    return out


def validation_dice(
    model: nn.Module, volumes: Sequence[Volume], device: torch.device, amp: bool
) -> dict[str, float]:
    """Mean Dice per region of argmax predictions over ``volumes`` (NaN if there are none)."""
    scores = []
    for volume in volumes:
        with autocast(device, amp):
            pred = predict_classes(model, _to_device(_read(volume.image)[None], device))
        scores.append(dice_regions(pred[0].cpu().numpy(), np.asarray(volume.label)))
    return {r: float(np.mean([s[r] for s in scores])) if scores else math.nan for r in REGIONS}


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _fingerprint(settings: TrainSettings, train_dirs, val_dirs, teacher) -> dict:
    """What a checkpoint must match to be resumed: settings, data and teacher files.

    Files are identified by resolved path, size and mtime: data or a teacher rewritten by an
    upstream rule invalidate a checkpoint left by a killed run.
    """

    def files(dirs) -> list:
        return [
            [str(Path(d).resolve()), *_stamp(Path(d) / "image.npy"), *_stamp(Path(d) / "label.npy")]
            for d in dirs
        ]

    return {
        "settings": asdict(settings),
        "train": files(train_dirs),
        "val": files(val_dirs),
        "teacher": None
        if teacher is None
        else [str(Path(teacher).resolve()), *_stamp(Path(teacher))],
    }


def _load_teacher(path: Path, settings: TrainSettings, device: torch.device) -> nn.Module:
    teacher, extra = load_model(path, map_location=device, conv_kernel=settings.conv_kernel)
    recorded = extra.get("settings", {}).get("temperature")
    if recorded is not None and recorded != settings.temperature:
        raise ValueError(
            f"teacher {path} was trained at temperature {recorded}, the student is set to "
            f"{settings.temperature}: distillation uses the teacher's T"
        )
    if device.type == "cuda":
        teacher = teacher.to(memory_format=torch.channels_last_3d)
    return teacher.requires_grad_(False)


def _check_inputs(settings: TrainSettings, train_dirs, val_dirs, teacher) -> None:
    if not train_dirs:
        raise ValueError("train_dirs is empty: training needs at least one subject")
    if settings.patience is not None and not val_dirs:
        raise ValueError(
            f"training.patience = {settings.patience} stops training on validation Dice, but "
            "there are no validation subjects: set split.val_fraction > 0, or patience: null "
            "for the fixed schedule of training.epochs"
        )
    if settings.strategy == "distill_student" and teacher is None:
        raise ValueError("strategy 'distill_student' needs a teacher model file (teacher=...)")
    if settings.strategy != "distill_student" and teacher is not None:
        raise ValueError(f"a teacher is only used by 'distill_student', not {settings.strategy!r}")


def _restore(
    checkpoint: Path, fingerprint: dict, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list[dict], dict | None]:
    """Load ``checkpoint`` into model and optimiser if it matches; return (epochs done, log,
    best epoch's weights or None)."""
    if not checkpoint.exists():
        return 0, [], None
    state = load_checkpoint(checkpoint)
    if state["fingerprint"] != fingerprint:
        logger.warning("ignoring %s: written for other settings or data", checkpoint)
        return 0, [], None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    logger.info("resuming %s after epoch %d", checkpoint, state["epoch"])
    return int(state["epoch"]), list(state["log"]), state["best_model"]


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _train_epoch(
    model: nn.Module,
    step: Step,
    ctx: StepContext,
    batches: Iterator[tuple[Tensor, Tensor, Tensor | None]],
    temperature: float,
    device: torch.device,
) -> float:
    """Run ``step`` on every batch; return the mean loss. Raises if the loss is not finite."""
    model.train()
    losses = []
    for images, labels, logits in batches:
        if logits is None:
            target = _to_device(labels, device)
        else:  # the teacher's soft labels at T
            target = (_to_device(logits, device) / temperature).softmax(1)
        result = step(model, _to_device(images, device), target, ctx)
        if not math.isfinite(result.loss):
            raise FloatingPointError(f"training diverged: loss {result.loss} at step {len(losses)}")
        losses.append(result.loss)
    return float(np.mean(losses))


def train(
    settings: TrainSettings | Mapping[str, Any],
    train_dirs: Sequence[str | Path],
    val_dirs: Sequence[str | Path],
    model_out: str | Path,
    log_csv: str | Path,
    checkpoint: str | Path,
    teacher: str | Path | None = None,
    device: str | torch.device | None = None,
) -> None:
    """Train one model; resume from ``checkpoint`` if it holds an earlier run of the same job.

    Trains until the stopping rule of ``settings`` (module docstring) stops it. Writes
    ``log_csv`` (:data:`LOG_COLUMNS`, one row per epoch) and ``checkpoint`` after every epoch,
    then ``model_out`` via :func:`segrobust.models.checkpoints.save_model` with the weights the
    rule keeps and extra = {"settings", "teacher", "evaluation_temperature": 1.0, "log", "stopping"
    (:func:`segrobust.stopping.stopping_record`)}. The final checkpoint is kept (the caller
    deletes it once the model is safely recorded): a job killed after that point resumes at its
    last epoch and only writes the model again. A checkpoint of other settings, data or teacher
    is ignored (warning) and replaced.
    ``device``: None picks CUDA when available.
    """
    if isinstance(settings, Mapping):
        settings = TrainSettings.from_dict(settings)
    _check_inputs(settings, train_dirs, val_dirs, teacher)
    model_out, log_csv, checkpoint = Path(model_out), Path(log_csv), Path(checkpoint)
    device = select_device("auto") if device is None else torch.device(device)
    amp = use_amp(settings.amp, device)
    train_volumes = [open_volume(d) for d in train_dirs]
    val_volumes = [open_volume(d) for d in val_dirs]
    fingerprint = _fingerprint(settings, train_dirs, val_dirs, teacher)
    cuda = [device.index or 0] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(_torch_seed(_seed_sequence(settings.seed, _INIT_STREAM)))
        model = registry.build(**settings.architecture, conv_kernel=settings.conv_kernel,
                               input_shape=train_volumes[0].image.shape[1:])  # fmt: skip
        model = model.to(device, memory_format=torch.channels_last_3d if cuda else None)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        start, log, best_weights = _restore(checkpoint, fingerprint, model, optimizer)
        state = stopping_state([row["val_dice_mean"] for row in log], settings.min_delta)
        finished = start >= settings.epochs or should_stop(state, settings.patience)
        logits = None
        if settings.strategy == "distill_student" and not finished:
            logits = teacher_logits(_load_teacher(Path(teacher), settings, device),
                                    train_volumes, device, amp)  # fmt: skip
        ctx = StepContext(
            optimizer,
            partial(segmentation_loss, variant=settings.loss_variant, gamma=settings.gamma,
                    temperature=settings.temperature),
            partial(autocast, device, amp),
            torch.Generator(),
        )  # fmt: skip
        step = make_step(settings)

        for epoch in range(start, settings.epochs):
            if should_stop(state, settings.patience):
                break
            began = time.perf_counter()
            data, dropout, noise = _seed_sequence(settings.seed, _EPOCH_STREAM, epoch).spawn(3)
            torch.manual_seed(_torch_seed(dropout))
            ctx.generator.manual_seed(_torch_seed(noise))
            batches = epoch_batches(
                train_volumes, settings.batch_size, np.random.default_rng(data),
                settings.augment, logits,
            )  # fmt: skip
            try:
                loss = _train_epoch(model, step, ctx, batches, settings.temperature, device)
            except FloatingPointError as err:
                raise FloatingPointError(f"{err} of epoch {epoch + 1} ({settings})") from None
            dice = validation_dice(model, val_volumes, device, amp)
            score = validation_score(dice)
            state = stopping_state([*(row["val_dice_mean"] for row in log), score],
                                   settings.min_delta)  # fmt: skip
            if settings.patience is not None and state.best_epoch == epoch + 1:
                best_weights = _snapshot(model)
            log.append({
                "epoch": epoch + 1,
                "train_loss": loss,
                **{f"val_dice_{r}": d for r, d in dice.items()},
                "val_dice_mean": score,
                "best_epoch": state.best_epoch,
                "epochs_without_improvement": state.without_improvement,
                "seconds": time.perf_counter() - began,
            })  # fmt: skip
            _save_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "epoch": epoch + 1,
                "model": model.state_dict(), "best_model": best_weights,
                "optimizer": optimizer.state_dict(), "log": log,
            })  # fmt: skip
            write_log(log_csv, log)
            logger.info(epoch_line(log, settings.epochs, settings.patience))

    write_log(log_csv, log)  # also after a resume from a finished run's checkpoint
    stopping = stopping_record(log, settings.patience, settings.min_delta, settings.epochs)
    logger.info(stopping_line(stopping))
    if settings.patience is not None:
        model.load_state_dict(best_weights)
    extra = {
        "settings": asdict(settings),
        "teacher": None if teacher is None else fingerprint["teacher"][0],
        "evaluation_temperature": 1.0,
        "log": log,
        "stopping": stopping,
        **provenance(model, device, amp),
    }
    save_model(model, model_out, extra)
