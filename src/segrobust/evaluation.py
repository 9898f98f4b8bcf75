"""Run models over test subjects: clean inputs, attacks and realistic perturbations.

Every function returns rows of the one long-format results table
(:data:`segrobust.results.RESULT_COLUMNS`). An attack family (:mod:`segrobust.families`, config
``attacks.<family>``) turns a batch of clean volumes (``attacks.batch`` test subjects, each
with its own random seed) into a stream of perturbed batches (with the logits the attack
already computed where it could) through its runner (:data:`RUNNERS`: FGSM sweeps, the
iterates of i-FGSM / ti-FGSM, PGD — also at the audit's large budget —, SegPGD, the
random-sign control, transfer FGSM crafted on a source model, the realistic artefacts of
:mod:`segrobust.perturbations`); :func:`evaluate_attack` scores every volume of each the same
way.
"""

import json
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from torch import nn

from segrobust import attacks as atk
from segrobust.data import open_volume
from segrobust.families import Family, of
from segrobust.fileio import atomic_path
from segrobust.inference import check_spacing
from segrobust.labels import classes_to_labels, labels_to_classes
from segrobust.losses import segmentation_loss
from segrobust.metrics import dice_regions, image_quality
from segrobust.models.device import autocast, predict_classes
from segrobust.perturbations import perturb
from segrobust.results import CLEAN, result_rows, results_frame
from segrobust.surface import NSD_TOLERANCE_MM, surface_regions, voxel_spacing

logger = logging.getLogger(__name__)


def _affine(subject_dir: Path) -> np.ndarray:
    return np.array(json.loads((subject_dir / "meta.json").read_text())["affine"])


def save_nifti(array: np.ndarray, subject_dir: Path, path: Path) -> None:
    """Write a class map (as BraTS labels) or a (4, D, H, W) image on the subject's grid."""
    if array.ndim == 4:
        img = nib.Nifti1Image(np.moveaxis(array, 0, -1).astype(np.float32), _affine(subject_dir))
    else:
        img = nib.Nifti1Image(classes_to_labels(array), _affine(subject_dir))
        img.set_data_dtype(np.uint8)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def subject_seed(seed: int, subject: str) -> int:
    """A per-subject seed that does not depend on which other subjects are evaluated."""
    return int(np.random.SeedSequence([seed, zlib.crc32(subject.encode())]).generate_state(1)[0])


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(array))[None].to(device)


def evaluate_clean(
    model: nn.Module,
    model_name: str,
    subject_dirs: Sequence[str | Path],
    device: torch.device,
    amp: bool = False,
    predictions_dir: str | Path | None = None,
    tags: Mapping[str, Any] | None = None,
    nsd_tolerance: float = NSD_TOLERANCE_MM,
) -> pd.DataFrame:
    """Dice, HD95 and NSD per region of ``model`` on each subject's clean input (attack "none",
    ε = 0); distances in mm on the subject's grid, NSD at ``nsd_tolerance`` mm.

    Predicted label maps go to ``predictions_dir/<subject>.nii.gz`` when it is given. ``tags``
    (``seed``, ``precision``, ``kernel``) are copied into every row.
    """
    rows = []
    for directory in map(Path, subject_dirs):
        volume = open_volume(directory)
        spacing = voxel_spacing(directory)
        check_spacing(model, spacing, volume.name)
        with autocast(device, amp):
            pred = predict_classes(model, _tensor(volume.image, device))[0].cpu().numpy()
        if predictions_dir is not None:
            save_nifti(pred, directory, Path(predictions_dir) / f"{volume.name}.nii.gz")
        truth = np.asarray(volume.label)
        surface = surface_regions(pred, truth, spacing, nsd_tolerance)
        rows += result_rows(
            model=model_name, attack=CLEAN, subject=volume.name, dice=dice_regions(pred, truth),
            surface=surface, eps=0.0, iteration=0, **(tags or {}),
        )  # fmt: skip
    return results_frame(rows)


@dataclass(frozen=True)
class Perturbed:
    """A batch of perturbed inputs: the attack (or artefact) that made them, logits if known."""

    kind: str
    eps: float
    step: int
    severity: float
    x: torch.Tensor
    logits: torch.Tensor | None


# --------------------------------------------------------------------------- runners


@dataclass(frozen=True)
class Batch:
    """What a runner attacks: ``model`` on volumes ``x`` with labels ``y`` (brain ``mask``),
    one seed per volume, the attack ``loss``, the transfer ``source``, the student's
    ``temperature`` and ``eval_batch`` (FGSM-sweep ε values scored per forward)."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None
    seeds: Sequence[int]
    loss: Callable
    source: nn.Module | None
    temperature: float
    eval_batch: int

    def generators(self) -> list[torch.Generator]:
        """One fresh generator per volume, seeded with its seed."""
        return [torch.Generator().manual_seed(seed) for seed in self.seeds]


def _scored(family: Family, stream: Iterable[atk.Iterate]) -> Iterator[Perturbed]:
    """A gradient attack's inputs as :class:`Perturbed`; iterate 0, the clean input, is left to
    :func:`evaluate_clean`."""
    for item in stream:
        if item.step > 0:
            yield Perturbed(family.name, item.eps, item.step, np.nan, item.x_adv, item.logits)


def _fgsm(b: Batch, s: Mapping, family: Family) -> Iterator[Perturbed]:
    """FGSM over the sweep ``epsilons`` (one gradient for all ε)."""
    sweep = atk.fgsm_sweep(b.model, b.x, b.y, b.loss, s["epsilons"], mask=b.mask,
                           eval_batch=b.eval_batch)  # fmt: skip
    return _scored(family, sweep)


def _fgsm_tempered(b: Batch, s: Mapping, family: Family) -> Iterator[Perturbed]:
    """FGSM through the softened logits z/T of a distilled student (T = ``temperature``)."""
    loss = atk.with_temperature(b.loss, b.temperature)
    sweep = atk.fgsm_sweep(b.model, b.x, b.y, loss, s["epsilons"], mask=b.mask,
                           eval_batch=b.eval_batch)  # fmt: skip
    return _scored(family, sweep)


def _transfer(b: Batch, s: Mapping, family: Family) -> Iterator[Perturbed]:
    """FGSM crafted on the source and scored on the model (no logits of the source)."""
    sweep = atk.fgsm_sweep(b.source, b.x, b.y, b.loss, s["epsilons"], mask=b.mask, evaluate=False)
    return _scored(family, sweep)


def _iterates(b: Batch, s: Mapping, family: Family) -> Iterator[Perturbed]:
    """i-FGSM, or (targeted) towards every voxel ``target_class``: every iterate."""
    target = atk.constant_target(b.x, s["target_class"]) if family.targeted else b.y
    steps = atk.linf_iterates(b.model, b.x, target, b.loss, s["eps"], s["alpha"], s["steps"],
                              targeted=family.targeted, mask=b.mask)  # fmt: skip
    return _scored(family, steps)


def _pgd(b: Batch, s: Mapping, family: Family) -> Iterator[Perturbed]:
    """PGD from a uniform random start, best of ``restarts``: its final iterate."""
    final = atk.pgd(b.model, b.x, b.y, b.loss, s["eps"], s["alpha"], s["steps"],
                    generator=b.generators(), restarts=s["restarts"], mask=b.mask)  # fmt: skip
    return _scored(family, [atk.Iterate(float(s["eps"]), s["steps"], final, None)])


def _segpgd(b: Batch, s: Mapping, family: Family) -> Iterator[Perturbed]:
    """SegPGD (Gu et al. 2022): its final iterate."""
    final = atk.segpgd(b.model, b.x, b.y, s["eps"], s["alpha"], s["steps"],
                       generator=b.generators(), mask=b.mask)  # fmt: skip
    return _scored(family, [atk.Iterate(float(s["eps"]), s["steps"], final, None)])


def _sign_noise(b: Batch, s: Mapping, family: Family) -> Iterator[Perturbed]:
    """The noise control: random ±ε sign noise over the sweep, iteration 0 (no gradient)."""
    for item in atk.random_sign_sweep(b.x, s["epsilons"], generator=b.generators(), mask=b.mask):
        yield Perturbed(family.name, item.eps, item.step, np.nan, item.x_adv, None)


def _artefacts(b: Batch, s: Mapping, family: Family) -> Iterator[Perturbed]:
    """Each artefact of ``kinds`` at each of ``severities`` (brain: the nonzero voxels)."""
    clean = b.x.cpu().numpy()
    for kind in s["kinds"]:
        for severity in s["severities"]:
            images = [perturb(c, kind, severity, seed)
                      for c, seed in zip(clean, b.seeds, strict=True)]  # fmt: skip
            batch = torch.from_numpy(np.stack(images)).to(b.x.device)
            yield Perturbed(kind, np.nan, 0, float(severity), batch, None)


@dataclass(frozen=True)
class Runner:
    """How families run: ``stream(batch, settings, family)`` gives the perturbed inputs;
    ``sweep_scored``: it scores ``attacks.eval_batch`` ε values per forward."""

    stream: Callable[[Batch, Mapping, Family], Iterator[Perturbed]]
    sweep_scored: bool = False


# segrobust.families names a family's runner; families of one procedure share it
RUNNERS: dict[str, Runner] = {
    "fgsm": Runner(_fgsm, sweep_scored=True),
    "tempered_fgsm": Runner(_fgsm_tempered, sweep_scored=True),
    "transfer": Runner(_transfer),
    "iterates": Runner(_iterates),
    "pgd": Runner(_pgd),
    "segpgd": Runner(_segpgd),
    "sign_noise": Runner(_sign_noise),
    "artefacts": Runner(_artefacts),
}


def _attack_stream(
    attack: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None,
    settings: Mapping,
    seeds: Sequence[int],
    source: nn.Module | None,
    temperature: float,
) -> Iterator[Perturbed]:
    """The perturbed inputs of one attack family for a batch of volumes (its runner);
    ``seeds``: one per volume, so a volume's randomness does not depend on its batch."""
    family = of(attack)
    loss = partial(segmentation_loss, variant=settings["loss"], gamma=settings["gamma"])
    batch = Batch(model, x, y, mask, seeds, loss, source, temperature, settings["eval_batch"])
    return RUNNERS[family.runner].stream(batch, settings[attack], family)


def _largest_batch(attack: str, settings: Mapping, n_subjects: int) -> int:
    """The most volumes one forward of ``attack`` takes: ``attacks.batch`` subjects, times
    ``attacks.eval_batch`` ε values where its runner scores a sweep."""
    batch = min(settings["batch"], n_subjects)
    return batch * settings["eval_batch"] if RUNNERS[of(attack).runner].sweep_scored else batch


def fit_batch(
    models: Mapping[str, nn.Module],
    volume: torch.Tensor,
    attack: str,
    settings: Mapping,
    n_subjects: int,
    device: torch.device,
    amp: bool,
) -> Mapping:
    """``settings``, or a copy with ``batch`` and ``eval_batch`` 1 when a model cannot take the
    attack's largest batch (:func:`_largest_batch`) of ``volume`` (1, C, *spatial).

    Every model is tried once with that batch before the attack starts: a TorchScript trace
    whose ops were specialised on batch 1 (or a batch too large for the device's memory)
    then runs one subject at a time, with a warning naming ``attacks.batch``, instead of
    failing deep inside an attack. Results do not depend on the batch beyond float rounding
    (:mod:`segrobust.attacks`), so falling back changes no number the tables report. A model
    that cannot take one volume raises ValueError naming it.
    """
    batch = _largest_batch(attack, settings, n_subjects)
    if batch == 1:
        return settings
    failures = {}
    for name, model in models.items():
        for size in (batch, 1):
            x = volume.expand(size, *volume.shape[1:])
            try:
                with autocast(device, amp):
                    out = atk.forward_only(model, x)
                if out.shape[0] != size:
                    raise RuntimeError(f"it returned a batch of {out.shape[0]}")
                break
            except RuntimeError as err:
                if size == 1:
                    raise ValueError(
                        f"model {name} fails on one volume of shape {tuple(volume.shape)}: "
                        f"{str(err).splitlines()[0]}"
                    ) from err
                failures[name] = str(err).splitlines()[0]
    if not failures:
        return settings
    for name, reason in failures.items():
        logger.warning(
            "model %s cannot take a batch of %d volumes (attacks.batch: %d, attacks.eval_batch: "
            "%d): %s. Attacking one subject at a time (the same results up to float rounding); "
            "set attacks.batch: 1 to silence this.",
            name, batch, settings["batch"], settings["eval_batch"], reason,
        )  # fmt: skip
    return {**settings, "batch": 1, "eval_batch": 1}


def example_stem(examples_dir: str | Path, subject: str, item: Perturbed) -> Path:
    """Path stem of a saved example: ``<dir>/<subject>_<kind>_eps<ε>_it<k>`` (or ``_sev<s>``)."""
    setting = f"sev{item.severity:g}" if np.isnan(item.eps) else f"eps{item.eps:g}_it{item.step}"
    return Path(examples_dir) / f"{subject}_{item.kind}_{setting}"


def read_classes(path: str | Path) -> np.ndarray:
    """A saved prediction (BraTS labels NIfTI) as a class map."""
    return labels_to_classes(np.asanyarray(nib.load(path).dataobj))


def load_example(stem: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The saved perturbed image (4, D, H, W) and predicted class map of an example stem."""
    image = nib.load(f"{stem}_image.nii.gz").get_fdata(dtype=np.float32)
    return np.moveaxis(image, -1, 0), read_classes(f"{stem}_pred.nii.gz")


def _is_reported(item: Perturbed, attack: str, settings: Mapping) -> bool:
    """Whether tables and example figures show ``item``: of an iterative attack, only the
    iterate Table 1 reports (``settings["table1_iteration"]``)."""
    if of(attack).iterates:
        return item.step == settings["table1_iteration"]
    return True


def evaluate_attack(
    attack: str,
    model: nn.Module,
    model_name: str,
    subject_dirs: Sequence[str | Path],
    settings: Mapping,
    device: torch.device,
    seed: int,
    *,
    amp: bool = False,
    temperature: float = 1.0,
    source: nn.Module | None = None,
    source_name: str = "",
    examples_dir: str | Path | None = None,
    tags: Mapping[str, Any] | None = None,
    nsd_tolerance: float = NSD_TOLERANCE_MM,
) -> pd.DataFrame:
    """Per-subject results of ``model`` under one attack family (module docstring).

    ``settings`` is the workflow's ``attacks`` config: ``loss``, ``gamma``, ``mask`` (perturb
    brain voxels only), ``batch`` (subjects attacked together: the same attack per subject up to
    float rounding, faster), ``eval_batch`` (FGSM-sweep ε values per forward), one entry per family,
    ``examples`` (``subjects`` and ``eps``) and, for i-FGSM / ti-FGSM, ``table1_iteration``.
    For the example subjects the adversarial input of each reported setting (one-step attacks:
    only at the listed ε; iterative ones: iterate ``table1_iteration``) and its prediction are
    written to ``examples_dir`` as NIfTI. Other iterates get Dice, PSNR/RMSE/norms but no SSIM,
    HD95 or NSD (their cost). HD95 and NSD (at ``nsd_tolerance`` mm) are in mm on the subject's
    grid. Clean inputs are not repeated here. ``seed`` drives the attacks' randomness;
    ``tags`` (``seed``: the model's training seed, ``precision``, ``kernel``) go into every row.
    The models are first tried at the attack's batch (:func:`fit_batch`).
    """
    transfer = of(attack).kind == "transfer"
    if transfer and source is None:
        raise ValueError(f"{attack} needs the source model it crafts perturbations on")
    model.eval()
    dirs = [Path(d) for d in subject_dirs]
    if dirs:
        models = {model_name: model}
        if source is not None:
            models[source_name or "transfer source"] = source
        volume = _tensor(np.asarray(open_volume(dirs[0]).image), device)
        settings = fit_batch(models, volume, attack, settings, len(dirs), device, amp)
    rows = []
    for first in range(0, len(dirs), settings["batch"]):
        rows += _evaluate_batch(
            attack, model, model_name, dirs[first : first + settings["batch"]], settings, device,
            seed, amp, temperature, source, nsd_tolerance,
            {"source_model": source_name if transfer else model_name,
             **(tags or {})},
            examples_dir,
        )  # fmt: skip
    return results_frame(rows)


def _evaluate_batch(
    attack: str,
    model: nn.Module,
    model_name: str,
    dirs: Sequence[Path],
    settings: Mapping,
    device: torch.device,
    seed: int,
    amp: bool,
    temperature: float,
    source: nn.Module | None,
    nsd_tolerance: float,
    tags: Mapping[str, Any],
    examples_dir: str | Path | None,
) -> list[dict]:
    """Result rows of one attack family on a batch of subjects (see :func:`evaluate_attack`)."""
    volumes = [open_volume(d) for d in dirs]
    clean = np.stack([np.asarray(v.image) for v in volumes])
    truth = np.stack([np.asarray(v.label) for v in volumes])
    x, y = torch.from_numpy(clean).to(device), torch.from_numpy(truth).to(device).long()
    mask = None
    if settings["mask"]:
        mask = torch.from_numpy(np.stack([np.load(d / "mask.npy") for d in dirs]))[:, None]
        mask = mask.to(device)
    seeds = [subject_seed(seed, v.name) for v in volumes]
    spacings = [voxel_spacing(d) for d in dirs]
    for volume, spacing in zip(volumes, spacings, strict=True):
        check_spacing(model, spacing, volume.name)
    examples, rows = settings["examples"], []
    with autocast(device, amp):
        for item in _attack_stream(attack, model, x, y, mask, settings, seeds, source,
                                   temperature):  # fmt: skip
            logits = item.logits
            if logits is None:
                logits = atk.forward_only(model, item.x)
            preds = logits.argmax(1).to(torch.uint8).cpu().numpy()
            reported = _is_reported(item, attack, settings)
            listed = np.isnan(item.eps) or item.step > 1 or item.eps in examples["eps"]
            for i, (directory, volume) in enumerate(zip(dirs, volumes, strict=True)):
                adv = item.x[i].float().cpu().numpy()
                surface = None  # boundary metrics, like SSIM, only where the tables report
                if reported:
                    surface = surface_regions(preds[i], truth[i], spacings[i], nsd_tolerance)
                rows += result_rows(
                    model=model_name, attack=item.kind, subject=volume.name,
                    dice=dice_regions(preds[i], truth[i]), surface=surface, eps=item.eps,
                    iteration=item.step, quality=image_quality(clean[i], adv, ssim=reported),
                    severity=item.severity, **tags,
                )  # fmt: skip
                if examples_dir and volume.name in examples["subjects"] and reported and listed:
                    stem = example_stem(examples_dir, volume.name, item)
                    save_nifti(adv, directory, Path(f"{stem}_image.nii.gz"))
                    save_nifti(preds[i], directory, Path(f"{stem}_pred.nii.gz"))
    return rows
