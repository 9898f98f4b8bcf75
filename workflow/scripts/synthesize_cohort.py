"""Write the built-in synthetic BraTS-like cohort in the BraTS 2017 layout."""

import time

from segrobust.cohort import write_cohort
from segrobust.logs import log_to_file

log = log_to_file(snakemake.log[0])
settings = snakemake.params.settings
start = time.process_time()
ids = write_cohort(
    snakemake.params.root,
    n_subjects=settings["n_subjects"],
    shape=tuple(settings["shape"]),
    spacing=tuple(settings["spacing"]),
    lgg_fraction=settings["lgg_fraction"],
    seed=snakemake.params.seed,
    anatomy=settings["anatomy"],
)
log.info(
    "wrote %d subjects under %s: %.1f CPU s",
    len(ids),
    snakemake.params.root,
    time.process_time() - start,
)
