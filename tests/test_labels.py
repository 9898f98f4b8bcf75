"""Tests of segrobust.labels: the BraTS label ↔ class mapping and the regions present."""

import numpy as np
import pytest

from segrobust.labels import classes_to_labels, labels_to_classes, regions_present


def test_labels_and_classes_map_both_ways():
    labels = np.array([0, 1, 2, 4], np.uint8)
    assert labels_to_classes(labels).tolist() == [0, 1, 2, 3]
    assert classes_to_labels(labels_to_classes(labels)).tolist() == [0, 1, 2, 4]


@pytest.mark.parametrize(
    ("classes", "regions"),
    [
        ([0, 0], ()),
        ([0, 2], ("WT",)),  # oedema only: no core
        ([1, 2], ("WT", "TC")),  # an LGG without enhancing tumour
        ([0, 3], ("WT", "TC", "ET")),
        ([1, 2, 3], ("WT", "TC", "ET")),
    ],
)
def test_regions_present(classes, regions):
    assert regions_present(np.array(classes, np.uint8).reshape(1, 1, -1)) == regions
