# One trained model per (family, T or ε); its clean evaluation on the test split.


rule train_model:
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
        code=code_digest("evaluation", "model", "metrics", "data"),
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
