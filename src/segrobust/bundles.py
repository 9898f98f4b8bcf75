"""MONAI bundles as external models: network, weights and inference settings from the bundle.

A bundle directory (``configs/inference.json`` or ``.yaml``, ``configs/metadata.json``,
``models/model.pt`` or ``models/model.ts``) is read with ``monai.bundle.ConfigParser``:

- **network**: ``network_def`` (the bundle format's required key), references resolved by
  ConfigParser without evaluating anything, then instantiated by ConfigParser, and the
  weights of ``models/model.pt`` (``weights_only=True``; a state_dict, or one under ``model``)
  loaded into it. Without ``model.pt``, ``models/model.ts`` (TorchScript) is used as it is.
- **conventions** read where they map onto segrobust's (:func:`declared_settings`):
  input channel order and output channels from ``metadata.json``'s ``channel_def`` names;
  ``NormalizeIntensity(d)(nonzero, channel_wise)`` in ``preprocessing`` as zscore,
  ``ScaleIntensity(d)`` to [0, 1] as minmax; the ``inferer`` (``SlidingWindowInferer``'s
  roi_size, overlap, mode, sw_batch_size, or ``SimpleInferer``); ``Activations(d)`` sigmoid or
  softmax and ``AsDiscrete(d)`` threshold in ``postprocessing``. What does not map (a
  transform that changes the grid, postprocessing the attack cannot differentiate) stops
  with an error naming the bundle key.

**Safety.** A bundle config can name any importable callable (``_target_``) and hold Python
expressions (``$...``), which ConfigParser would run. segrobust evaluates no expression and
instantiates only ``network_def``, after checking that every ``_target_`` in it is a class of
``monai.networks`` or ``torch.nn`` and that no value in it is an expression; anything else
is refused before any code runs. Preprocessing, inferer and postprocessing are only read,
never instantiated.
"""

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segrobust.models.monai_nets import MonaiNetwork

CONFIGS: tuple[str, ...] = ("configs/inference.json", "configs/inference.yaml")
METADATA = "configs/metadata.json"
WEIGHTS = "models/model.pt"
TORCHSCRIPT = "models/model.ts"
TARGET_PREFIXES: tuple[str, ...] = ("monai.networks.", "torch.nn.")
SHORT_NAMES: tuple[str, ...] = ("monai.networks.nets", "monai.networks.blocks", "torch.nn")
IO_TRANSFORMS = {
    "LoadImage", "EnsureChannelFirst", "EnsureType", "ToTensor", "CastToType", "ToDevice",
    "Identity", "AsChannelFirst", "AddChannel",
}  # fmt: skip
IGNORED_POSTPROCESSING = {"Invert", "SaveImage", "Lambda", "CopyItems", "EnsureType", "ToDevice"}


def _config_path(bundle: Path) -> Path:
    for name in CONFIGS:
        if (bundle / name).is_file():
            return bundle / name
    raise FileNotFoundError(f"MONAI bundle {bundle} has no {' or '.join(CONFIGS)}")


def _parser(bundle: Path):
    from monai.bundle import ConfigParser  # MONAI's import time: bundles only

    parser = ConfigParser()
    parser.read_config(str(_config_path(bundle)))
    return parser


def _resolved(parser, key: str) -> Any:
    """The config at ``key`` with references resolved, nothing evaluated or instantiated."""
    if key not in parser:
        return None
    return _plain(parser.get_parsed_content(key, instantiate=False, eval_expr=False), key)


def _plain(value: Any, key: str) -> Any:
    """Plain data (dicts, lists, scalars) of a resolved config; expressions stay as a marker."""
    if hasattr(value, "get_config") and not hasattr(value, "evaluate"):  # a ConfigComponent
        value = value.get_config()
    if hasattr(value, "evaluate"):  # a ConfigExpression
        value = str(value.get_config())
    if isinstance(value, str) and value[:1] in ("$", "%"):
        return Expression(f"{key}: {value!r}")
    if isinstance(value, Mapping):
        return {k: _plain(v, f"{key}::{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{key}::{i}") for i, v in enumerate(value)]
    return value


class Expression(str):
    """A config value segrobust does not evaluate (a ``$`` expression or ``%`` macro)."""


def _target(name: Any, key: str) -> str:
    """The full name of an allowed ``_target_`` (a class of monai.networks or torch.nn)."""
    if not isinstance(name, str) or isinstance(name, Expression):
        raise ValueError(f"bundle key {key}: {name!r} is not a class name; refused")
    candidates = [name] if "." in name else [f"{m}.{name}" for m in SHORT_NAMES]
    for full in candidates:
        if not full.startswith(TARGET_PREFIXES):
            continue
        module, _, attr = full.rpartition(".")
        try:
            found = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        if isinstance(found, type) and issubclass(found, nn.Module):
            return f"{found.__module__}.{found.__qualname__}"
    raise ValueError(
        f"bundle key {key}: {name!r} is not a network class of monai.networks or "
        "torch.nn; segrobust instantiates nothing else from a bundle"
    )


def checked_network_def(config: Any, key: str = "network_def") -> Any:
    """``config`` with every ``_target_`` made a full, allowed class name; ValueError naming
    the key of an expression, a disallowed target or a ``_mode_``/``_requires_``."""
    if isinstance(config, Expression):
        raise ValueError(f"bundle key {config} is an expression; segrobust evaluates none")
    if isinstance(config, list):
        return [checked_network_def(v, f"{key}::{i}") for i, v in enumerate(config)]
    if not isinstance(config, Mapping):
        return config
    refused = {"_mode_", "_requires_"} & set(config)
    if refused:
        raise ValueError(f"bundle key {key}: {sorted(refused)} not supported; refused")
    out = {k: checked_network_def(v, f"{key}::{k}") for k, v in config.items() if k != "_desc_"}
    if "_target_" in config:
        out["_target_"] = _target(config["_target_"], f"{key}::_target_")
    return out


def build_network(network_def: Mapping[str, Any]) -> nn.Module:
    """The bundle network of a checked ``network_def`` (plain data), instantiated by
    ConfigParser, as a :class:`segrobust.models.monai_nets.MonaiNetwork` (one logits tensor)."""
    from monai.bundle import ConfigParser

    config = checked_network_def(network_def)
    net = ConfigParser({"network_def": config}).get_parsed_content("network_def")
    return MonaiNetwork("MonaiBundle", net, {"network_def": config})


# ---------------------------------------------------------------------------------------------
# conventions


def _short(target: Any) -> str:
    name = str(target).rpartition(".")[2]
    return name[:-1] if name.endswith("d") and name[:-1] in _KNOWN else name


_KNOWN = IO_TRANSFORMS | IGNORED_POSTPROCESSING | {
    "NormalizeIntensity", "ScaleIntensity", "Activations", "AsDiscrete",
}  # fmt: skip


def _transforms(config: Any, key: str) -> list[tuple[str, dict]]:
    if config is None:
        return []
    if isinstance(config, Mapping) and _short(config.get("_target_")) == "Compose":
        config, key = config.get("transforms", []), f"{key}::transforms"
    if not isinstance(config, list):
        raise ValueError(f"bundle key {key}: expected a Compose or a list of transforms")
    return [(f"{key}::{i}", t) for i, t in enumerate(config)]


def _normalization(preprocessing: Any) -> str | None:
    found = None
    for key, transform in _transforms(preprocessing, "preprocessing"):
        name, args = _short(transform.get("_target_")), transform
        if name in IO_TRANSFORMS:
            continue
        if (
            name == "NormalizeIntensity"
            and args.get("nonzero")
            and args.get("channel_wise")
            and (args.get("subtrahend") is None and args.get("divisor") is None)
        ):
            mapped = "zscore"
        elif (
            name == "ScaleIntensity"
            and args.get("channel_wise")
            and (
                args.get("minv", 0.0) == 0 and args.get("maxv", 1.0) == 1 and not args.get("factor")
            )
        ):
            mapped = "minmax"
        else:
            raise ValueError(
                f"bundle key {key} ({transform.get('_target_')}) has no counterpart in "
                "segrobust, which feeds its own preprocessed volume (normalisations: "
                "NormalizeIntensity(nonzero, channel_wise), ScaleIntensity(channel_wise))"
            )
        if found is not None:
            raise ValueError(f"bundle key {key}: a second intensity normalisation")
        found = mapped
    return found


INFERER_DEFAULTS = {"sigma_scale": 0.125, "padding_mode": "constant", "cval": 0.0}
INFERER_IGNORED = {"sw_device", "device", "progress", "cache_roi_weight_map", "cpu_thresh"}


def _inference(inferer: Any) -> dict | None:
    if inferer is None:
        return None
    name = _short(inferer.get("_target_"))
    if name == "SimpleInferer":
        return {"roi_size": None}
    if name != "SlidingWindowInferer":
        raise ValueError(f"bundle key inferer::_target_: {inferer.get('_target_')} is not "
                         "SlidingWindowInferer or SimpleInferer")  # fmt: skip
    settings = {"roi_size": inferer.get("roi_size")}
    for key, value in inferer.items():
        if key in ("_target_", "roi_size") or key in INFERER_IGNORED:
            continue
        if key in ("overlap", "mode", "sw_batch_size"):
            settings[key] = value
        elif INFERER_DEFAULTS.get(key, object()) != value:
            raise ValueError(f"bundle key inferer::{key} = {value!r} is not supported "
                             f"(segrobust's windows: {INFERER_DEFAULTS})")  # fmt: skip
    roi = settings["roi_size"]
    if not (isinstance(roi, list) and len(roi) == 3 and all(isinstance(s, int) and s > 0
                                                           for s in roi)):  # fmt: skip
        raise ValueError(f"bundle key inferer::roi_size = {roi!r}: three sizes >= 1 needed")
    if not isinstance(settings.get("overlap", 0.25), int | float):
        raise ValueError("bundle key inferer::overlap: one overlap for every axis needed")
    return settings


def _output(postprocessing: Any, names: list | None) -> dict | None:
    kind, threshold = None, None
    for key, transform in _transforms(postprocessing, "postprocessing"):
        name = _short(transform.get("_target_"))
        if name == "Activations":
            kind = "sigmoid" if transform.get("sigmoid") else kind
            kind = "softmax" if transform.get("softmax") else kind
        elif name == "AsDiscrete":
            threshold = transform.get("threshold", threshold)
            kind = "softmax" if transform.get("argmax") else kind
        elif name not in IGNORED_POSTPROCESSING | IO_TRANSFORMS:
            raise ValueError(
                f"bundle key {key} ({transform.get('_target_')}): postprocessing segrobust "
                "cannot differentiate through; supported: Activations, AsDiscrete"
            )
    if kind is None:
        return None
    if kind == "softmax":
        return {"type": "softmax"}
    regions = None
    if names is not None:
        from segrobust.labels import region_of

        regions = [region_of(n) for n in names]
        regions = None if None in regions else regions
    out = {"type": "sigmoid", "threshold": float(threshold if threshold is not None else 0.5)}
    return out | ({"regions": regions} if regions else {})


def _channel_names(metadata: Mapping, port: str, name: str) -> list | None:
    fmt = metadata.get("network_data_format", {}).get(port, {})
    channel_def = (fmt.get(name) or next(iter(fmt.values()), {})).get("channel_def")
    if not isinstance(channel_def, Mapping):
        return None
    return [channel_def[k] for k in sorted(channel_def, key=lambda k: int(k))]


def model_files(entry: Mapping) -> dict[str, str]:
    """The bundle's config (and metadata) and the weights the import reads."""
    bundle = Path(entry["bundle"])
    files = {"config": str(_config_path(bundle))}
    if (bundle / METADATA).is_file():
        files["metadata"] = str(bundle / METADATA)
    for name in (WEIGHTS, TORCHSCRIPT):
        if (bundle / name).is_file():
            return files | {"weights": str(bundle / name)}
    raise FileNotFoundError(f"MONAI bundle {bundle} has no {WEIGHTS} or {TORCHSCRIPT}")


def declared_settings(entry: Mapping) -> tuple[dict, str]:
    """The conventions the bundle declares (module docstring) and the config they come from;
    ValueError naming the bundle key of a setting without a counterpart."""
    import json

    from segrobust.labels import modality_of

    bundle = Path(entry["bundle"])
    parser = _parser(bundle)
    metadata = {}
    if (bundle / METADATA).is_file():
        metadata = json.loads((bundle / METADATA).read_text())
    inputs = _channel_names(metadata, "inputs", "image")
    modalities = None if inputs is None else [modality_of(n) for n in inputs]
    output = _output(
        _resolved(parser, "postprocessing"), _channel_names(metadata, "outputs", "pred")
    )
    given = entry.get("output") or {}
    if output and output["type"] == "sigmoid" and "regions" not in output and not given:
        raise ValueError(f"MONAI bundle {bundle}: {METADATA} names no output channels as TC, WT, "
                         "ET; set the entry's output.regions")  # fmt: skip
    declared = {
        "modalities": None if modalities is None or None in modalities else modalities,
        "normalization": _normalization(_resolved(parser, "preprocessing")),
        "inference": _inference(_resolved(parser, "inferer")),
        "output": output,
    }
    return declared, str(_config_path(bundle))


def import_entry(entry: Mapping) -> tuple[nn.Module | Path, dict]:
    """The bundle's network (``network_def`` + ``models/model.pt``) and the extra its model
    file records, or the path of its ``models/model.ts`` (TorchScript, used as it is)."""
    bundle = Path(entry["bundle"])
    weights = Path(model_files(entry)["weights"])
    if weights.name == Path(TORCHSCRIPT).name:
        return weights, {}
    parser = _parser(bundle)
    if "network_def" not in parser:
        raise ValueError(f"{_config_path(bundle)} has no network_def")
    model = build_network(_resolved(parser, "network_def"))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        model.net.load_state_dict(state)
    except Exception as err:  # torch raises many types for foreign or mismatched files
        raise ValueError(f"cannot load {weights} into the bundle's network_def: {err}") from err
    return model, {"external": str(bundle)}
