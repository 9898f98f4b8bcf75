"""Seed-level statistics: exact permutation p-values and the verdicts they lead to."""

import numpy as np
import pytest

from segrobust.metrics import result_rows, results_frame
from segrobust.replicates import (
    defence_verdicts,
    min_attainable_p,
    permutation_test,
    verdict_markdown,
)


def test_permutation_test_is_exact():
    # 6 splits of {1, 2, 3, 4} into two pairs; |Δ| = 2 only for the observed one and its mirror
    assert permutation_test([1, 2], [3, 4]) == pytest.approx(2 / 6)
    assert min_attainable_p(2, 2) == pytest.approx(1 / 3)
    assert permutation_test([5, 6, 7, 8, 9], [0, 1, 2, 3, 4]) == pytest.approx(2 / 252)
    assert min_attainable_p(5, 5) == pytest.approx(2 / 252)
    assert permutation_test([1, 2, 3], [1, 2, 3]) == 1.0
    assert np.isnan(permutation_test([], [1.0]))


def _results(defence_gain: float, seed_noise: float, seeds: int, attack_drop: float = 0.2):
    """Baseline and one defence, ``seeds`` replicates each, 12 subjects, clean and FGSM 0.05."""
    subjects = [f"s{i:02d}" for i in range(12)]
    ability = np.random.default_rng(0).uniform(0.6, 0.9, len(subjects))
    offsets = seed_noise * np.linspace(-1, 1, seeds)  # each replicate's training noise
    rows = []
    for model, gain in (("baseline", 0.0), ("adv_eps0.05", defence_gain)):
        for seed, offset in enumerate(offsets, start=1):
            for subject, a in zip(subjects, ability, strict=True):
                for attack, eps, it, drop in (
                    ("none", 0.0, 0, 0.0),
                    ("fgsm", 0.05, 1, attack_drop),
                ):
                    dice = float(np.clip(a + offset - drop + (gain if eps else 0), 0, 1))
                    rows += result_rows(
                        model=model, attack=attack, subject=subject, eps=eps, iteration=it,
                        dice={"WT": dice}, seed=seed,
                        source_model=model if attack != "none" else "",
                    )  # fmt: skip
    return results_frame(rows)


CONDITIONS = [("fgsm", 0.0), ("fgsm", 0.05)]


def test_a_large_effect_with_five_seeds_is_better():
    table = defence_verdicts(_results(0.15, 0.01, seeds=5), conditions=CONDITIONS, regions=["WT"])
    attacked = table[table["eps"] == 0.05].iloc[0]
    assert attacked["verdict"] == "better" and attacked["delta"] > 0.1
    assert attacked["p_seeds"] == pytest.approx(2 / 252)
    assert attacked["n_seeds"] == 5 and len(attacked["seed_means"].split(", ")) == 5
    clean = table[table["eps"] == 0.0].iloc[0]
    assert clean["verdict"] == "inconclusive (effect within training noise)"


def test_two_seeds_cannot_declare_a_winner_and_say_why():
    table = defence_verdicts(_results(0.15, 0.01, seeds=2), conditions=CONDITIONS, regions=["WT"])
    attacked = table[table["eps"] == 0.05].iloc[0]
    assert attacked["verdict"].startswith("inconclusive (effect beyond the seed spread; too few")
    assert attacked["min_p_seeds"] == pytest.approx(1 / 3)
    assert attacked["p_subjects_adj"] < 0.05  # the paper's subject-level test is significant


def test_an_effect_smaller_than_the_seed_spread_is_training_noise():
    table = defence_verdicts(_results(0.02, 0.05, seeds=3), conditions=CONDITIONS, regions=["WT"])
    attacked = table[table["eps"] == 0.05].iloc[0]
    assert abs(attacked["delta"]) <= 2 * attacked["seed_sd"]
    assert attacked["verdict"] == "inconclusive (effect within training noise)"


def test_markdown_shows_direction_and_both_p_values():
    table = defence_verdicts(_results(-0.15, 0.01, seeds=5), conditions=CONDITIONS, regions=["WT"])
    assert table.loc[table["eps"] == 0.05, "verdict"].item() == "worse"
    text = verdict_markdown(table, "holm", 0.05)
    assert "↓" in text and "p seeds (raw / adj)" in text and "Holm-adjusted" in text


def test_no_comparable_model_is_an_error():
    results = _results(0.1, 0.01, seeds=2)
    with pytest.raises(ValueError, match="no model to compare"):
        defence_verdicts(results[results["model"] == "baseline"], conditions=CONDITIONS)
