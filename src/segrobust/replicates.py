"""Does a defence help on new patients, trained again? The primary analysis and the rest.

A defence is a training procedure, replicated by training runs (seeds), and judged on test
subjects: both are samples, so every comparison here counts both (:mod:`segrobust.crossed`).
Runs with the same seed share initial weights and data order across models, so a defence and
its reference are paired by seed; seeds only one of them has are left out (named in ``note``),
as are subjects without a value in every kept run.

- **Primary analysis** (:func:`primary_analysis`), declared in the config before the run
  (``statistics.primary``: one attack, ε and metric): one hypothesis per defence against its
  reference, Holm-adjusted over that family. Verdict ``better`` / ``worse`` when the Holm p ≤ α
  (the sign of Δ decides), else ``inconclusive``; ``reason`` is computed against the same
  adjusted threshold, with the power the run had to detect its own Δ at Holm's strictest level
  α/m (:mod:`segrobust.planner`). Beside it, two sensitivity checks with their own Holm
  verdicts: a mixed model and a two-level bootstrap. They **disagree materially** when a
  sensitivity verdict word differs from the primary's (better / worse / inconclusive), which
  ``agreement`` names; a difference in the digits of p is not material.
- **Non-inferiority** (optional, ``statistics.non_inferiority_margin``): clean Dice of each
  defence not worse than its reference by more than the margin, one-sided at α, Holm over
  defences.
- **Exploratory** (:func:`exploratory_table`): Δ, 95 % CI, raw p and a Benjamini–Hochberg q per
  (defence, attack, ε, region). Not verdicts: no family was declared for them in advance.
"""

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from segrobust.crossed import Components, crossed_test, mixed_model, two_level_bootstrap
from segrobust.labels import REGIONS
from segrobust.planner import MAX_SEEDS, power, seeds_needed
from segrobust.results import CLEAN, attack_label, attack_selector, model_label, select
from segrobust.statistics import adjust_pvalues

# metric of the primary analysis -> the regions whose Dice it averages per subject
PRIMARY_METRICS: dict[str, tuple[str, ...]] = {
    "dice_mean": tuple(REGIONS),
    **{f"dice_{r}": (r,) for r in REGIONS},
}
SENSITIVITY = {"mixed": "mixed model", "boot": "bootstrap"}
Comparisons = Sequence[tuple[str, str]]  # (defence, its reference)


# --------------------------------------------------------------------------- the data


def run_values(
    df: pd.DataFrame, model: str, attack: str, eps: float, regions: Sequence[str]
) -> pd.DataFrame:
    """Seeds × subjects Dice of ``model`` under one white-box (attack, ε) (ε = 0: clean),
    averaged over ``regions`` per subject (NaN where a region is missing)."""
    rows = select(df, attack_selector(df, model, attack, eps))
    rows = rows[rows["region"].isin(regions)]
    per_region = rows.pivot_table("dice", ["seed", "subject"], "region", aggfunc="mean")
    values = per_region.reindex(columns=list(regions)).mean(axis=1, skipna=False)
    return values.unstack("subject")


def paired_differences(
    df: pd.DataFrame,
    model: str,
    reference: str,
    attack: str,
    eps: float,
    regions: Sequence[str],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """(D = model − reference, model values, reference values, notes): seeds × subjects over
    the seeds both models have and the subjects complete in all of them."""
    mine = run_values(df, model, attack, eps, regions)
    ref = run_values(df, reference, attack, eps, regions)
    seeds = mine.index.intersection(ref.index)
    notes = [
        f"seeds {', '.join(map(str, sorted(set(m.index) - set(seeds))))} of {name} unpaired: "
        "left out"
        for name, m in ((model, mine), (reference, ref))
        if set(m.index) - set(seeds)
    ]
    mine, ref = mine.loc[seeds], ref.loc[seeds]
    subjects = mine.columns.intersection(ref.columns)
    complete = subjects[mine[subjects].notna().all() & ref[subjects].notna().all()]
    if len(complete) < len(mine.columns.union(ref.columns)):
        notes.append(
            f"{len(mine.columns.union(ref.columns)) - len(complete)} subjects without a value "
            "in every paired run: left out"
        )
    mine, ref = mine[complete], ref[complete]
    return mine - ref, mine, ref, notes


# --------------------------------------------------------------------------- one comparison


def _estimate(diff: pd.DataFrame) -> dict:
    """The crossed test of one seeds × subjects matrix (NaN with fewer than 2 of either)."""
    k, n = diff.shape
    out = {"n_seeds": k, "n_subjects": n, "delta": float(diff.to_numpy().mean()) if diff.size else
           np.nan}  # fmt: skip
    if k < 2 or n < 2:
        nan = float("nan")
        return out | dict.fromkeys(
            ("se", "ci_low", "ci_high", "p", "var_seed", "var_subject", "var_resid"), nan
        )
    res = crossed_test(diff.to_numpy())
    parts = res.components()
    return out | {
        "se": float(res.se), "ci_low": float(res.ci_low), "ci_high": float(res.ci_high),
        "p": float(res.p), "var_seed": parts.seed, "var_subject": parts.subject,
        "var_resid": parts.resid,
    }  # fmt: skip


def _seed_means(values: pd.DataFrame) -> str:
    return ", ".join(f"{v:.3f}" for v in values.mean(axis=1))


def _verdict(delta: float, p_adj: float, alpha: float) -> str:
    if np.isfinite(p_adj) and p_adj <= alpha:
        return "better" if delta > 0 else "worse"
    return "inconclusive"


# --------------------------------------------------------------------------- primary


def primary_analysis(
    df: pd.DataFrame,
    comparisons: Comparisons,
    *,
    attack: str,
    eps: float,
    metric: str = "dice_mean",
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
    target_power: float = 0.8,
    minimal_effect: float = 0.03,
    non_inferiority_margin: float | None = None,
) -> pd.DataFrame:
    """One row per (defence, reference) of ``comparisons`` under the declared (attack, ε,
    metric): Δ, SE, 95 % CI, p, Holm p, verdict and reason; the variance components; the
    sensitivity checks (``mixed_*``, ``boot_*``, each with Holm p and verdict) and
    ``agreement``; ``power_observed`` (of this run for its own Δ at α/m) and the seeds needed
    for ``target_power`` at this run's subjects to detect the observed Δ
    (``seeds_for_observed``) and ``minimal_effect`` (``seeds_for_minimal``; 0: unreachable
    within :data:`segrobust.planner.MAX_SEEDS`). With ``non_inferiority_margin``, ``ni_*``
    columns test clean Dice (same metric) for non-inferiority (module docstring).
    """
    if metric not in PRIMARY_METRICS:
        raise ValueError(f"statistics.primary.metric must be one of {list(PRIMARY_METRICS)}")
    if not comparisons:
        raise ValueError("no defence to compare: the primary family is empty")
    regions = PRIMARY_METRICS[metric]
    rows = []
    for model, reference in comparisons:
        try:
            diff, mine, ref, notes = paired_differences(df, model, reference, attack, eps, regions)
        except ValueError as err:
            raise ValueError(
                f"primary analysis (statistics.primary: {attack} at ε = {eps:g}) of {model} "
                f"vs {reference}: {err}"
            ) from err
        row = {"model": model, "reference": reference, "attack": attack, "eps": float(eps),
               "metric": metric, "seeds": ", ".join(map(str, diff.index)),
               "seed_means": _seed_means(mine), "seed_means_ref": _seed_means(ref),
               "mean": float(mine.to_numpy().mean()), "mean_ref": float(ref.to_numpy().mean()),
               **_estimate(diff)}  # fmt: skip
        row.update(_sensitivity(diff, n_boot, [seed, zlib.crc32(f"{model}|{reference}".encode())]))
        row["note"] = "; ".join(notes)
        rows.append(row)
    out = pd.DataFrame(rows)
    family = pd.Series("primary", index=out.index)
    for prefix in ("", "mixed_", "boot_"):  # the bootstrap's Δ is the primary's mean
        p_holm = adjust_pvalues(out[f"{prefix}p"], family, "holm", alpha)[0]
        delta = out["mixed_delta" if prefix == "mixed_" else "delta"]
        out[f"{prefix}p_holm"] = p_holm
        out[f"{prefix}verdict"] = [
            _verdict(d, q, alpha) for d, q in zip(delta, p_holm, strict=True)
        ]
    out["agreement"] = [_agreement(r) for r in out.itertuples()]
    level = alpha / len(out)  # Holm's strictest step: what a plan must assume
    _plan_columns(out, level, target_power, minimal_effect)
    out["reason"] = [_reason(r, alpha, level) for r in out.itertuples()]
    if non_inferiority_margin is not None:
        ni = non_inferiority(df, comparisons, margin=non_inferiority_margin, metric=metric,
                             alpha=alpha)  # fmt: skip
        out = out.merge(ni, on=["model", "reference"], how="left")
    return out


def _sensitivity(diff: pd.DataFrame, n_boot: int, seed: list[int]) -> dict:
    nan = float("nan")
    keys = ("delta", "ci_low", "ci_high", "p", "note")
    if min(diff.shape) < 2:
        return {f"mixed_{k}": nan for k in keys} | {f"boot_{k}": nan for k in keys[1:4]}
    mixed = {f"mixed_{k}": v for k, v in mixed_model(diff).items()}
    boot = two_level_bootstrap(diff.to_numpy(), n_boot=n_boot, seed=seed)
    return mixed | {f"boot_{k}": v for k, v in boot.items()}


def _agreement(row) -> str:
    differ = [
        f"{name}: {getattr(row, f'{key}_verdict')}"
        for key, name in SENSITIVITY.items()
        if getattr(row, f"{key}_verdict") != row.verdict
    ]
    return "; ".join(differ) if differ else "agree"


def _plan_columns(out: pd.DataFrame, level: float, target: float, minimal: float) -> None:
    """Power of this run for its own Δ, and seeds needed for Δ and the minimal effect."""
    plans = []
    for r in out.itertuples():
        if not np.isfinite(r.var_seed) or r.delta == 0:
            plans.append((np.nan, np.nan, np.nan))
            continue
        parts = Components(r.var_seed, r.var_subject, r.var_resid)
        plans.append((
            power(parts, r.delta, n_seeds=r.n_seeds, n_subjects=r.n_subjects, alpha=level),
            *(seeds_needed(parts, effect, n_subjects=r.n_subjects, alpha=level, target=target)
              or 0 for effect in (r.delta, minimal)),
        ))  # fmt: skip
    out[["power_observed", "seeds_for_observed", "seeds_for_minimal"]] = plans
    out["plan_alpha"], out["plan_power"], out["minimal_effect"] = level, target, minimal


def _reason(row, alpha: float, level: float) -> str:
    if row.n_seeds < 2:
        return f"{'one' if row.n_seeds else 'no'} shared seed: the training noise is unknown"
    if row.verdict != "inconclusive":
        return f"Holm p {row.p_holm:.2g} ≤ α {alpha:g}"
    text = f"Holm p {row.p_holm:.2g} > α {alpha:g}"
    if np.isfinite(row.power_observed) and row.power_observed < 0.5:
        needed = (
            f"{int(row.seeds_for_observed)} seeds needed"
            if row.seeds_for_observed
            else f"more than {MAX_SEEDS} seeds needed"
        )
        text += (
            f"; {row.n_seeds} seeds had power {row.power_observed:.2f} for the observed Δ at "
            f"α/m = {level:.3g}: {needed} at {row.n_subjects} subjects"
        )
    return text


def non_inferiority(
    df: pd.DataFrame,
    comparisons: Comparisons,
    *,
    margin: float,
    metric: str = "dice_mean",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Clean ``metric`` of each defence not lower than its reference's by more than ``margin``:
    H0 Δ ≤ −margin against Δ > −margin, one-sided at ``alpha`` (the crossed test of D + margin;
    ``ni_lower`` is the one-sided 1 − α bound of Δ), Holm over the defences."""
    if not 0 < margin < 1:
        raise ValueError(f"statistics.non_inferiority_margin must be in (0, 1), got {margin}")
    rows = []
    for model, reference in comparisons:
        diff = paired_differences(df, model, reference, CLEAN, 0.0, PRIMARY_METRICS[metric])[0]
        row = {"model": model, "reference": reference, "ni_margin": margin,
               "ni_delta": float(diff.to_numpy().mean()) if diff.size else np.nan,
               "ni_lower": np.nan, "ni_p": np.nan}  # fmt: skip
        if min(diff.shape) >= 2:  # the two-sided 1 − 2α interval's lower end
            shifted = crossed_test(diff.to_numpy() + margin, confidence=1 - 2 * alpha)
            one_sided = shifted.p / 2 if shifted.delta > 0 else 1 - shifted.p / 2
            row.update(ni_lower=float(shifted.ci_low) - margin, ni_p=float(one_sided))
        rows.append(row)
    out = pd.DataFrame(rows)
    out["ni_p_holm"] = adjust_pvalues(out["ni_p"], pd.Series(0, index=out.index), "holm", alpha)[0]
    out["ni_verdict"] = np.where(out["ni_p_holm"] <= alpha, "non-inferior", "not shown")
    return out


# --------------------------------------------------------------------------- exploratory


def exploratory_table(
    df: pd.DataFrame,
    comparisons: Comparisons,
    *,
    conditions: Sequence[tuple[str, float]],
    regions: Sequence[str] = tuple(REGIONS),
    alpha: float = 0.05,
) -> pd.DataFrame:
    """One row per (defence, attack, ε, region) of ``conditions`` (ε = 0: clean; a condition a
    model was not attacked with is skipped): seed means of both models, Δ, SE, 95 % CI and p of
    the crossed test, and the Benjamini–Hochberg ``q`` over all rows (NaN p left out)."""
    rows = []
    for model, reference in comparisons:
        for attack, eps in conditions:
            for region in regions:
                try:
                    diff, mine, ref, notes = paired_differences(
                        df, model, reference, attack, eps, [region]
                    )
                except ValueError:  # not attacked with this family
                    continue
                if diff.empty:
                    continue
                rows.append({
                    "model": model, "reference": reference, "attack": attack,
                    "eps": float(eps), "region": region,
                    "seed_means": _seed_means(mine), "seed_means_ref": _seed_means(ref),
                    "mean": float(mine.to_numpy().mean()),
                    "mean_ref": float(ref.to_numpy().mean()),
                    **_estimate(diff), "note": "; ".join(notes),
                })  # fmt: skip
    out = pd.DataFrame(rows)
    if out.empty:
        raise ValueError(f"no defence to compare under {list(conditions)}")
    out["q"] = adjust_pvalues(out["p"], pd.Series(0, index=out.index), "fdr_bh", alpha)[0]
    return out


# --------------------------------------------------------------------------- Markdown


def _arrow(d: float) -> str:
    return f"{d:+.3f} {'↑' if d > 0 else '↓' if d < 0 else '='}"


def _ci(low: float, high: float) -> str:
    return f"[{low:+.3f}, {high:+.3f}]" if np.isfinite(low) else "—"


def _p(p: float) -> str:
    return f"{p:.2g}" if np.isfinite(p) else "—"


def primary_markdown(table: pd.DataFrame, alpha: float) -> str:
    """The primary table: Δ, CI, p, Holm p, verdict per defence, then the sensitivity checks."""
    main = pd.DataFrame({
        "Defence": table["model"].map(model_label),
        "Seeds": table["seeds"], "Subjects": table["n_subjects"].map(str),
        "Δ": table["delta"].map(_arrow),
        "95 % CI": [_ci(lo, hi) for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)],
        "p": table["p"].map(_p), "Holm p": table["p_holm"].map(_p),
        "Verdict": table["verdict"], "Reason": table["reason"],
    })  # fmt: skip
    sens = pd.DataFrame({
        "Defence": table["model"].map(model_label),
        "Mixed model Δ [95 % CI]": [f"{d:+.3f} {_ci(lo, hi)}" for d, lo, hi in
                                   zip(table["mixed_delta"], table["mixed_ci_low"],
                                       table["mixed_ci_high"], strict=True)],
        "Mixed Holm p": table["mixed_p_holm"].map(_p),
        "Bootstrap 95 % CI": [_ci(lo, hi) for lo, hi in
                              zip(table["boot_ci_low"], table["boot_ci_high"], strict=True)],
        "Bootstrap Holm p": table["boot_p_holm"].map(_p),
        "Agreement": table["agreement"],
    })  # fmt: skip
    first = table.iloc[0]
    lines = [
        main.to_markdown(index=False, disable_numparse=True),
        "",
        f"Declared before the run (statistics.primary): {first['attack']} at ε = "
        f"{first['eps']:g}, metric {first['metric']}, one hypothesis per defence against "
        f"{first['reference']}. Δ: mean over seeds and subjects of the paired difference (seed "
        "with seed); the 95 % CI and p count the training-seed and the test-subject variance "
        f"(docs/statistics.md); Holm over the {len(table)} defences, verdict at α = {alpha:g}.",
        "",
        sens.to_markdown(index=False, disable_numparse=True),
        "",
        "Sensitivity checks: a mixed model (statsmodels MixedLM, REML, crossed seed and subject "
        "variance components; Wald z, which treats the estimated variances as known) and a "
        "two-level bootstrap (seeds and subjects resampled, percentile interval), each "
        "Holm-adjusted over the same family. Agreement names a check whose verdict word "
        "differs from the primary's.",
    ]
    if "ni_verdict" in table:
        ni = pd.DataFrame({
            "Defence": table["model"].map(model_label), "Clean Δ": table["ni_delta"].map(_arrow),
            "One-sided lower bound": table["ni_lower"].map("{:+.3f}".format),
            "Holm p": table["ni_p_holm"].map(_p), "Non-inferior": table["ni_verdict"],
        })  # fmt: skip
        lines += [
            "",
            f"### Clean {first['metric']}: non-inferiority (margin {table['ni_margin'].iloc[0]:g})",
            "",
            ni.to_markdown(index=False, disable_numparse=True),
        ]
    return "\n".join(lines) + "\n"


def exploratory_markdown(table: pd.DataFrame) -> str:
    """The exploratory rows: per-seed means, Δ, CI, raw p and BH q."""
    shown = pd.DataFrame({
        "Model": table["model"].map(model_label),
        "Attack": [attack_label(a) if e else CLEAN for a, e in
                   zip(table["attack"], table["eps"], strict=True)],
        "ε": table["eps"].map("{:g}".format), "Region": table["region"],
        "Dice per seed": table["seed_means"], "Reference per seed": table["seed_means_ref"],
        "Δ": table["delta"].map(_arrow),
        "95 % CI": [_ci(lo, hi) for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)],
        "p": table["p"].map(_p), "BH q": table["q"].map(_p),
    })  # fmt: skip
    caption = (
        f"Exploratory, not verdicts: {len(table)} comparisons chosen after no declaration. Δ "
        "and its 95 % CI and p as in the primary analysis (seed-paired, both sources of "
        "variance), per region; q: Benjamini–Hochberg over all rows (the expected share of "
        "false discoveries among rows with q ≤ a threshold)."
    )
    return f"{shown.to_markdown(index=False, disable_numparse=True)}\n\n{caption}\n"


def replicates_markdown(primary: pd.DataFrame, exploratory: pd.DataFrame, alpha: float) -> str:
    """The whole page: primary analysis, then the exploratory rows."""
    return "\n".join([
        "# Defences against training noise and subject variation",
        "",
        "## Primary analysis",
        "",
        primary_markdown(primary, alpha),
        "## Exploratory comparisons",
        "",
        exploratory_markdown(exploratory),
    ])  # fmt: skip
