"""An external pretrained model as a model file of the workflow (no training)."""

from segrobust.external import kind_of, write_model
from segrobust.logs import log_to_file

log = log_to_file(snakemake.log[0])
entry = snakemake.params.entry
write_model(entry, snakemake.output.model)
log.info("imported %s (%s) from %s", entry["name"], kind_of(entry), dict(snakemake.input))
