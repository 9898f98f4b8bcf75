"""The run's headline numbers (clean and FGSM Dice with seed spread, the primary analysis and
its seed planner) as a page."""

import pandas as pd

from segrobust.fileio import write_document
from segrobust.logs import log_to_file
from segrobust.summary import run_summary

log = log_to_file(snakemake.log[0])
results = pd.read_csv(snakemake.input.results, keep_default_na=False, na_values=[""])
primary = pd.read_csv(snakemake.input.primary, keep_default_na=False, na_values=[""])
exploratory = pd.read_csv(snakemake.input.exploratory)
text = run_summary(
    results, primary, exploratory, snakemake.params.fgsm_eps, alpha=snakemake.params.alpha
)
write_document(text, snakemake.output.md, snakemake.output.html)
log.info("\n%s", text)
