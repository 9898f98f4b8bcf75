"""The generated run summary: seed spread per model, the primary analysis and its planner."""

import re

from test_replicates import PRIMARY, _results

from segrobust.crossed import Components
from segrobust.labels import REGIONS
from segrobust.planner import seeds_needed
from segrobust.replicates import exploratory_table, primary_analysis
from segrobust.results import result_rows, results_frame
from segrobust.summary import paper_comparison, run_summary, seed_table

COMPARISONS = [("adv_eps0.05", "baseline"), ("noise", "baseline")]


def test_seed_table_gives_mean_and_sd_over_seeds_reference_first():
    results = _results({"adv_eps0.05": 0.15}, [1, 2, 3])
    table = seed_table(results, results["attack"] == "none")
    assert list(table["Model"]) == ["No Defense", "Adversarial Training (ε=0.05)"]
    per_seed = results[(results["attack"] == "none") & (results["model"] == "baseline")
                       & (results["region"] == "WT")]  # fmt: skip
    means = per_seed.groupby("seed")["dice"].mean()
    assert table.loc[0, "WT"] == f"{means.mean():.3f} ± {means.std():.3f}"


def test_summary_shows_the_primary_table_verdicts_and_the_planner():
    results = _results({"adv_eps0.05": 0.1, "noise": 0.0}, [1, 2, 3])
    primary = primary_analysis(results, COMPARISONS, **PRIMARY)
    exploratory = exploratory_table(results, COMPARISONS, conditions=[("pgd", 0.05)])
    text = run_summary(results, primary, exploratory, fgsm_eps=0.05)
    assert "3 training seeds (1, 2, 3)" in text and "12 test subjects" in text
    assert "## Primary analysis: PGD at ε = 0.05, dice_mean" in text
    assert "1 better, 1 inconclusive" in text
    row = re.search(r"\| Adversarial Training \(ε=0.05\) \| (\S+) .*\| better ", text)
    assert row and float(row[1]) == round(primary.loc[0, "delta"], 3)
    assert "- Noise augmentation: inconclusive (Holm p" in text
    # the planner's line: seeds for Δ = 0.03 from the components averaged over the defences
    parts = Components(*primary[["var_seed", "var_subject", "var_resid"]].mean())
    k = seeds_needed(parts, 0.03, n_subjects=12, alpha=0.025)
    assert "to detect Δ = 0.03 (statistics.minimal_effect) with 80% power" in text
    assert f": {k} seeds per model with 12 test subjects;" in text
    assert "Exploratory (not verdicts): 6 comparisons" in text


def test_summary_of_a_single_seed_run_says_the_planner_needs_seeds():
    results = _results({"adv_eps0.05": 0.1}, [1])
    primary = primary_analysis(results, COMPARISONS[:1], **PRIMARY)
    exploratory = exploratory_table(results, COMPARISONS[:1], conditions=[("pgd", 0.05)])
    text = run_summary(results, primary, exploratory, fgsm_eps=0.05)
    assert "one shared seed" in text and "needs at least 2 paired seeds" in text
    assert "nan" not in text


def test_baseline_is_set_beside_the_papers_drop_and_input_quality():
    rows = []
    for subject, (clean, attacked) in {"S1": (0.8, 0.6), "S2": (0.6, 0.3)}.items():
        for seed in (1, 2):
            rows += result_rows(
                model="baseline",
                attack="none",
                subject=subject,
                eps=0.0,
                iteration=0,
                dice=dict.fromkeys(REGIONS, clean),
                seed=seed,
            )
            rows += result_rows(model="baseline", attack="fgsm", subject=subject, eps=0.05,
                                iteration=1, dice=dict.fromkeys(REGIONS, attacked), seed=seed,
                                source_model="baseline",
                                quality={"psnr": 26.0 if seed == 1 else 28.0, "ssim": 0.5,
                                         "rmse": 0.04, "linf": 0.05, "l2": 1.0})  # fmt: skip
    lines = paper_comparison(results_frame(rows), 0.05)
    text = "\n".join(lines)
    # clean mean 0.7, attacked 0.45: −36 %; the paper's WT 0.890 → 0.676 is −24 %
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:4]]
             for line in text.splitlines() if line.startswith("| ") and "→" in line}  # fmt: skip
    assert cells["WT"] == ["0.890 → 0.676 (-24%)", "0.700 → 0.450 (-36%)"]
    assert cells["TC"][0] == "0.826 → 0.467 (-43%)"
    assert "Input PSNR 27.0 dB and SSIM 0.500 (paper, Table 1: 27.69 dB and 0.646)" in text
    assert paper_comparison(results_frame(rows), 0.03) == []  # the paper reports no ε = 0.03
