# Sanity checks of the attacks per model and seed (gradient masking), and worst-case Dice.


rule audit_gradients:
    input:
        model=path("model"),
        split=path("split"),
    output:
        path("gradients"),
    params:
        preprocessed=PREPROCESSED,
        settings={k: config["attacks"][k] for k in ("loss", "gamma")},
        inference=lambda wildcards: inference_settings(wildcards.model),
        precision=config["attacks"]["precision"],
        conv_kernel=config["training"]["conv_kernel"],
        device=config["training"]["device"],
        code=code_digest("audit_gradients"),
    log:
        f"{LOGS}/audit_gradients/{MODEL_DIR}.log",
    benchmark:
        f"{BENCH}/audit_gradients/{MODEL_DIR}.tsv"
    threads: 1
    resources:
        gpu=config["resources"]["gpu"],
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    script:
        "../workflow/scripts/audit_gradients.py"


rule audit:
    input:
        results=path("results"),
        gradients=model_dirs("gradients"),
    output:
        csv=f"{R}/tables/audit.csv",
        md=f"{R}/tables/audit.md",
        html=report(f"{R}/tables/audit.html", caption="../report/audit.rst", category="Audit"),
    params:
        audit=config["audit"],
        code=code_digest("audit"),
    log:
        f"{LOGS}/audit.log",
    conda:
        ENV
    script:
        "../workflow/scripts/audit.py"


rule worst_case:
    input:
        path("results"),
    output:
        csv=f"{R}/tables/worst_case.csv",
        md=f"{R}/tables/worst_case.md",
        html=report(
            f"{R}/tables/worst_case.html", caption="../report/worst_case.rst", category="Audit"
        ),
    params:
        iterations=sr_plan.worst_case_iterations(config),
        code=code_digest("worst_case"),
    log:
        f"{LOGS}/worst_case.log",
    conda:
        ENV
    script:
        "../workflow/scripts/worst_case.py"


rule worst_case_figure:
    input:
        path("results"),
    output:
        png=report(
            f"{R}/figures/worst_case/{{model}}.png",
            caption="../report/worst_case_figure.rst",
            category="Audit",
        ),
        pdf=f"{R}/figures/worst_case/{{model}}.pdf",
    params:
        iterations=sr_plan.worst_case_iterations(config),
        code=code_digest("worst_case_figure"),
    log:
        f"{LOGS}/worst_case_figure/{{model}}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/worst_case_figure.py"
