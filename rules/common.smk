# Helpers for the rules: the subjects, and thin wrappers of segrobust.plan (model names,
# training and attack settings, target lists, paths) and segrobust.digests (code digests).
from pathlib import Path

from snakemake.logging import logger

from segrobust import cohort as sr_cohort
from segrobust import data as sr_data
from segrobust import digests as sr_digests
from segrobust import external as sr_external
from segrobust import families as sr_families
from segrobust import layouts as sr_layouts
from segrobust import plan as sr_plan

R = config["results"]
LOGS = f"{R}/logs"
BENCH = f"{R}/benchmarks"
ENV = "../envs/segrobust.yaml"
SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"


def code_digest(script):
    """Digest of the package modules that workflow/scripts/<script>.py imports, transitively
    (segrobust.digests): a change of the method re-runs exactly the jobs that use it."""
    return sr_digests.code_digest(SCRIPTS / f"{script}.py")


def _raw_subjects():
    """The cohort's subjects (segrobust.data.Subject) from the configured data source."""
    if config["data"]["source"] == "synthetic":
        syn = config["data"]["synthetic"]
        try:
            sr_cohort.check_anatomy(syn["anatomy"], syn["shape"], syn["spacing"])
        except ValueError as error:
            raise ValueError(f"data.synthetic (anatomy: {syn['anatomy']}): {error}") from None
        root = Path(R) / "raw" / "synthetic"
        plan = sr_cohort.cohort_plan(syn["n_subjects"], syn["lgg_fraction"])
        return [
            sr_data.Subject(
                sid,
                grade,
                {k: root / grade / sid / f"{sid}_{k}.nii.gz" for k in sr_data.FILE_KINDS},
            )
            for sid, grade in plan
        ]
    return sr_layouts.discover_subjects(config["data"]["root"], config["data"]["layout"])


RAW = {s.id: s for s in _raw_subjects()}
SUBJECTS = sorted(RAW)
GRADES = {sid: s.grade for sid, s in RAW.items()}
# Checksums of raw files the workflow does not write itself: a replaced file re-runs its subject.
RAW_SHA256 = (
    {}
    if config["data"]["source"] == "synthetic"
    else sr_data.raw_checksums(list(RAW.values()), f"{R}/raw_manifest.tsv")
)
_cohort_warning = sr_data.check_cohort(
    GRADES,
    config["split"]["test_fraction"],
    config["split"]["val_fraction"],
    alpha=config["statistics"]["alpha"],
)
if _cohort_warning:
    logger.warning(f"segrobust: {_cohort_warning}")
sr_plan.check_training(config)


def raw_files(wildcards):
    return {key: str(file) for key, file in RAW[wildcards.subject].files.items()}


def path(kind, **wildcards):
    """The file of ``kind`` under the results directory (segrobust.plan.LAYOUT); wildcards not
    given stay Snakemake wildcards."""
    return sr_plan.path(R, kind, **wildcards)


PREPROCESSED = path("preprocessed")
MODEL_DIR = sr_plan.REPLICATE  # logs and benchmarks mirror the replicate's outputs


def preprocessed():
    return expand(f"{PREPROCESSED}/{{subject}}/image.npy", subject=SUBJECTS)


# Architectures and external models. The default network (config `model:`, the Isensee UNet)
# trains the models `baseline`, `adv_eps0.05`, ...; each entry `key` of `architectures:` trains
# the same set as `key.baseline`, `key.adv_eps0.05`, ... Entries of `external_models:` are
# evaluated and attacked under their own name, never trained.
EXTERNAL = sr_plan.external(config)
TRAINED = sr_plan.trained_models(config)
MODELS = sr_plan.models(config)
TRAINED_PATTERN = sr_plan.trained_pattern(config)
EXTERNAL_PATTERN = sr_plan.external_pattern(config)
MODEL_PATTERN = f"{TRAINED_PATTERN}|{EXTERNAL_PATTERN}"
ATTACK_PATTERN = sr_families.pattern()


def inference_settings(model):
    """How evaluation and attacks run ``model`` (segrobust.inference.wrap): `inference:` for
    trained models; for an external model its conventions, from its entry and what its own
    files declare (segrobust.external.settings)."""
    if model not in EXTERNAL:
        return config["inference"]
    return sr_external.settings(EXTERNAL[model])


def external_files(wildcards):
    """The files the import of an external model reads (checkpoint, or result folder / bundle
    files): a changed file re-imports it."""
    return sr_external.files(EXTERNAL[wildcards.model])


def seeds_of(model):
    return sr_plan.seeds_of(config, model)


def model_dirs(kind):
    """The file of ``kind`` for every replicate of every model."""
    return [path(kind, model=m, seed=s) for m, s in sr_plan.replicates(config)]


def train_settings(wildcards):
    return sr_plan.train_settings(config, wildcards.model, wildcards.seed)


def teacher_of(wildcards):
    """The teacher of a distilled student: the same seed's teacher at the same T."""
    teacher = sr_plan.teacher_of(config, wildcards.model)
    return {"teacher": path("model", model=teacher, seed=wildcards.seed)} if teacher else {}


def attack_results():
    return [path("attack", model=m, seed=s, attack=a) for m, s, a in sr_plan.attack_targets(config)]


def attack_settings(wildcards):
    return sr_plan.attack_settings(config, wildcards.attack)


def transfer_source(wildcards):
    """The model a transfer attack is crafted on: the source of the same seed (its first seed
    for an external model)."""
    if sr_families.of(wildcards.attack).kind != "transfer":
        return {}
    source = sr_plan.transfer_source(config)
    seeds = seeds_of(source)
    seed = int(wildcards.seed) if int(wildcards.seed) in seeds else seeds[0]
    return {"source": path("model", model=source, seed=seed)}


def audit_targets():
    """The audit table, and the worst-case table and figures when an adversarial family runs."""
    targets = [f"{R}/tables/audit.md"]
    if sr_plan.adversarial_configured(config):
        targets += [f"{R}/tables/worst_case.md"]
        targets += expand(f"{R}/figures/worst_case/{{model}}.png", model=MODELS)
    return targets


PRIMARY = sr_plan.primary_settings(config)
FIGURES = sr_plan.figures(config)


def figure_inputs(wildcards):
    """Example volumes and predictions that the image figures (1 and 5) show: of the first
    seed's replicates."""
    models, attacks = sr_plan.figure_examples(config, wildcards.figure)
    if not models:
        return {}
    first = {m: seeds_of(m)[0] for m in models}
    return {
        "split": path("split"),
        "examples": [path("examples", model=m, seed=first[m], attack=a) for m in models for a in attacks],
        "predictions": [path("predictions", model=m, seed=first[m]) for m in models],
    }


def remove_finished_checkpoints():
    """Delete the checkpoints of models that exist, and folders left empty. Kept until the
    workflow succeeds, the final one lets a job killed after saving its model (a time limit hit
    at the very end, which makes Snakemake remove the model) be retried without training again."""
    for ckpt in sr_plan.finished_checkpoints(R):
        ckpt.unlink()
    for folder in Path(R, "checkpoints").glob("*/"):
        if not any(folder.iterdir()):
            folder.rmdir()


def all_targets():
    return [
        path("split"),
        *model_dirs("clean"),
        f"{R}/tables/table1.md",
        f"{R}/tables/table2.md",
        f"{R}/tables/replicates.md",
        f"{R}/summary.md",
        *expand(f"{R}/figures/{{figure}}.png", figure=FIGURES),
        *audit_targets(),
    ]
