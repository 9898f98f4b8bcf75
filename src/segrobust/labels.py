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


def regions_present(classes: np.ndarray) -> tuple[str, ...]:
    """The regions (of :data:`REGIONS`, in its order) with at least one voxel in a class map."""
    present = np.zeros(N_CLASSES, dtype=bool)
    present[np.unique(np.asarray(classes))] = True
    return tuple(name for name, members in REGIONS.items() if present[list(members)].any())
