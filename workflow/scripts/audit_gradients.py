"""Gradient-masking symptoms (zero input gradients, saturated softmax) of one model replicate."""

from pathlib import Path

import torch

from segrobust.data import read_split
from segrobust.fileio import atomic_path
from segrobust.gradient_stats import evaluate_gradients
from segrobust.inference import wrap
from segrobust.logs import log_to_file
from segrobust.models.checkpoints import load_model
from segrobust.models.device import evaluation_amp, select_device
from segrobust.models.kernels import provenance

log = log_to_file(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
device = select_device(snakemake.params.device)
amp, conv_kernel = evaluation_amp(snakemake.params.precision, device), snakemake.params.conv_kernel
network, extra = load_model(snakemake.input.model, device, conv_kernel)
test = read_split(snakemake.input.split, "test")
model = wrap(network, snakemake.params.inference)
stats = evaluate_gradients(
    model,
    snakemake.wildcards.model,
    [Path(snakemake.params.preprocessed) / s for s in test],
    snakemake.params.settings,
    device,
    amp=amp,
    temperature=extra.get("settings", {}).get("temperature", 1.0),  # external: no settings
    tags={"seed": int(snakemake.wildcards.seed), **provenance(model, device, amp)},
)
with atomic_path(snakemake.output[0]) as tmp:
    stats.to_csv(tmp, index=False)
log.info("mean shares:\n%s", stats[["zero_gradient", "saturated"]].mean().to_string())
