"""Clean test-set Dice of one trained model, and its predicted label maps."""

from pathlib import Path

import torch

from segrobust.data import read_split
from segrobust.evaluation import evaluate_clean
from segrobust.fileio import atomic_path
from segrobust.inference import wrap
from segrobust.logs import log_to_file
from segrobust.models.checkpoints import load_model
from segrobust.models.device import evaluation_amp, select_device
from segrobust.models.kernels import provenance

log = log_to_file(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
device = select_device(snakemake.params.device)
amp, conv_kernel = evaluation_amp(snakemake.params.precision, device), snakemake.params.conv_kernel
network, _ = load_model(snakemake.input.model, device, conv_kernel)
model = wrap(network, snakemake.params.inference)
root = Path(snakemake.params.preprocessed)
results = evaluate_clean(
    model,
    snakemake.wildcards.model,
    [root / s for s in read_split(snakemake.input.split, "test")],
    device,
    amp=amp,
    predictions_dir=snakemake.output.predictions,
    tags={"seed": int(snakemake.wildcards.seed), **provenance(model, device, amp)},
    nsd_tolerance=snakemake.params.nsd_tolerance,
)
with atomic_path(snakemake.output.results) as tmp:
    results.to_csv(tmp, index=False)
log.info("clean Dice: %s", results.groupby("region")["dice"].mean().round(4).to_dict())
