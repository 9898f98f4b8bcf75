"""Sanity checks of the attacks per model and seed: pass / flag with the numbers behind them."""

import pandas as pd

from segrobust.audit import audit, audit_markdown
from segrobust.fileio import atomic_path, write_document
from segrobust.logs import log_to_file

log = log_to_file(snakemake.log[0])
results = pd.read_csv(snakemake.input.results, keep_default_na=False, na_values=[""])
gradients = pd.concat([pd.read_csv(p) for p in snakemake.input.gradients], ignore_index=True)
table = audit(results, gradients, **snakemake.params.audit)
with atomic_path(snakemake.output.csv) as tmp:
    table.to_csv(tmp, index=False)
write_document(audit_markdown(table), snakemake.output.md, snakemake.output.html)
log.info("status per check:\n%s", table.groupby(["check", "status"]).size().to_string())
