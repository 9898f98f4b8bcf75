"""Tests of segrobust.statistics on hand-built long-format result tables."""

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from segrobust import statistics as S

REGIONS = ("WT", "TC", "ET")
N_SUBJECTS = 12
# Mean Dice drop per (model, attack, eps); baseline drops a lot, defended models little.
DROPS = {
    "baseline": {0.05: 0.25, 0.1: 0.35},
    "distill_T20": {0.05: 0.05, 0.1: 0.08},
    "adv_eps0.05": {0.05: 0.25, 0.1: 0.35},  # as bad as the baseline: no asterisk expected
}


def _rows(model, attack, eps, iteration, dice, quality=np.nan, source=None):
    """Long-format rows of one condition: ``dice[region]`` arrays over subjects."""
    subjects = [f"s{i:02d}" for i in range(N_SUBJECTS)]
    return [
        {
            "model": model,
            "attack": attack,
            "eps": eps,
            "iteration": iteration,
            "subject": subj,
            "region": region,
            "dice": dice[region][i],
            "psnr": quality if np.isscalar(quality) else quality[i],
            "ssim": np.nan if np.isscalar(quality) else 1 - eps * 5,
            "rmse": np.nan if np.isscalar(quality) else eps,
            "linf": eps,
            "l2": eps * 10,
            "source_model": ("" if attack == "none" else model) if source is None else source,
            "severity": np.nan,
        }
        for region in REGIONS
        for i, subj in enumerate(subjects)
    ]


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    """12 subjects, 3 regions, baseline + two defences, FGSM at 0/0.05/0.1, i-FGSM, ti-FGSM."""
    rng = np.random.default_rng(42)
    clean = {r: rng.uniform(0.7, 0.9, N_SUBJECTS) for r in REGIONS}
    rows = []
    for model, drops in DROPS.items():
        rows += _rows(model, "none", 0.0, 0, clean)
        for eps, drop in drops.items():
            attacked = {r: clean[r] - drop + rng.normal(0, 0.01, N_SUBJECTS) for r in REGIONS}
            rows += _rows(model, "fgsm", eps, 1, attacked, 30 - 100 * eps + rng.normal(0, 1, 12))
    for attack, drop in (("ifgsm", 0.4), ("tifgsm", 0.3)):
        for it in (1, 5, 10):
            attacked = {r: clean[r] - drop * it / 10 + rng.normal(0, 0.01, 12) for r in REGIONS}
            rows += _rows("baseline", attack, 0.05, it, attacked, 28 + rng.normal(0, 1, 12))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def full_results(results) -> pd.DataFrame:
    """``results`` plus a transfer attack (crafted on another model) and a realistic
    perturbation (eps NaN): neither belongs in the white-box tables."""
    shifted = {r: np.full(N_SUBJECTS, 0.5) for r in REGIONS}
    extra = _rows("baseline", "fgsm", 0.05, 1, shifted, 29.0, source="distill_T20")
    extra += _rows("baseline", "motion", np.nan, 0, shifted, 33.0, source="")
    return pd.concat([results, pd.DataFrame(extra)], ignore_index=True)


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


def test_p_values_match_independent_scipy_statsmodels(results):
    conds = [{"model": "baseline", "attack": "fgsm", "eps": e} for e in (0.05, 0.1)]
    conds.append({"model": "distill_T20", "attack": "fgsm", "eps": 0.05})
    ref = {"model": "baseline", "attack": "none"}
    out = S.paired_tests(results, S.against(ref, conds), n_boot=100, seed=1, regions=REGIONS)

    base = results.set_index(["model", "attack", "eps", "region", "subject"])["dice"].sort_index()
    expected_p = []
    for c in conds:
        for region in REGIONS:
            x = base.loc[(c["model"], "fgsm", c["eps"], region)]
            y = base.loc[("baseline", "none", 0.0, region)]
            expected_p.append(stats.wilcoxon(x.to_numpy() - y.loc[x.index].to_numpy()).pvalue)
    expected_adj = multipletests(expected_p, method="bonferroni")[1]
    np.testing.assert_allclose(out["p"], expected_p, rtol=1e-12)
    np.testing.assert_allclose(out["p_adj"], expected_adj, rtol=1e-12)
    assert list(out["region"]) == list(REGIONS) * 3
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
    with pytest.raises(ValueError, match="correction"):
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
    with pytest.raises(ValueError, match="lacks columns"):
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


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (0.2287, "0.2287"),
        (6.628e-4, "6.628e-4"),
        (0.0013, "0.0013"),
        (9.011e-9, "9.011e-9"),
        (1.0, "1.0000"),
        (np.nan, "-"),
    ],
)
def test_format_p_like_paper(p, text):
    assert S.format_p(p) == text


def test_labels_and_order():
    models = ["noise", "adv_eps0.1", "distill_T500", "adv_eps0.01", "distill_T20", "other"]
    assert sorted(models, key=S.model_sort_key) == [
        "distill_T20",
        "distill_T500",
        "adv_eps0.01",
        "adv_eps0.1",
        "noise",
        "other",
    ]
    assert S.model_label("baseline") == "No Defense"
    assert S.model_label("distill_T20") == "Distillation (T=20)"
    assert S.model_label("adv_eps0.05") == "Adversarial Training (ε=0.05)"
    assert S.model_label("noise") == "Noise augmentation"
    assert S.attack_label("tifgsm") == "ti-FGSM"


# --------------------------------------------------------------------------- tables


@pytest.fixture(scope="module")
def t1(full_results) -> S.Table:
    return S.table1(
        full_results,
        n_boot=200,
        seed=0,
        rows=[("fgsm", 0.05, None), ("ifgsm", 0.05, None), ("tifgsm", 0.05, None)],
    )


@pytest.fixture(scope="module")
def t2(full_results) -> S.Table:
    return S.table2(full_results, n_boot=200, seed=0)


def test_table1_layout_and_asterisks(t1, results):
    d = t1.display
    assert list(d["Attack Type"]) == ["No attack", "FGSM", "i-FGSM", "ti-FGSM"]
    assert list(d.columns) == [
        "Attack Type",
        "Dice TC",
        "Dice ET",
        "Dice WT",
        "Input PSNR",
        "Input SSIM",
        "Input RMSE",
    ]
    assert (d.loc[0, ["Input PSNR", "Input SSIM", "Input RMSE"]] == "-").all()
    assert not d.loc[0, ["Dice TC", "Dice ET", "Dice WT"]].str.endswith("*").any()
    for col in ("Dice TC", "Dice ET", "Dice WT"):
        assert d.loc[1:, col].str.fullmatch(r"\d\.\d{3}±\d\.\d{3} ↓\*").all()  # lower
    assert d.loc[1:, "Input PSNR"].str.fullmatch(r"\d+\.\d{2}±\d\.\d{2}").all()
    # iterative attacks use their final iteration (10)
    assert list(t1.numeric["iteration"]) == [0, 1, 10, 10]
    assert len(t1.tests) == 9 and (t1.tests["family"] == "table1").all()
    clean_tc = S.select(results, {"model": "baseline", "attack": "none", "region": "TC"})["dice"]
    assert t1.numeric.loc[0, "dice_TC_mean"] == pytest.approx(clean_tc.mean())
    assert t1.numeric.loc[0, "dice_TC_sd"] == pytest.approx(clean_tc.std(ddof=1))
    assert t1.numeric.loc[1:, "dice_WT_significant"].all()
    assert "Bonferroni" in t1.caption


def test_table1_default_rows_cover_every_white_box_attack(full_results):
    with pytest.raises(ValueError, match="several rows"):  # transfer rows need source_model
        S.paired_tests(
            full_results,
            S.against({"attack": "none"}, [{"attack": "fgsm", "eps": 0.05}]),
            n_boot=10,
            seed=0,
        )
    t = S.table1(full_results, n_boot=50, seed=0)
    assert list(t.display["Attack Type"]) == [
        "No attack",
        "FGSM (ε=0.05)",
        "FGSM (ε=0.1)",
        "i-FGSM",
        "ti-FGSM",
    ]
    white_box = S.select(
        full_results,
        {"model": "baseline", "attack": "fgsm", "eps": 0.05, "source_model": "baseline"},
    )
    wt = white_box.loc[white_box["region"] == "WT", "dice"]
    assert t.numeric.loc[1, "dice_WT_mean"] == pytest.approx(wt.mean())
    with pytest.raises(ValueError, match="clean input"):
        S.table1(full_results, n_boot=50, seed=0, rows=[("none", 0.0, 0)])
    with pytest.raises(ValueError, match="model"):
        S.table1(full_results, n_boot=50, seed=0, model="nope")


def test_table2_layout_and_asterisks(t2):
    d, num = t2.display, t2.numeric
    models = ["baseline", "distill_T20", "adv_eps0.05"]
    assert len(d) == 9
    assert list(num["region"]) == [r for r in REGIONS for _ in models]
    assert list(num["model"]) == models * 3
    assert list(d["Segmentation Type"]) == [
        x for r in ("Whole Tumor", "Tumor Core", "Enhancing Tumor") for x in (r, "", "")
    ]
    assert list(d.columns) == [
        "Segmentation Type",
        "Defense Type",
        "Dice ε=0",
        "Dice ε=0.05",
        "Dice ε=0.1",
        "p ε=0 (raw / adj)",
        "p ε=0.05 (raw / adj)",
        "p ε=0.1 (raw / adj)",
    ]
    base = d[num["model"] == "baseline"]
    distill = d[num["model"] == "distill_T20"]
    adv = d[num["model"] == "adv_eps0.05"]
    p_cols = ["p ε=0 (raw / adj)", "p ε=0.05 (raw / adj)", "p ε=0.1 (raw / adj)"]
    assert (base[p_cols] == "- / -").all().all()
    # distillation drops far less than the baseline: significantly higher at eps > 0
    assert distill["Dice ε=0.05"].str.endswith(" ↑*").all()
    assert distill["Dice ε=0.1"].str.endswith(" ↑*").all()
    # same clean Dice for every model: all differences zero, p = 1, no asterisk
    assert (distill["p ε=0 (raw / adj)"] == "1.0000 / 1.0000").all()
    assert not d["Dice ε=0"].str.endswith("*").any()
    assert t2.tests.loc[t2.tests["eps"] == 0, "note"].eq("all differences zero").all()
    # adversarial model drops like the baseline (different noise): not significant
    assert not adv["Dice ε=0.05"].str.endswith("*").any()
    assert len(t2.tests) == 2 * 3 * 3  # 2 models x 3 eps x 3 regions, one family
    assert (t2.tests["family"] == "table2").all()
    rows = num.loc[num["model"] == "distill_T20"]
    shown = [
        S.format_p_pair(p, q)
        for p, q in zip(rows["dice_eps0.05_p"], rows["dice_eps0.05_p_adj"], strict=True)
    ]
    assert shown == list(distill["p ε=0.05 (raw / adj)"])


def test_writers_produce_parseable_files(t1, t2, tmp_path):
    for name, table in (("t1", t1), ("t2", t2)):
        paths = {
            k: tmp_path / f"{name}.{ext}"
            for k, ext in (
                ("csv", "csv"),
                ("markdown", "md"),
                ("latex", "tex"),
                ("tests_csv", "tests.csv"),
            )
        }
        S.write_table(table, **paths)
        back = pd.read_csv(paths["csv"], keep_default_na=True)
        pd.testing.assert_frame_equal(back, table.numeric, check_dtype=False)
        tests = pd.read_csv(paths["tests_csv"])
        assert len(tests) == len(table.tests)

        lines = [ln for ln in paths["markdown"].read_text().splitlines() if ln.startswith("|")]
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
        assert cells[0] == list(table.display.columns)
        assert re.fullmatch(r"[:\- |]+", lines[1])
        assert cells[2:] == table.display.to_numpy().tolist()

        tex = paths["latex"].read_text()
        assert "\\begin{tabular}" in tex and "\\end{table}" in tex and "\\caption{" in tex
        body = tex.split("\\midrule")[1].split("\\bottomrule")[0].strip().splitlines()
        assert len(body) == len(table.display)
        assert all(ln.count("&") == table.display.shape[1] - 1 for ln in body)
        assert "±" not in tex and "ε" not in tex and "$\\pm$" in tex
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_write_table_needs_a_path(t1):
    with pytest.raises(ValueError, match="at least one"):
        S.write_table(t1)


def test_table2_options_and_errors(results):
    t = S.table2(
        results,
        n_boot=50,
        seed=0,
        models=["adv_eps0.05"],
        eps=(0.0, 0.1),
        regions=("ET",),
        model_labels={"adv_eps0.05": "AT-0.05"},
        correction="holm",
    )
    assert list(t.display["Defense Type"]) == ["No Defense", "AT-0.05"]
    assert list(t.display.columns[2:]) == [
        "Dice ε=0", "Dice ε=0.1", "p ε=0 (raw / adj)", "p ε=0.1 (raw / adj)",
    ]  # fmt: skip
    assert set(t.tests["eps"]) == {0.0, 0.1} and (t.tests["correction"] == "holm").all()
    with pytest.raises(ValueError, match="matches no rows"):
        S.table2(results, n_boot=50, seed=0, eps=(0.0, 0.2))
    with pytest.raises(ValueError, match="reference_model"):
        S.table2(results, n_boot=50, seed=0, reference_model="nope")


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


def test_tables_carry_mean_hd95_and_nsd_when_the_results_have_them(full_results, t1, t2):
    assert not any(c.startswith(("hd95", "nsd")) for c in [*t1.numeric, *t2.numeric])
    rng = np.random.default_rng(5)
    df = full_results.assign(
        hd95=rng.uniform(1, 30, len(full_results)), nsd=rng.random(len(full_results))
    )
    df.loc[(df["attack"] == "ifgsm") & (df["iteration"] == 5), ["hd95", "nsd"]] = np.nan
    rows = [("fgsm", 0.05, None), ("ifgsm", 0.05, 10)]
    first = S.table1(df, n_boot=200, seed=0, rows=rows).numeric
    clean = S.select(df, {"model": "baseline", "attack": "none", "region": "TC"})
    assert first.loc[0, "hd95_TC_mean"] == pytest.approx(clean["hd95"].mean())
    ifgsm = S.select(df, {"model": "baseline", "attack": "ifgsm", "iteration": 10, "region": "ET"})
    assert first.loc[2, "nsd_ET_mean"] == pytest.approx(ifgsm["nsd"].mean())
    second = S.table2(df, n_boot=200, seed=0).numeric.set_index(["region", "model"])
    where = {"model": "distill_T20", "attack": "fgsm", "eps": 0.1, "region": "WT"}
    expected = S.select(df, where | {"source_model": "distill_T20"})["hd95"].mean()
    assert second.loc[("WT", "distill_T20"), "hd95_eps0.1_mean"] == pytest.approx(expected)
    assert {"hd95_eps0_mean", "nsd_eps0.05_mean"} <= set(second.columns)
