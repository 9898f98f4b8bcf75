"""Concatenate every per-(model, attack) table into the one long results table."""

import pandas as pd

from segrobust.fileio import atomic_path
from segrobust.logs import log_to_file
from segrobust.results import results_frame

log = log_to_file(snakemake.log[0])
tables = [pd.read_csv(path, keep_default_na=False, na_values=[""]) for path in snakemake.input]
results = results_frame(pd.concat(tables, ignore_index=True).to_dict("records"))
with atomic_path(snakemake.output[0]) as tmp:
    results.to_csv(tmp, index=False)
log.info("%d rows from %d tables", len(results), len(tables))
