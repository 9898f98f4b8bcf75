# One trained model per (architecture, family, T or ε) and training seed, or an imported
# external model; its clean evaluation on the test split.


rule train_model:
    wildcard_constraints:
        model=TRAINED_PATTERN,
    input:
        unpack(teacher_of),
        split=f"{R}/split.csv",
    output:
        model=f"{R}/models/{MODEL_DIR}/model.pt",
        log_csv=f"{R}/models/{MODEL_DIR}/training_log.csv",
    params:
        preprocessed=PREPROCESSED,
        settings=lambda wildcards: train_settings(wildcards.model, wildcards.seed),
        checkpoint=lambda wildcards: f"{R}/checkpoints/{wildcards.model}/seed{wildcards.seed}.ckpt",
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
        model=f"{R}/models/{{model}}/seed0/model.pt",
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
        model=f"{R}/models/{MODEL_DIR}/model.pt",
        split=f"{R}/split.csv",
    output:
        results=f"{R}/evaluation/{MODEL_DIR}/clean.csv",
        predictions=directory(f"{R}/evaluation/{MODEL_DIR}/predictions"),
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
