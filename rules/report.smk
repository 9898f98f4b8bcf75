# One long results table → statistics and tables → figures (each with a report caption).


rule collect_results:
    input:
        clean=model_dirs("clean"),
        attacks=attack_results(),
    output:
        path("results"),
    params:
        code=code_digest("collect_results"),
    log:
        f"{LOGS}/collect_results.log",
    conda:
        ENV
    script:
        "../workflow/scripts/collect_results.py"


rule tables:
    input:
        path("results"),
    output:
        **{
            f"{t}_{kind}": f"{R}/tables/{t}.{kind}"
            for t in ("table1", "table2")
            for kind in ("csv", "md", "tex")
        },
        **{
            f"{t}_html": report(f"{R}/tables/{t}.html", caption=f"../report/{t}.rst", category="Tables")
            for t in ("table1", "table2")
        },
        table1_tests=f"{R}/tables/table1_tests.csv",
        table2_tests=f"{R}/tables/table2_tests.csv",
    params:
        statistics=config["statistics"],
        table1_rows=sr_plan.table1_rows(config),
        seed=config["seed"],
        code=code_digest("tables"),
    log:
        f"{LOGS}/tables.log",
    conda:
        ENV
    script:
        "../workflow/scripts/tables.py"


rule figure:
    input:
        unpack(figure_inputs),
        results=path("results"),
    output:
        png=report(
            f"{R}/figures/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
        ),
        pdf=f"{R}/figures/{{figure}}.pdf",
    params:
        preprocessed=PREPROCESSED,
        root=lambda wildcards, input: str(Path(input.results).parent),
        figures=config["figures"],
        attacks=config["attacks"],
        table1_iteration=config["statistics"]["table1_iteration"],
        robust_eps=config["statistics"]["table1_fgsm_eps"],
        transfer_source=sr_plan.transfer_source(config),
        example_seeds={m: seeds_of(m)[0] for m in MODELS},
        n_examples=config["attacks"]["examples"]["n_subjects"],
        n_boot=config["statistics"]["n_boot"],
        seed=config["seed"],
        code=code_digest("figure"),
    log:
        f"{LOGS}/figure/{{figure}}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/figure.py"


rule replicates:
    input:
        path("results"),
    output:
        primary=f"{R}/tables/primary.csv",
        csv=f"{R}/tables/replicates.csv",
        md=f"{R}/tables/replicates.md",
        html=report(
            f"{R}/tables/replicates.html", caption="../report/replicates.rst", category="Tables"
        ),
    params:
        conditions=sr_plan.replicate_conditions(config),
        comparisons=sr_plan.defence_comparisons(config),
        statistics={**config["statistics"], "primary": PRIMARY},
        seed=config["seed"],
        code=code_digest("replicates"),
    log:
        f"{LOGS}/replicates.log",
    conda:
        ENV
    script:
        "../workflow/scripts/replicates.py"


rule summary:
    input:
        results=path("results"),
        primary=f"{R}/tables/primary.csv",
        exploratory=f"{R}/tables/replicates.csv",
    output:
        md=f"{R}/summary.md",
        html=report(f"{R}/summary.html", caption="../report/summary.rst", category="Summary"),
    params:
        fgsm_eps=config["statistics"]["table1_fgsm_eps"],
        alpha=config["statistics"]["alpha"],
        code=code_digest("summary"),
    log:
        f"{LOGS}/summary.log",
    conda:
        ENV
    script:
        "../workflow/scripts/summary.py"
