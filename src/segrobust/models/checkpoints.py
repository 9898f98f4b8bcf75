"""Model files: segrobust checkpoints, and the files of external models imported as such.

A segrobust checkpoint is ``torch.save({"arch", "state_dict", "extra"})``: the network's record
(:func:`segrobust.models.registry.record`), its weights and plain-data ``extra``; it loads with
``weights_only=True``. A model file may instead be a TorchScript archive (an external model
used as it is), which loads with ``torch.jit.load``: neither way executes pickled Python code.

External files read here (:mod:`segrobust.external` knows the kinds of external model): a
TorchScript archive (checked by loading it, then copied), or a state_dict for a network of the
registry (``torch.load(weights_only=True)``; ``.safetensors`` when the safetensors package is
installed).
"""

import os
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segrobust.fileio import atomic_path
from segrobust.models.registry import build, record, unwrap


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Atomically save architecture record, weights and ``extra`` (plain Python values)."""
    checkpoint = {"arch": record(model), "state_dict": model.state_dict(), "extra": extra or {}}
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def is_torchscript(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (torch.jit.save) rather than a torch.save file."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())


def load_model(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    conv_kernel: str = "onednn",
) -> tuple[nn.Module, dict]:
    """Load a model file (a checkpoint written by :func:`save_model`, or TorchScript); return
    (model in eval mode, extra). TorchScript gives extra = {}. ``conv_kernel``: what runs the
    float32 CPU convolutions of a rebuilt network (:mod:`segrobust.models.kernels`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        if is_torchscript(path):
            return torch.jit.load(path, map_location=map_location).eval(), {}
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise ValueError(
            f"cannot read model checkpoint {path}: corrupt, truncated or not a torch file "
            f"({type(err).__name__})"
        ) from err
    if not isinstance(checkpoint, dict) or not {"arch", "state_dict", "extra"} <= checkpoint.keys():
        raise ValueError(
            f"{path} is not a segrobust model checkpoint (keys arch, state_dict, extra)"
        )
    arch = checkpoint["arch"]
    if not isinstance(arch, dict) or not {"name", "kwargs"} <= arch.keys():
        raise ValueError(f"{path}: arch must record the architecture's name and kwargs")
    try:
        model = build(arch["name"], arch["kwargs"], conv_kernel=conv_kernel)
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"checkpoint {path} does not match its architecture: {err}") from err
    return model.to(map_location).eval(), checkpoint["extra"]


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The state_dict in an external file: ``.safetensors``, or a ``torch.save`` mapping of
    parameter names to tensors (or one under ``state_dict``), read with ``weights_only=True``."""
    path = Path(path)
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


def write_imported(
    network: nn.Module | str | os.PathLike, out: str | os.PathLike, extra: dict | None = None
) -> None:
    """Write an imported external model as the model file ``out``: a network (with ``extra``)
    as a checkpoint, or the path of a TorchScript archive, copied after a test load."""
    if isinstance(network, nn.Module):
        save_model(network, out, extra)
        return
    source = Path(network)
    if not is_torchscript(source):
        raise ValueError(
            f"{source} is not TorchScript: give the external model an architecture "
            "{name, kwargs} to read it as a state_dict"
        )
    torch.jit.load(source, map_location="cpu")
    with atomic_path(out) as tmp:
        shutil.copyfile(source, tmp)


def external_network(
    checkpoint: str | os.PathLike, architecture: Mapping[str, Any] | None = None
) -> nn.Module | Path:
    """The network of an external ``checkpoint``: with ``architecture`` (``{name, kwargs}`` of
    :func:`segrobust.models.registry.build`) a state_dict loaded into that network; without,
    the checkpoint's path (TorchScript, checked by :func:`write_imported`). Errors name the
    file."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"external model checkpoint not found: {checkpoint}")
    if architecture is None:
        return checkpoint
    model = build(architecture["name"], architecture.get("kwargs", {}))
    try:
        unwrap(model).load_state_dict(read_state_dict(checkpoint))
    except Exception as err:  # torch raises many types for foreign or mismatched files
        raise ValueError(f"cannot load {checkpoint} into {architecture['name']}: {err}") from err
    return model


def import_model(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    architecture: Mapping[str, Any] | None = None,
) -> None:
    """Write the external ``checkpoint`` as a model file that :func:`load_model` reads: a
    TorchScript archive copied after a test load, or (with ``architecture``) a state_dict
    saved as a segrobust checkpoint (:func:`external_network`)."""
    network = external_network(checkpoint, architecture)
    write_imported(network, out, {"external": str(checkpoint)})
