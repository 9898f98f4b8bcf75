# Attack sweeps and realistic perturbations per (model, attack family).


rule attack:
    input:
        unpack(transfer_source),
        model=f"{R}/models/{{model}}/model.pt",
        split=f"{R}/split.csv",
    output:
        results=f"{R}/attacks/{{model}}/{{attack}}.csv",
        examples=directory(f"{R}/attacks/{{model}}/{{attack}}_examples"),
    params:
        preprocessed=PREPROCESSED,
        settings=attack_settings,
        source_name=config["attacks"]["transfer_fgsm"]["source"],
        inference=lambda wildcards: inference_settings(wildcards.model),
        source_inference=inference_settings(config["attacks"]["transfer_fgsm"]["source"]),
        seed=config["seed"],
        amp=config["training"]["amp"],
        device=config["training"]["device"],
        code=code_digest(
            "evaluation", "attacks", "perturbations", "metrics", "model", "architectures",
            "inference", "external", "losses", "data",
        ),
    log:
        f"{LOGS}/attack/{{model}}/{{attack}}.log",
    benchmark:
        f"{BENCH}/attack/{{model}}/{{attack}}.tsv"
    threads: 1
    resources:
        gpu=config["resources"]["gpu"],
        mem_mb=8000,
        runtime=240,
    conda:
        ENV
    script:
        "../workflow/scripts/attack.py"
