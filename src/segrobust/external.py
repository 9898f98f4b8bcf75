"""Pretrained external models: kinds, the files they are imported from, their conventions.

An ``external_models:`` config entry names a model that is evaluated and attacked like a
trained model, without training. Its kind (:data:`KINDS`, one module each) is the key it has:

- ``checkpoint``: a TorchScript archive or a state_dict (below, this module);
- ``nnunet``: an nnU-Net v2 result folder (:mod:`segrobust.nnunet`);
- ``bundle``: a MONAI bundle directory (:mod:`segrobust.bundles`).

Each kind module has ``model_files(entry)`` (what the import reads), ``declared_settings(entry)``
(the conventions below that the model's own files declare, and which file) and
``import_entry(entry)``: the network to save with its ``extra``, or the path of a TorchScript
archive, which :func:`write_model` writes as the model file
:func:`segrobust.models.checkpoints.load_model` reads. :func:`settings` merges what a model
declares with the entry's own keys: a key the entry leaves null comes from the model's files;
one both give must agree.

A ``checkpoint`` is:

- a TorchScript archive (``torch.jit.load``), or a state_dict (``torch.load(weights_only=True)``;
  ``.safetensors`` when the safetensors package is installed) plus an ``architecture``
  ``{name, kwargs}`` of :mod:`segrobust.models.registry`. No pickled code is ever executed
  (:mod:`segrobust.models.checkpoints`).
- ``modalities``: the order of the input channels the model expects (segrobust's is
  :data:`segrobust.labels.MODALITIES`); ``normalization``: the intensity normalisation it was
  trained with, applied to segrobust's preprocessed input ("none": as preprocessed; "zscore":
  per channel over nonzero voxels, MONAI's ``NormalizeIntensity(nonzero=True,
  channel_wise=True)``; "minmax": per channel to [0, 1], MONAI's ``ScaleIntensity``).
- ``output``: ``{type: softmax, labels: [...]}``, class logits whose channels are the BraTS
  labels listed; or ``{type: sigmoid, regions: [TC, WT, ET], threshold: t}``, one logit per
  nested region as MONAI's BraTS bundle (a voxel is ET if p_ET > t, else NCR/NET if p_TC > t,
  else edema if p_WT > t).

The adapters that apply these conventions run with the network (:mod:`segrobust.inference`).
"""

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from segrobust.models.checkpoints import external_network, write_imported

KINDS: dict[str, str] = {
    "checkpoint": "segrobust.external",
    "nnunet": "segrobust.nnunet",
    "bundle": "segrobust.bundles",
}
CONVENTIONS: tuple[str, ...] = ("modalities", "normalization", "output", "inference")


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
    network, extra = _kind(entry).import_entry(entry)
    write_imported(network, out, extra)


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


def import_entry(entry: Mapping[str, Any]) -> tuple[nn.Module | Path, dict]:
    """The network of a checkpoint entry with its weights (or its TorchScript archive)."""
    arch = entry.get("architecture")
    arch = arch and {"name": arch["network"], "kwargs": arch.get("kwargs", {})}
    return external_network(entry["checkpoint"], arch), {"external": str(entry["checkpoint"])}
