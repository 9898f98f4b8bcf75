"""Dice vs ε of one model: every adversarial family and their worst case."""

import pandas as pd

from segrobust.logs import log_to_file
from segrobust.worst_case import save_figure, worst_case_figure

log = log_to_file(snakemake.log[0])
results = pd.read_csv(snakemake.input[0], keep_default_na=False, na_values=[""])
fig = worst_case_figure(results, snakemake.wildcards.model, snakemake.params.iterations)
save_figure(fig, snakemake.output.png, snakemake.output.pdf)
log.info("wrote %s", snakemake.output.png)
