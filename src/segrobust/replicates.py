"""Training noise: per-seed Dice, its spread, and defence verdicts tested at the seed level.

A defence is a training procedure; the unit that replicates a procedure is a training run (a
seed), not a test subject. The paper's Wilcoxon test pairs subjects of two *trained models*
and answers "is this model better than that one on these subjects". Whether the *defence*
helps needs the seed-to-seed spread: here each seed's replicate is summarised by its mean Dice
over the test subjects, and a defence is compared with the reference by an exact two-sided
permutation test of the difference of the replicate means (all ways of splitting the pooled
replicates into two groups of the original sizes). It assumes nothing about the distribution
and is exact at any number of seeds, but coarse: with k seeds per model the smallest
attainable p is 2 / C(2k, k) (k = 2: 0.33, k = 3: 0.1, k = 4: 0.029, k = 5: 0.0079), which the
verdict says when it limits the answer.

Verdicts: ``better`` / ``worse`` when the seed-level test, corrected over the table, has
p_adj ≤ α (the sign of Δ decides); otherwise ``inconclusive`` with the reason: Δ within the
training noise (|Δ| ≤ 2 × the pooled seed sd), or too few seeds for any p ≤ α.
"""

from collections.abc import Sequence
from itertools import combinations
from math import comb

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from segrobust.statistics import Correction, attack_selector, per_subject, select, signed_rank_test

EXACT_LIMIT = 200_000  # splits enumerated exactly; beyond it a seeded Monte Carlo sample
NOISE_FACTOR = 2.0


def seed_means(df: pd.DataFrame, where: dict, region: str) -> pd.Series:
    """Mean Dice over subjects of each training seed (replicate) in one condition and region."""
    rows = select(df, where)
    rows = rows[rows["region"] == region]
    return rows.groupby("seed")["dice"].mean().sort_index()


def min_attainable_p(n_a: int, n_b: int) -> float:
    """Smallest two-sided p of :func:`permutation_test` with groups of n_a and n_b values."""
    return min(1.0, 2 / comb(n_a + n_b, n_a)) if n_a and n_b else float("nan")


def permutation_test(a: Sequence[float], b: Sequence[float], seed: int = 0) -> float:
    """Two-sided p of mean(a) − mean(b) over every split of the pooled values (exact when
    there are at most :data:`EXACT_LIMIT` splits, else 100 000 seeded random ones)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0 or b.size == 0:
        return float("nan")
    pooled, n = np.concatenate([a, b]), a.size
    observed = abs(a.mean() - b.mean())
    total = pooled.sum()
    if comb(pooled.size, n) <= EXACT_LIMIT:
        groups = np.array(list(combinations(range(pooled.size), n)))
    else:
        rng = np.random.default_rng(seed)
        groups = np.argsort(rng.random((100_000, pooled.size)), axis=1)[:, :n]
    sums = pooled[groups].sum(axis=1)
    diffs = np.abs(sums / n - (total - sums) / b.size)
    return float(np.mean(diffs >= observed - 1e-12))


def _verdict(delta: float, p_adj: float, noise: float, min_p: float, alpha: float) -> str:
    if p_adj <= alpha:
        return "better" if delta > 0 else "worse"
    if not np.isfinite(noise):
        return "inconclusive (one seed: training noise unknown)"
    if abs(delta) <= NOISE_FACTOR * noise:
        return "inconclusive (effect within training noise)"
    if min_p > alpha:
        return f"inconclusive (effect beyond the seed spread; too few seeds: min p {min_p:.2g})"
    return "inconclusive (not significant at the seed level)"


def defence_verdicts(
    df: pd.DataFrame,
    *,
    conditions: Sequence[tuple[str, float]],
    reference_model: str = "baseline",
    models: Sequence[str] | None = None,
    regions: Sequence[str] = ("WT", "TC", "ET"),
    correction: Correction = "holm",
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Each model against ``reference_model`` under each (attack, ε) of ``conditions``.

    One row per (model, attack, ε, region): the seed means of both models, Δ (mean of the
    model's seed means − the reference's), the pooled seed sd, the subject-level Wilcoxon test
    on Dice averaged over seeds (the paper's test) and the seed-level permutation test, each
    with raw and adjusted p (``correction`` over all rows), and the verdict (module docstring).
    ε = 0 is the clean input. Conditions a model was not attacked with are skipped.
    """
    if models is None:
        models = sorted(set(df["model"]) - {reference_model})
    rows = []
    for model in models:
        for attack, eps in conditions:
            try:
                sel = attack_selector(df, model, attack, eps)
                ref_sel = attack_selector(df, reference_model, attack, eps)
            except ValueError:  # not attacked with this family
                continue
            for region in regions:
                mine, ref = seed_means(df, sel, region), seed_means(df, ref_sel, region)
                if mine.empty or ref.empty:
                    continue
                a = per_subject(df, sel, region, "dice")
                b = per_subject(df, ref_sel, region, "dice")
                common = a.index.intersection(b.index)
                subject_test = signed_rank_test((a[common] - b[common]).to_numpy())
                rows.append({
                    "model": model, "reference": reference_model, "attack": attack,
                    "eps": float(eps), "region": region,
                    "n_seeds": len(mine), "n_seeds_ref": len(ref), "n_subjects": len(common),
                    "seed_means": ", ".join(f"{v:.3f}" for v in mine),
                    "seed_means_ref": ", ".join(f"{v:.3f}" for v in ref),
                    "mean": mine.mean(), "mean_ref": ref.mean(), "delta": mine.mean() - ref.mean(),
                    "seed_sd": float(np.sqrt((mine.var() + ref.var()) / 2)),  # NaN for 1 seed
                    "p_subjects": subject_test.p,
                    "p_seeds": permutation_test(mine.to_numpy(), ref.to_numpy(), seed),
                    "min_p_seeds": min_attainable_p(len(mine), len(ref)),
                })  # fmt: skip
    out = pd.DataFrame(rows)
    if out.empty:
        raise ValueError(f"no model to compare with {reference_model!r} under {conditions}")
    for test in ("subjects", "seeds"):
        p = out[f"p_{test}"].fillna(1.0).to_numpy()
        out[f"p_{test}_adj"] = multipletests(p, method=correction)[1]
    out["verdict"] = [
        _verdict(r.delta, r.p_seeds_adj, r.seed_sd, r.min_p_seeds, alpha) for r in out.itertuples()
    ]
    return out


def verdict_markdown(table: pd.DataFrame, correction: Correction, alpha: float) -> str:
    """The verdict table as Markdown: signed Δ with ↑/↓, raw and adjusted p side by side."""
    shown = pd.DataFrame({
        "Model": table["model"],
        "Attack": table["attack"],
        "ε": table["eps"].map("{:g}".format),
        "Region": table["region"],
        "Dice per seed": table["seed_means"],
        "Reference per seed": table["seed_means_ref"],
        "Δ": [f"{d:+.3f} {'↑' if d > 0 else '↓' if d < 0 else '='}" for d in table["delta"]],
        "seed sd": table["seed_sd"].map("{:.3f}".format),
        "p seeds (raw / adj)": [f"{p:.3g} / {q:.3g}" for p, q in
                                zip(table["p_seeds"], table["p_seeds_adj"], strict=True)],
        "p subjects (raw / adj)": [f"{p:.3g} / {q:.3g}" for p, q in
                                   zip(table["p_subjects"], table["p_subjects_adj"], strict=True)],
        "Verdict": table["verdict"],
    })  # fmt: skip
    caption = (
        "Each defence against the undefended reference, per training seed. Δ: mean over seeds "
        "of the model's mean Dice minus the reference's (↑ better, ↓ worse); seed sd: pooled "
        "sd of the seed means (training noise). p seeds: exact permutation test over the "
        "seeds' mean Dice (the training run is the unit); p subjects: two-sided Wilcoxon "
        "signed-rank test over subjects of Dice averaged over seeds (the paper's test). Both "
        f"{correction.capitalize()}-adjusted over the {len(table)} rows; verdict from the seed "
        f"test at α = {alpha:g}."
    )
    return f"{shown.to_markdown(index=False, disable_numparse=True)}\n\n{caption}\n"
