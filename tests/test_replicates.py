"""The primary analysis per defence, its verdicts and planner, and the exploratory rows."""

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from segrobust.replicates import (
    exploratory_table,
    primary_analysis,
    replicates_markdown,
)
from segrobust.results import result_rows, results_frame

REGIONS = ("WT", "TC", "ET")
SUBJECTS = [f"s{i:02d}" for i in range(12)]


def _results(
    gains: dict[str, float],
    seeds: dict[str, list[int]] | list[int],
    *,
    seed_sd: float = 0.01,
    noise_sd: float = 0.01,
    clean_gains: dict[str, float] | None = None,
    shared_seed_sd: float = 0.0,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """Baseline and defences (``gains``: Dice added under PGD ε = 0.05; ``clean_gains``: on
    clean inputs), each trained with ``seeds``; 12 subjects, 3 regions, clean and PGD rows.
    A run's luck: its own (sd ``seed_sd``) plus its seed's, shared by every model trained with
    that seed (sd ``shared_seed_sd``: same initial weights and data order)."""
    rng = np.random.default_rng(rng_seed)
    ability = rng.uniform(0.6, 0.9, len(SUBJECTS))
    shared = dict(enumerate(rng.normal(0, shared_seed_sd, 10)))
    rows = []
    for model, gain in {"baseline": 0.0, **gains}.items():
        model_seeds = seeds[model] if isinstance(seeds, dict) else seeds
        clean_gain = (clean_gains or {}).get(model, 0.0)
        for seed in model_seeds:
            offset = rng.normal(0, seed_sd) + shared[seed]  # this training run's luck
            for subject, a in zip(SUBJECTS, ability, strict=True):
                for attack, eps, it, drop, g in (("none", 0.0, 0, 0.0, clean_gain),
                                                 ("pgd", 0.05, 10, 0.2, gain)):  # fmt: skip
                    dice = {r: float(np.clip(a + offset - drop + g + rng.normal(0, noise_sd), 0, 1))
                            for r in REGIONS}  # fmt: skip
                    rows += result_rows(
                        model=model, attack=attack, subject=subject, eps=eps, iteration=it,
                        dice=dice, seed=seed, source_model=model if attack != "none" else "",
                    )  # fmt: skip
    return results_frame(rows)


PRIMARY = {"attack": "pgd", "eps": 0.05, "n_boot": 500, "seed": 1}


def _by_hand(results, model, attack="pgd", regions=REGIONS):
    """Paired differences model − baseline, seeds × subjects, by plain pandas."""
    rows = results[(results["attack"] == attack) & results["region"].isin(regions)]
    y = rows.groupby(["model", "seed", "subject"])["dice"].mean()
    return (y[model] - y["baseline"]).unstack("subject").dropna()


def test_primary_delta_is_the_mean_paired_difference_and_a_large_gain_is_better():
    results = _results({"adv_eps0.05": 0.1, "noise": 0.0}, [1, 2, 3])
    table = primary_analysis(results, [("adv_eps0.05", "baseline"), ("noise", "baseline")],
                             **PRIMARY).set_index("model")  # fmt: skip
    adv, noise = table.loc["adv_eps0.05"], table.loc["noise"]
    assert adv["delta"] == pytest.approx(_by_hand(results, "adv_eps0.05").to_numpy().mean())
    assert adv["n_seeds"] == 3 and adv["seeds"] == "1, 2, 3" and adv["n_subjects"] == 12
    assert adv["ci_low"] < adv["delta"] < adv["ci_high"]
    assert adv["verdict"] == "better" and adv["reason"].startswith("Holm p")
    assert noise["verdict"] == "inconclusive"
    holm = multipletests(table["p"], method="holm")[1]
    assert table["p_holm"].to_numpy() == pytest.approx(holm)
    assert "Holm p" in noise["reason"] and "> α 0.05" in noise["reason"]
    assert adv["agreement"] == "agree"
    assert adv["plan_alpha"] == pytest.approx(0.025)  # α / 2 defences


def test_a_loss_is_worse_and_an_underpowered_run_says_how_many_seeds_it_needs():
    results = _results({"distill_T20": -0.15, "adv_eps0.05": 0.01}, [1, 2, 3],
                       seed_sd=0.02, noise_sd=0.03)  # fmt: skip
    table = primary_analysis(results, [("distill_T20", "baseline"), ("adv_eps0.05", "baseline")],
                             **PRIMARY).set_index("model")  # fmt: skip
    assert table.loc["distill_T20", "verdict"] == "worse"
    weak = table.loc["adv_eps0.05"]
    assert weak["verdict"] == "inconclusive" and weak["power_observed"] < 0.5
    assert "3 seeds had power" in weak["reason"] and "needed at 12 subjects" in weak["reason"]
    assert weak["seeds_for_minimal"] >= 2


def test_seeds_are_paired_and_unpaired_ones_named():
    results = _results({"adv_eps0.05": 0.1}, {"baseline": [1, 2], "adv_eps0.05": [1, 2, 3]})
    row = primary_analysis(results, [("adv_eps0.05", "baseline")], **PRIMARY).iloc[0]
    assert row["seeds"] == "1, 2" and "seeds 3 of adv_eps0.05 unpaired" in row["note"]
    assert row["delta"] == pytest.approx(_by_hand(results, "adv_eps0.05").to_numpy().mean())


def test_pairing_by_seed_removes_the_luck_models_of_one_seed_share():
    # seeds 1-3 move every model's Dice by ±0.05 alike; the defence adds 0.03
    results = _results({"adv_eps0.05": 0.03}, [1, 2, 3], seed_sd=0.0, noise_sd=0.005,
                       shared_seed_sd=0.05, rng_seed=4)  # fmt: skip
    row = primary_analysis(results, [("adv_eps0.05", "baseline")], **PRIMARY).iloc[0]
    assert np.std([float(v) for v in row["seed_means_ref"].split(", ")]) > 0.02
    assert row["var_seed"] < 1e-5 and row["verdict"] == "better"


def test_one_shared_seed_cannot_give_a_verdict():
    results = _results({"adv_eps0.05": 0.2}, [1])
    row = primary_analysis(results, [("adv_eps0.05", "baseline")], **PRIMARY).iloc[0]
    assert row["verdict"] == "inconclusive" and np.isnan(row["p"])
    assert row["reason"] == "one shared seed: the training noise is unknown"


def test_sensitivity_checks_that_disagree_are_named():
    # 2 seeds whose paired differences average +0.03 and +0.02: the mixed model's Wald z takes
    # the seed variance as known (z ≈ 5), the primary test pays t(1) = 12.7 for it
    results = _results({"adv_eps0.05": 0.025}, [1, 2], seed_sd=0.0, noise_sd=0.002)
    runs = results["model"].eq("adv_eps0.05")
    results.loc[runs, "dice"] += np.where(results.loc[runs, "seed"] == 1, 0.005, -0.005)
    row = primary_analysis(results, [("adv_eps0.05", "baseline")], **PRIMARY).iloc[0]
    assert row["verdict"] == "inconclusive" and row["mixed_verdict"] == "better"
    assert "mixed model: better" in row["agreement"]


def test_non_inferiority_of_clean_dice():
    results = _results({"adv_eps0.05": 0.1, "noise": 0.0}, [1, 2, 3],
                       clean_gains={"adv_eps0.05": -0.1})  # fmt: skip
    comparisons = [("adv_eps0.05", "baseline"), ("noise", "baseline")]
    table = primary_analysis(results, comparisons, **PRIMARY, non_inferiority_margin=0.05)
    table = table.set_index("model")
    assert table.loc["noise", "ni_verdict"] == "non-inferior"
    assert table.loc["noise", "ni_lower"] > -0.05
    assert table.loc["adv_eps0.05", "ni_verdict"] == "not shown"
    clean = _by_hand(results, "adv_eps0.05", attack="none").to_numpy().mean()
    assert table.loc["adv_eps0.05", "ni_delta"] == pytest.approx(clean)


def test_exploratory_rows_per_region_with_benjamini_hochberg_q():
    results = _results({"adv_eps0.05": 0.1, "noise": 0.0}, [1, 2, 3])
    comparisons = [("adv_eps0.05", "baseline"), ("noise", "baseline")]
    table = exploratory_table(results, comparisons, conditions=[("fgsm", 0.0), ("pgd", 0.05),
                                                                ("segpgd", 0.05)])  # fmt: skip
    assert len(table) == 2 * 2 * 3  # segpgd never ran: skipped
    assert table["q"].to_numpy() == pytest.approx(multipletests(table["p"], method="fdr_bh")[1])
    row = table[(table["model"] == "adv_eps0.05") & (table["eps"] == 0.05)
                & (table["region"] == "TC")].iloc[0]  # fmt: skip
    assert row["delta"] == pytest.approx(_by_hand(results, "adv_eps0.05", regions=["TC"])
                                         .to_numpy().mean())  # fmt: skip
    primary = primary_analysis(results, comparisons, **PRIMARY)
    text = replicates_markdown(primary, table, 0.05)
    for part in ("## Primary analysis", "Holm p", "Bootstrap", "## Exploratory", "BH q", "↑"):
        assert part in text


def test_bad_settings_raise_with_the_key_named():
    results = _results({"adv_eps0.05": 0.1}, [1, 2])
    with pytest.raises(ValueError, match="statistics.primary.metric"):
        primary_analysis(results, [("adv_eps0.05", "baseline")], metric="hd95", **PRIMARY)
    with pytest.raises(ValueError, match="primary family is empty"):
        primary_analysis(results, [], **PRIMARY)
    with pytest.raises(ValueError, match=r"statistics.primary: segpgd at ε = 0.05\) of adv"):
        primary_analysis(results, [("adv_eps0.05", "baseline")], **(PRIMARY | {"attack": "segpgd"}))
    with pytest.raises(ValueError, match="non_inferiority_margin"):
        primary_analysis(results, [("adv_eps0.05", "baseline")], non_inferiority_margin=2.0,
                         **PRIMARY)  # fmt: skip
