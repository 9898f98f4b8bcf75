"""The run's headline numbers as Markdown, generated from the results (never hand-copied)."""

import numpy as np
import pandas as pd

from segrobust.crossed import Components
from segrobust.labels import REGIONS
from segrobust.models.device import cpu_model
from segrobust.planner import MAX_SEEDS, plan
from segrobust.results import CLEAN, attack_label, model_label, model_sort_key, same_eps

# The paper's undefended network on BraTS 2017 (Liu et al., Table 2: mean Dice at FGSM ε = 0,
# 0.05, 0.1; Table 1: input PSNR and SSIM of FGSM at ε = 0.05), for scale, not as a target.
PAPER_BASELINE_DICE = {
    "WT": {0.0: 0.890, 0.05: 0.676, 0.1: 0.609},
    "TC": {0.0: 0.826, 0.05: 0.467, 0.1: 0.374},
    "ET": {0.0: 0.670, 0.05: 0.380, 0.1: 0.301},
}
PAPER_FGSM_QUALITY = {0.05: {"psnr": 27.69, "ssim": 0.646}}


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


def _p(p: float) -> str:
    return f"{p:.2g}" if np.isfinite(p) else "—"


def planner_line(primary: pd.DataFrame) -> str:
    """The seed planner for the configured minimal effect, from this run's variance components
    averaged over the defences, at the run's subjects and two and four times as many."""
    rows = primary[primary["var_seed"].notna()]
    if rows.empty:
        return "Seed planner: needs at least 2 paired seeds per defence."
    first = rows.iloc[0]
    parts = Components(*(float(rows[c].mean()) for c in ("var_seed", "var_subject", "var_resid")))
    n = int(rows["n_subjects"].min())
    needed = plan(
        parts,
        float(first["minimal_effect"]),
        subjects=(n, 2 * n, 4 * n),
        alpha=float(first["plan_alpha"]),
        target=float(first["plan_power"]),
    )
    cells = [
        f"{k if k else f'more than {MAX_SEEDS}'} seeds per model with {m} test subjects"
        for m, k in needed.items()
    ]
    sds = ", ".join(
        f"{name} sd {np.sqrt(value):.3f}"
        for name, value in zip(("seed", "subject × defence", "residual"),
                               (parts.seed, parts.subject, parts.resid), strict=True)
    )  # fmt: skip
    return (
        f"Seed planner (segrobust.planner): to detect Δ = {first['minimal_effect']:g} "
        f"(statistics.minimal_effect) with {first['plan_power']:.0%} power at "
        f"α/m = {first['plan_alpha']:.3g} (Holm's strictest step over {len(primary)} defences), "
        f"given this run's variance components of the paired differences averaged over the "
        f"defences ({sds}): {'; '.join(cells)}."
    )


def primary_section(primary: pd.DataFrame, exploratory: pd.DataFrame, alpha: float) -> list[str]:
    """Lines of the summary's primary analysis: the table, disagreements, planner, the rest."""
    first = primary.iloc[0]
    shown = pd.DataFrame({
        "Defence": primary["model"].map(model_label),
        "Δ": primary["delta"].map("{:+.3f}".format),
        "95 % CI": [f"[{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else "—"
                    for lo, hi in zip(primary["ci_low"], primary["ci_high"], strict=True)],
        "p": primary["p"].map(_p),
        "Holm p": primary["p_holm"].map(_p),
        "Verdict": primary["verdict"],
        "Seeds for 80 % power at this Δ": [
            "—" if not np.isfinite(k) else f"> {MAX_SEEDS}" if k == 0 else f"{k:.0f}"
            for k in primary["seeds_for_observed"]
        ],
    })  # fmt: skip
    counts = primary["verdict"].value_counts().sort_index()
    lines = [
        f"## Primary analysis: {attack_label(first['attack'])} at ε = {first['eps']:g}, "
        f"{first['metric']} (tables/replicates.md)",
        "",
        f"Declared in the config before the run (statistics.primary). Each defence against "
        f"{model_label(first['reference'])}, paired by training seed; the 95 % CI and p count "
        "both the seed-to-seed and the subject-to-subject variance (docs/statistics.md); Holm "
        f"over the {len(primary)} defences at α = {alpha:g}: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + ".",
        "",
        shown.to_markdown(index=False, disable_numparse=True),
        "",
    ]
    for row in primary.itertuples():
        if row.verdict == "inconclusive":
            lines.append(f"- {model_label(row.model)}: inconclusive ({row.reason}).")
        if row.agreement != "agree":
            lines.append(
                f"- {model_label(row.model)}: the sensitivity checks disagree with the primary "
                f"verdict ({row.verdict}): {row.agreement}."
            )
    if (primary["agreement"] == "agree").all():
        lines.append("- Mixed model and two-level bootstrap agree with every primary verdict.")
    lines += ["", planner_line(primary), ""]
    if "ni_verdict" in primary:
        ni = ", ".join(
            f"{model_label(r.model)} {r.ni_verdict} (Δ {r.ni_delta:+.3f}, lower bound "
            f"{r.ni_lower:+.3f})"
            for r in primary.itertuples()
        )
        lines += [
            f"Clean {first['metric']} non-inferior within {primary['ni_margin'].iloc[0]:g} "
            f"(one-sided, Holm): {ni}.",
            "",
        ]
    lines.append(
        f"Exploratory (not verdicts): {len(exploratory)} comparisons per region, attack and ε, "
        f"{int((exploratory['q'] <= alpha).sum())} with Benjamini–Hochberg q ≤ {alpha:g}."
    )
    return lines


def paper_comparison(
    results: pd.DataFrame, fgsm_eps: float, reference_model: str = "baseline"
) -> list[str]:
    """Lines comparing the undefended model's relative Dice drop under white-box FGSM at
    ``fgsm_eps`` (mean over seeds) and the perturbation's input PSNR/SSIM with the paper's,
    when the paper reports that ε; empty otherwise."""
    reported = [e for e in PAPER_BASELINE_DICE["WT"] if e and same_eps(fgsm_eps, e)]
    if not reported:
        return []
    eps = reported[0]
    rows = results[results["model"] == reference_model]
    attacked = rows[(rows["attack"] == "fgsm") & same_eps(rows["eps"], eps)
                    & (rows["source_model"] == reference_model)]  # fmt: skip
    if attacked.empty:
        return []
    clean = rows[rows["attack"] == CLEAN].groupby("region")["dice"].mean()
    after = attacked.groupby("region")["dice"].mean()
    cells = []
    for region in REGIONS:
        before_paper, after_paper = (
            PAPER_BASELINE_DICE[region][0.0],
            PAPER_BASELINE_DICE[region][eps],
        )
        cells.append({
            "Region": region,
            "Paper (BraTS 2017)": f"{before_paper:.3f} → {after_paper:.3f} "
                                  f"({after_paper / before_paper - 1:+.0%})",
            "This run": f"{clean[region]:.3f} → {after[region]:.3f} "
                        f"({after[region] / clean[region] - 1:+.0%})",
        })  # fmt: skip
    lines = [
        f"## {model_label(reference_model)} against the paper: clean → {attack_label('fgsm')} "
        f"ε = {eps:g}",
        "",
        pd.DataFrame(cells).to_markdown(index=False, disable_numparse=True),
        "",
    ]
    quality = PAPER_FGSM_QUALITY.get(eps)
    if quality is not None:
        lines += [
            f"Input PSNR {attacked['psnr'].mean():.1f} dB and SSIM {attacked['ssim'].mean():.3f} "
            f"(paper, Table 1: {quality['psnr']:.2f} dB and {quality['ssim']:.3f}). The paper's "
            "numbers are for scale: its cohort, network width and training differ.",
            "",
        ]
    return lines


def run_summary(
    results: pd.DataFrame,
    primary: pd.DataFrame,
    exploratory: pd.DataFrame,
    fgsm_eps: float,
    alpha: float = 0.05,
) -> str:
    """Markdown: what ran, clean and FGSM Dice per model (seed spread), the primary analysis
    with its seed planner, and a count of the exploratory comparisons."""
    seeds = sorted(results["seed"].unique())
    n_subjects = results["subject"].nunique()
    ran = ", ".join(sorted(set(results["precision"] + " / " + results["kernel"])))
    clean = seed_table(results, results["attack"] == CLEAN)
    white_box = results["source_model"] == results["model"]
    fgsm = seed_table(
        results,
        (results["attack"] == "fgsm") & white_box & same_eps(results["eps"], fgsm_eps),
    )
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
        *paper_comparison(results, fgsm_eps),
        *primary_section(primary, exploratory, alpha),
    ]
    return "\n".join(lines) + "\n"
