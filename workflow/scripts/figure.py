"""Draw one of the paper's figures (or an extra robustness figure) from the results table."""

from pathlib import Path

import numpy as np
import pandas as pd

from segrobust import montages, plots
from segrobust.data import example_subjects, open_volume, read_split
from segrobust.evaluation import Perturbed, example_stem, load_example, read_classes
from segrobust.families import names
from segrobust.logs import log_to_file
from segrobust.plan import path
from segrobust.results import CLEAN

log = log_to_file(snakemake.log[0])
results = pd.read_csv(snakemake.input.results, keep_default_na=False, na_values=[""])
name = snakemake.wildcards.figure
opts, attacks = snakemake.params.figures, snakemake.params.attacks
boot = {"n_boot": snakemake.params.n_boot, "seed": snakemake.params.seed}
seeds = snakemake.params.example_seeds  # the image figures show one replicate of each model


def example(model, kind, eps, step, subject):
    """The saved adversarial input of ``model`` for ``subject`` and the prediction from it."""
    item = Perturbed(kind, float(eps), step, np.nan, None, None)
    examples = path(snakemake.params.root, "examples", model=model, seed=seeds[model], attack=kind)
    return montages.Segmented(*load_example(example_stem(examples, subject, item)))


def clean_prediction(model, subject):
    predictions = path(snakemake.params.root, "predictions", model=model, seed=seeds[model])
    return read_classes(Path(predictions) / f"{subject}.nii.gz")


def examples():
    """The test subjects whose attacked inputs were saved (those with every region first)."""
    test = read_split(snakemake.input.split, "test")
    return example_subjects(test, snakemake.params.preprocessed, snakemake.params.n_examples)


def test_volume(subject):
    """The preprocessed image (4, X, Y, Z) and true class map of a test subject."""
    volume = open_volume(Path(snakemake.params.preprocessed) / subject)
    return np.asarray(volume.image), np.asarray(volume.label)


if name == "fig1":
    subject = examples()[0]
    image, truth = test_volume(subject)
    examples = {CLEAN: montages.Segmented(image, clean_prediction("baseline", subject))}
    examples["fgsm"] = example("baseline", "fgsm", opts["fig1_eps"], 1, subject)
    step = snakemake.params.table1_iteration
    for kind in names(iterates=True):  # i-FGSM, ti-FGSM at Table 1's iterate
        examples[kind] = example("baseline", kind, attacks[kind]["eps"], step, subject)
    fig = montages.figure1(truth, examples, modality=opts["modality"])
elif name == "fig5":  # the example subject and slice (with all 3 regions) the attack changes most
    models = plots.ordered_models(seeds)
    candidates, truths = {}, {}
    for subject in examples():
        truths[subject] = test_volume(subject)[1]
        candidates[subject] = [
            (
                clean_prediction(m, subject),
                example(m, "fgsm", opts["fig5_eps"], 1, subject).prediction,
            )
            for m in models
        ]
    choice = montages.most_changed_slice(candidates, truths=truths)
    log.info("fig5 shows %s", choice.describe())
    image, truth = test_volume(choice.subject)
    fig = montages.figure5(
        image,
        truth,
        {m: clean_prediction(m, choice.subject) for m in models},
        {m: example(m, "fgsm", opts["fig5_eps"], 1, choice.subject) for m in models},
        eps=opts["fig5_eps"],
        modality=opts["modality"],
        slice_index=choice.slice_index,
        note=choice.describe(),
    )
elif name == "fig2":
    alphas = {a: attacks[a]["alpha"] for a in names(iterates=True)}
    fig = plots.figure2(results, error=opts["error"], alphas=alphas, **boot)
elif name == "supp_fig2":
    fig = plots.supplementary_figure2(results, error=opts["error"], **boot)
elif name == "fig3":
    fig = plots.figure3(results, error=opts["error"], **boot)
elif name == "fig4":
    fig = plots.figure4(results, error=opts["error"], **boot)
elif name == "robustness":
    eps, source = snakemake.params.robust_eps, snakemake.params.transfer_source
    fig = plots.robustness_figure(results, eps=eps, transfer_source=source)
else:  # realistic
    fig = plots.realistic_figure(results, error=opts["error"], **boot)
plots.save_figure(fig, Path(snakemake.output.png).with_suffix(""))
log.info("wrote %s", snakemake.output.png)
