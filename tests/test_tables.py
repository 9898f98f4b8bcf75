"""Tests of segrobust.tables: Tables 1 and 2, their formatting and writers, on hand-built
long-format result tables."""

import re

import numpy as np
import pandas as pd
import pytest
from conftest import REGIONS

from segrobust import statistics as S
from segrobust import tables as T

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
    assert T.format_p(p) == text


def test_labels_and_order():
    models = ["noise", "adv_eps0.1", "pgdadv_eps0.05", "distill_T500", "adv_eps0.01",
              "distill_T20", "other"]  # fmt: skip
    assert sorted(models, key=T.model_sort_key) == [
        "distill_T20",
        "distill_T500",
        "adv_eps0.01",
        "adv_eps0.1",
        "pgdadv_eps0.05",
        "noise",
        "other",
    ]
    assert T.model_label("baseline") == "No Defense"
    assert T.model_label("distill_T20") == "Distillation (T=20)"
    assert T.model_label("adv_eps0.05") == "Adversarial Training (ε=0.05)"
    assert T.model_label("pgdadv_eps0.05") == "PGD Adversarial Training (ε=0.05)"
    assert T.model_label("noise") == "Noise augmentation"
    assert T.attack_label("tifgsm") == "ti-FGSM"


# --------------------------------------------------------------------------- tables


@pytest.fixture(scope="module")
def t1(full_results) -> T.Table:
    return T.table1(
        full_results,
        n_boot=200,
        seed=0,
        rows=[("fgsm", 0.05, None), ("ifgsm", 0.05, None), ("tifgsm", 0.05, None)],
    )


@pytest.fixture(scope="module")
def t2(full_results) -> T.Table:
    return T.table2(full_results, n_boot=200, seed=0)


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
    assert "conditional on these trained models" in t1.caption


def test_table1_default_rows_cover_every_white_box_attack(full_results):
    with pytest.raises(ValueError, match="several rows"):  # transfer rows need source_model
        S.paired_tests(
            full_results,
            S.against({"attack": "none"}, [{"attack": "fgsm", "eps": 0.05}]),
            n_boot=10,
            seed=0,
        )
    t = T.table1(full_results, n_boot=50, seed=0)
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
        T.table1(full_results, n_boot=50, seed=0, rows=[("none", 0.0, 0)])
    with pytest.raises(ValueError, match="model"):
        T.table1(full_results, n_boot=50, seed=0, model="nope")


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
        T.format_p_pair(p, q)
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
        T.write_table(table, **paths)
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
        T.write_table(t1)


def test_table2_options_and_errors(results):
    t = T.table2(
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
        T.table2(results, n_boot=50, seed=0, eps=(0.0, 0.2))
    with pytest.raises(ValueError, match="reference_model"):
        T.table2(results, n_boot=50, seed=0, reference_model="nope")


def test_tables_carry_mean_hd95_and_nsd_when_the_results_have_them(full_results, t1, t2):
    assert not any(c.startswith(("hd95", "nsd")) for c in [*t1.numeric, *t2.numeric])
    rng = np.random.default_rng(5)
    df = full_results.assign(
        hd95=rng.uniform(1, 30, len(full_results)), nsd=rng.random(len(full_results))
    )
    df.loc[(df["attack"] == "ifgsm") & (df["iteration"] == 5), ["hd95", "nsd"]] = np.nan
    rows = [("fgsm", 0.05, None), ("ifgsm", 0.05, 10)]
    first = T.table1(df, n_boot=200, seed=0, rows=rows).numeric
    clean = S.select(df, {"model": "baseline", "attack": "none", "region": "TC"})
    assert first.loc[0, "hd95_TC_mean"] == pytest.approx(clean["hd95"].mean())
    ifgsm = S.select(df, {"model": "baseline", "attack": "ifgsm", "iteration": 10, "region": "ET"})
    assert first.loc[2, "nsd_ET_mean"] == pytest.approx(ifgsm["nsd"].mean())
    second = T.table2(df, n_boot=200, seed=0).numeric.set_index(["region", "model"])
    where = {"model": "distill_T20", "attack": "fgsm", "eps": 0.1, "region": "WT"}
    expected = S.select(df, where | {"source_model": "distill_T20"})["hd95"].mean()
    assert second.loc[("WT", "distill_T20"), "hd95_eps0.1_mean"] == pytest.approx(expected)
    assert {"hd95_eps0_mean", "nsd_eps0.05_mean"} <= set(second.columns)
