"""The crossed seeds × subjects test: known answers, and its size, coverage and power."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm

from segrobust.crossed import Components, crossed_test, mixed_model, two_level_bootstrap
from segrobust.planner import power

RNG = np.random.default_rng(7)


def draws(n_draws, k, n, sd_seed, sd_subject, sd_resid, effect=0.0, rng=RNG):
    """``n_draws`` matrices D = Δ + a_s + c_i + e_si (seeds × subjects)."""
    return (
        effect
        + rng.normal(0, sd_seed, (n_draws, k, 1))
        + rng.normal(0, sd_subject, (n_draws, 1, n))
        + rng.normal(0, sd_resid, (n_draws, k, n))
    )


def _long(d: np.ndarray) -> pd.DataFrame:
    k, n = d.shape
    return pd.DataFrame({"d": d.ravel(), "seed": np.repeat(np.arange(k), n),
                         "subject": np.tile(np.arange(n), k)})  # fmt: skip


def test_mean_squares_and_interval_equal_statsmodels_anova_and_the_formula():
    d = draws(1, 4, 7, 0.02, 0.03, 0.03, effect=0.05)[0]
    res = crossed_test(d)
    table = anova_lm(smf.ols("d ~ C(seed) + C(subject)", _long(d)).fit())
    assert res.ms_seed == pytest.approx(table.loc["C(seed)", "mean_sq"])
    assert res.ms_subject == pytest.approx(table.loc["C(subject)", "mean_sq"])
    assert res.ms_resid == pytest.approx(table.loc["Residual", "mean_sq"])
    assert res.delta == pytest.approx(d.mean())
    # Banerjee-type half-width, written out by hand
    t3, t6 = stats.t.ppf(0.975, 3), stats.t.ppf(0.975, 6)
    ms_s, ms_i, ms_e = (table["mean_sq"].iloc[j] for j in (0, 1, 2))
    h = np.sqrt(max(t3**2 * ms_s + t6**2 * max(ms_i - ms_e, 0), t6**2 * ms_i) / 28)
    assert (res.ci_low, res.ci_high) == pytest.approx((d.mean() - h, d.mean() + h))
    assert res.se == pytest.approx(np.sqrt(max(ms_s + ms_i - ms_e, ms_i) / 28))


def test_p_value_is_where_the_interval_touches_zero():
    d = draws(1, 3, 18, 0.02, 0.03, 0.03, effect=0.04)[0]
    res = crossed_test(d)
    assert crossed_test(d - res.ci_low).p == pytest.approx(0.05, rel=1e-6)
    assert crossed_test(d - res.ci_high).p == pytest.approx(0.05, rel=1e-6)
    assert crossed_test(d, confidence=1 - res.p).ci_low == pytest.approx(0, abs=1e-9)
    assert crossed_test(np.zeros((3, 5))).p == 1.0
    assert crossed_test(np.full((3, 5), 0.1)).p < 1e-20  # no variance at all


def test_interval_is_never_narrower_than_the_subjects_only_paired_t():
    for sd_seed in (0.0, 0.02):  # without a seed effect the seed term can come out small
        many = draws(300, 5, 18, sd_seed, 0.02, 0.04)
        res = crossed_test(many)
        per_subject = many.mean(axis=1)  # seed-averaged differences: models treated as fixed
        paired = stats.ttest_1samp(per_subject, 0, axis=-1).confidence_interval(0.95)
        assert np.all(res.ci_high - res.ci_low >= paired.high - paired.low - 1e-12)
        assert np.all(res.ci_high - res.ci_low >= 0)


N_DRAWS = 4000
SETTINGS = {  # sd of the seed effect, subject × defence interaction, residual (Dice)
    "interaction": (0.02, 0.03, 0.03),
    "seed-dominated": (0.03, 0.01, 0.02),
}


@pytest.mark.parametrize("name", SETTINGS)
def test_size_coverage_and_power_by_simulation(name):
    """4000 draws per (setting, seeds), 18 subjects: size ≤ 0.05 + 2 Monte Carlo SE under the
    null, 95 % CI coverage ≥ 0.93 under the null and at Δ = 3 seed-sd, power rising with the
    seeds and equal to the planner's (which draws sufficient statistics instead)."""
    sd_seed, sd_subject, sd_resid = SETTINGS[name]
    effect = 3 * sd_seed
    limit = 0.05 + 2 * np.sqrt(0.05 * 0.95 / N_DRAWS)
    rng = np.random.default_rng(2018)
    powers = []
    for k in (3, 4, 5):
        null = crossed_test(draws(N_DRAWS, k, 18, sd_seed, sd_subject, sd_resid, rng=rng))
        alt = crossed_test(draws(N_DRAWS, k, 18, sd_seed, sd_subject, sd_resid, effect, rng))
        size = np.mean(null.p <= 0.05)
        coverage = [np.mean((r.ci_low <= e) & (e <= r.ci_high)) for r, e in ((null, 0),
                    (alt, effect))]  # fmt: skip
        powers.append(np.mean(alt.p <= 0.05))
        parts = Components(sd_seed**2, sd_subject**2, sd_resid**2)
        planned = power(parts, effect, n_seeds=k, n_subjects=18, alpha=0.05)
        print(f"{name}, {k} seeds: size {size:.4f} (limit {limit:.4f}), coverage "
              f"{coverage[0]:.4f} / {coverage[1]:.4f}, power at Δ = {effect:g}: "
              f"{powers[-1]:.4f} (planner {planned:.4f})")  # fmt: skip
        assert size <= limit
        assert min(coverage) >= 0.93
        assert np.all((null.p <= 0.05) == ((null.ci_low > 0) | (null.ci_high < 0)))
        assert planned == pytest.approx(powers[-1], abs=4 * np.sqrt(0.25 / N_DRAWS))
    assert powers[0] < powers[1] < powers[2]


def test_mixed_model_matches_anova_when_components_are_positive():
    d = draws(1, 5, 18, 0.03, 0.03, 0.02, effect=0.04, rng=np.random.default_rng(3))[0]
    res = crossed_test(d)
    assert res.ms_seed > res.ms_resid and res.ms_subject > res.ms_resid
    mixed = mixed_model(pd.DataFrame(d))
    assert mixed["delta"] == pytest.approx(d.mean())  # balanced: GLS mean is the plain mean
    z = stats.norm.ppf(0.975)
    se = (res.ms_seed + res.ms_subject - res.ms_resid) ** 0.5 / np.sqrt(d.size)
    assert mixed["ci_high"] - mixed["delta"] == pytest.approx(z * se, rel=1e-3)  # REML = ANOVA
    assert mixed["p"] == pytest.approx(2 * stats.norm.sf(d.mean() / se), rel=1e-2)


def test_two_level_bootstrap_agrees_with_a_hand_written_loop():
    d = draws(1, 4, 12, 0.02, 0.03, 0.03, effect=0.03, rng=np.random.default_rng(5))[0]
    boot = two_level_bootstrap(d, n_boot=20_000, seed=1)
    rng = np.random.default_rng(99)
    means = [d[rng.integers(0, 4, 4)][:, rng.integers(0, 12, 12)].mean() for _ in range(20_000)]
    low, high = np.quantile(means, [0.025, 0.975])
    assert boot["ci_low"] == pytest.approx(low, abs=0.002)
    assert boot["ci_high"] == pytest.approx(high, abs=0.002)
    assert boot == two_level_bootstrap(d, n_boot=20_000, seed=1)  # seeded
    assert two_level_bootstrap(d + 1, n_boot=500, seed=0)["p"] == pytest.approx(2 / 501)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        crossed_test(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="finite"):
        crossed_test(np.array([[0.1, np.nan], [0.2, 0.3]]))
    with pytest.raises(ValueError, match="confidence"):
        crossed_test(np.zeros((2, 2)), confidence=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        two_level_bootstrap(np.zeros((2, 3)), n_boot=0, seed=0)
