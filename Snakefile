# segrobust: adversarial and realistic robustness of 3D brain-tumour segmentation networks.
# Wiring only: helpers live in rules/common.smk, the work in workflow/scripts → src/segrobust.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


include: "rules/common.smk"


wildcard_constraints:
    subject=r"[A-Za-z0-9][A-Za-z0-9_\-]*",
    model=MODEL_PATTERN,
    attack=r"fgsm|ifgsm|tifgsm|pgd|segpgd|fgsm_T|transfer_fgsm|realistic",
    figure=r"fig1|fig2|supp_fig2|fig3|fig4|fig5|robustness|realistic",


include: "rules/data.smk"
include: "rules/training.smk"
include: "rules/attacks.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),


onsuccess:
    remove_finished_checkpoints()
