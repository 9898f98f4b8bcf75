"""Tests of segrobust.plots on a synthetic long-format results table and small volumes."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.text import Text

from segrobust import plots as P
from segrobust.results import result_rows, results_frame

# the bootstrap of every interval (the workflow passes statistics.n_boot and seed)
BOOT = {"n_boot": 2000, "seed": 0}

MODELS = ("baseline", "distill_T20", "distill_T100", "adv_eps0.01", "adv_eps0.05", "noise")
# Fraction of the baseline's Dice drop that each defence avoids.
ROBUSTNESS = {
    "baseline": 0.0,
    "distill_T20": 0.3,
    "distill_T100": 0.6,
    "adv_eps0.01": 0.4,
    "adv_eps0.05": 0.5,
    "noise": 0.2,
}
REGIONS = ("WT", "TC", "ET")
N_SUBJECTS = 10
FGSM_EPS = np.round(np.arange(1, 11) * 0.01, 2)
ITERATIVE = ("baseline", "distill_T20")  # models with i-FGSM / ti-FGSM iterates
TIME_ATTACK_EPS = 0.05


def _condition(rng, clean, model, drop, **kwargs) -> list[dict]:
    """Rows of one condition for every subject: Dice = clean - drop (scaled by robustness)."""
    rows = []
    keep = 1 - ROBUSTNESS[model]
    for i, subject in enumerate(sorted(clean)):
        dice = {
            r: float(np.clip(clean[subject][r] - drop * keep + rng.normal(0, 0.02), 0, 1))
            for r in REGIONS
        }
        psnr = np.inf if drop == 0 else 50 - 100 * drop + i * 0.1
        rows += result_rows(
            model=model, subject=subject, dice=dice, quality={"psnr": psnr}, **kwargs
        )
    return rows


def _table() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    clean = {f"s{i:02d}": {r: rng.uniform(0.75, 0.9) for r in REGIONS} for i in range(N_SUBJECTS)}
    rows = []
    for model in MODELS:
        rows += _condition(rng, clean, model, 0.0, attack="none", eps=0.0, iteration=0)
        for eps in FGSM_EPS:
            rows += _condition(
                rng, clean, model, 4 * eps, attack="fgsm", eps=eps, iteration=1, source_model=model
            )
        if model in ITERATIVE:
            for attack, rate in (("ifgsm", 0.05), ("tifgsm", 0.03)):
                for it in range(11):
                    rows += _condition(
                        rng, clean, model, rate * it, attack=attack, eps=0.05, iteration=it,
                        source_model=model,
                    )  # fmt: skip
        for it, drop in ((5, 0.3), (10, 0.5)):
            for attack in ("pgd", "segpgd"):
                rows += _condition(
                    rng, clean, model, drop, attack=attack, eps=TIME_ATTACK_EPS, iteration=it,
                    source_model=model,
                )  # fmt: skip
        if model.startswith("distill"):
            rows += _condition(
                rng, clean, model, 0.4, attack="fgsm_T", eps=TIME_ATTACK_EPS, iteration=1,
                source_model=model,
            )  # fmt: skip
        rows += _condition(
            rng, clean, model, 0.15, attack="transfer_fgsm", eps=TIME_ATTACK_EPS, iteration=1,
            source_model="baseline",
        )  # fmt: skip
        for kind in P.REALISTIC_KINDS:
            for severity in range(6):
                rows += _condition(
                    rng, clean, model, 0.05 * severity, attack=kind, eps=np.nan, iteration=0,
                    severity=severity,
                )  # fmt: skip
    return results_frame(rows)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return _table()


def _errorbars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _bars(ax) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _box_means(ax) -> dict[tuple[str, int], float]:
    """The robustness figure's mean markers by (model, group index)."""
    out = {}
    for line in ax.lines:
        gid = line.get_gid() or ""
        if gid.startswith("mean:"):
            _, model, group = gid.split(":")
            out[model, int(group)] = float(line.get_ydata()[0])
    return out


def _box_points(ax, model: str, group: int) -> np.ndarray:
    (points,) = [c for c in ax.collections if c.get_gid() == f"subjects:{model}:{group}"]
    return points.get_offsets()[:, 1]


def _mean(table, **where) -> float:
    """Mean over subjects of the Dice rows matching ``where`` (independent of summarise)."""
    mask = np.ones(len(table), bool)
    for col, value in where.items():
        mask &= (table[col] == value).to_numpy()
    return float(table.loc[mask, "dice"].mean())


def _texts_readable(fig) -> None:
    """Every visible text of the drawn figure is at least 8 pt."""
    fig.canvas.draw()
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    assert sizes and min(sizes) >= 8


# --------------------------------------------------------------------------- helpers


def test_summarise_known_answer_sd_and_ci(table):
    rows = table[(table["model"] == "baseline") & (table["attack"] == "fgsm")]
    out = P.summarise(rows, ["eps", "region"], "dice", "sd", **BOOT)
    assert len(out) == len(FGSM_EPS) * len(REGIONS)
    one = rows[(rows["eps"] == 0.05) & (rows["region"] == "ET")]["dice"]
    got = out[(out["eps"] == 0.05) & (out["region"] == "ET")].iloc[0]
    assert got["mean"] == pytest.approx(one.mean())
    assert got["high"] - got["mean"] == pytest.approx(one.std(ddof=1))
    assert got["mean"] - got["low"] == pytest.approx(one.std(ddof=1))
    assert got["n"] == N_SUBJECTS
    ci = P.summarise(rows, ["eps", "region"], "dice", "ci95", **BOOT)
    half = ci[(ci["eps"] == 0.05) & (ci["region"] == "ET")].iloc[0]
    half = half["high"] - half["mean"]
    assert half == pytest.approx(2.262157 * one.std(ddof=1) / np.sqrt(N_SUBJECTS), rel=1e-5)
    boot = P.summarise(rows, ["eps", "region"], "dice", **BOOT)  # default: bootstrap CI
    got = boot[(boot["eps"] == 0.05) & (boot["region"] == "ET")].iloc[0]
    assert one.min() < got["low"] < one.mean() < got["high"] < one.max()
    assert boot.equals(P.summarise(rows, ["eps", "region"], "dice", **BOOT))  # seeded


def _bimodal(seeds=(1,)) -> pd.DataFrame:
    """ET Dice of 10 subjects: half 0 (no enhancing tumour found), half 1; clean and FGSM."""
    rows = []
    for seed in seeds:
        for i in range(10):
            dice = {"WT": 0.9, "TC": 0.8, "ET": 0.0 if i < 5 else 1.0}
            for attack, eps in (("none", 0.0), ("fgsm", 0.05)):
                rows += result_rows(
                    model="baseline", attack=attack, eps=eps, iteration=int(eps > 0),
                    subject=f"s{i}", dice=dice, seed=seed, source_model="baseline",
                )  # fmt: skip
    return results_frame(rows)


def test_intervals_of_a_bimodal_dice_stay_inside_zero_one():
    rows = _bimodal()
    sd = P.summarise(rows, ["attack", "region"], "dice", "sd", **BOOT)
    assert (sd["high"] > 1).any()  # mean ± sd leaves [0, 1]: the reviewer's complaint
    boot = P.summarise(rows, ["attack", "region"], "dice", **BOOT)
    assert ((boot["low"] >= 0) & (boot["high"] <= 1)).all()
    et = boot[boot["region"] == "ET"].iloc[0]
    assert 0 < et["low"] < 0.5 < et["high"] < 1
    fig = P.dice_vs_eps(rows, ["baseline"], **BOOT)  # what the figure draws stays inside too
    for ax in fig.axes:
        (bars,) = _errorbars(ax)
        for segment in bars.lines[2][0].get_segments():
            assert 0 <= segment[:, 1].min() and segment[:, 1].max() <= 1
    assert "bootstrap 95% CI" in fig.axes[0].get_ylabel()


def test_seed_lines_drawn_behind_the_mean_when_there_are_seeds():
    one = P.dice_vs_eps(_bimodal(seeds=(1,)), ["baseline"], **BOOT)
    assert not [line for line in one.axes[0].lines if line.get_linewidth() < 1]
    assert P.SEED_NOTE not in [t.get_text() for t in one.legends[0].get_texts()]
    rows = _bimodal(seeds=(1, 2))
    rows.loc[rows["seed"] == 2, "dice"] *= 0.5
    fig = P.dice_vs_eps(rows, ["baseline"], **BOOT)
    et = fig.axes[2]
    thin = [line for line in et.lines if line.get_linewidth() < 1]
    assert sorted(line.get_ydata()[0] for line in thin) == [0.25, 0.5]  # per-seed means
    (bars,) = _errorbars(et)
    assert bars.lines[0].get_ydata()[0] == pytest.approx(0.375)  # mean over seeds
    assert P.SEED_NOTE in [t.get_text() for t in fig.legends[0].get_texts()]
    means = P.seed_means(rows, ["region"])
    assert set(means["seed"]) == {1, 2} and P.seed_means(_bimodal(), ["region"]) is None


def test_summarise_counts_subjects_and_drops_inf(table):
    rows = table[(table["model"] == "baseline") & (table["attack"] == "ifgsm")]
    out = P.summarise(rows, ["iteration"], "psnr", **BOOT)
    assert 0 not in set(out["iteration"])  # PSNR of the clean iterate is inf
    assert (out["n"] == N_SUBJECTS).all()  # three region rows per subject count once
    with pytest.raises(ValueError, match="error"):
        P.summarise(rows, ["iteration"], "dice", "sem", **BOOT)
    with pytest.raises(ValueError, match="lacks columns"):
        P.summarise(rows, ["nope"], "dice", **BOOT)


def test_model_styles_fixed_and_distinct():
    a = P.model_styles(MODELS)
    b = P.model_styles(reversed(MODELS))
    assert a == b
    assert a["baseline"]["color"] == "#000000"
    assert a["noise"]["marker"] == "*"
    assert len({(s["color"], s["linestyle"]) for s in a.values()}) == len(MODELS)
    assert P.ordered_models(MODELS)[0] == "baseline"
    assert P.ordered_models(MODELS)[1:3] == ["distill_T20", "distill_T100"]


# --------------------------------------------------------------------------- line figures


def test_figure2_lines_per_region_start_at_clean(table):
    fig = P.figure2(table, **BOOT)
    assert len(fig.axes) == 2
    assert [ax.get_title().split(" ")[0] for ax in fig.axes] == ["i-FGSM", "ti-FGSM"]
    for ax in fig.axes:
        assert [c.get_label() for c in _errorbars(ax)] == [
            "Whole Tumor (WT)",
            "Tumor Core (TC)",
            "Enhancing Tumor (ET)",
        ]
        assert ax.get_xlabel() == "iterations"
    wt = _errorbars(fig.axes[0])[0].lines[0]
    assert len(wt.get_ydata()) == 11
    assert wt.get_ydata()[0] == pytest.approx(
        _mean(table, model="baseline", attack="ifgsm", iteration=0, region="WT")
    )
    assert np.all(np.diff(wt.get_xdata()) > 0)
    assert "Dice" in fig.axes[0].get_ylabel() and "bootstrap" in fig.axes[0].get_ylabel()
    assert fig.legends
    _texts_readable(fig)


def test_figure2_other_model_and_ci(table):
    fig = P.figure2(table, model="distill_T20", error="ci95", **BOOT)
    assert "95% CI" in fig.axes[0].get_ylabel()
    assert "Distillation (T=20)" in fig.axes[0].get_title()
    assert not any(t.get_text() == "α·N = ε" for t in fig.axes[0].texts)


def test_figure2_marks_where_the_budget_is_spent(table):
    fig = P.figure2(table, alphas={"ifgsm": 0.005, "tifgsm": 0.01}, **BOOT)
    for ax, spent in zip(fig.axes, (10, 5), strict=True):  # ε = 0.05: N = ε / α
        marks = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"]
        assert marks == [spent]
        assert [t.get_text() for t in ax.texts] == ["α·N = ε"]


def test_supplementary_figure2_psnr(table):
    fig = P.supplementary_figure2(table, **BOOT)
    (ax,) = fig.axes
    assert [c.get_label() for c in _errorbars(ax)] == ["i-FGSM (ε = 0.05)", "ti-FGSM (ε = 0.05)"]
    x = _errorbars(ax)[0].lines[0].get_xdata()
    assert len(x) == 10 and min(x) > 0.5  # clean iterate (PSNR = inf) not drawn
    assert "PSNR" in ax.get_ylabel() and "dB" in ax.get_ylabel()
    assert ax.get_legend() is not None
    _texts_readable(fig)


def test_figure3_distillation_lines(table):
    fig = P.figure3(table, **BOOT)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert [c.get_label() for c in _errorbars(ax)] == [
            "No Defense",
            "Distillation (T=20)",
            "Distillation (T=100)",
        ]
        assert ax.get_xlabel().replace("\n", " ") == "FGSM ε (fraction of max intensity)"
    base = _errorbars(fig.axes[2])[0].lines[0]  # ET, baseline
    assert len(base.get_ydata()) == 1 + len(FGSM_EPS)
    assert base.get_ydata()[0] == pytest.approx(
        _mean(table, model="baseline", attack="none", region="ET")
    )
    assert base.get_ydata()[-1] == pytest.approx(
        _mean(table, model="baseline", attack="fgsm", eps=0.1, region="ET")
    )
    assert base.get_color() == "#000000"
    assert fig.legends
    _texts_readable(fig)


def test_figure4_adversarial_training_with_starred_noise(table):
    fig = P.figure4(table, **BOOT)
    ax = fig.axes[0]
    labels = [c.get_label() for c in _errorbars(ax)]
    assert labels == [
        "No Defense",
        "Adversarial Training (ε=0.01)",
        "Adversarial Training (ε=0.05)",
        "Noise augmentation",
    ]
    noise = _errorbars(ax)[3].lines[0]
    assert noise.get_marker() == "*"
    styles = P.model_styles(table["model"].unique())
    assert _errorbars(ax)[1].lines[0].get_color() == styles["adv_eps0.01"]["color"]


def test_colours_consistent_across_figures(table):
    f3, f4, fr = (
        P.figure3(table, **BOOT),
        P.figure4(table, **BOOT),
        P.realistic_figure(table, **BOOT),
    )

    def colours(fig):
        return {c.get_label(): c.lines[0].get_color() for c in _errorbars(fig.axes[0])}

    c3, c4, cr = colours(f3), colours(f4), colours(fr)
    for label in set(c3) & set(cr):
        assert c3[label] == cr[label]
    for label in set(c4) & set(cr):
        assert c4[label] == cr[label]
    assert c3["No Defense"] == c4["No Defense"]


# --------------------------------------------------------------------------- extra figures


def test_robustness_figure_shows_each_distribution(table):
    fig = P.robustness_figure(table)
    assert len(fig.axes) == 3
    groups = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert groups[0] == "Clean input"
    assert [g.split("\n")[0] for g in groups[1:]] == [
        "T-aware FGSM",
        "PGD",
        "SegPGD",
        "Transfer FGSM",
    ]
    assert "from No Defense" in groups[4]
    for ax in fig.axes:  # a box per model and group, except the models without fgsm_T
        assert len(_box_means(ax)) == len(MODELS) * len(groups) - 4
        assert not _bars(ax) and not _errorbars(ax)
    means = _box_means(fig.axes[0])
    pgd_final = _mean(table, model="baseline", attack="pgd", iteration=10, region="WT")
    assert means["baseline", 2] == pytest.approx(pgd_final)
    points = _box_points(fig.axes[0], "baseline", 2)  # the distribution: one point per subject
    assert len(points) == N_SUBJECTS and points.mean() == pytest.approx(pgd_final)
    assert ("baseline", 1) not in means  # no temperature-aware attack on the baseline
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0] == "No Defense" and labels[-1].startswith("mean")
    # the four models without a temperature-aware attack are marked, not drawn as Dice 0
    assert [t.get_text() for t in fig.axes[0].texts] == ["n/a"] * 4
    assert fig.legends
    _texts_readable(fig)


def test_robustness_figure_puts_plain_fgsm_beside_the_temperature_aware_attack(table):
    fig = P.robustness_figure(table, eps=TIME_ATTACK_EPS)
    groups = [t.get_text().split("\n")[0] for t in fig.axes[-1].get_xticklabels()]
    assert groups[1:3] == ["FGSM", "T-aware FGSM"]
    means = _box_means(fig.axes[0])
    plain = _mean(table, model="distill_T20", attack="fgsm", eps=TIME_ATTACK_EPS, region="WT")
    assert means["distill_T20", 1] == pytest.approx(plain)
    assert means["distill_T20", 2] < means["distill_T20", 1]  # the attack through z/T bites


def test_robustness_figure_subset_and_missing(table):
    fig = P.robustness_figure(table, attacks=["pgd"], regions=["ET"], include_clean=False)
    assert len(fig.axes) == 1 and len(_box_means(fig.axes[0])) == len(MODELS)
    with pytest.raises(ValueError, match="no strong, transfer or temperature-aware"):
        P.robustness_figure(table[table["attack"].isin(["none", "fgsm"])])
    with pytest.raises(ValueError, match="crafted on 'noise'"):
        P.robustness_figure(table, attacks=["transfer_fgsm"], transfer_source="noise")
    with pytest.raises(ValueError, match="several eps"):
        P.robustness_figure(table, attacks=["fgsm"])


def test_realistic_figure_panels(table):
    fig = P.realistic_figure(table, regions=["TC", "ET"], **BOOT)
    kinds = len(P.REALISTIC_KINDS)
    assert len(fig.axes) == 2 * kinds
    tc, et = fig.axes[:kinds], fig.axes[kinds:]
    assert [ax.get_title() for ax in tc][:3] == ["Motion", "Ghosting", "Bias field"]
    for ax in fig.axes:
        assert len(_errorbars(ax)) == len(MODELS)
        assert list(ax.get_xticks()) == [0, 1, 2, 3, 4, 5]  # the severities present
    assert et[0].get_xlabel() == "severity"
    assert list(_errorbars(tc[0])[0].lines[0].get_ydata()) == pytest.approx(
        [_mean(table, model="baseline", attack="motion", severity=s, region="TC") for s in range(6)]
    )
    assert "Dice TC" in tc[0].get_ylabel() and "Dice ET" in et[0].get_ylabel()
    for row in (tc, et):  # fitted to the data: every mean inside, not the whole [0, 1]
        low, high = row[0].get_ylim()
        means = [y for ax in row for bars in _errorbars(ax) for y in bars.lines[0].get_ydata()]
        assert low <= min(means) and max(means) <= high and (low > 0 or high < 1)
    fig2 = P.realistic_figure(
        table, kinds=["spike", "motion"], models=["baseline", "noise"], **BOOT
    )
    assert len(fig2.axes) == 2 * 3  # three regions by default
    _texts_readable(fig)


# --------------------------------------------------------------------------- missing data


def test_missing_data_raise(table):
    no_distill = table[~table["model"].str.startswith("distill")]
    with pytest.raises(ValueError, match="distill"):
        P.figure3(no_distill, **BOOT)
    with pytest.raises(ValueError, match="adversarial training"):
        P.figure4(table[~table["model"].str.startswith("adv")], **BOOT)
    with pytest.raises(ValueError, match="realistic perturbation rows"):
        P.realistic_figure(table[~table["attack"].isin(P.REALISTIC_KINDS)], **BOOT)
    with pytest.raises(ValueError, match="'tifgsm'"):
        P.figure2(table[table["attack"] != "tifgsm"], **BOOT)
    with pytest.raises(ValueError, match="'ifgsm'"):
        P.figure2(table, model="noise", **BOOT)
    with pytest.raises(ValueError, match="models \\['nope'\\]"):
        P.figure2(table, model="nope", **BOOT)
    with pytest.raises(ValueError, match="regions \\['XX'\\]"):
        P.figure3(table, regions=["XX"], **BOOT)
    with pytest.raises(ValueError, match="eps=0.2"):
        P.figure2(table, eps=0.2, **BOOT)
    with pytest.raises(ValueError, match="clean"):
        P.figure3(table[table["attack"] != "none"], **BOOT)
    with pytest.raises(ValueError, match="'pgd'"):
        P.realistic_figure(table, kinds=["pgd"], **BOOT)  # adversarial rows: no severity
    with pytest.raises(ValueError, match="lacks columns"):
        P.figure3(table.drop(columns="dice"), **BOOT)


# --------------------------------------------------------------------------- saving


def test_save_figure_writes_png_and_pdf(tmp_path, table):
    fig = P.supplementary_figure2(table, **BOOT)
    png, pdf = P.save_figure(fig, tmp_path / "sub" / "psnr_eps0.05", dpi=200)
    assert png.name == "psnr_eps0.05.png" and pdf.name == "psnr_eps0.05.pdf"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(data[16:20], "big")
    assert width == round(P.HALF_WIDTH * 200)
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [pdf.name, png.name]
    with pytest.raises(ValueError, match="dpi"):
        P.save_figure(P.supplementary_figure2(table, **BOOT), tmp_path / "low", dpi=100)
