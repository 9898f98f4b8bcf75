import numpy as np
import pandas as pd
import pytest

from segrobust.plots import save_figure, worst_case_figure
from segrobust.worst_case import (
    adversarial_rows,
    worst_case,
    worst_case_markdown,
    worst_case_table,
)


def results():
    """Two seeds, two subjects, WT and TC: FGSM and transfer at ε 0.05 / 0.1, i-FGSM with three
    iterates at 0.05, the noise control and a realistic artefact (both to be ignored)."""
    rows = []

    def add(attack, eps, it, dice, source="m", severity=np.nan):
        for seed in (1, 2):
            for k, subject in enumerate(("s1", "s2")):
                for region in ("WT", "TC"):
                    rows.append({"model": "m", "seed": seed, "attack": attack, "eps": eps,
                                 "iteration": it, "subject": subject, "region": region,
                                 "dice": dice[k] + 0.01 * seed, "source_model": source,
                                 "severity": severity})  # fmt: skip

    add("none", 0.0, 0, [0.9, 0.8], source="")
    add("fgsm", 0.05, 1, [0.6, 0.3])
    add("fgsm", 0.1, 1, [0.4, 0.2])
    add("transfer_fgsm", 0.05, 1, [0.5, 0.5], source="baseline")
    add("transfer_fgsm", 0.1, 1, [0.45, 0.1], source="baseline")
    add("ifgsm", 0.05, 1, [0.7, 0.7])
    add("ifgsm", 0.05, 2, [0.2, 0.6])  # the Table 1 iterate
    add("ifgsm", 0.05, 3, [0.1, 0.05])  # the last one
    add("random_sign", 0.05, 0, [0.0, 0.0])  # a control: never the worst case
    add("motion", np.nan, 0, [0.0, 0.0], source="", severity=3.0)
    return pd.DataFrame(rows)


def test_worst_case_is_the_per_subject_minimum_over_adversarial_families():
    worst = worst_case(results(), {"ifgsm": 2}).set_index(["seed", "subject", "region", "eps"])
    at_005 = worst.loc[(1, "s1", "WT", 0.05)]
    assert at_005["dice"] == pytest.approx(0.21) and at_005["attack"] == "ifgsm"
    assert at_005["families"] == "fgsm, ifgsm, transfer_fgsm"
    s2 = worst.loc[(1, "s2", "WT", 0.05)]
    assert s2["dice"] == pytest.approx(0.31) and s2["attack"] == "fgsm"
    at_01 = worst.loc[(2, "s2", "TC", 0.1)]
    assert at_01["dice"] == pytest.approx(0.12) and at_01["attack"] == "transfer_fgsm"
    assert set(worst.index.get_level_values("eps")) == {0.05, 0.1}  # no control, no artefact
    last = worst_case(results()).set_index(["seed", "subject", "region", "eps"])
    assert last.loc[(1, "s1", "WT", 0.05), "dice"] == pytest.approx(0.11)  # the final iterate


def test_table_per_seed_and_averaged_over_seeds():
    table = worst_case_table(results(), {"ifgsm": 2})
    row = table[(table["seed"] == "1") & (table["eps"] == 0.05) & (table["region"] == "WT")]
    assert row["mean"].item() == pytest.approx((0.21 + 0.31) / 2)
    assert row["sd"].item() == pytest.approx(np.std([0.21, 0.31], ddof=1))
    pooled = table[(table["seed"] == "all") & (table["eps"] == 0.05) & (table["region"] == "WT")]
    assert pooled["mean"].item() == pytest.approx((0.215 + 0.315) / 2)  # seeds averaged first
    assert pooled["n_subjects"].item() == 2
    text = worst_case_markdown(table)
    assert "## WT" in text and "ε = 0.05" in text and "0.265 ± 0.071" in text


def test_figure_has_a_line_per_family_and_the_worst_case(tmp_path):
    fig = worst_case_figure(results(), "m", {"ifgsm": 2})
    assert len(fig.axes) == 2  # WT, TC
    labels = {line.get_label() for line in fig.axes[0].lines}
    assert labels == {"fgsm", "transfer_fgsm", "ifgsm", "worst case"}
    worst = next(line for line in fig.axes[0].lines if line.get_label() == "worst case")
    assert worst.get_xdata()[0] == 0 and worst.get_ydata()[0] == pytest.approx(0.865)  # clean
    save_figure(fig, tmp_path / "m")
    assert (tmp_path / "m.png").stat().st_size > 10_000 and (tmp_path / "m.pdf").exists()


def test_bad_input_raises():
    with pytest.raises(ValueError, match="requested iteration"):
        adversarial_rows(results(), {"ifgsm": 7})
    only_clean = results()[results()["attack"] == "none"]
    with pytest.raises(ValueError, match="no adversarial rows"):
        worst_case(only_clean)
    with pytest.raises(ValueError, match="not in the results"):
        worst_case_figure(results(), "other")
