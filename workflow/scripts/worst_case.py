"""Worst-case robust Dice over the adversarial attack families, per model, seed and ε."""

import pandas as pd

from segrobust.fileio import atomic_path, write_document
from segrobust.logs import log_to_file
from segrobust.worst_case import worst_case_markdown, worst_case_table

log = log_to_file(snakemake.log[0])
results = pd.read_csv(snakemake.input[0], keep_default_na=False, na_values=[""])
table = worst_case_table(results, snakemake.params.iterations)
with atomic_path(snakemake.output.csv) as tmp:
    table.to_csv(tmp, index=False)
write_document(worst_case_markdown(table), snakemake.output.md, snakemake.output.html)
log.info("wrote %d rows", len(table))
