"""Label conventions shared by every stage.

BraTS label maps use {0, 1, 2, 4}: background, necrotic/non-enhancing core (NCR/NET),
peritumoral oedema (ED) and Gd-enhancing tumour (ET). The network predicts four classes
0..3 (label 4 becomes class 3). The evaluated regions are unions of classes.
"""

import numpy as np

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
BRATS_LABELS: tuple[int, ...] = (0, 1, 2, 4)
N_CLASSES = 4

# region name -> network classes it contains
REGIONS: dict[str, tuple[int, ...]] = {
    "WT": (1, 2, 3),  # whole tumour: labels 1, 2, 4
    "TC": (1, 3),  # tumour core: labels 1, 4
    "ET": (3,),  # enhancing tumour: label 4
}

_LABEL_TO_CLASS = np.zeros(5, dtype=np.uint8)
_LABEL_TO_CLASS[[0, 1, 2, 4]] = [0, 1, 2, 3]
_CLASS_TO_LABEL = np.array(BRATS_LABELS, dtype=np.uint8)


def labels_to_classes(labels: np.ndarray) -> np.ndarray:
    """Map a BraTS label map {0,1,2,4} to class indices {0,1,2,3} (uint8)."""
    return _LABEL_TO_CLASS[labels]


def classes_to_labels(classes: np.ndarray) -> np.ndarray:
    """Map class indices {0,1,2,3} back to BraTS labels {0,1,2,4} (uint8)."""
    return _CLASS_TO_LABEL[classes]


# Names other tools give the modalities and regions (nnU-Net's dataset.json channel_names,
# MONAI bundles' channel_def): lower-cased, spaces, dashes and underscores removed.
MODALITY_ALIASES: dict[str, tuple[str, ...]] = {
    "t1": ("t1", "t1w", "t1n", "t1native"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1contrast", "t1post", "t1wce"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2flair", "t2f"),
}
REGION_ALIASES: dict[str, tuple[str, ...]] = {
    "TC": ("tc", "tumorcore", "tumourcore"),
    "WT": ("wt", "wholetumor", "wholetumour"),
    "ET": ("et", "enhancingtumor", "enhancingtumour"),
}


def _canonical(name: str, names: dict[str, tuple[str, ...]]) -> str | None:
    key = "".join(c for c in str(name).lower() if c.isalnum())
    return next((canonical for canonical, known in names.items() if key in known), None)


def modality_of(name: str) -> str | None:
    """The modality (one of :data:`MODALITIES`) a channel name means, None when unknown."""
    return _canonical(name, MODALITY_ALIASES)


def region_of(name: str) -> str | None:
    """The region (TC, WT or ET) a channel name means, None when unknown."""
    return _canonical(name, REGION_ALIASES)
