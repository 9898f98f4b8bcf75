"""An external pretrained model as a model file of the workflow (no training)."""

from segrobust.external import import_model
from segrobust.logs import log_to_file

log = log_to_file(snakemake.log[0])
import_model(snakemake.input.checkpoint, snakemake.output.model, snakemake.params.architecture)
log.info("imported %s from %s", snakemake.wildcards.model, snakemake.input.checkpoint)
