"""Paired statistics over the long results table: the tests behind Tables 1 and 2.

Every function reads the one long-format results table (:mod:`segrobust.results`: one row per
model, attack, eps, iteration, subject and region, with columns ``dice``, ``psnr``, ``ssim``,
``rmse``, ...) through its *selectors*, mappings ``{column: value}`` that pick one condition,
e.g. ``{"model": "baseline", "attack": "fgsm", "eps": 0.05, "iteration": 1}``.

The paper compares Dice between two conditions of the same test subjects with two-sided
Wilcoxon signed-rank tests and a Bonferroni correction (Tables 1 and 2). Here each test
pairs subjects by an inner join, records how many pairs are missing, adds a matched-pairs
rank-biserial effect size and paired bootstrap confidence intervals, and corrects within
explicitly named families of tests. The tables themselves are built in
:mod:`segrobust.tables`.
"""

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from segrobust.results import Selector, is_real, select

Correction = Literal["bonferroni", "holm"]
ZeroMethod = Literal["wilcox", "pratt", "zsplit"]
CiMethod = Literal["percentile", "basic", "bca"]

CORRECTIONS = ("bonferroni", "holm")
ADJUSTMENTS = (*CORRECTIONS, "fdr_bh")  # adjust_pvalues also gives Benjamini–Hochberg q
ZERO_METHODS = ("wilcox", "pratt", "zsplit")
CI_METHODS = ("percentile", "basic", "bca")
RESULT_COLUMNS = [
    "region",
    "condition",
    "reference",
    "n",
    "n_missing",
    "n_zero",
    "mean_ref",
    "mean_cond",
    "mean_diff",
    "ci_low",
    "ci_high",
    "ref_ci_low",
    "ref_ci_high",
    "cond_ci_low",
    "cond_ci_high",
    "statistic",
    "p",
    "p_adj",
    "significant",
    "effect_size",
    "family",
    "correction",
    "method",
    "note",
]


# --------------------------------------------------------------------------- selection


def selector_label(where: Selector) -> str:
    """Readable label of a selector, e.g. ``"model=baseline, attack=fgsm, eps=0.05"``."""
    return ", ".join(f"{k}={v:g}" if is_real(v) else f"{k}={v}" for k, v in where.items())


def per_subject(df: pd.DataFrame, where: Selector, region: str, metric: str) -> pd.Series:
    """One condition's ``metric`` in one region as a Series indexed by subject (NaN dropped),
    averaged over the training seeds (replicates) when the table has a ``seed`` column.

    Raises ValueError when the selector leaves several rows per subject and seed (an
    under-specified condition, e.g. an iterative attack without ``iteration``).
    """
    rows = select(df, where)
    rows = rows[rows["region"] == region].dropna(subset=[metric])
    keys = ["subject", "seed"] if "seed" in rows.columns else ["subject"]
    dup = rows.duplicated(keys)
    if dup.any():
        raise ValueError(
            f"selector {dict(where)} matches several rows for subject "
            f"{rows['subject'][dup].iloc[0]!r} in region {region}: add keys (eps, iteration, "
            "model, ...) until it picks one condition"
        )
    return rows.groupby("subject")[metric].mean().sort_index()


# --------------------------------------------------------------------------- single test


def rank_biserial(diff: np.ndarray, zero_method: ZeroMethod = "wilcox") -> float:
    """Matched-pairs rank-biserial correlation of paired differences ``d = cond - ref``.

    Kerby's (2014) simple difference formula: with ``R_i`` the rank of ``|d_i|`` (average
    ranks for ties) over the differences the test keeps,

        r = sum_i sign(d_i) * R_i / sum_i R_i = (R+ - R-) / (R+ + R- + R0),

    where ``R0`` is the rank sum of zero differences: dropped before ranking for
    ``zero_method="wilcox"`` (so ``R0 = 0``), ranked but signless for ``"pratt"`` and
    ``"zsplit"`` (they pull r towards 0). r = +1 when every condition value is higher than its
    reference, -1 when every one is lower, 0 when the ranks balance or all differences are 0.
    """
    d = _check_zero_method_and_diff(diff, zero_method)
    if zero_method == "wilcox":
        d = d[d != 0]
    if d.size == 0 or not np.any(d):
        return 0.0
    ranks = stats.rankdata(np.abs(d))
    return float(np.sum(np.sign(d) * ranks) / np.sum(ranks))


@dataclass(frozen=True)
class SignedRankResult:
    """Outcome of one two-sided Wilcoxon signed-rank test with its edge-case notes."""

    statistic: float
    p: float
    effect_size: float
    n_zero: int
    notes: tuple[str, ...] = field(default_factory=tuple)
    method: str = ""


def signed_rank_test(
    diff: np.ndarray, *, zero_method: ZeroMethod = "wilcox", alpha: float = 0.05
) -> SignedRankResult:
    """Two-sided Wilcoxon signed-rank test of paired differences, never raising on edge cases.

    The p-value is exact wherever that is valid, and ``method`` says how it was computed:
    ``exact`` (scipy's null distribution; no ties, no zeros, n <= 50), ``exact (sign-flip)``
    (with ties or zeros under ``zero_method="wilcox"``: the exact conditional distribution of
    the statistic over all 2^n sign flips of the non-zero differences, midranks for ties —
    :func:`sign_flip_pvalue`), otherwise scipy's choice (``permutation`` for n <= 13, else
    ``normal approximation``; scipy would silently take the approximation for n > 13 with
    ties). Edge cases are reported in ``notes``: no pairs (p = NaN), all differences zero
    (p = 1), tied ``|d|``, zero differences, and a count of informative pairs too small to
    ever reach ``alpha`` (the smallest two-sided exact p-value with n non-zero pairs is
    2 / 2**n, e.g. 0.0625 for n = 5).
    """
    d = _check_zero_method_and_diff(diff, zero_method)
    n_zero = int(np.sum(d == 0))
    if d.size == 0:
        return SignedRankResult(np.nan, np.nan, np.nan, 0, ("no paired subjects",), "none")
    if n_zero == d.size:
        return SignedRankResult(np.nan, 1.0, 0.0, n_zero, ("all differences zero",), "none")
    notes = []
    nonzero = np.abs(d[d != 0])
    n_informative = nonzero.size
    if 2.0 ** (1 - n_informative) > alpha:
        notes.append(f"n too small for significance ({n_informative} non-zero pairs)")
    if n_zero:
        verb = "dropped" if zero_method == "wilcox" else f"kept ({zero_method})"
        notes.append(f"{n_zero} zero differences {verb}")
    ties = np.unique(nonzero).size < nonzero.size
    if ties:
        notes.append("ties among |differences|")
    res = stats.wilcoxon(d, zero_method=zero_method, alternative="two-sided", method="auto")
    p = float(res.pvalue)
    if not (ties or n_zero) and d.size <= 50:
        method = "exact"
    elif zero_method == "wilcox":
        p, method = sign_flip_pvalue(d), "exact (sign-flip)"
    else:
        method = "permutation" if d.size <= 13 else "normal approximation"
    return SignedRankResult(
        float(res.statistic),
        p,
        rank_biserial(d, zero_method),
        n_zero,
        tuple(notes),
        method,
    )


def sign_flip_pvalue(diff: np.ndarray) -> float:
    """Exact two-sided p of the signed-rank statistic: zeros dropped, ties as midranks.

    Under H0 each non-zero difference is positive or negative with probability 1/2
    independently, so the statistic's null distribution is that of a sum of its ranks, each
    included with probability 1/2: computed exactly by convolution over the (doubled, hence
    integer) midranks. p = P(|T − E T| ≥ |t − E T|).
    """
    d = np.asarray(diff, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    ranks = np.rint(2 * stats.rankdata(np.abs(d))).astype(np.int64)  # midranks x 2: integers
    null = np.zeros(ranks.sum() + 1)
    null[0] = 1.0
    for r in ranks:  # add rank r to every attainable sum, with probability 1/2
        null[r:] += null[:-r].copy()
        null /= 2
    centre = ranks.sum() / 2
    observed = abs(ranks[d > 0].sum() - centre)
    extreme = np.abs(np.arange(null.size) - centre) >= observed - 1e-9
    return float(min(1.0, null[extreme].sum()))


def paired_bootstrap(
    ref: np.ndarray,
    cond: np.ndarray,
    *,
    n_boot: int,
    seed: int | Sequence[int],
    confidence: float = 0.95,
    method: CiMethod = "percentile",
) -> dict[str, float]:
    """Bootstrap CIs of ``mean(cond - ref)``, ``mean(ref)`` and ``mean(cond)``.

    Subjects are resampled with replacement, the same draws for all three statistics so the
    pairing is kept (``scipy.stats.bootstrap(paired=True)``). Percentile intervals by default:
    BCa is undefined when every resample gives the same value (e.g. identical conditions).
    Fewer than two pairs give NaN bounds.
    """
    ref = np.asarray(ref, dtype=float)
    cond = np.asarray(cond, dtype=float)
    if ref.shape != cond.shape or ref.ndim != 1:
        raise ValueError(f"ref and cond must be 1-D of equal length, got {ref.shape} {cond.shape}")
    _check_bootstrap_args(n_boot, confidence, method)
    keys = ("ci_low", "ci_high", "ref_ci_low", "ref_ci_high", "cond_ci_low", "cond_ci_high")
    if ref.size < 2:
        return dict.fromkeys(keys, np.nan)

    def means(r: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.stack([c.mean(axis) - r.mean(axis), r.mean(axis), c.mean(axis)])

    res = stats.bootstrap(
        (ref, cond),
        means,
        paired=True,
        vectorized=True,
        n_resamples=n_boot,
        confidence_level=confidence,
        method=method,
        rng=np.random.default_rng(seed),
    )
    low, high = res.confidence_interval
    return dict(zip(keys, np.column_stack([low, high]).ravel().tolist(), strict=True))


def bootstrap_mean_ci(
    values: np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int | Sequence[int] = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (subjects resampled with replacement).

    Every resampled mean is a mean of observed values, so the interval lies within
    ``[min(values), max(values)]`` by construction: an interval of Dice cannot leave [0, 1]
    whatever the distribution's shape (mean ± sd can, e.g. for the bimodal enhancing-tumour
    Dice where subjects without enhancing tumour score 0). NaN are dropped; fewer than two
    values give NaN bounds.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {x.shape}")
    _check_bootstrap_args(n_boot, confidence, "percentile")
    x = x[~np.isnan(x)]
    if x.size < 2:
        return np.nan, np.nan
    if np.all(x == x[0]):  # every resample gives the same mean
        return float(x[0]), float(x[0])
    res = stats.bootstrap(
        (x,),
        np.mean,
        vectorized=True,
        n_resamples=n_boot,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


# --------------------------------------------------------------------------- many tests


@dataclass(frozen=True)
class Comparison:
    """One paired comparison: ``condition`` vs ``reference``, tested in family ``family``.

    Labels default to the selectors' labels. The test is run once per region.
    """

    condition: Selector
    reference: Selector
    label: str = ""
    reference_label: str = ""
    family: str = "all"

    @property
    def condition_name(self) -> str:
        return self.label or selector_label(self.condition)

    @property
    def reference_name(self) -> str:
        return self.reference_label or selector_label(self.reference)


def against(
    reference: Selector,
    conditions: Sequence[Selector],
    *,
    family: str = "all",
    labels: Sequence[str] | None = None,
    reference_label: str = "",
) -> list[Comparison]:
    """Comparisons of each of ``conditions`` with one common ``reference``, in one family."""
    if labels is not None and len(labels) != len(conditions):
        raise ValueError(f"{len(labels)} labels for {len(conditions)} conditions")
    names = labels if labels is not None else [""] * len(conditions)
    return [
        Comparison(c, reference, name, reference_label, family)
        for c, name in zip(conditions, names, strict=True)
    ]


def paired_tests(
    df: pd.DataFrame,
    comparisons: Sequence[Comparison],
    *,
    n_boot: int,
    seed: int,
    metric: str = "dice",
    regions: Sequence[str] | None = None,
    family_cols: Sequence[str] = (),
    correction: Correction = "bonferroni",
    alpha: float = 0.05,
    zero_method: ZeroMethod = "wilcox",
    confidence: float = 0.95,
    ci_method: CiMethod = "percentile",
) -> pd.DataFrame:
    """Paired Wilcoxon signed-rank tests of ``metric``, one per comparison and region.

    Each condition's per-subject values are inner-joined by subject with its reference's
    (``n`` pairs; subjects present in only one of them, or NaN, are counted in ``n_missing``
    and noted). ``mean_diff`` and ``effect_size`` (rank-biserial, see ``rank_biserial``) are
    condition minus reference. p-values are corrected with ``correction`` within each
    family: a family is the comparison's ``family`` name plus the values of ``family_cols``
    (output columns, e.g. ``("region",)`` for one family per region); the ``family`` column
    records it. NaN p-values (no pairs) are left out of the correction.

    ``zero_method="wilcox"`` (the default; R's and scipy's default and so most likely the
    paper's) drops zero differences — subjects whose Dice did not change carry no sign — which
    keeps exact p-values possible for small n; their count is in ``n_zero`` and the note.
    Bootstrap intervals are seeded per test from ``seed`` and the test's labels, so a test's
    interval does not depend on which other tests are in the call.

    Returns one row per (comparison, region) with ``RESULT_COLUMNS`` plus one column per key
    of the condition selectors (after ``reference``).
    """
    _check_columns(df, ("subject", "region", metric), "results table")
    _check_bootstrap_args(n_boot, confidence, ci_method)
    _check_choice(correction, CORRECTIONS, "correction")
    _check_zero_method_and_diff(np.zeros(0), zero_method)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not comparisons:
        raise ValueError("no comparisons given")
    regions = list(regions) if regions is not None else sorted(df["region"].unique())
    missing_regions = sorted(set(regions) - set(df["region"]))
    if missing_regions:
        raise ValueError(f"regions {missing_regions} not in the table")
    for sel in {id(s): s for c in comparisons for s in (c.condition, c.reference)}.values():
        if {"region", "subject"} & set(sel):
            raise ValueError(
                f"selector {dict(sel)} fixes region or subject: tests run per region and "
                "pair by subject"
            )
        if select(df, sel).empty:
            raise ValueError(f"selector {dict(sel)} matches no rows of the table")

    key_cols = list(dict.fromkeys(k for c in comparisons for k in c.condition))
    rows = []
    for comp in comparisons:
        for region in regions:
            ref, cond, n_missing, notes = _pair(df, comp, region, metric)
            test = signed_rank_test(cond - ref, zero_method=zero_method, alpha=alpha)
            key = f"{comp.condition_name}|{comp.reference_name}|{region}|{metric}"
            ci = paired_bootstrap(
                ref,
                cond,
                n_boot=n_boot,
                seed=[seed, zlib.crc32(key.encode())],
                confidence=confidence,
                method=ci_method,
            )
            empty = ref.size == 0
            rows.append(
                {
                    "region": region,
                    "condition": comp.condition_name,
                    "reference": comp.reference_name,
                    **{k: comp.condition.get(k, np.nan) for k in key_cols},
                    "n": ref.size,
                    "n_missing": n_missing,
                    "n_zero": test.n_zero,
                    "mean_ref": np.nan if empty else ref.mean(),
                    "mean_cond": np.nan if empty else cond.mean(),
                    "mean_diff": np.nan if empty else (cond - ref).mean(),
                    **ci,
                    "statistic": test.statistic,
                    "p": test.p,
                    "effect_size": test.effect_size,
                    "family_base": comp.family,
                    "method": test.method,
                    "note": "; ".join([*notes, *test.notes]),
                }
            )
    out = pd.DataFrame(rows)
    bad = sorted(set(family_cols) - set(out.columns))
    if bad:
        raise ValueError(f"family_cols {bad} are not output columns: {sorted(out.columns)}")
    out["family"] = [
        " | ".join(
            [base, *(f"{c}={_fmt_value(v)}" for c, v in zip(family_cols, vals, strict=True))]
        )
        for base, *vals in out[["family_base", *family_cols]].itertuples(index=False)
    ]
    out["correction"] = correction
    out["p_adj"], out["significant"] = adjust_pvalues(out["p"], out["family"], correction, alpha)
    return out[RESULT_COLUMNS[:3] + key_cols + RESULT_COLUMNS[3:]]


def adjust_pvalues(
    p: pd.Series, families: pd.Series, correction: str, alpha: float
) -> tuple[pd.Series, pd.Series]:
    """Adjusted p-values and rejections within each family (``multipletests``: Bonferroni or
    Holm family-wise, ``fdr_bh`` Benjamini–Hochberg q-values), NaN p left out."""
    _check_choice(correction, ADJUSTMENTS, "correction")
    p_adj = pd.Series(np.nan, index=p.index)
    reject = pd.Series(False, index=p.index)
    for _, idx in p.groupby(families).groups.items():
        fam = p.loc[idx].dropna()
        if fam.empty:
            continue
        rej, adj, _, _ = multipletests(fam.to_numpy(), alpha=alpha, method=correction)
        p_adj.loc[fam.index] = adj
        reject.loc[fam.index] = rej
    return p_adj, reject.astype(bool)


def _pair(
    df: pd.DataFrame, comp: Comparison, region: str, metric: str
) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    """Reference and condition values of the subjects present in both (sorted by subject),
    the number of subjects with a row in only one of them (or NaN), and a note about them."""
    ref = per_subject(df, comp.reference, region, metric)
    cond = per_subject(df, comp.condition, region, metric)
    paired = pd.concat({"ref": ref, "cond": cond}, axis=1, join="inner")
    rows = pd.concat([select(df, sel) for sel in (comp.reference, comp.condition)])
    subjects = pd.Index(rows.loc[rows["region"] == region, "subject"].unique())
    n_missing = len(subjects) - len(paired)
    notes = []
    if n_missing:
        notes.append(
            f"{n_missing} of {len(subjects)} subjects without a pair "
            f"({len(subjects.difference(ref.index))} missing in reference, "
            f"{len(subjects.difference(cond.index))} in condition)"
        )
    return paired["ref"].to_numpy(), paired["cond"].to_numpy(), n_missing, notes


# --------------------------------------------------------------------------- validation


def _fmt_value(value: Any) -> str:
    return f"{value:g}" if is_real(value) else str(value)


def _check_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; has {list(df.columns)}")


def _check_choice(value: str, choices: Sequence[str], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_zero_method_and_diff(diff: np.ndarray, zero_method: str) -> np.ndarray:
    _check_choice(zero_method, ZERO_METHODS, "zero_method")
    d = np.asarray(diff, dtype=float)
    if d.ndim != 1:
        raise ValueError(f"differences must be 1-D, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("differences must be finite (drop missing pairs first)")
    return d


def _check_bootstrap_args(n_boot: int, confidence: float, method: str) -> None:
    if not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    _check_choice(method, CI_METHODS, "ci_method")
