"""Seeded train/val/test split, stratified by grade."""

import pandas as pd

from segrobust.data import split_subjects
from segrobust.fileio import atomic_path
from segrobust.logs import log_to_file

log = log_to_file(snakemake.log[0])
subjects = pd.DataFrame(list(snakemake.params.subjects.items()), columns=["subject", "grade"])
table = split_subjects(
    subjects,
    test_fraction=snakemake.params.test_fraction,
    val_fraction=snakemake.params.val_fraction,
    seed=snakemake.params.seed,
)
with atomic_path(snakemake.output[0]) as tmp:
    table.to_csv(tmp, index=False)
log.info("split: %s", table["split"].value_counts().to_dict())
