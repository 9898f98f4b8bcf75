"""Size and power of the primary analysis's test by simulation, beside the planner and the
textbook alternative, for seeds × 18 test subjects.

For each setting of variance components (sd of the seed effect, the subject × defence
interaction and the residual of the paired differences, in Dice) and each number of seeds k,
``--draws`` matrices D (k × subjects) are simulated and tested with
:func:`segrobust.crossed.crossed_test` at α = 0.05: the size (Δ = 0), the 95 % CI coverage, the
power at Δ = 3 seed-sd and at Δ = ``--effect``, and the planner's power at Δ = ``--effect``
(:func:`segrobust.planner.power`, from sufficient statistics). Beside them, the size of the
textbook alternative: a t test with Satterthwaite's degrees of freedom for
(MS_seed + MS_subject − MS_resid)/(k n), variance components truncated at 0. With
``--results`` (a run's results.csv) the components of that run's primary analysis are added
(``--primary`` as attack:eps, default segpgd:0.05; every defence against baseline).

    python benchmarks/verdict_power.py [--draws 4000] [--effect 0.03] [--subjects 18] \\
        [--results results/results.csv]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from segrobust.crossed import Components, crossed_test, mean_squares
from segrobust.models.device import cpu_model
from segrobust.planner import power

SETTINGS = {  # name: (sd seed, sd subject × defence, sd residual)
    "interaction": (0.02, 0.03, 0.03),
    "seed-dominated": (0.03, 0.01, 0.02),
    "subject-dominated": (0.01, 0.05, 0.03),
    "residual only": (0.0, 0.0, 0.03),
}
SEEDS = (2, 3, 4, 5, 8, 12)


def satterthwaite_p(d: np.ndarray) -> np.ndarray:
    """Two-sided p of the textbook alternative (not used by the workflow)."""
    k, n = d.shape[-2:]
    grand, ms_s, ms_i, ms_e = mean_squares(d)
    a, c = np.maximum(ms_s - ms_e, 0), np.maximum(ms_i - ms_e, 0)
    var = (a + c + ms_e) / (k * n)
    terms = [(np.where(a > 0, ms_s, 0), k - 1), (np.where(c > 0, ms_i, 0), n - 1),
             (np.where((a > 0) == (c > 0), ms_e, 0), (k - 1) * (n - 1))]  # fmt: skip
    df = (var * k * n) ** 2 / sum(m**2 / f for m, f in terms)
    return 2 * stats.t.sf(np.abs(grand) / np.sqrt(var), df)


def simulate(parts: Components, k: int, n: int, effect: float, draws: int, rng) -> np.ndarray:
    sd = np.sqrt([parts.seed, parts.subject, parts.resid])
    return (effect + sd[0] * rng.standard_normal((draws, k, 1))
            + sd[1] * rng.standard_normal((draws, 1, n))
            + sd[2] * rng.standard_normal((draws, k, n)))  # fmt: skip


def run_components(path: Path, attack: str, eps: float) -> Components:
    """Variance components of a run's primary analysis, averaged over its defences."""
    from segrobust.replicates import primary_analysis

    results = pd.read_csv(path, keep_default_na=False, na_values=[""])
    trained = results.loc[results["seed"] > 0, "model"].unique()
    pairs = [(m, "baseline") for m in sorted(trained) if m != "baseline" and "." not in m]
    table = primary_analysis(results, pairs, attack=attack, eps=eps, n_boot=200)
    for r in table.itertuples():
        print(f"  {r.model}: Δ {r.delta:+.3f}, seed sd {np.sqrt(r.var_seed):.4f}, subject sd "
              f"{np.sqrt(r.var_subject):.4f}, residual sd {np.sqrt(r.var_resid):.4f}")  # fmt: skip
    return Components(*(float(table[c].mean()) for c in ("var_seed", "var_subject", "var_resid")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=4000)
    parser.add_argument("--effect", type=float, default=0.03)
    parser.add_argument("--subjects", type=int, default=18)
    parser.add_argument("--results", type=Path)
    parser.add_argument("--primary", default="segpgd:0.05")
    args = parser.parse_args()
    settings = {k: Components(*(s**2 for s in v)) for k, v in SETTINGS.items()}
    if args.results:
        attack, eps = args.primary.split(":")
        print(f"components of {args.results} ({attack} at ε = {eps}):")
        settings["this run"] = run_components(args.results, attack, float(eps))
    start = time.process_time()
    rng = np.random.default_rng(2018)
    n, e = args.subjects, args.effect
    print(f"CPU: {cpu_model()}; {args.draws} draws per cell, {n} subjects, α = 0.05")
    print(f"{'setting':<18}{'sd seed/subj/res':>20}{'k':>4}{'size':>8}{'cover':>8}"
          f"{'pw 3sd':>8}{f'pw {e:g}':>9}{'planner':>9}{'Satt. size':>12}")  # fmt: skip
    for name, parts in settings.items():
        sds = "/".join(f"{np.sqrt(v):.3f}" for v in (parts.seed, parts.subject, parts.resid))
        big = 3 * np.sqrt(parts.seed) if parts.seed > 0 else e
        for k in SEEDS:
            null = crossed_test(simulate(parts, k, n, 0.0, args.draws, rng))
            cover = np.mean((null.ci_low <= 0) & (0 <= null.ci_high))
            p_big = crossed_test(simulate(parts, k, n, big, args.draws, rng)).p
            p_e = crossed_test(simulate(parts, k, n, e, args.draws, rng)).p
            satt = satterthwaite_p(simulate(parts, k, n, 0.0, args.draws, rng))
            planned = power(parts, e, n_seeds=k, n_subjects=n, alpha=0.05)
            print(f"{name:<18}{sds:>20}{k:>4}{np.mean(null.p <= 0.05):>8.3f}{cover:>8.3f}"
                  f"{np.mean(p_big <= 0.05):>8.3f}{np.mean(p_e <= 0.05):>9.3f}{planned:>9.3f}"
                  f"{np.mean(satt <= 0.05):>12.3f}")  # fmt: skip
    print(f"CPU-s: {time.process_time() - start:.1f} (process time; shared machine)")


if __name__ == "__main__":
    main()
