"""Pretrained external models: kinds, safe loading, input and output conventions.

An ``external_models:`` config entry names a model that is evaluated and attacked like a
trained model, without training. Its kind (:data:`KINDS`, one module each) is the key it has:

- ``checkpoint``: a TorchScript archive or a state_dict (below, this module);
- ``nnunet``: an nnU-Net v2 result folder (:mod:`segrobust.nnunet`);
- ``bundle``: a MONAI bundle directory (:mod:`segrobust.bundles`).

Each kind module has ``model_files(entry)`` (what the import reads), ``declared_settings(entry)``
(the conventions below that the model's own files declare, and which file) and
``import_entry(entry, out)`` (writes the model file :func:`segrobust.model.load_model` reads).
:func:`settings` merges what a model declares with the entry's own keys: a key the entry leaves
null comes from the model's files; one both give must agree.

A ``checkpoint`` is:

- a TorchScript archive (``torch.jit.load``), or a state_dict (``torch.load(weights_only=True)``;
  ``.safetensors`` when the safetensors package is installed) plus an ``architecture``
  ``{name, kwargs}`` from :mod:`segrobust.architectures`. No pickled code is ever executed.
- ``modalities``: the order of the input channels the model expects (segrobust's is
  :data:`segrobust.labels.MODALITIES`); ``normalization``: the intensity normalisation it was
  trained with, applied to segrobust's preprocessed input ("none": as preprocessed; "zscore":
  per channel over nonzero voxels, MONAI's ``NormalizeIntensity(nonzero=True,
  channel_wise=True)``; "minmax": per channel to [0, 1], MONAI's ``ScaleIntensity``).
- ``output``: ``{type: softmax, labels: [...]}``, class logits whose channels are the BraTS
  labels listed; or ``{type: sigmoid, regions: [TC, WT, ET], threshold: t}``, one logit per
  nested region as MONAI's BraTS bundle (a voxel is ET if p_ET > t, else NCR/NET if p_TC > t,
  else edema if p_WT > t). :class:`RegionLogits` turns the latter into 4-class logits whose
  argmax is exactly that label map and which the attack losses differentiate.
"""

import importlib
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segrobust import architectures
from segrobust.fileio import atomic_path
from segrobust.labels import BRATS_LABELS, MODALITIES
from segrobust.model import is_torchscript, save_model

KINDS: dict[str, str] = {
    "checkpoint": "segrobust.external",
    "nnunet": "segrobust.nnunet",
    "bundle": "segrobust.bundles",
}
CONVENTIONS: tuple[str, ...] = ("modalities", "normalization", "output", "inference")
NORMALIZATIONS: tuple[str, ...] = ("none", "zscore", "minmax")
REGION_NAMES: tuple[str, ...] = ("TC", "WT", "ET")


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
        if sorted(regions) != sorted(REGION_NAMES):
            raise ValueError(f"output.regions must order {list(REGION_NAMES)}, got {regions}")
        if not 0 < threshold < 1:
            raise ValueError(f"output.threshold must be in (0, 1), got {threshold}")
        self.index = {r: list(regions).index(r) for r in REGION_NAMES}
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
        return RegionLogits(output.get("regions", REGION_NAMES), output.get("threshold", 0.5))
    raise ValueError(f"output.type must be softmax or sigmoid, got {output.get('type')!r}")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ValueError(f"{path}: reading .safetensors needs the safetensors package") from err
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state_dict (a mapping of parameter names to tensors)")
    return state


def import_model(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    architecture: Mapping[str, Any] | None = None,
) -> None:
    """Write the external ``checkpoint`` as a model file that :func:`load_model` reads.

    Without ``architecture`` it must be TorchScript (copied after a test load); with it, a
    state_dict for :func:`segrobust.architectures.build` (saved as a segrobust checkpoint).
    Errors name the file.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"external model checkpoint not found: {checkpoint}")
    if architecture is None:
        if not is_torchscript(checkpoint):
            raise ValueError(
                f"{checkpoint} is not TorchScript: give the external model an architecture "
                "{name, kwargs} to read it as a state_dict"
            )
        torch.jit.load(checkpoint, map_location="cpu")
        with atomic_path(out) as tmp:
            shutil.copyfile(checkpoint, tmp)
        return
    model = architectures.build(architecture["name"], architecture.get("kwargs", {}))
    try:
        state = _read_state_dict(checkpoint)
        architectures.unwrap(model).load_state_dict(state)
    except Exception as err:  # torch raises many types for foreign or mismatched files
        raise ValueError(f"cannot load {checkpoint} into {architecture['name']}: {err}") from err
    save_model(model, out, {"external": str(checkpoint)})


# ---------------------------------------------------------------------------------------------
# kinds of external model


def kind_of(entry: Mapping[str, Any]) -> str:
    """The kind of an ``external_models`` entry: the one key of :data:`KINDS` it has."""
    kinds = [k for k in KINDS if entry.get(k) is not None]
    if len(kinds) != 1:
        raise ValueError(
            f"external_models entry {entry.get('name')!r} needs exactly one of {list(KINDS)}, "
            f"got {kinds or 'none'}"
        )
    return kinds[0]


def _kind(entry: Mapping[str, Any]):
    return importlib.import_module(KINDS[kind_of(entry)])


def files(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The files the import of ``entry`` reads (for the workflow to track)."""
    return _kind(entry).model_files(entry)


def write_model(entry: Mapping[str, Any], out: str | os.PathLike) -> None:
    """Import the model of ``entry`` as the model file ``out`` (its kind's ``import_entry``)."""
    _kind(entry).import_entry(entry, out)


def _agrees(given: Any, found: Any) -> bool:
    if isinstance(given, Mapping) and isinstance(found, Mapping):  # the keys the model declares
        return all(given.get(k) == v for k, v in found.items())
    return given == found


def settings(entry: Mapping[str, Any]) -> dict[str, Any]:
    """How evaluation and attacks run the model of ``entry``
    (:func:`segrobust.inference.wrap` settings): each of :data:`CONVENTIONS` from the entry, or
    where it is null from what the model's own files declare; ValueError naming both where they
    disagree."""
    declared, source = _kind(entry).declared_settings(entry)
    merged = {}
    for key in CONVENTIONS:
        given, found = entry.get(key), declared.get(key)
        if given is not None and found is not None and not _agrees(given, found):
            raise ValueError(
                f"external_models {entry['name']}: {key} {given} contradicts {found} declared by "
                f"{source}; remove the key or fix the model's files"
            )
        merged[key] = given if given is not None else found
    return {**(merged.pop("inference") or {}), **merged}


def model_files(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint entry reads its checkpoint."""
    return {"checkpoint": entry["checkpoint"]}


def declared_settings(entry: Mapping[str, Any]) -> tuple[dict, str]:
    """A checkpoint declares nothing: every convention is the entry's (null: segrobust's)."""
    return {}, entry["checkpoint"]


def import_entry(entry: Mapping[str, Any], out: str | os.PathLike) -> None:
    """:func:`import_model` of a checkpoint entry."""
    arch = entry.get("architecture")
    arch = arch and {"name": arch["network"], "kwargs": arch.get("kwargs", {})}
    import_model(entry["checkpoint"], out, arch)
