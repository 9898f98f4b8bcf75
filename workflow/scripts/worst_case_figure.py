"""Dice vs ε of one model: every adversarial family and their worst case."""

from pathlib import Path

import pandas as pd

from segrobust.logs import log_to_file
from segrobust.plots import save_figure, worst_case_figure

log = log_to_file(snakemake.log[0])
results = pd.read_csv(snakemake.input[0], keep_default_na=False, na_values=[""])
fig = worst_case_figure(results, snakemake.wildcards.model, snakemake.params.iterations)
save_figure(fig, Path(snakemake.output.png).with_suffix(""))
log.info("wrote %s", snakemake.output.png)
