import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from statsmodels.stats.multitest import multipletests
from torch import nn

from segrobust.audit import AUDIT_COLUMNS, CHECKS, audit, audit_markdown, holm, rise_test
from segrobust.evaluation import evaluate_attack, evaluate_clean
from segrobust.gradient_stats import evaluate_gradients

SHAPE = (16, 16, 16)
CPU = torch.device("cpu")
SETTINGS = {
    "loss": "with_background_ce",
    "gamma": 1.0,
    "mask": True,
    "batch": 2,
    "eval_batch": 2,
    "examples": {"subjects": [], "eps": []},
    "fgsm": {"epsilons": [0.05, 0.1, 0.2]},
    "random_sign": {"epsilons": [0.05, 0.1, 0.2]},
    "ifgsm": {"eps": 0.1, "alpha": 0.02, "steps": 5},
    "pgd": {"eps": 0.1, "alpha": 0.04, "steps": 5, "restarts": 1},
    "pgd_large": {"eps": 0.5, "alpha": 0.1, "steps": 8, "restarts": 1},
    "table1_iteration": 5,
}
FAMILIES = ("fgsm", "random_sign", "ifgsm", "pgd", "pgd_large")


OFFSETS = np.array([0.0, 2.0, 1.0, 3.0])  # class 0 (brain), 1 (NCR), 2 (oedema), 3 (ET)


def write_subject(root, name, seed):
    """A preprocessed subject (image, label, brain mask, meta): a brain ball with a tumour of
    nested shells (oedema, ET, necrotic core), each class at its own z-scored intensity."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    brain = (grid**2).sum(0) < 0.85
    radius = np.sqrt(((grid - rng.uniform(-0.2, 0.2, (3, 1, 1, 1))) ** 2).sum(0))
    classes = np.zeros(SHAPE, np.uint8)
    for k, r in ((2, 0.6), (3, 0.4), (1, 0.22)):
        classes[(radius < r) & brain] = k
    gain = 1 + 0.2 * np.arange(4)[:, None, None, None]
    image = (OFFSETS[classes] * gain + rng.normal(0, 0.3, (4, *SHAPE))) * brain
    folder = root / name
    folder.mkdir(parents=True)
    np.save(folder / "image.npy", image.astype(np.float32))
    np.save(folder / "label.npy", classes)
    np.save(folder / "mask.npy", brain)
    (folder / "meta.json").write_text(json.dumps({"affine": np.eye(4).tolist()}))
    return folder


class Saturated(nn.Module):
    """The network with logits × 1e4: float32 softmax saturates, input gradients vanish."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) * 1e4


class Quantised(nn.Module):
    """The network on the input rounded to 1/4: piecewise constant, zero gradient everywhere."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


def ordinal_net(subjects) -> nn.Module:
    """A 1×1×1 conv that reads the classes off the mean intensity x̄ of the four modalities,
    fitted on ``subjects``: with the classes ranked by their mean x̄, the class of rank r gets
    logit r·x̄ − Σ_{j ≤ r} t_j (t_j: midpoints between consecutive class means), so the argmax
    switches at the midpoints. Margins stay a few units (no saturation)."""
    means = np.zeros(4)
    for k in range(4):
        values = [np.load(d / "image.npy").mean(0)[np.load(d / "label.npy") == k] for d in subjects]
        means[k] = np.concatenate(values).mean()
    order = np.argsort(means)
    cuts = np.r_[0.0, (means[order][1:] + means[order][:-1]) / 2]
    rank = np.argsort(order).astype(np.float32)
    net = nn.Conv3d(4, 4, 1)
    with torch.no_grad():
        net.weight.copy_(torch.from_numpy(rank).view(4, 1, 1, 1, 1).expand(4, 4, 1, 1, 1) / 4)
        net.bias.copy_(torch.from_numpy(-np.cumsum(cuts)[rank.astype(int)]).float())
    return net.eval()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The ordinal network fitted on four phantoms; nine test subjects (the Dice checks' sign
    test needs several: its smallest p with n subjects is 2⁻ⁿ)."""
    root = tmp_path_factory.mktemp("preprocessed")
    train = [write_subject(root, f"train{i}", seed=10 + i) for i in range(4)]
    test = [write_subject(root, f"test{i}", seed=i) for i in range(9)]
    return ordinal_net(train), test


@pytest.fixture(scope="module")
def plain(cohort):
    """The audit of the plain ordinal network, and its results."""
    return run_audit(*cohort)


def run_audit(model, test, name="m", **tolerances):
    frames = [evaluate_clean(model, name, test, CPU, tags={"seed": 1})]
    frames += [
        evaluate_attack(a, model, name, test, SETTINGS, CPU, 0, tags={"seed": 1}) for a in FAMILIES
    ]
    results = pd.concat(frames, ignore_index=True)
    grads = evaluate_gradients(model, name, test, SETTINGS, CPU, tags={"seed": 1})
    return audit(results, grads, **tolerances), results


def statuses(table):
    return table.groupby("check")["status"].agg(
        lambda s: "flag" if (s == "flag").any() else s.iloc[0]
    )


def test_plain_model_passes_every_applicable_check(plain):
    table, results = plain
    clean = results[results["attack"] == "none"].groupby("region")["dice"].mean()
    assert (clean > 0.8).all()  # a real segmentation that attacks can degrade
    assert list(table.columns) == AUDIT_COLUMNS
    applied = table[table["status"] != "n.a."]
    assert set(applied["status"]) == {"pass"}, applied[["check", "attack", "detail"]]
    assert set(applied["check"]) == {
        "a_eps_monotone", "a_iter_monotone", "c_beats_noise", "d_large_budget",
        "e_zero_gradient", "e_saturated", "g_iterative_vs_single",
    }  # fmt: skip
    not_applied = table[table["status"] == "n.a."]
    assert set(zip(not_applied["check"], not_applied["attack"], strict=True)) == {
        ("b_whitebox_vs_transfer", "fgsm"), ("f_temperature", "fgsm"),  # no transfer, no T
        ("c_beats_noise", "pgd_large"), ("g_iterative_vs_single", "pgd_large"),  # no ε = 0.5
    }  # fmt: skip


def test_saturated_model_is_flagged(cohort, plain):
    net, test = cohort
    table, results = run_audit(Saturated(net), test)
    status = statuses(table)
    assert status["e_saturated"] == "flag" and status["e_zero_gradient"] == "flag"
    assert status["d_large_budget"] == "flag"  # PGD cannot move where the gradient is zero
    assert status["c_beats_noise"] == "flag"  # FGSM does not move: noise hurts more
    row = table[(table["check"] == "e_saturated")].iloc[0]
    assert row["value"] > 0.9 and row["reference"] == 0
    # the same network: predictions unchanged by the scaling, only the attacks fail
    assert (plain[0]["status"] != "flag").all()


def test_quantised_input_is_flagged(cohort):
    net, test = cohort
    table, _ = run_audit(Quantised(net), test)
    status = statuses(table)
    zero = table[table["check"] == "e_zero_gradient"].iloc[0]
    assert zero["status"] == "flag" and zero["value"] == 1.0  # rounding: gradient exactly 0
    assert status["d_large_budget"] == "flag"
    assert status["e_saturated"] == "pass"  # the softmax is fine; only the input is masked
    # FGSM cannot move (sign 0): random noise at the same ε hurts more
    noise = table[(table["check"] == "c_beats_noise") & (table["attack"] == "fgsm")].iloc[0]
    assert noise["status"] == "flag" and noise["value"] == 1.0 and "random sign" in noise["detail"]


# --- the checks on hand-made tables ------------------------------------------------------------


JITTER = np.linspace(-0.01, 0.01, 8)  # each subject's own offset, the same in every condition


def table_of(rows):
    """Results rows from (model, attack, eps, iteration, dice, source) with 8 subjects whose
    Dice is ``dice`` + their own offset, WT only."""
    out = []
    for model, attack, eps, it, dice, source in rows:
        for i, offset in enumerate(JITTER):
            out.append({"model": model, "seed": 1, "attack": attack, "eps": eps, "iteration": it,
                        "subject": f"s{i}", "region": "WT", "dice": dice + offset,
                        "source_model": source or model})  # fmt: skip
    return pd.DataFrame(out)


def test_non_monotone_sweep_and_weak_whitebox_are_flagged_with_their_numbers():
    df = table_of([
        ("m", "none", 0.0, 0, 0.9, ""),
        ("m", "fgsm", 0.05, 1, 0.5, None), ("m", "fgsm", 0.1, 1, 0.6, None),  # rises by 0.1
        ("m", "transfer_fgsm", 0.05, 1, 0.3, "baseline"),  # transfer stronger: masking
        ("m", "random_sign", 0.05, 0, 0.85, None), ("m", "random_sign", 0.1, 0, 0.5, None),
    ])  # fmt: skip
    table = audit(df, dice_tolerance=0.02).set_index(["check", "attack"])
    eps = table.loc[("a_eps_monotone", "fgsm")]
    assert eps["status"] == "flag" and eps["value"] == pytest.approx(0.6)
    assert eps["reference"] == pytest.approx(0.5) and "0.05" in eps["detail"]
    transfer = table.loc[("b_whitebox_vs_transfer", "fgsm")]
    assert transfer["status"] == "flag" and transfer["value"] - transfer[
        "reference"
    ] == pytest.approx(0.2)
    noise = table.loc[("c_beats_noise", "fgsm")]  # at ε = 0.1: 0.6 vs noise 0.5
    assert noise["status"] == "flag" and "ε = 0.1" in noise["detail"]
    assert audit(df, dice_tolerance=0.25).set_index(["check", "attack"]).loc[
        ("a_eps_monotone", "fgsm"), "status"] == "pass"  # fmt: skip
    assert table.loc[("e_zero_gradient", ""), "status"] == "n.a."  # no gradient statistics


def test_temperature_and_iterative_checks():
    df = table_of([
        ("s", "none", 0.0, 0, 0.9, ""),
        ("s", "fgsm", 0.05, 1, 0.8, None), ("s", "fgsm_T", 0.05, 1, 0.2, None),
        ("s", "pgd", 0.05, 10, 0.85, None),  # weaker than FGSM
    ])  # fmt: skip
    table = audit(df).set_index(["check", "attack"])
    assert table.loc[("f_temperature", "fgsm"), "status"] == "flag"
    assert table.loc[("g_iterative_vs_single", "pgd"), "status"] == "flag"
    assert table.loc[("d_large_budget", "pgd_large"), "status"] == "n.a."
    assert table.loc[("a_iter_monotone", ""), "status"] == "n.a."  # no iterates recorded
    text = audit_markdown(audit(df))
    assert "## Flags (2)" in text and all(c in text for c in CHECKS) and "nan" not in text


def test_a_check_too_few_subjects_could_ever_flag_is_not_applied():
    df = table_of([("m", "none", 0.0, 0, 0.9, ""), ("m", "fgsm", 0.05, 1, 0.95, None)])
    df = df[df["subject"].isin(["s0", "s1", "s2", "s3"])]  # 4 subjects: p ≥ 1/16 > 0.05
    row = audit(df).set_index("check").loc["a_eps_monotone"]
    assert row["status"] == "n.a." and "4 subjects cannot show a rise" in row["detail"]


def test_bad_arguments_raise():
    df = table_of([("m", "none", 0.0, 0, 0.9, "")])
    with pytest.raises(ValueError, match="dice_tolerance"):
        audit(df, dice_tolerance=-0.1)
    with pytest.raises(ValueError, match="source_model"):
        audit(df.drop(columns="source_model"))


# --- the false-flag rate of the Dice checks ----------------------------------------------------

HONEST = {  # Dice differences whose median is 0 at every setting (no rise for a typical subject)
    "normal": lambda u: 0.03 * stats.norm.ppf(u),
    "skewed up": lambda u: stats.expon.ppf(u, scale=0.03) - 0.03 * np.log(2),
    "skewed down": lambda u: 0.03 * np.log(2) - stats.expon.ppf(u, scale=0.03),
    "40 % unchanged": lambda u: np.where(np.abs(u - 0.5) < 0.2, 0.0, 0.05 * stats.norm.ppf(u)),
    "heavy tails": lambda u: 0.02 * stats.t.ppf(u, 3),
}


@pytest.mark.parametrize("shape", HONEST)
def test_an_honest_replicate_is_flagged_at_most_alpha_per_check(shape):
    """Simulation over subjects (the plain network's Dice falls strictly with ε on the phantoms,
    so its own flag rate is trivially 0): 4000 draws of one check scanning 30 settings (10 ε ×
    3 regions) over 18 subjects, each subject's differences correlated across settings
    (Gaussian copula, ρ = 0.8) or not, at the honest boundary (median 0). The rate must stay
    within α = 0.05 plus 2 Monte Carlo SE; the old rule (the largest mean rise over the
    settings > 0.02) is printed beside it."""
    rng = np.random.default_rng(11)
    limit = 0.05 + 2 * np.sqrt(0.05 * 0.95 / 4000)
    for rho in (0.0, 0.8):
        z = rho * rng.standard_normal((4000, 1, 18))
        z = z + np.sqrt(1 - rho**2) * rng.standard_normal((4000, 30, 18))
        diff = HONEST[shape](stats.norm.cdf(z))
        _, _, flag = rise_test(diff, tolerance=0.02, alpha=0.05)
        old = np.mean(diff.mean(axis=-1).max(axis=-1) > 0.02)
        print(f"{shape}, ρ = {rho}: flagged {flag.mean():.4f} (limit {limit:.4f}); "
              f"old rule {old:.4f}")  # fmt: skip
        assert flag.mean() <= limit


def test_a_consistent_rise_at_one_setting_is_flagged():
    rng = np.random.default_rng(0)
    diff = rng.normal(-0.05, 0.03, (30, 18))
    diff[7] = rng.normal(0.05, 0.01, 18)  # every subject's Dice rose there
    mean, p_adj, flag = rise_test(diff, tolerance=0.02, alpha=0.05)
    assert flag and p_adj.argmin() == 7 and p_adj[7] == pytest.approx(30 * 0.5**18)
    assert not rise_test(diff, tolerance=0.06, alpha=0.05)[2]  # below the practical margin


def test_holm_equals_statsmodels():
    p = np.random.default_rng(1).uniform(0, 0.2, (5, 12))
    expected = np.array([multipletests(row, method="holm")[1] for row in p])
    assert holm(p) == pytest.approx(expected)
