"""One attack family (or the realistic perturbations) on one model over the test subjects."""

from pathlib import Path

import torch

from segrobust.data import example_subjects, read_split
from segrobust.evaluation import evaluate_attack
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
network, extra = load_model(snakemake.input.model, device, conv_kernel)
model = wrap(network, snakemake.params.inference)
source = None
if "source" in snakemake.input.keys():
    source = wrap(load_model(snakemake.input.source, device, conv_kernel)[0],
                  snakemake.params.source_inference)  # fmt: skip
test = read_split(snakemake.input.split, "test")
root = Path(snakemake.params.preprocessed)
settings = dict(snakemake.params.settings)
settings["examples"] = {
    **settings["examples"],
    "subjects": example_subjects(test, root, settings["examples"]["n_subjects"]),
}
results = evaluate_attack(
    snakemake.wildcards.attack,
    model,
    snakemake.wildcards.model,
    [root / s for s in test],
    settings,
    device,
    snakemake.params.attack_seed,
    amp=amp,
    temperature=extra.get("settings", {}).get("temperature", 1.0),  # external: no settings
    source=source,
    source_name=snakemake.params.source_name,
    examples_dir=snakemake.output.examples,
    tags={"seed": int(snakemake.wildcards.seed), **provenance(model, device, amp)},
    nsd_tolerance=snakemake.params.nsd_tolerance,
)
Path(snakemake.output.examples).mkdir(parents=True, exist_ok=True)
with atomic_path(snakemake.output.results) as tmp:
    results.to_csv(tmp, index=False)
summary = results.groupby(["attack", "region"])["dice"].mean().round(4)
log.info("mean Dice:\n%s", summary.to_string())
