"""The results table's vocabulary: one budget tolerance, final iterates, selectors, names.

(Its row builders, result_rows and results_frame, are tested in test_metrics.py.)"""

import numpy as np
import pandas as pd
import pytest

from segrobust.labels import REGIONS
from segrobust.results import (
    ATTACK_LABELS,
    CLEAN,
    REGION_LABELS,
    attack_label,
    attack_selector,
    attack_sort_key,
    eps_key,
    final_iteration,
    final_rows,
    same_eps,
    select,
)


def table() -> pd.DataFrame:
    """One subject: clean, FGSM at two ε, i-FGSM iterates 1-3 at 0.05 (white-box and a
    transfer copy crafted on 'other'), random sign at 0.05, an artefact without ε."""
    rows = [("none", 0.0, 0, "m"), ("fgsm", 0.05, 1, "m"), ("fgsm", 0.1, 1, "m"),
            ("ifgsm", 0.05, 1, "m"), ("ifgsm", 0.05, 2, "m"), ("ifgsm", 0.05, 3, "m"),
            ("ifgsm", 0.05, 4, "other"), ("random_sign", 0.05, 0, "m"),
            ("motion", np.nan, 0, "m"), ("motion", np.nan, 0, "m")]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["attack", "eps", "iteration", "source_model"])
    return frame.assign(model="m", subject="s", dice=np.linspace(0.9, 0.0, len(frame)))


def test_one_budget_within_float_rounding_and_no_further():
    assert same_eps([0.05 + 1e-13, 0.1 + 0.2], 0.05).tolist() == [True, False]
    assert same_eps(0.1 + 0.2, 0.3) and not same_eps(1e-10, 0.0)
    assert not same_eps(0.050001, 0.05)
    keys = eps_key(pd.Series([0.1 + 0.2, 0.3, 0.05]))
    assert keys.tolist() == [0.3, 0.3, 0.05]  # one key per budget


def test_select_matches_strings_exactly_and_numbers_with_the_tolerance():
    t = table()
    assert len(select(t, {"attack": "fgsm", "eps": 0.05 + 1e-13})) == 1
    assert len(select(t, {"attack": "ifgsm", "source_model": "m"})) == 3
    with pytest.raises(ValueError, match=r"names columns not in the table: \['seed'\]"):
        select(t, {"seed": 1})


def test_final_rows_take_each_groups_last_iterate_or_the_one_asked_for():
    t = table()
    last = final_rows(t, ["attack", "source_model", "eps"])
    ifgsm = last[last["attack"] == "ifgsm"]
    assert ifgsm.set_index("source_model")["iteration"].to_dict() == {"m": 3, "other": 4}
    assert len(last[last["attack"] == "motion"]) == 2  # NaN ε is a group of its own
    asked = final_rows(t, ["attack", "source_model", "eps"], {"ifgsm": 2})
    assert asked.loc[asked["attack"] == "ifgsm", "iteration"].tolist() == [2]
    assert len(asked[asked["attack"] == "fgsm"]) == 2  # not listed: its last
    assert final_iteration(t, {"attack": "ifgsm"}) == 4
    with pytest.raises(ValueError, match=r"selector \{'attack': 'cw'\} matches no rows"):
        final_iteration(t, {"attack": "cw"})


def test_attack_selector_is_white_box_at_the_final_iterate_and_eps_0_is_clean():
    t = table()
    clean = {"model": "m", "attack": CLEAN, "eps": 0.0, "iteration": 0}
    assert attack_selector(t, "m", "fgsm", 0) == attack_selector(t, "m", CLEAN, 0.05) == clean
    picked = attack_selector(t, "m", "ifgsm", 0.05)
    assert picked == {"model": "m", "attack": "ifgsm", "eps": 0.05, "source_model": "m",
                      "iteration": 3}  # fmt: skip
    assert attack_selector(t, "m", "ifgsm", 0.05, iteration=2)["iteration"] == 2


def test_display_names_and_their_order():
    assert attack_label(CLEAN) == "No attack" and attack_label("tifgsm") == "ti-FGSM"
    assert attack_label("pgd_large") == "PGD (large ε)" and attack_label("cw") == "CW"
    assert attack_label("bias_field") == "Bias field"
    keys = list(ATTACK_LABELS)
    assert keys[:8] == [CLEAN, "fgsm", "ifgsm", "tifgsm", "pgd", "segpgd", "fgsm_T",
                        "transfer_fgsm"]  # fmt: skip
    assert keys[8] == "motion" and keys[-2:] == ["pgd_large", "random_sign"]
    assert "realistic" not in keys  # its rows name the artefact
    assert sorted(["random_sign", "cw", "fgsm", CLEAN], key=attack_sort_key) == [
        CLEAN, "fgsm", "random_sign", "cw"
    ]  # fmt: skip
    assert list(REGION_LABELS) == list(REGIONS)
