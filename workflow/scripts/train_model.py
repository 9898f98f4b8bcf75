"""Train one model (baseline, distillation teacher/student, FGSM or PGD adversarial, noise)."""

from pathlib import Path

import torch

from segrobust.data import read_split
from segrobust.logs import log_to_file
from segrobust.models.device import select_device
from segrobust.training import train

log = log_to_file(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
root = Path(snakemake.params.preprocessed)
train(
    snakemake.params.settings,
    train_dirs=[root / s for s in read_split(snakemake.input.split, "train")],
    val_dirs=[root / s for s in read_split(snakemake.input.split, "val")],
    model_out=snakemake.output.model,
    log_csv=snakemake.output.log_csv,
    checkpoint=snakemake.params.checkpoint,
    teacher=snakemake.input.get("teacher"),
    device=select_device(snakemake.params.device),
)
log.info("trained %s seed %s", snakemake.wildcards.model, snakemake.wildcards.seed)
