"""Tests of segrobust.statistics on hand-built long-format result tables."""

import numpy as np
import pandas as pd
import pytest
from conftest import N_SUBJECTS, REGIONS
from scipy import stats

from segrobust import results as R
from segrobust import statistics as S


def _one_condition_table(ref: np.ndarray, cond: np.ndarray) -> pd.DataFrame:
    """Reference ('none') and condition ('fgsm') of one region, one subject per value."""
    subjects = [f"s{i:02d}" for i in range(len(ref))]
    return pd.DataFrame(
        [
            *(
                {"model": "m", "attack": "none", "subject": s, "region": "WT", "dice": v}
                for s, v in zip(subjects, ref, strict=True)
            ),
            *(
                {"model": "m", "attack": "fgsm", "subject": s, "region": "WT", "dice": v}
                for s, v in zip(subjects, cond, strict=True)
            ),
        ]
    )


def _test_one(df: pd.DataFrame, **kwargs) -> pd.Series:
    comps = S.against({"attack": "none"}, [{"attack": "fgsm"}])
    return S.paired_tests(df, comps, n_boot=200, seed=0, **kwargs).iloc[0]


# --------------------------------------------------------------------------- paired tests


def enumerated_signed_rank_p(d: np.ndarray) -> float:
    """Two-sided exact signed-rank p by listing all 2^n sign patterns: zeros dropped, |d|
    ranked by hand (midranks for ties), p = P(|T+ − n(n+1)/4| >= |t+ − n(n+1)/4|)."""
    d = d[d != 0]
    a = np.abs(d)
    ranks = np.array([1 + np.sum(a < v) + (np.sum(a == v) - 1) / 2 for v in a])
    centre = ranks.sum() / 2
    observed = abs(ranks[d > 0].sum() - centre)
    patterns = (np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1  # 1: positive
    null = patterns @ ranks
    return float(np.mean(np.abs(null - centre) >= observed - 1e-9))


def bonferroni(p: list[float]) -> list[float]:
    return [min(1.0, len(p) * x) for x in p]


def holm(p: list[float]) -> list[float]:
    """Step-down: the k-th smallest p (k = 0, 1, ...) times m − k, made monotone, capped at 1."""
    adjusted, running = [0.0] * len(p), 0.0
    for k, i in enumerate(sorted(range(len(p)), key=p.__getitem__)):
        running = max(running, min(1.0, (len(p) - k) * p[i]))
        adjusted[i] = running
    return adjusted


@pytest.mark.parametrize("correction", ["bonferroni", "holm"])
def test_p_values_match_an_enumerated_null_and_hand_coded_corrections(results, correction):
    ref = {"model": "baseline", "attack": "fgsm", "eps": 0.05}
    conds = [{"model": m, "attack": "fgsm", "eps": e}
             for m in ("distill_T20", "adv_eps0.05") for e in (0.05, 0.1)]  # fmt: skip
    out = S.paired_tests(results, S.against(ref, conds), n_boot=10, seed=1, regions=REGIONS,
                         correction=correction)  # fmt: skip

    base = results.set_index(["model", "attack", "eps", "region", "subject"])["dice"].sort_index()
    expected_p, expected_w = [], []
    for c in conds:
        for region in REGIONS:
            x = base.loc[(c["model"], "fgsm", c["eps"], region)]
            y = base.loc[("baseline", "fgsm", 0.05, region)]
            d = x.to_numpy() - y.loc[x.index].to_numpy()
            expected_p.append(enumerated_signed_rank_p(d))
            ranks = np.argsort(np.argsort(np.abs(d))) + 1  # no ties here
            expected_w.append(min(ranks[d > 0].sum(), ranks[d < 0].sum()))  # two-sided W
    assert len(set(np.round(expected_p, 6))) >= 3  # a spread of p-values: Holm != Bonferroni
    np.testing.assert_allclose(out["p"], expected_p, rtol=1e-12)
    np.testing.assert_allclose(out["statistic"], expected_w)
    adjust = {"bonferroni": bonferroni, "holm": holm}[correction]
    np.testing.assert_allclose(out["p_adj"], adjust(expected_p), rtol=1e-12)
    np.testing.assert_array_equal(out["significant"], np.array(adjust(expected_p)) <= 0.05)
    assert list(out["region"]) == list(REGIONS) * 4
    assert (out["n"] == N_SUBJECTS).all()
    assert set(out.columns) >= set(S.RESULT_COLUMNS) | {"model", "attack", "eps"}


def test_clear_drop_significant_after_bonferroni_over_nine(results):
    rows = [
        {"model": "baseline", "attack": a, "eps": 0.05, "iteration": it}
        for a, it in (("fgsm", 1), ("ifgsm", 10), ("tifgsm", 10))
    ]
    out = S.paired_tests(
        results,
        S.against({"model": "baseline", "attack": "none"}, rows, family="t1"),
        n_boot=100,
        seed=0,
        regions=REGIONS,
    )
    assert len(out) == 9
    # all 12 differences negative: exact p = 2 / 2**12, times 9 tests
    np.testing.assert_allclose(out["p"], 2 / 2**12)
    np.testing.assert_allclose(out["p_adj"], 9 * 2 / 2**12)
    assert out["significant"].all()
    assert (out["effect_size"] == -1).all()
    assert (out["family"] == "t1").all()


def test_identical_conditions_give_p_one_and_note():
    ref = np.linspace(0.5, 0.9, 10)
    row = _test_one(_one_condition_table(ref, ref.copy()))
    assert row["p"] == 1.0 and row["p_adj"] == 1.0
    assert not row["significant"]
    assert "all differences zero" in row["note"]
    assert row["effect_size"] == 0 and row["mean_diff"] == 0
    assert row["ci_low"] == row["ci_high"] == 0


def test_n_four_notes_too_small_without_crash():
    row = _test_one(_one_condition_table(np.full(4, 0.9), np.array([0.1, 0.2, 0.3, 0.4])))
    assert row["n"] == 4
    assert row["p"] == pytest.approx(0.125)  # smallest exact two-sided p at n = 4
    assert "n too small for significance" in row["note"]
    assert not row["significant"]


def test_n_six_is_not_flagged_too_small():
    row = _test_one(_one_condition_table(np.full(6, 0.9), np.linspace(0.1, 0.6, 6)))
    assert "too small" not in row["note"]
    assert row["p"] == pytest.approx(2 / 2**6)


def test_missing_pairs_are_counted_and_noted():
    rng = np.random.default_rng(3)
    df = _one_condition_table(rng.uniform(0.6, 0.9, 10), rng.uniform(0.2, 0.5, 10))
    # drop 2 subjects from the condition, 1 from the reference, make 1 condition value NaN
    df = df.drop(df.index[(df["attack"] == "fgsm") & df["subject"].isin(["s00", "s01"])])
    df = df.drop(df.index[(df["attack"] == "none") & (df["subject"] == "s02")])
    df.loc[(df["attack"] == "fgsm") & (df["subject"] == "s03"), "dice"] = np.nan
    row = _test_one(df)
    assert row["n"] == 6
    assert row["n_missing"] == 4
    assert "4 of 10 subjects without a pair (1 missing in reference, 3 in condition)" in row["note"]
    paired = df.pivot(index="subject", columns="attack", values="dice").dropna()
    assert row["p"] == pytest.approx(stats.wilcoxon(paired["fgsm"] - paired["none"]).pvalue)


def test_no_pairs_in_a_region_gives_nan_p_outside_the_family():
    df = _one_condition_table(np.full(8, 0.9), np.linspace(0.1, 0.5, 8))
    extra = df[df["attack"] == "none"].assign(region="TC")  # TC only in the reference
    df = pd.concat([df, extra, df.assign(region="ET")], ignore_index=True)
    comps = S.against({"attack": "none"}, [{"attack": "fgsm"}])
    out = S.paired_tests(df, comps, n_boot=50, seed=0, regions=["WT", "TC", "ET"]).set_index(
        "region"
    )
    assert np.isnan(out.loc["TC", "p"]) and np.isnan(out.loc["TC", "p_adj"])
    assert "no paired subjects" in out.loc["TC", "note"]
    assert out.loc["WT", "p_adj"] == pytest.approx(2 * out.loc["WT", "p"])  # family of 2


def test_ties_and_zero_differences_are_noted():
    ref = np.full(8, 0.8)
    cond = ref - np.array([0.0, 0.1, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    row = _test_one(_one_condition_table(ref, cond))
    assert row["n_zero"] == 1
    assert "1 zero differences dropped" in row["note"]
    assert "ties among |differences|" in row["note"]
    d = cond - ref
    assert row["p"] == pytest.approx(stats.wilcoxon(d, zero_method="wilcox").pvalue)
    pratt = _test_one(_one_condition_table(ref, cond), zero_method="pratt")
    assert pratt["p"] == pytest.approx(stats.wilcoxon(d, zero_method="pratt").pvalue)
    assert "kept (pratt)" in pratt["note"]


def test_family_cols_make_one_family_per_region(results):
    conds = [{"model": "baseline", "attack": "fgsm", "eps": e} for e in (0.05, 0.1)]
    out = S.paired_tests(
        results,
        S.against({"model": "baseline", "attack": "none"}, conds, family="fam"),
        n_boot=50,
        seed=0,
        regions=REGIONS,
        family_cols=("region",),
    )
    assert set(out["family"]) == {f"fam | region={r}" for r in REGIONS}
    np.testing.assert_allclose(out["p_adj"], np.minimum(2 * out["p"], 1))


def test_holm_never_exceeds_bonferroni(results):
    comps = S.against(
        {"model": "baseline", "attack": "fgsm", "eps": 0.05},
        [
            {"model": m, "attack": "fgsm", "eps": e}
            for m in ("distill_T20", "adv_eps0.05")
            for e in (0.05, 0.1)
        ],
    )
    kw = {"n_boot": 50, "seed": 0, "regions": REGIONS}
    bonf = S.paired_tests(results, comps, correction="bonferroni", **kw)
    holm = S.paired_tests(results, comps, correction="holm", **kw)
    np.testing.assert_array_equal(bonf["p"], holm["p"])
    assert (holm["p_adj"] <= bonf["p_adj"] + 1e-15).all()
    assert (holm["p_adj"] < bonf["p_adj"]).any()
    assert (holm["correction"] == "holm").all()


# --------------------------------------------------------------------------- effect size


@pytest.mark.parametrize(
    ("diff", "expected"),
    [
        (np.array([0.1, 0.2, 0.3, 0.05]), 1.0),
        (np.array([-0.1, -0.2, -0.3]), -1.0),
        (np.array([-0.3, -0.1, 0.1, 0.3]), 0.0),
        (np.array([1.0, 2.0, -3.0]), 0.0),  # ranks 1 + 2 - 3
        (np.array([1.0, 2.0, 3.0, -4.0]), 0.2),  # (1 + 2 + 3 - 4) / 10
        (np.zeros(5), 0.0),
    ],
)
def test_rank_biserial_known_answers(diff, expected):
    assert S.rank_biserial(diff) == pytest.approx(expected)


def test_rank_biserial_zero_methods():
    d = np.array([0.0, 1.0, 2.0, -3.0, 4.0])
    assert S.rank_biserial(d, "wilcox") == pytest.approx((1 + 2 - 3 + 4) / 10)
    # pratt/zsplit: the zero takes rank 1, others 2..5; it adds to the denominator only
    assert S.rank_biserial(d, "pratt") == pytest.approx((2 + 3 - 4 + 5) / 15)
    assert S.rank_biserial(d, "zsplit") == pytest.approx((2 + 3 - 4 + 5) / 15)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_seeded_and_contains_observed_mean():
    rng = np.random.default_rng(7)
    ref = rng.uniform(0.6, 0.9, 15)
    cond = ref - rng.uniform(0.0, 0.2, 15)
    a = S.paired_bootstrap(ref, cond, n_boot=500, seed=11)
    b = S.paired_bootstrap(ref, cond, n_boot=500, seed=11)
    c = S.paired_bootstrap(ref, cond, n_boot=500, seed=12)
    assert a == b
    assert a != c
    assert a["ci_low"] <= (cond - ref).mean() <= a["ci_high"] < 0
    assert a["ref_ci_low"] <= ref.mean() <= a["ref_ci_high"]
    assert a["cond_ci_low"] <= cond.mean() <= a["cond_ci_high"]


def percentile_interval(samples, statistic, confidence, n_boot, seed):
    """Hand-written percentile bootstrap: resample the rows of ``samples`` (subjects) with
    replacement ``n_boot`` times; the interval's ends are the order statistics at
    (1 ± confidence) / 2 of the resampled statistic."""
    rng = np.random.default_rng(seed)
    n = len(samples[0])
    values = []
    for _ in range(n_boot):
        rows = rng.integers(0, n, n)
        values.append(statistic(*(s[rows] for s in samples)))
    values = np.sort(values, axis=0)
    tail = (1 - confidence) / 2
    return values[int(tail * n_boot)], values[int((1 - tail) * n_boot) - 1]


@pytest.mark.parametrize("confidence", [None, 0.8])
def test_bootstrap_intervals_equal_a_hand_written_percentile_bootstrap(confidence):
    """Both interval functions (and paired_tests) against an independent percentile loop,
    95 % by default; the two Monte Carlo estimates differ by ~0.03 standard errors."""
    rng = np.random.default_rng(5)
    ref = rng.uniform(0.6, 0.9, 15)
    cond = ref - rng.gamma(1.0, 0.05, 15)  # skewed drops
    level = {} if confidence is None else {"confidence": confidence}
    expected_level = confidence or 0.95
    n_boot = 20_000

    def close(got, want, spread):
        tolerance = 0.12 * spread.std(ddof=1) / np.sqrt(spread.size)  # 0.12 standard errors
        np.testing.assert_allclose(got, want, rtol=0, atol=tolerance)

    got = S.paired_bootstrap(ref, cond, n_boot=n_boot, seed=1, **level)
    want = percentile_interval(
        (ref, cond),
        lambda r, c: np.array([(c - r).mean(), r.mean(), c.mean()]),
        expected_level,
        n_boot,
        seed=2,
    )
    for i, (name, spread) in enumerate((("ci", cond - ref), ("ref_ci", ref), ("cond_ci", cond))):
        close([got[f"{name}_low"], got[f"{name}_high"]], [want[0][i], want[1][i]], spread)

    close(S.bootstrap_mean_ci(cond, n_boot=n_boot, seed=3, **level),
          percentile_interval((cond,), np.mean, expected_level, n_boot, seed=4), cond)  # fmt: skip

    table = _one_condition_table(ref, cond)
    comps = S.against({"attack": "none"}, [{"attack": "fgsm"}])
    row = S.paired_tests(table, comps, n_boot=n_boot, seed=0, **level).iloc[0]
    close([row["ci_low"], row["ci_high"]], [want[0][0], want[1][0]], cond - ref)


def test_paired_tests_bootstrap_independent_of_other_comparisons(results):
    ref = {"model": "baseline", "attack": "none"}
    one = [{"model": "baseline", "attack": "fgsm", "eps": 0.05}]
    two = [*one, {"model": "baseline", "attack": "fgsm", "eps": 0.1}]
    kw = {"n_boot": 200, "seed": 5, "regions": ["WT"]}
    a = S.paired_tests(results, S.against(ref, one), **kw)
    b = S.paired_tests(results, S.against(ref, two), **kw)
    assert a.loc[0, ["ci_low", "ci_high"]].tolist() == b.loc[0, ["ci_low", "ci_high"]].tolist()
    assert a.loc[0, "ci_low"] <= a.loc[0, "mean_diff"] <= a.loc[0, "ci_high"]


# --------------------------------------------------------------------------- validation


def test_bad_arguments_raise(results):
    comps = S.against({"model": "baseline", "attack": "none"}, [{"model": "baseline"}])
    kw = {"n_boot": 10, "seed": 0}
    with pytest.raises(ValueError, match="several rows for subject"):
        S.paired_tests(results, comps, **kw)
    good = S.against(
        {"attack": "none", "model": "baseline"},
        [{"attack": "fgsm", "eps": 0.05, "model": "baseline"}],
    )
    with pytest.raises(ValueError, match="correction must be one of"):
        S.paired_tests(results, good, correction="fdr", **kw)
    with pytest.raises(ValueError, match="zero_method"):
        S.paired_tests(results, good, zero_method="drop", **kw)
    with pytest.raises(ValueError, match="n_boot"):
        S.paired_tests(results, good, n_boot=0, seed=0)
    with pytest.raises(ValueError, match="family_cols"):
        S.paired_tests(results, good, family_cols=("nope",), **kw)
    with pytest.raises(ValueError, match="matches no rows"):
        S.paired_tests(results, S.against({"attack": "none"}, [{"attack": "cw"}]), **kw)
    with pytest.raises(ValueError, match="not in the table"):
        S.paired_tests(results, S.against({"attack": "none"}, [{"defence": "x"}]), **kw)
    with pytest.raises(ValueError, match="regions"):
        S.paired_tests(results, good, regions=["NCR"], **kw)
    with pytest.raises(ValueError, match=r"results table lacks columns \['dice'\]"):
        S.paired_tests(results.drop(columns="dice"), good, **kw)
    with pytest.raises(ValueError, match="alpha"):
        S.paired_tests(results, good, alpha=5, **kw)
    with pytest.raises(ValueError, match="finite"):
        S.signed_rank_test(np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="equal length"):
        S.paired_bootstrap(np.ones(3), np.ones(4), n_boot=10, seed=0)


def test_select_matches_float_budget_with_tolerance(results):
    a = S.select(results, {"attack": "fgsm", "eps": 0.05})
    b = S.select(results, {"attack": "fgsm", "eps": 0.05 + 1e-13})
    assert len(a) == len(b) == 3 * N_SUBJECTS * 3


@pytest.mark.parametrize("n", [5, 9, 13])
def test_sign_flip_p_equals_scipys_exhaustive_permutation_test_with_ties_and_zeros(n):
    rng = np.random.default_rng(n)
    d = np.round(rng.normal(0.02, 0.05, n), 2)
    d[0], d[1] = 0.0, d[2]  # a zero and a tie
    exhaustive = stats.wilcoxon(d, method=stats.PermutationMethod(n_resamples=2**n)).pvalue
    assert S.sign_flip_pvalue(d) == pytest.approx(exhaustive, rel=1e-12)
    no_ties = rng.normal(0.02, 0.05, n)
    assert S.sign_flip_pvalue(no_ties) == pytest.approx(stats.wilcoxon(no_ties).pvalue, rel=1e-12)


def test_method_is_exact_where_valid_and_says_so():
    rng = np.random.default_rng(3)
    tied = np.round(rng.normal(0.02, 0.05, 18), 2)
    tied[0] = 0.0
    test = S.signed_rank_test(tied)
    assert test.method == "exact (sign-flip)"
    assert test.p == pytest.approx(S.sign_flip_pvalue(tied))
    assert test.p != pytest.approx(stats.wilcoxon(tied).pvalue)  # scipy: normal approximation
    assert S.signed_rank_test(rng.normal(0, 1, 18)).method == "exact"
    assert S.signed_rank_test(tied, zero_method="pratt").method == "normal approximation"
    assert S.signed_rank_test(np.zeros(4)).method == "none"


# --------------------------------------------------------------------------- intervals of a mean


def test_bootstrap_mean_ci_of_a_bimodal_dice_stays_inside_zero_one():
    dice = np.r_[np.zeros(9), np.full(9, 0.9)]  # LGG subjects score 0 on enhancing tumour
    assert dice.mean() + dice.std(ddof=1) > 0.9  # mean ± sd reaches past every value
    low, high = S.bootstrap_mean_ci(dice, seed=3)
    assert 0 <= low < dice.mean() < high <= 0.9
    assert (low, high) == S.bootstrap_mean_ci(dice, seed=3)  # seeded
    extreme = np.r_[np.zeros(5), np.ones(5)]
    assert 1 < extreme.mean() + extreme.std(ddof=1)
    low, high = S.bootstrap_mean_ci(extreme, n_boot=500, seed=0)
    assert 0 <= low < 0.5 < high <= 1
    # a 95% percentile interval of the mean of n=18 two-point values: about ± 1.96 se
    se = dice.std(ddof=0) / np.sqrt(dice.size)
    assert S.bootstrap_mean_ci(dice, seed=3)[1] - dice.mean() == pytest.approx(1.96 * se, rel=0.1)


def test_bootstrap_mean_ci_edge_cases():
    assert S.bootstrap_mean_ci(np.full(4, 0.7)) == (0.7, 0.7)
    assert np.isnan(S.bootstrap_mean_ci(np.array([0.5]))).all()
    assert np.isnan(S.bootstrap_mean_ci(np.array([0.5, np.nan]))).all()  # one value left
    with pytest.raises(ValueError, match="n_boot"):
        S.bootstrap_mean_ci(np.ones(3), n_boot=0)
    with pytest.raises(ValueError, match="1-D"):
        S.bootstrap_mean_ci(np.ones((2, 2)))


def test_adjust_pvalues_gives_benjamini_hochberg_q_per_family_and_skips_nan():
    p = pd.Series([0.01, 0.02, 0.03, 0.5, np.nan, 0.04])
    families = pd.Series(["a", "a", "a", "a", "a", "b"])
    q, reject = S.adjust_pvalues(p, families, "fdr_bh", 0.05)
    # by hand: q_(i) = min over j ≥ i of p_(j) · m / j, m = 4 non-NaN p in family a
    assert q[:4].tolist() == pytest.approx([0.04, 0.04, 0.04, 0.5])
    assert np.isnan(q[4]) and q[5] == pytest.approx(0.04)
    assert reject.tolist() == [True, True, True, False, False, True]
    with pytest.raises(ValueError, match="correction"):
        S.adjust_pvalues(p, families, "fdr_by", 0.05)


# --------------------------------------------------------------------------- mutation survivors


@pytest.mark.parametrize("n", [3, 6, 10])
def test_sign_flip_p_equals_the_enumerated_null_with_many_ties(n):
    rng = np.random.default_rng(100 + n)
    for _ in range(5):
        d = rng.integers(-3, 4, n) / 10  # many ties and zeros: midranks .5
        assert S.sign_flip_pvalue(d) == pytest.approx(enumerated_signed_rank_p(d), rel=1e-12)
    assert S.sign_flip_pvalue(np.zeros(3)) == 1.0 and S.sign_flip_pvalue(np.array([])) == 1.0


def test_rank_biserial_with_two_zeros_and_a_single_pair():
    d = np.array([0.0, 0.0, 1.0, -2.0, 3.0])
    assert S.rank_biserial(d, "wilcox") == pytest.approx((1 - 2 + 3) / 6)
    # pratt / zsplit: the zeros take midrank 1.5 each, the others 3, 4, 5
    assert S.rank_biserial(d, "pratt") == pytest.approx((3 - 4 + 5) / 15)
    assert S.rank_biserial(np.array([0.3])) == 1.0 and S.rank_biserial(np.array([-0.3])) == -1.0


def test_bootstrap_mean_ci_seeding_defaults_and_two_values():
    x = np.random.default_rng(4).normal(0.7, 0.1, 12)
    assert S.bootstrap_mean_ci(x, seed=1) == S.bootstrap_mean_ci(x, seed=1)
    assert S.bootstrap_mean_ci(x, seed=1) != S.bootstrap_mean_ci(x, seed=2)
    assert S.bootstrap_mean_ci(x) == S.bootstrap_mean_ci(x, n_boot=2000, seed=0)  # documented
    assert S.bootstrap_mean_ci(np.array([0.2, 0.8])) == (0.2, 0.8)  # means 0.2, 0.5, 0.8


def test_per_subject_averages_the_seeds_and_names_a_duplicate():
    rows = [
        {"subject": s, "seed": seed, "region": "WT", "attack": "none", "dice": d}
        for s, seed, d in (("a", 1, 0.6), ("a", 2, 0.8), ("b", 1, 0.5), ("b", 2, 0.7))
    ]
    df = pd.DataFrame(rows)  # fmt: skip
    got = S.per_subject(df, {"attack": "none"}, "WT", "dice")
    pd.testing.assert_series_equal(got, pd.Series({"a": 0.7, "b": 0.6}, name="dice"),
                                   check_index_type=False, check_names=False)  # fmt: skip
    twice = pd.concat([df, df.iloc[[2]]])
    with pytest.raises(ValueError, match="several rows for subject 'b' in region WT"):
        S.per_subject(twice, {"attack": "none"}, "WT", "dice")


def test_against_uses_labels_and_checks_their_number():
    comps = S.against({"attack": "none"}, [{"attack": "fgsm"}, {"attack": "pgd"}],
                      labels=["F", "P"], reference_label="clean")  # fmt: skip
    assert [(c.condition_name, c.reference_name, c.family) for c in comps] == [
        ("F", "clean", "all"), ("P", "clean", "all")]  # fmt: skip
    unlabelled = S.against({"attack": "none"}, [{"attack": "fgsm", "eps": 0.1 + 0.2}])[0]
    assert unlabelled.condition_name == "attack=fgsm, eps=0.3"  # floats as %g
    with pytest.raises(ValueError, match="1 labels for 2 conditions"):
        S.against({"attack": "none"}, [{"attack": "fgsm"}, {"attack": "pgd"}], labels=["F"])


def test_adjust_pvalues_per_family_at_alpha_leaving_nan_out():
    p = pd.Series([np.nan, 0.02, 0.03, 0.04])
    families = pd.Series(["a", "b", "b", "c"])  # family a: no p at all
    p_adj, significant = S.adjust_pvalues(p, families, "bonferroni", alpha=0.1)
    np.testing.assert_allclose(p_adj, [np.nan, 0.04, 0.06, 0.04])
    assert significant.tolist() == [False, True, True, True] and significant.dtype == bool
    assert p_adj.dtype == np.float64
    assert S.adjust_pvalues(p, families, "bonferroni", alpha=0.05)[1].tolist() == [
        False, True, False, True]  # fmt: skip
    with pytest.raises(ValueError, match="correction must be one of"):
        S.adjust_pvalues(p, families, "fdr", alpha=0.05)


def test_attack_selector_picks_the_final_iteration_and_the_clean_input(full_results):
    clean = {"model": "baseline", "attack": "none", "eps": 0.0, "iteration": 0}
    assert R.attack_selector(full_results, "baseline", "fgsm", 0) == clean
    assert R.attack_selector(full_results, "baseline", "none", 0.05) == clean
    final = R.attack_selector(full_results, "baseline", "ifgsm", 0.05)
    assert final == {"model": "baseline", "attack": "ifgsm", "eps": 0.05,
                     "source_model": "baseline", "iteration": 10}  # fmt: skip
    assert R.attack_selector(full_results, "baseline", "ifgsm", 0.05, iteration=5)["iteration"] == 5
    # white-box only: the transfer rows (crafted on distill_T20) are not selected
    fgsm = R.select(full_results, R.attack_selector(full_results, "baseline", "fgsm", 0.05))
    assert set(fgsm["source_model"]) == {"baseline"} and len(fgsm) == 3 * N_SUBJECTS
    no_source = full_results.drop(columns="source_model")
    assert "source_model" not in R.attack_selector(no_source, "baseline", "fgsm", 0.05)
    assert R.final_iteration(full_results, {"attack": "tifgsm"}) == 10
    with pytest.raises(ValueError, match=r"selector \{'attack': 'cw'\} matches no rows"):
        R.final_iteration(full_results, {"attack": "cw"})


def test_signed_rank_edge_results_and_method_labels():
    empty = S.signed_rank_test(np.array([]))
    assert np.isnan([empty.statistic, empty.p, empty.effect_size]).all()
    assert (empty.n_zero, empty.notes, empty.method) == (0, ("no paired subjects",), "none")
    zeros = S.signed_rank_test(np.zeros(4))
    assert np.isnan(zeros.statistic) and (zeros.p, zeros.effect_size, zeros.n_zero) == (1, 0, 4)
    assert (zeros.notes, zeros.method) == (("all differences zero",), "none")
    rng = np.random.default_rng(8)
    only_ties = np.array([0.1, 0.1, -0.2, 0.3, 0.3, 0.4, 0.5, -0.6])
    only_zero = np.r_[0.0, rng.normal(0.1, 0.1, 7)]
    for d in (only_ties, only_zero):  # either alone makes scipy's exact p invalid
        assert S.signed_rank_test(d).method == "exact (sign-flip)"
    assert S.signed_rank_test(only_ties).notes[-1] == "ties among |differences|"
    ones = S.signed_rank_test(np.array([1.0, 1.0, 0.5, 0.25, -0.125, 0.3]))
    assert "ties among |differences|" in ones.notes and ones.n_zero == 0  # |d| = 1 is no zero
    assert S.signed_rank_test(rng.normal(0, 1, 50)).method == "exact"
    assert S.signed_rank_test(rng.normal(0, 1, 51)).method == "exact (sign-flip)"
    assert S.signed_rank_test(only_zero, zero_method="pratt").method == "permutation"  # n <= 13
    # scipy's own choice for n <= 13 with zeros: its p equals the exhaustive permutation's
    for n, method in ((13, "permutation"), (14, "normal approximation")):
        d = np.r_[0.0, rng.normal(0.1, 0.1, n - 1)]
        assert S.signed_rank_test(d, zero_method="pratt").method == method


def test_pratt_p_is_scipys_pratt_not_wilcox():
    d = np.array([0, 0, 0, 0.1, 0.2, 0.3, 0.4, -0.05, 0.5, 0.6, 0.7, -0.8, 0.9, 1.1, 1.2])
    pratt = S.signed_rank_test(d, zero_method="pratt")
    assert pratt.p == pytest.approx(stats.wilcoxon(d, zero_method="pratt").pvalue, rel=1e-12)
    assert pratt.p != pytest.approx(stats.wilcoxon(d, zero_method="wilcox").pvalue, rel=1e-3)
    assert pratt.effect_size == S.rank_biserial(d, "pratt") != S.rank_biserial(d, "wilcox")


def test_too_small_note_at_the_boundary_alpha():
    """n = 5 non-zero pairs: the smallest two-sided p is 2 / 2**5 = 0.0625, which can reach
    alpha = 0.0625 (p <= alpha) but not alpha = 0.05."""
    d = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert not any("too small" in n for n in S.signed_rank_test(d, alpha=0.0625).notes)
    assert "n too small for significance (5 non-zero pairs)" in S.signed_rank_test(d).notes
    table = _one_condition_table(np.full(5, 0.9), np.full(5, 0.9) - d)
    assert "too small" not in _test_one(table, alpha=0.0625)["note"]  # alpha reaches the test


def test_paired_tests_means_notes_key_columns_and_families():
    rng = np.random.default_rng(12)
    ref = rng.uniform(0.6, 0.9, 8)
    cond = ref - np.r_[0.0, 0.1, 0.1, rng.uniform(0.05, 0.3, 5)]  # a zero and a tie
    row = _test_one(_one_condition_table(ref, cond))
    assert (row["mean_ref"], row["mean_cond"]) == (pytest.approx(ref.mean()),
                                                   pytest.approx(cond.mean()))  # fmt: skip
    assert row["mean_diff"] == pytest.approx((cond - ref).mean())
    assert row["note"] == "1 zero differences dropped; ties among |differences|"
    assert row["reference"] == "attack=none"  # the selector's label when none is given
    one = _test_one(_one_condition_table(ref[:1], cond[:1] - 0.1))  # a single pair has means
    assert one["mean_ref"] == pytest.approx(ref[0]) and one["n"] == 1
    # key columns: a condition without a key gets NaN there; float keys named with %g
    pgd = _one_condition_table(ref, cond).query("attack == 'fgsm'").assign(attack="pgd")
    table = pd.concat([_one_condition_table(ref, cond), pgd])
    table["eps"] = np.where(table["attack"] == "fgsm", 0.3, 0.0)
    eps = 0.1 + 0.2  # 0.30000000000000004: selected with a tolerance, named with %g
    comps = S.against({"attack": "none"}, [{"attack": "fgsm", "eps": eps}, {"attack": "pgd"}])
    out = S.paired_tests(table, comps, n_boot=10, seed=0, family_cols=("eps",))
    assert out["eps"].iloc[0] == eps and np.isnan(out["eps"].iloc[1])
    assert out["family"].tolist() == ["all | eps=0.3", "all | eps=nan"]


def test_paired_tests_refuses_bad_alpha_and_selectors(results):
    good = S.against({"attack": "none", "model": "baseline"},
                     [{"attack": "fgsm", "eps": 0.05, "model": "baseline"}])  # fmt: skip
    for alpha in (0, 1, 1.5):
        with pytest.raises(ValueError, match=r"^alpha must be in \(0, 1\)"):
            S.paired_tests(results, good, n_boot=10, seed=0, alpha=alpha)
    with pytest.raises(ValueError, match="^no comparisons given$"):
        S.paired_tests(results, [], n_boot=10, seed=0)
    for key in ("region", "subject"):
        fixed = S.against({"attack": "none", key: "WT" if key == "region" else "s00"},
                          [{"attack": "fgsm", "eps": 0.05}])  # fmt: skip
        with pytest.raises(ValueError, match=r"fixes region or subject: tests run per region "
                           "and pair by subject$"):  # fmt: skip
            S.paired_tests(results, fixed, n_boot=10, seed=0)


def test_bootstrap_mean_ci_uses_n_boot():
    x = np.random.default_rng(4).normal(0.7, 0.1, 12)
    assert S.bootstrap_mean_ci(x, n_boot=500, seed=1) != S.bootstrap_mean_ci(x, n_boot=2000, seed=1)


def test_select_tells_budgets_apart_beyond_float_rounding():
    df = pd.DataFrame({"eps": [0.0, 1e-10, 0.05, 0.05 * (1 + 1e-6)], "attack": "fgsm"})
    assert len(S.select(df, {"eps": 0.0})) == 1  # not the 1e-10 row
    assert len(S.select(df, {"eps": 0.05})) == 1  # not the one 1e-6 away
    assert len(S.select(df, {"eps": 0.05 + 1e-13})) == 1  # float rounding of the same budget


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy's standard error of 1 resample
def test_paired_bootstrap_edge_sizes_and_n_boot():
    ref, cond = np.array([0.8, 0.6]), np.array([0.7, 0.2])
    two = S.paired_bootstrap(ref, cond, n_boot=200, seed=0)
    assert two["ci_low"] == pytest.approx(-0.4) and two["ci_high"] == pytest.approx(-0.1)
    one = S.paired_bootstrap(ref[:1], cond[:1], n_boot=200, seed=0)
    assert len(one) == 6 and all(np.isnan(v) for v in one.values())
    x = np.random.default_rng(2).normal(0.7, 0.1, (2, 12))
    assert S.paired_bootstrap(*x, n_boot=200, seed=1) != S.paired_bootstrap(*x, n_boot=400, seed=1)
    assert S.paired_bootstrap(*x, n_boot=1, seed=1)["ci_low"] <= 1  # one resample is allowed


def test_argument_messages():
    with pytest.raises(ValueError, match=r"^n_boot must be a positive integer, got 0$"):
        S.paired_bootstrap(np.ones(3), np.ones(3), n_boot=0, seed=0)
    for confidence in (0, 1, 1.5):
        with pytest.raises(ValueError, match=r"^confidence must be in \(0, 1\), got"):
            S.bootstrap_mean_ci(np.arange(3.0), confidence=confidence)
    with pytest.raises(ValueError, match=r"^ci_method must be one of \['percentile'"):
        S.paired_bootstrap(np.ones(3), np.ones(3), n_boot=10, seed=0, method="student")
    with pytest.raises(ValueError, match=r"^zero_method must be one of \['wilcox'"):
        S.signed_rank_test(np.ones(3), zero_method="drop")
    with pytest.raises(ValueError, match=r"^differences must be 1-D, got shape \(2, 2\)$"):
        S.signed_rank_test(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"^differences must be finite \(drop missing pairs"):
        S.signed_rank_test(np.array([0.1, np.inf]))
    df = _one_condition_table(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="add keys .* until it picks one condition$"):
        S.per_subject(pd.concat([df, df]), {"attack": "none"}, "WT", "dice")


def test_paired_tests_passes_the_interval_method():
    """Same resamples (seeded per test), so basic = 2·mean − the percentile interval reversed."""
    rng = np.random.default_rng(6)
    ref = rng.uniform(0.6, 0.9, 12)
    table = _one_condition_table(ref, ref - rng.gamma(1.0, 0.05, 12))
    percentile, basic = (_test_one(table, ci_method=m) for m in ("percentile", "basic"))
    mean = percentile["mean_diff"]
    assert basic["ci_low"] == pytest.approx(2 * mean - percentile["ci_high"])
    assert basic["ci_high"] == pytest.approx(2 * mean - percentile["ci_low"])
    assert basic["ci_low"] != pytest.approx(percentile["ci_low"])
