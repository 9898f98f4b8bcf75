"""The primary analysis (declared in the config) and the exploratory defence comparisons."""

import pandas as pd

from segrobust.fileio import atomic_path, write_document
from segrobust.logs import log_to_file
from segrobust.replicates import exploratory_table, primary_analysis, replicates_markdown

log = log_to_file(snakemake.log[0])
results = pd.read_csv(snakemake.input[0], keep_default_na=False, na_values=[""])
stats = snakemake.params.statistics
comparisons = [tuple(c) for c in snakemake.params.comparisons]
primary = primary_analysis(
    results,
    comparisons,
    **stats["primary"],
    alpha=stats["alpha"],
    n_boot=stats["n_boot"],
    seed=snakemake.params.seed,
    target_power=stats["power"],
    minimal_effect=stats["minimal_effect"],
    non_inferiority_margin=stats["non_inferiority_margin"],
)
exploratory = exploratory_table(
    results,
    comparisons,
    conditions=[tuple(c) for c in snakemake.params.conditions],
    alpha=stats["alpha"],
)
for table, path in ((primary, snakemake.output.primary), (exploratory, snakemake.output.csv)):
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
write_document(
    replicates_markdown(primary, exploratory, stats["alpha"]),
    snakemake.output.md,
    snakemake.output.html,
)
log.info("primary verdicts:\n%s", primary[["model", "delta", "p_holm", "verdict"]].to_string())
