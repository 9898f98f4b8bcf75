"""The run's headline numbers as Markdown, generated from the results (never hand-copied)."""

import pandas as pd

from segrobust.kernels import cpu_model
from segrobust.labels import REGIONS
from segrobust.tables import attack_label, model_label, model_sort_key

CLEAN = "none"


def seed_table(
    results: pd.DataFrame, where: pd.Series, reference_model: str = "baseline"
) -> pd.DataFrame:
    """Per model and region: mean Dice over subjects of each seed, then mean ± sd over seeds;
    the reference model first, then the defences in Table 2's order."""
    rows = results[where]
    per_seed = rows.groupby(["model", "region", "seed"])["dice"].mean()
    out = per_seed.groupby(["model", "region"]).agg(["mean", "std", "count"]).reset_index()
    cells = out.apply(
        lambda r: f"{r['mean']:.3f} ± {r['std']:.3f}" if r["count"] > 1 else f"{r['mean']:.3f}",
        axis=1,
    )
    table = out.assign(cell=cells).pivot(index="model", columns="region", values="cell")
    table = table[[r for r in REGIONS if r in table.columns]]
    order = sorted(table.index, key=lambda m: (m != reference_model, model_sort_key(m)))
    return table.loc[order].rename(index=model_label).rename_axis("Model").reset_index()


def run_summary(results: pd.DataFrame, verdicts: pd.DataFrame, fgsm_eps: float) -> str:
    """Markdown: what ran, clean and FGSM Dice per model (seed spread), and the verdicts."""
    seeds = sorted(results["seed"].unique())
    n_subjects = results["subject"].nunique()
    ran = ", ".join(sorted(set(results["precision"] + " / " + results["kernel"])))
    clean = seed_table(results, results["attack"] == CLEAN)
    white_box = results["source_model"] == results["model"]
    fgsm = seed_table(
        results,
        (results["attack"] == "fgsm") & white_box & ((results["eps"] - fgsm_eps).abs() < 1e-9),
    )
    decided = verdicts[~verdicts["verdict"].str.startswith("inconclusive")]
    counts = verdicts["verdict"].str.replace(r" \(.*", "", regex=True).value_counts().sort_index()
    lines = [
        "# Summary of this run",
        "",
        f"Generated from `results.csv` on {cpu_model()} ({ran}); {len(seeds)} training seeds "
        f"({', '.join(map(str, seeds))}) per model, {n_subjects} test subjects. Dice: mean over "
        "subjects per seed, then mean ± sd over seeds (the sd is the training noise). CPU "
        "results are deterministic on one machine but differ across CPU types (float rounding "
        "of the kernels), so compare runs by their seed spread, not digit by digit.",
        "",
        "## Clean Dice",
        "",
        clean.to_markdown(index=False, disable_numparse=True),
        "",
        f"## Dice under {attack_label('fgsm')} at ε = {fgsm_eps:g} (white-box)",
        "",
        fgsm.to_markdown(index=False, disable_numparse=True),
        "",
        "## Defences against training noise (tables/replicates.md)",
        "",
        ", ".join(f"{v} {k}" for k, v in counts.items()) + f" of {len(verdicts)} comparisons.",
    ]
    for row in decided.itertuples():
        lines.append(
            f"- {model_label(row.model)} is **{row.verdict}** than {model_label(row.reference)} "
            f"under {attack_label(row.attack)} ε = {row.eps:g}, {row.region}: Δ {row.delta:+.3f} "
            f"(seed sd {row.seed_sd:.3f}, p_adj {row.p_seeds_adj:.3g})"
        )
    return "\n".join(lines) + "\n"
