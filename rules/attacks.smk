# Attack sweeps and realistic perturbations per (model, training seed, attack family).


rule attack:
    input:
        unpack(transfer_source),
        model=path("model"),
        split=path("split"),
    output:
        results=path("attack"),
        examples=directory(path("examples")),
    params:
        preprocessed=PREPROCESSED,
        settings=attack_settings,
        source_name=sr_plan.transfer_source(config),
        inference=lambda wildcards: inference_settings(wildcards.model),
        source_inference=inference_settings(sr_plan.transfer_source(config)),
        attack_seed=config["seed"],
        nsd_tolerance=config["metrics"]["nsd_tolerance_mm"],
        precision=config["attacks"]["precision"],
        conv_kernel=config["training"]["conv_kernel"],
        device=config["training"]["device"],
        code=code_digest("attack"),
    log:
        f"{LOGS}/attack/{MODEL_DIR}/{{attack}}.log",
    benchmark:
        f"{BENCH}/attack/{MODEL_DIR}/{{attack}}.tsv"
    threads: 1
    resources:
        gpu=config["resources"]["gpu"],
        mem_mb=8000,
        runtime=240,
    conda:
        ENV
    script:
        "../workflow/scripts/attack.py"
