# One trained model per (architecture, family, T or ε), or an imported external model; its
# clean evaluation on the test split.


rule train_model:
    wildcard_constraints:
        model=TRAINED_PATTERN,
    input:
        unpack(teacher_of),
        split=f"{R}/split.csv",
    output:
        model=f"{R}/models/{{model}}/model.pt",
        log_csv=f"{R}/models/{{model}}/training_log.csv",
    params:
        preprocessed=PREPROCESSED,
        settings=lambda wildcards: train_settings(wildcards.model),
        checkpoint=lambda wildcards: f"{R}/checkpoints/{wildcards.model}.ckpt",
        device=config["training"]["device"],
        code=training_code,
    log:
        f"{LOGS}/train_model/{{model}}.log",
    benchmark:
        f"{BENCH}/train_model/{{model}}.tsv"
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
        checkpoint=lambda wildcards: EXTERNAL[wildcards.model]["checkpoint"],
    output:
        model=f"{R}/models/{{model}}/model.pt",
    params:
        architecture=lambda wildcards: architecture(wildcards.model),
        code=code_digest("external", "architectures", "model"),
    log:
        f"{LOGS}/import_external/{{model}}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/import_external.py"


rule evaluate_clean:
    input:
        model=f"{R}/models/{{model}}/model.pt",
        split=f"{R}/split.csv",
    output:
        results=f"{R}/evaluation/{{model}}/clean.csv",
        predictions=directory(f"{R}/evaluation/{{model}}/predictions"),
    params:
        preprocessed=PREPROCESSED,
        amp=config["training"]["amp"],
        device=config["training"]["device"],
        inference=lambda wildcards: inference_settings(wildcards.model),
        code=code_digest(
            "evaluation", "model", "architectures", "inference", "external", "metrics", "data"
        ),
    log:
        f"{LOGS}/evaluate_clean/{{model}}.log",
    benchmark:
        f"{BENCH}/evaluate_clean/{{model}}.tsv"
    threads: 1
    resources:
        gpu=config["resources"]["gpu"],
        runtime=30,
    conda:
        ENV
    script:
        "../workflow/scripts/evaluate_clean.py"
