# segrobust: adversarial and realistic robustness of 3D brain-tumour segmentation networks.
# Wiring only: helpers live in rules/common.smk, the work in workflow/scripts → src/segrobust.
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from segrobust import cluster as sr_cluster

min_version("9.0")


# Without --configfile: the demo (config/config.yaml). With it: exactly the files named there
# (later ones over earlier ones) plus the schema's defaults, so no demo shortcut leaks into a
# study (e.g. config/brats2017.yaml); overlays name their base: --configfile <base> <overlay>.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


include: "rules/common.smk"


wildcard_constraints:
    subject=r"[A-Za-z0-9][A-Za-z0-9_\-]*",
    seed=r"[0-9]+",
    model=MODEL_PATTERN,
    attack=ATTACK_PATTERN,
    figure=r"fig1|fig2|supp_fig2|fig3|fig4|fig5|robustness|realistic",


include: "rules/data.smk"
include: "rules/training.smk"
include: "rules/attacks.smk"
include: "rules/report.smk"
include: "rules/audit.smk"


# Snakemake lowers every job's memory request to --resources mem_mb: on a cluster that is what
# sbatch asks for, so say so (the preprocessing width is --resources preprocess_jobs=N).
if {"mem", "mem_mb", "mem_mib"} & set(workflow.resource_settings.resources):
    logger.warning(
        "segrobust: --resources mem_mb lowers every job's memory request (training too) to it; "
        "for fewer preprocessing subjects per cluster submission use --resources preprocess_jobs=N"
    )


rule all:
    default_target: True
    input:
        all_targets(),


onstart:
    # sbatch accepts a job larger than any node of its partition, which then pends forever
    # while Snakemake waits without a word: stop before submitting, saying what to change.
    if workflow.executor_plugin is not None and workflow.executor_plugin.name == "slurm":
        dag = workflow.dag
        jobs = dict.fromkeys(dag.get_job_group(j) or j for j in dag.needrun_jobs())
        problems = sr_cluster.unrunnable(map(sr_cluster.request_of, jobs), *sr_cluster.query_sinfo())
        if problems:
            raise WorkflowError("jobs this cluster cannot run:\n" + "\n".join(problems))


onsuccess:
    remove_finished_checkpoints()
