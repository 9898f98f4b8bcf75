"""Defences against the reference, tested at the level of training seeds, with verdicts."""

import pandas as pd

from segrobust.fileio import atomic_path, write_document
from segrobust.logs import log_to_file
from segrobust.replicates import defence_verdicts, verdict_markdown

log = log_to_file(snakemake.log[0])
results = pd.read_csv(snakemake.input[0], keep_default_na=False, na_values=[""])
stats = snakemake.params.statistics
table = defence_verdicts(
    results,
    conditions=[tuple(c) for c in snakemake.params.conditions],
    correction=stats["correction"],
    alpha=stats["alpha"],
    seed=snakemake.params.seed,
)
with atomic_path(snakemake.output.csv) as tmp:
    table.to_csv(tmp, index=False)
write_document(
    verdict_markdown(table, stats["correction"], stats["alpha"]),
    snakemake.output.md,
    snakemake.output.html,
)
log.info("verdicts:\n%s", table["verdict"].value_counts().to_string())
