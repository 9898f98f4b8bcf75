# Raw data → preprocessed training arrays → split.


# preprocess_jobs: how many subjects one submitted preprocessing group job runs at once (the
# cluster profile sets it with --resources); "local" makes it a limit per submission, not a
# total across all submissions.
resource_scopes:
    preprocess_jobs="local",


if config["data"]["source"] == "synthetic":

    rule synthesize_cohort:
        output:
            [str(path) for subject in RAW.values() for path in subject.files.values()],
        params:
            root=lambda wildcards, output: Path(output[0]).parents[2],
            settings=config["data"]["synthetic"],
            seed=config["seed"],
            code=code_digest("synthesize_cohort"),
        log:
            f"{LOGS}/synthesize_cohort.log",
        benchmark:
            f"{BENCH}/synthesize_cohort.tsv"
        conda:
            ENV
        script:
            "../workflow/scripts/synthesize_cohort.py"


rule preprocess_subject:
    input:
        unpack(raw_files),
    output:
        image=f"{PREPROCESSED}/{{subject}}/image.npy",
        label=f"{PREPROCESSED}/{{subject}}/label.npy",
        mask=f"{PREPROCESSED}/{{subject}}/mask.npy",
        nifti=f"{PREPROCESSED}/{{subject}}/image.nii.gz",
        seg=f"{PREPROCESSED}/{{subject}}/seg.nii.gz",
        meta=f"{PREPROCESSED}/{{subject}}/meta.json",
    params:
        subject=lambda wildcards: RAW[wildcards.subject].to_dict(),
        sha256=lambda wildcards: RAW_SHA256.get(wildcards.subject, {}),
        shape=config["preprocess"]["shape"],
        standardise=config["preprocess"]["standardise"],
        n4=config["preprocess"]["n4"],
        code=code_digest("preprocess_subject"),
    log:
        f"{LOGS}/preprocess_subject/{{subject}}.log",
    benchmark:
        f"{BENCH}/preprocess_subject/{{subject}}.tsv"
    group:
        "preprocess"
    resources:
        mem_mb=4000,
        runtime=20,
        preprocess_jobs=1,
    conda:
        ENV
    script:
        "../workflow/scripts/preprocess_subject.py"


# The split doubles as the cohort manifest: it is written once every subject is preprocessed, so
# later jobs depend on this one file rather than on one file per subject (a small DAG at scale).
rule split:
    input:
        preprocessed(),
    output:
        path("split"),
    params:
        subjects=GRADES,
        test_fraction=config["split"]["test_fraction"],
        val_fraction=config["split"]["val_fraction"],
        seed=config["seed"],
        code=code_digest("split"),
    log:
        f"{LOGS}/split.log",
    conda:
        ENV
    script:
        "../workflow/scripts/split.py"
