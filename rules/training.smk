# One trained model per (architecture, family, T or ε) and training seed, or an imported
# external model; its clean evaluation on the test split.


rule train_model:
    wildcard_constraints:
        model=TRAINED_PATTERN,
    input:
        unpack(teacher_of),
        split=path("split"),
    output:
        model=path("model"),
        log_csv=path("training_log"),
    params:
        preprocessed=PREPROCESSED,
        settings=train_settings,
        checkpoint=lambda wildcards: path("checkpoint", model=wildcards.model, seed=wildcards.seed),
        device=config["training"]["device"],
        code=code_digest("train_model"),
    log:
        f"{LOGS}/train_model/{MODEL_DIR}.log",
    benchmark:
        f"{BENCH}/train_model/{MODEL_DIR}.tsv"
    threads: 1
    resources:
        gpu=config["resources"]["gpu"],
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime"],
    conda:
        ENV
    script:
        "../workflow/scripts/train_model.py"


rule import_external:
    wildcard_constraints:
        model=EXTERNAL_PATTERN,
    input:
        unpack(external_files),
    output:
        model=path("model", seed=0),
    params:
        entry=lambda wildcards: EXTERNAL[wildcards.model],
        code=code_digest("import_external"),
    log:
        f"{LOGS}/import_external/{{model}}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/import_external.py"


rule evaluate_clean:
    input:
        model=path("model"),
        split=path("split"),
    output:
        results=path("clean"),
        predictions=directory(path("predictions")),
    params:
        preprocessed=PREPROCESSED,
        precision=config["attacks"]["precision"],
        conv_kernel=config["training"]["conv_kernel"],
        device=config["training"]["device"],
        inference=lambda wildcards: inference_settings(wildcards.model),
        nsd_tolerance=config["metrics"]["nsd_tolerance_mm"],
        code=code_digest("evaluate_clean"),
    log:
        f"{LOGS}/evaluate_clean/{MODEL_DIR}.log",
    benchmark:
        f"{BENCH}/evaluate_clean/{MODEL_DIR}.tsv"
    threads: 1
    resources:
        gpu=config["resources"]["gpu"],
        runtime=30,
    conda:
        ENV
    script:
        "../workflow/scripts/evaluate_clean.py"
