"""The generated run summary: seed spread per model, reference first, verdicts counted."""

from test_replicates import CONDITIONS, _results

from segrobust.replicates import defence_verdicts
from segrobust.summary import run_summary, seed_table


def test_seed_table_gives_mean_and_sd_over_seeds_reference_first():
    results = _results(0.15, 0.01, seeds=3)
    table = seed_table(results, results["attack"] == "none")
    assert list(table["Model"]) == ["No Defense", "Adversarial Training (ε=0.05)"]
    per_seed = results[(results["attack"] == "none") & (results["model"] == "baseline")]
    means = per_seed.groupby("seed")["dice"].mean()
    assert table.loc[0, "WT"] == f"{means.mean():.3f} ± {means.std():.3f}"


def test_summary_names_what_ran_and_the_decided_verdicts():
    results = _results(0.15, 0.01, seeds=5)
    verdicts = defence_verdicts(results, conditions=CONDITIONS, regions=["WT"])
    text = run_summary(results, verdicts, fgsm_eps=0.05)
    assert "5 training seeds (1, 2, 3, 4, 5)" in text and "12 test subjects" in text
    assert "1 better, 1 inconclusive of 2 comparisons" in text
    assert "is **better** than No Defense under FGSM ε = 0.05, WT: Δ +0.150" in text
