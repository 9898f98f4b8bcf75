"""How many training seeds (and test subjects) a study needs to call a defence better.

The power of :func:`segrobust.crossed.crossed_test` depends on the data only through its
independent sufficient statistics, whose distributions follow from the variance components
(:class:`segrobust.crossed.Components`) of a run:

    D̄ ~ N(Δ, σ²_seed/k + σ²_subject/n + σ²_resid/(k n)),
    MS_seed ~ (σ²_resid + n σ²_seed) χ²(k − 1)/(k − 1),
    MS_subject ~ (σ²_resid + k σ²_subject) χ²(n − 1)/(n − 1),
    MS_resid ~ σ²_resid χ²((k − 1)(n − 1))/((k − 1)(n − 1)),

so :func:`power` draws those four numbers (not whole k × n matrices) and applies the test's
own decision rule (:func:`segrobust.crossed.half_width`): exact up to Monte Carlo error
(``n_sim`` draws, seeded, so a plan is reproducible). :func:`seeds_needed` scans k upward.
``alpha`` is the level one hypothesis is tested at: with Holm over m defences the strictest
step is α/m, which a plan should assume.
"""

import numpy as np

from segrobust.crossed import Components, half_width

MAX_SEEDS = 50
N_SIM = 20_000


def power(
    components: Components,
    effect: float,
    *,
    n_seeds: int,
    n_subjects: int,
    alpha: float,
    n_sim: int = N_SIM,
    seed: int = 0,
) -> float:
    """Probability that the crossed test rejects Δ = 0 at level ``alpha`` when Δ = ``effect``,
    with ``n_seeds`` seeds per model and ``n_subjects`` test subjects."""
    _check(components, n_seeds, n_subjects, alpha)
    k, n = n_seeds, n_subjects
    df_seed, df_subject, df_resid = k - 1, n - 1, (k - 1) * (n - 1)
    rng = np.random.default_rng(seed)
    grand = effect + np.sqrt(components.var_mean(k, n)) * rng.standard_normal(n_sim)
    ms_seed = (components.resid + n * components.seed) * rng.chisquare(df_seed, n_sim) / df_seed
    ms_subject = (
        (components.resid + k * components.subject)
        * rng.chisquare(df_subject, n_sim) / df_subject
    )  # fmt: skip
    ms_resid = components.resid * rng.chisquare(df_resid, n_sim) / df_resid
    h = half_width(ms_seed, ms_subject, ms_resid, k, n, alpha)
    return float(np.mean(np.abs(grand) > h))


def seeds_needed(
    components: Components,
    effect: float,
    *,
    n_subjects: int,
    alpha: float,
    target: float = 0.8,
    max_seeds: int = MAX_SEEDS,
    n_sim: int = N_SIM,
    seed: int = 0,
) -> int | None:
    """Smallest number of seeds per model (2 … ``max_seeds``) whose :func:`power` reaches
    ``target`` with ``n_subjects`` test subjects; None when even ``max_seeds`` do not (the
    subject term σ²_subject/n then bounds the precision: more subjects are needed)."""
    if not 0 < target < 1:
        raise ValueError(f"target power must be in (0, 1), got {target}")
    if effect == 0:
        raise ValueError("effect must be non-zero: the power to detect Δ = 0 is α")
    for k in range(2, max_seeds + 1):
        reached = power(
            components, effect, n_seeds=k, n_subjects=n_subjects, alpha=alpha, n_sim=n_sim,
            seed=seed,
        )  # fmt: skip
        if reached >= target:
            return k
    return None


def plan(
    components: Components,
    effect: float,
    *,
    subjects: tuple[int, ...],
    alpha: float,
    target: float = 0.8,
    max_seeds: int = MAX_SEEDS,
    n_sim: int = N_SIM,
    seed: int = 0,
) -> dict[int, int | None]:
    """Seeds needed (:func:`seeds_needed`) for each number of test subjects in ``subjects``."""
    return {
        n: seeds_needed(
            components,
            effect,
            n_subjects=n,
            alpha=alpha,
            target=target,
            max_seeds=max_seeds,
            n_sim=n_sim,
            seed=seed,
        )  # fmt: skip
        for n in subjects
    }


def _check(components: Components, n_seeds: int, n_subjects: int, alpha: float) -> None:
    if n_seeds < 2 or n_subjects < 2:
        raise ValueError(f"need at least 2 seeds and 2 subjects, got {n_seeds} and {n_subjects}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    values = (components.seed, components.subject, components.resid)
    if min(values) < 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"variance components must be finite and ≥ 0, got {components}")
