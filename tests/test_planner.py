"""The seed planner: power of the crossed test from variance components, seeds needed."""

import numpy as np
import pytest
from scipy import stats

from segrobust.crossed import Components
from segrobust.planner import plan, power, seeds_needed

PARTS = Components(seed=0.02**2, subject=0.03**2, resid=0.03**2)


def test_power_is_the_size_at_no_effect_and_rises_with_effect_and_seeds():
    assert power(PARTS, 0.0, n_seeds=4, n_subjects=18, alpha=0.05) <= 0.05
    by_effect = [power(PARTS, e, n_seeds=4, n_subjects=18, alpha=0.05) for e in (0.02, 0.04, 0.08)]
    by_seeds = [power(PARTS, 0.04, n_seeds=k, n_subjects=18, alpha=0.05) for k in (2, 4, 8)]
    assert by_effect == sorted(by_effect) and by_effect[-1] > 0.95
    assert by_seeds == sorted(by_seeds)
    assert power(PARTS, 0.04, n_seeds=4, n_subjects=18, alpha=0.01) < by_seeds[1]


def test_power_never_exceeds_the_exact_seed_mean_t_test_without_subject_variance():
    # σ²_subject = 0: the seed means are i.i.d., their t test is exact, and the crossed interval
    # is never narrower than its t(k − 1) interval, so it cannot have more power
    parts = Components(0.01**2, 0.0, 0.03**2)
    k, n, effect = 4, 18, 0.02
    ncp = effect / np.sqrt(parts.var_mean(k, n))
    crit = stats.t.isf(0.025, k - 1)
    exact = stats.nct.sf(crit, k - 1, ncp) + stats.nct.cdf(-crit, k - 1, ncp)
    got = power(parts, effect, n_seeds=k, n_subjects=n, alpha=0.05, n_sim=100_000)
    assert exact - 0.1 < got <= exact + 3 * np.sqrt(exact * (1 - exact) / 100_000)


def test_seeds_needed_is_the_first_k_reaching_the_target():
    k = seeds_needed(PARTS, 0.05, n_subjects=18, alpha=0.05)
    assert power(PARTS, 0.05, n_seeds=k, n_subjects=18, alpha=0.05) >= 0.8
    assert power(PARTS, 0.05, n_seeds=k - 1, n_subjects=18, alpha=0.05) < 0.8
    assert seeds_needed(PARTS, 0.1, n_subjects=18, alpha=0.05) <= k  # larger effect: fewer


def test_subject_variance_bounds_what_seeds_can_do():
    # σ_subject / sqrt(18) = 0.024 against Δ = 0.03: no number of seeds reaches 80 %
    parts = Components(0.01**2, 0.1**2, 0.03**2)
    assert seeds_needed(parts, 0.03, n_subjects=18, alpha=0.05, max_seeds=30) is None
    more = plan(parts, 0.03, subjects=(18, 200), alpha=0.05, max_seeds=30)
    assert more[18] is None and more[200] is not None


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        power(PARTS, 0.03, n_seeds=1, n_subjects=18, alpha=0.05)
    with pytest.raises(ValueError, match="alpha"):
        power(PARTS, 0.03, n_seeds=3, n_subjects=18, alpha=0)
    with pytest.raises(ValueError, match="components"):
        power(Components(-1.0, 0, 0), 0.03, n_seeds=3, n_subjects=18, alpha=0.05)
    with pytest.raises(ValueError, match="target"):
        seeds_needed(PARTS, 0.03, n_subjects=18, alpha=0.05, target=1.0)
    with pytest.raises(ValueError, match="non-zero"):
        seeds_needed(PARTS, 0.0, n_subjects=18, alpha=0.05)
