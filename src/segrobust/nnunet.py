"""nnU-Net v2 result folders as external models: nnU-Net's inference, differentiable end to end.

A result folder (``plans.json``, ``dataset.json``, ``fold_<k>/checkpoint_final.pth``) becomes
one module, :class:`NnunetModel`, that does to segrobust's preprocessed volume what nnU-Net
v2 (2.6, ``DefaultPreprocessor`` + ``nnUNetPredictor``) does to a case, in torch:

1. **axes**: nnU-Net's readers (``SimpleITKIO``, ``NibabelIO``) give the NIfTI voxel axes
   reversed, then the plans' ``transpose_forward`` permutes them;
2. **crop to nonzero**: the bounding box of the voxels nonzero in any channel (holes filled);
3. **normalisation** per channel as in the configuration's ``normalization_schemes``:
   ``ZScoreNormalization`` (over the nonzero mask when ``use_mask_for_norm``) or
   ``NoNormalization``. ``CTNormalization``, ``RescaleTo01Normalization`` and the rest are
   refused: they need raw intensities (CT units) that segrobust's preprocessing replaced;
4. **resampling** to the configuration's ``spacing``: not done. segrobust's grid must already
   have that spacing (``voxel_spacing``, checked for each subject by
   :func:`segrobust.inference.check_spacing`);
5. **sliding windows** of the ``patch_size`` (padded to it when smaller, content centred),
   placed as ``compute_steps_for_sliding_window`` places them (``step_size`` of a patch),
   blended with nnU-Net's Gaussian (σ = patch/8);
6. **mirroring** test-time augmentation over the checkpoint's ``inference_allowed_mirroring_axes``
   (every combination, averaged) and the **average over folds**, both optional;
7. outside the crop, background (nnU-Net writes label 0 there).

The output is nnU-Net's logits on segrobust's grid: one channel per label, or per region
(sigmoid) for region-based training; :func:`model_settings` reads from ``dataset.json`` how
they and the input channels map onto segrobust's conventions. The attack's ε stays defined on
segrobust's input, before all of the above. The network is built as nnU-Net builds it for
inference (its plans' ``dynamic_network_architectures`` class, deep supervision off); that
package is imported only here, when an nnU-Net model is used. Nothing in a result folder is
executed: the network class must be one of ``dynamic_network_architectures.architectures``,
its layer types ``torch.nn`` classes, and checkpoints load with ``weights_only=True``.
"""

import importlib
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from segrobust.labels import BRATS_LABELS, modality_of

EXTRA = "pip install 'segrobust[nnunet]'"
READERS: tuple[str, ...] = ("SimpleITKIO", "NibabelIO")  # both: NIfTI voxel axes reversed
NORMALIZATIONS: tuple[str, ...] = ("ZScoreNormalization", "NoNormalization")
NETWORK_PREFIX = "dynamic_network_architectures.architectures."
LAYER_PREFIX = "torch.nn."
OUTSIDE = 20.0  # logit margin of background outside the crop (no gradient flows there)


# ---------------------------------------------------------------------------------------------
# reading a result folder


def _json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"nnU-Net result folder file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def configuration(plans: Mapping, name: str, path: Path) -> dict:
    """The configuration ``name`` of ``plans`` (``inherits_from`` resolved) that this module
    can run: 3D, not a cascade stage, plans of nnU-Net >= 2.4 (an ``architecture`` entry)."""
    configs = plans.get("configurations", {})
    if name not in configs:
        raise ValueError(f"{path}: no configuration {name!r} (it has {sorted(configs)})")
    config, seen = dict(configs[name]), {name}
    while "inherits_from" in config:
        parent = config.pop("inherits_from")
        if parent in seen or parent not in configs:
            raise ValueError(f"{path}: configuration {name!r} inherits from unknown {parent!r}")
        seen.add(parent)
        config = {**configs[parent], **config}
    if config.get("previous_stage"):
        raise ValueError(
            f"{path}: configuration {name!r} is a cascade stage (needs the "
            "previous stage's segmentation); use 3d_fullres"
        )
    if "architecture" not in config:
        raise ValueError(
            f"{path}: configuration {name!r} has no `architecture` (plans of "
            "nnU-Net < 2.4); re-plan with nnU-Net >= 2.4"
        )
    if len(config.get("patch_size", ())) != 3:
        raise ValueError(
            f"{path}: configuration {name!r} is not 3D (patch size {config.get('patch_size')})"
        )
    return config


def fold_checkpoints(
    folder: str | os.PathLike, folds: Sequence | None, checkpoint: str
) -> list[Path]:
    """``fold_<k>/<checkpoint>`` of each fold in ``folds`` (None: every fold that has one)."""
    folder = Path(folder)
    if folds is None:
        found = sorted(folder.glob(f"fold_*/{checkpoint}"))
        if not found:
            raise FileNotFoundError(f"no fold_<k>/{checkpoint} in nnU-Net result folder {folder}")
        return found
    return [folder / f"fold_{fold}" / checkpoint for fold in folds]


def read_checkpoint(path: Path) -> dict:
    """An nnU-Net checkpoint, loaded with ``weights_only=True`` (numpy scalars of its training
    log allowed as data)."""
    safe = [np._core.multiarray.scalar, np.dtype, *(type(np.dtype(t)) for t in "fdil?")]
    try:
        with torch.serialization.safe_globals(safe):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"nnU-Net checkpoint not found: {path}") from None
    except Exception as err:  # torch raises many types for foreign or corrupt files
        raise ValueError(f"cannot read nnU-Net checkpoint {path}: {err}") from err
    if not isinstance(state, dict) or not isinstance(state.get("network_weights"), dict):
        raise ValueError(f"{path} is not an nnU-Net checkpoint (no network_weights)")
    return state


# ---------------------------------------------------------------------------------------------
# the network, as nnU-Net builds it


def _locate(name: Any, prefix: str, key: str) -> type:
    if not isinstance(name, str) or not name.startswith(prefix):
        raise ValueError(f"plans {key} {name!r} is not a class of {prefix[:-1]}; refused")
    module, _, attr = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"plans {key} {name!r} not found: {err}") from err
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise ValueError(f"plans {key} {name!r} is not a torch module class; refused")
    return found


def build_network(spec: Mapping[str, Any]) -> nn.Module:
    """The plans' network (``spec``: class, kwargs, requires_import, channels) without deep
    supervision, as ``nnUNetPredictor`` builds it."""
    try:
        import dynamic_network_architectures  # noqa: F401
    except ImportError as err:
        raise ImportError(f"nnU-Net models need dynamic_network_architectures: {EXTRA}") from err
    cls = _locate(spec["class"], NETWORK_PREFIX, "network_class_name")
    kwargs = dict(spec["kwargs"])
    for key in spec["requires_import"]:
        if kwargs.get(key) is not None:
            kwargs[key] = _locate(kwargs[key], LAYER_PREFIX, f"arch_kwargs.{key}")
    return cls(
        input_channels=spec["input_channels"], num_classes=spec["num_classes"],
        deep_supervision=False, **kwargs,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# sliding windows


def window_starts(size: int, patch: int, step_size: float) -> list[int]:
    """Window start positions along one axis as nnU-Net places them: as few windows as a step
    of at most ``step_size``·patch needs, spread evenly from 0 to size − patch."""
    n = int(np.ceil((size - patch) / (patch * step_size))) + 1
    if n == 1:
        return [0]
    return [round((size - patch) / (n - 1) * i) for i in range(n)]


def gaussian_weights(patch: Sequence[int]) -> Tensor:
    """nnU-Net's window weights: a unit impulse at the patch centre blurred with σ = patch/8
    (scipy), scaled to maximum 1, zeros raised to the smallest positive weight."""
    impulse = np.zeros(patch)
    impulse[tuple(p // 2 for p in patch)] = 1
    weights = ndimage.gaussian_filter(impulse, [p / 8 for p in patch], 0, mode="constant")
    weights = torch.from_numpy(weights / weights.max()).float()
    return torch.where(weights == 0, weights[weights > 0].min(), weights)


def nonzero_box(x: Tensor) -> tuple[Tensor, tuple[slice, ...]]:
    """nnU-Net's nonzero mask of one case (C, *spatial): voxels nonzero in any channel, holes
    filled; and its bounding box as slices."""
    mask = ndimage.binary_fill_holes((x.detach() != 0).any(0).cpu().numpy())
    if not mask.any():
        return torch.from_numpy(mask).to(x.device), tuple(slice(None) for _ in mask.shape)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))
    return torch.from_numpy(mask[box]).to(x.device), box


class NnunetModel(nn.Module):
    """nnU-Net's inference on a batch (B, C, *spatial) of segrobust's volumes (module docstring).

    ``network``: the plans' network spec (:func:`build_network`); one copy per fold.
    ``normalization``: per channel ``[scheme, use_mask]``; ``axes``: segrobust's spatial axis
    of each network axis; ``voxel_spacing``: the spacing (mm, segrobust's axes) it expects;
    ``regions``: region-based (sigmoid) output.
    """

    def __init__(
        self,
        network: Mapping[str, Any],
        n_folds: int,
        patch_size: Sequence[int],
        normalization: Sequence[Sequence],
        axes: Sequence[int] = (0, 1, 2),
        mirror_axes: Sequence[int] = (),
        step_size: float = 0.5,
        gaussian: bool = True,
        voxel_spacing: Sequence[float] | None = None,
        regions: bool = False,
    ):
        super().__init__()
        if not 0 < step_size <= 1:
            raise ValueError(f"nnunet.step_size must be in (0, 1], got {step_size}")
        for scheme, _ in normalization:
            if scheme not in NORMALIZATIONS:
                raise ValueError(
                    f"normalization {scheme} is not supported (only {NORMALIZATIONS}):"
                    " it needs raw intensities that segrobust's preprocessing "
                    "replaced"
                )
        if sorted(axes) != [0, 1, 2]:
            raise ValueError(f"axes must permute (0, 1, 2), got {axes}")
        self.architecture = {"name": "nnUNet", "kwargs": {
            "network": dict(network), "n_folds": int(n_folds),
            "patch_size": [int(p) for p in patch_size],
            "normalization": [[str(s), bool(m)] for s, m in normalization],
            "axes": [int(a) for a in axes], "mirror_axes": [int(a) for a in mirror_axes],
            "step_size": float(step_size), "gaussian": bool(gaussian),
            "voxel_spacing": None if voxel_spacing is None else [float(s) for s in voxel_spacing],
            "regions": bool(regions),
        }}  # fmt: skip
        self.folds = nn.ModuleList(build_network(network) for _ in range(n_folds))
        self.patch_size = self.architecture["kwargs"]["patch_size"]
        self.normalization = self.architecture["kwargs"]["normalization"]
        self.axes = self.architecture["kwargs"]["axes"]
        self.flips = [
            [2 + a for a in combo]
            for k in range(len(mirror_axes))
            for combo in itertools.combinations(sorted(mirror_axes), k + 1)
        ]
        self.step_size, self.voxel_spacing = float(step_size), voxel_spacing
        self.regions, self.n_classes = bool(regions), int(network["num_classes"])
        weights = gaussian_weights(self.patch_size) if gaussian else torch.ones(self.patch_size)
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        order = [0, 1, *(2 + a for a in self.axes)]
        x = x.permute(order)
        out = torch.cat([self._case(case) for case in x])
        return out.permute([order.index(i) for i in range(x.ndim)])

    def _case(self, x: Tensor) -> Tensor:
        """Logits (1, K, *spatial) of one case (C, *spatial), outside the crop background."""
        mask, box = nonzero_box(x)
        logits = self._windows(self._normalise(x[(slice(None), *box)], mask)[None])
        outside = torch.full((self.n_classes,), -OUTSIDE, device=x.device)
        if not self.regions:
            outside[0] = 0.0
        out = outside.view(1, -1, 1, 1, 1).expand(1, -1, *x.shape[1:]).to(logits.dtype).clone()
        out[(slice(None), slice(None), *box)] = logits
        return out

    def _normalise(self, x: Tensor, mask: Tensor) -> Tensor:
        channels = []
        for channel, (scheme, use_mask) in zip(x, self.normalization, strict=True):
            if scheme == "ZScoreNormalization":
                region = mask if use_mask else torch.ones_like(mask)
                weights = region.to(channel.dtype)
                n = weights.sum().clamp_min(1)
                mean = (channel * weights).sum() / n
                var = (((channel - mean) * weights) ** 2).sum() / n
                std = var.clamp_min(1e-16).sqrt().clamp_min(1e-8)
                channel = torch.where(region, (channel - mean) / std, channel)
            channels.append(channel)
        return torch.stack(channels)

    def _windows(self, x: Tensor) -> Tensor:
        """Gaussian-blended sliding windows over one cropped case (1, C, *spatial)."""
        shape = x.shape[2:]
        below = [max(p - s, 0) // 2 for p, s in zip(self.patch_size, shape, strict=True)]
        above = [max(p - s, 0) - b for p, s, b in zip(self.patch_size, shape, below, strict=True)]
        x = F.pad(x, [v for b, a in zip(below[::-1], above[::-1], strict=True) for v in (b, a)])
        padded = x.shape[2:]
        starts = [window_starts(s, p, self.step_size) for s, p in zip(padded, self.patch_size,
                                                                       strict=True)]  # fmt: skip
        out = torch.zeros(1, self.n_classes, *padded, device=x.device)
        norm = torch.zeros(padded, device=x.device)
        weights = self.weights.to(x.device)
        for corner in itertools.product(*starts):
            box = tuple(slice(c, c + p) for c, p in zip(corner, self.patch_size, strict=True))
            prediction = self._predict(x[(slice(None), slice(None), *box)])
            out[(slice(None), slice(None), *box)] += prediction.float() * weights
            norm[box] += weights
        out = out / norm
        keep = tuple(slice(b, b + s) for b, s in zip(below, shape, strict=True))
        return out[(slice(None), slice(None), *keep)]

    def _predict(self, window: Tensor) -> Tensor:
        """Mean logits over folds and mirrored copies of one window (1, C, *patch)."""
        batch = torch.cat([window, *(window.flip(axes) for axes in self.flips)])
        total = 0
        for network in self.folds:
            logits = network(batch).float()
            total = total + logits[:1]
            for i, axes in enumerate(self.flips):
                total = total + logits[i + 1 : i + 2].flip(axes)
        return total / (len(self.folds) * (len(self.flips) + 1))


# ---------------------------------------------------------------------------------------------
# an `external_models:` entry with `nnunet:`


def _paths(entry: Mapping) -> tuple[Path, dict]:
    spec = entry["nnunet"]
    return Path(spec["folder"]), spec


def model_files(entry: Mapping) -> dict[str, Any]:
    """The files of the result folder the import reads (plans, dataset, one checkpoint per fold)."""
    folder, spec = _paths(entry)
    return {
        "plans": str(folder / "plans.json"),
        "dataset": str(folder / "dataset.json"),
        "folds": [str(p) for p in fold_checkpoints(folder, spec["folds"], spec["checkpoint"])],
    }


def _label_map(spec: Mapping, path: Path) -> list[int]:
    labels = list(spec["labels"])
    if sorted(labels) != sorted(BRATS_LABELS):
        raise ValueError(f"nnunet.labels must order {list(BRATS_LABELS)}, got {labels} ({path})")
    return labels


def _output(dataset: Mapping, labels: list[int], path: Path) -> dict:
    """segrobust's ``output`` convention for the labels or regions of ``dataset.json``."""
    classes = {k: v for k, v in dataset["labels"].items() if k != "ignore"}
    regions = any(isinstance(v, list) and len(v) > 1 for v in classes.values())
    if not regions:
        values = sorted(int(v) for v in classes.values())
        if values != list(range(len(labels))):
            raise ValueError(
                f"{path} labels {values}: nnunet.labels maps the values "
                f"0..{len(labels) - 1} to BraTS labels"
            )
        return {"type": "softmax", "labels": labels}
    names, assigned = [], []
    for name, value in classes.items():
        members = value if isinstance(value, list) else [value]
        if set(members) == {0}:
            continue
        brats = {labels[int(v)] for v in members}
        region = {frozenset({1, 2, 4}): "WT", frozenset({1, 4}): "TC", frozenset({4}): "ET"}
        if frozenset(brats) not in region:
            raise ValueError(
                f"{path} labels[{name!r}] = {value} is no BraTS region (TC, WT, "
                "ET) under nnunet.labels"
            )
        names.append(region[frozenset(brats)])
    order = dataset.get("regions_class_order") or []
    assigned = [labels[int(c)] for c in order]
    if names != ["WT", "TC", "ET"] or assigned != [2, 1, 4]:
        raise ValueError(
            f"{path}: regions {names} with regions_class_order {order} do not "
            "decode as BraTS (WT then TC then ET, labelled edema, NCR/NET, ET)"
        )
    return {"type": "sigmoid", "regions": names, "threshold": 0.5}


def declared_settings(entry: Mapping) -> tuple[dict, str]:
    """What the folder's ``dataset.json`` declares: ``modalities`` (its ``channel_names``, when
    they name the four BraTS modalities) and ``output`` (its labels or regions under
    ``nnunet.labels``); nnU-Net's own normalisation and windows run inside
    :class:`NnunetModel`, so none of segrobust's. Returns (settings, the file they come from)."""
    folder, spec = _paths(entry)
    path = folder / "dataset.json"
    dataset = _json(path)
    names = dataset.get("channel_names") or dataset.get("modality") or {}
    modalities = [modality_of(names[k]) for k in sorted(names, key=int)]
    declared = {
        "modalities": None if None in modalities or len(modalities) != 4 else modalities,
        "output": _output(dataset, _label_map(spec, path), path),
        "normalization": "none",
        "inference": {"roi_size": None},
    }
    return declared, f"{path} (nnU-Net normalises and slides its own windows)"


def import_entry(entry: Mapping) -> tuple[nn.Module, dict]:
    """The result folder of ``entry`` as an :class:`NnunetModel` (plans, fold weights and the
    checkpoint's mirroring axes as plain data) and the extra its model file records."""
    folder, spec = _paths(entry)
    plans = _json(folder / "plans.json")
    dataset = _json(folder / "dataset.json")
    config = configuration(plans, spec["configuration"], folder / "plans.json")
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in READERS:
        raise ValueError(
            f"{folder / 'plans.json'}: image_reader_writer {reader} is not one of "
            f"{READERS} (segrobust feeds NIfTI voxel axes, not reoriented)"
        )
    axes = [(2, 1, 0)[t] for t in plans.get("transpose_forward", [0, 1, 2])]
    paths = fold_checkpoints(folder, spec["folds"], spec["checkpoint"])
    checkpoints = [read_checkpoint(p) for p in paths]
    for path, checkpoint in zip(paths, checkpoints, strict=True):
        trained = checkpoint.get("init_args", {}).get("configuration")
        if trained not in (None, spec["configuration"]):
            raise ValueError(
                f"{path} was trained as {trained!r}, not nnunet.configuration "
                f"{spec['configuration']!r}"
            )
    mirror = checkpoints[0].get("inference_allowed_mirroring_axes") or ()
    output = _output(dataset, _label_map(spec, folder / "dataset.json"), folder / "dataset.json")
    spacing_net = config["spacing"]
    arch = config["architecture"]
    network = {
        "class": arch["network_class_name"], "kwargs": arch["arch_kwargs"],
        "requires_import": list(arch.get("_kw_requires_import", ())),
        "input_channels": len(dataset["channel_names"]),
        "num_classes": len(output.get("labels") or output["regions"]),
    }  # fmt: skip
    model = NnunetModel(
        network,
        len(paths),
        config["patch_size"],
        list(zip(config["normalization_schemes"], config["use_mask_for_norm"], strict=True)),
        axes=axes,
        mirror_axes=mirror if spec["mirroring"] else (),
        step_size=spec["step_size"],
        gaussian=spec["gaussian"],
        voxel_spacing=[spacing_net[axes.index(i)] for i in range(3)],
        regions=output["type"] == "sigmoid",
    )
    for fold, path, checkpoint in zip(model.folds, paths, checkpoints, strict=True):
        try:
            fold.load_state_dict(checkpoint["network_weights"])
        except RuntimeError as err:
            raise ValueError(f"{path} ({checkpoint.get('trainer_name')}) does not fit the plans' "
                             f"network: {err}") from err  # fmt: skip
    return model, {"external": str(folder), "folds": [str(p) for p in paths]}
