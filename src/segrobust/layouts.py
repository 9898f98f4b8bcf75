"""Raw data layouts: how subjects are found under a data root and what their labels mean.

One registry entry per layout (``LAYOUTS``); a new layout is one more entry here. Each maps its
files onto the internal convention (modalities t1, t1ce, t2, flair; BraTS 2017 labels
{0, 1 NCR/NET, 2 oedema, 4 enhancing}, see :mod:`segrobust.labels`):

- ``brats2017``: BraTS 2017-2021, ``[{HGG,LGG}/]<id>/<id>_{t1,t1ce,t2,flair,seg}.nii.gz``,
  labels {0, 1, 2, 4} as they are; the grade comes from an enclosing HGG/LGG folder.
- ``brats2023``: ``<id>/<id>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (t1n = T1, t1c = T1ce, t2w = T2,
  t2f = FLAIR); label 3 (enhancing tumour) becomes 4.
- ``msd``: Medical Segmentation Decathlon Task01, ``imagesTr/<id>.nii.gz`` one 4-D image with
  the channel order of ``dataset.json`` "modality", ``labelsTr/<id>.nii.gz`` with
  1 = oedema (→ 2), 2 = non-enhancing tumour (→ 1), 3 = enhancing tumour (→ 4).

Hidden files and folders (``._*`` from macOS archives, ``.DS_Store``, ``.git``) are never read.
Discovery reads names only (and MSD's dataset.json), so it is cheap when Snakemake builds its DAG.
"""

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segrobust.data import DataError, Subject
from segrobust.labels import MODALITIES

GRADES: tuple[str, ...] = ("HGG", "LGG")


@dataclass(frozen=True)
class Layout:
    """A raw layout: ``find(root)`` lists its subjects under ``root`` (none: not this layout)."""

    name: str
    example: str
    find: Callable[[Path], list[Subject]]


def visible_files(root: Path) -> list[Path]:
    """NIfTI files under ``root``, sorted; hidden files and everything in hidden folders skipped."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            Path(folder, f)
            for f in files
            if not f.startswith(".") and f.endswith((".nii", ".nii.gz"))
        ]
    return sorted(found)


def _grade(path: Path, root: Path) -> str | None:
    for part in path.relative_to(root).parts[:-1]:
        if part.upper() in GRADES:
            return part.upper()
    return None


def _per_file_finder(
    name: str, separator: str, kinds: dict[str, str], labels: dict[int, int]
) -> Callable[[Path], list[Subject]]:
    """Finder of layouts with one file ``<id><separator><kind>.nii[.gz]`` per modality and the
    label map in one folder; ``kinds`` maps the file's kind to the internal name."""
    pattern = re.compile(
        rf"^(?P<id>.+){re.escape(separator)}(?P<kind>{'|'.join(kinds)})\.nii(\.gz)?$"
    )

    def find(root: Path) -> list[Subject]:
        found: dict[str, dict[str, Path]] = {}
        for path in visible_files(root):
            match = pattern.match(path.name)
            if match is None:
                continue
            sid, kind = match["id"], kinds[match["kind"]]
            files = found.setdefault(sid, {})
            if kind in files or (files and next(iter(files.values())).parent != path.parent):
                other = files.get(kind) or next(iter(files.values()))
                raise DataError(f"duplicate subject id {sid!r}: {other} and {path}")
            files[kind] = path
        subjects = []
        wanted = {internal: kind for kind, internal in kinds.items()}
        for sid in sorted(found):
            files = found[sid]
            missing = [wanted[k] for k in (*MODALITIES, "seg") if k not in files]
            if missing:
                where = next(iter(files.values())).parent
                raise DataError(f"subject {sid} in {where}: missing {', '.join(missing)}")
            subjects.append(
                Subject(sid, _grade(files["seg"], root), files, layout=name, labels=labels)
            )
        return subjects

    return find


# dataset.json "modality" names (lower case) -> internal modality
MSD_MODALITIES: dict[str, str] = {"flair": "flair", "t1w": "t1", "t1gd": "t1ce", "t2w": "t2"}
MSD_LABELS: dict[int, int] = {0: 0, 1: 2, 2: 1, 3: 4}


def _msd_channels(dataset_json: Path) -> dict[str, tuple[str, int]]:
    try:
        names = json.loads(dataset_json.read_text())["modality"]
        channels = {MSD_MODALITIES[str(n).lower()]: ("image", int(i)) for i, n in names.items()}
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise DataError(
            f"{dataset_json}: needs a 'modality' entry naming the channels "
            f'{sorted(MSD_MODALITIES)} (e.g. {{"0": "FLAIR", ...}}); got error {err!r}'
        ) from err
    if sorted(channels) != sorted(MODALITIES):
        raise DataError(f"{dataset_json}: 'modality' must name each of {sorted(MSD_MODALITIES)}")
    return channels


def _find_msd(root: Path) -> list[Subject]:
    images = [p for p in visible_files(root / "imagesTr") if p.parent == root / "imagesTr"]
    if not images or not (root / "dataset.json").is_file():
        return []
    channels = _msd_channels(root / "dataset.json")
    subjects = []
    for image in images:
        label = root / "labelsTr" / image.name
        if not label.is_file():
            raise DataError(f"MSD subject {image.name}: no label map {label}")
        sid = image.name.removesuffix(".gz").removesuffix(".nii")
        files = {"image": image, "seg": label}
        subjects.append(Subject(sid, None, files, channels, MSD_LABELS, layout="msd"))
    return subjects


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout(
            "brats2017",
            "HGG/Brats17_2013_2_1/Brats17_2013_2_1_t1.nii.gz",
            _per_file_finder(
                "brats2017", "_", {m: m for m in (*MODALITIES, "seg")}, {0: 0, 1: 1, 2: 2, 4: 4}
            ),
        ),
        Layout(
            "brats2023",
            "BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz",
            _per_file_finder(
                "brats2023",
                "-",
                {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair", "seg": "seg"},
                {0: 0, 1: 1, 2: 2, 3: 4},
            ),
        ),
        Layout("msd", "dataset.json + imagesTr/BRATS_001.nii.gz + labelsTr/…", _find_msd),
    )
}


def discover_subjects(root: str | Path, layout: str = "auto") -> list[Subject]:
    """Subjects under ``root`` in ``layout`` (``auto``: the one layout that matches), by id.

    Raises DataError naming the root and the layouts tried (with an example file name each)
    when none matches, or the layouts that match when ``auto`` finds more than one.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a directory")
    if layout != "auto" and layout not in LAYOUTS:
        raise DataError(f"data.layout must be auto or one of {list(LAYOUTS)}, got {layout!r}")
    tried = list(LAYOUTS) if layout == "auto" else [layout]
    matches = {name: subjects for name in tried if (subjects := LAYOUTS[name].find(root))}
    if not matches:
        examples = "; ".join(f"{name} (e.g. {LAYOUTS[name].example})" for name in tried)
        raise DataError(f"no subjects found under {root}; layouts tried: {examples}")
    if len(matches) > 1:
        raise DataError(
            f"{root} matches the layouts {', '.join(matches)}: choose one with data.layout"
        )
    (subjects,) = matches.values()
    return sorted(subjects, key=lambda s: s.id)
