"""Sanity checks of the attacks, per model and training seed: is the evaluation trustworthy?

A robustness number is only as good as the attack behind it. Gradient masking (saturated
softmax, zero or useless gradients, non-differentiable preprocessing) makes a model look robust
to gradient attacks while it is not (Athalye et al. 2018; Carlini et al. 2019, "On evaluating
adversarial robustness", §3 and §5). Each check below compares two numbers from the results
table (or the gradient statistics, :mod:`segrobust.gradient_stats`); "n.a." when the attacks it
needs were not run. A flag says the attack, not the model, is suspect: the model's robust Dice
is then an upper bound.

**Dice comparisons (a, b, c, f, g) know the subject noise.** Each scans settings — (ε, region)
pairs, or consecutive (ε or iterate, region) steps — and pairs the test subjects within each.
Per setting, an exact one-sided sign test over subjects asks whether Dice rose for more
subjects than it fell (value above reference; subjects whose Dice did not change carry no
sign); the p-values are Holm-adjusted over the settings the check scans. The check flags when
some setting has adjusted p ≤ ``alpha`` *and* a mean rise above ``dice_tolerance`` (a
practical margin). So an honest replicate — at every setting a subject's Dice is no more likely
to rise than to fall — is flagged by each such check with probability at most ``alpha``,
whatever the shape of the Dice differences (simulated in tests/test_audit.py). A t test on the
mean would need symmetric differences; Dice changes are skewed (a few subjects lose much), and
in simulation a t test flagged such honest replicates far more often than α at these Holm
levels. The price is that a check needs enough subjects: with n subjects the smallest adjusted
p over S settings is S · 2⁻ⁿ (18 subjects, 30 settings: 1.1e-4), and a check that could not
flag with the subjects at hand is n.a., saying so. ``value`` / ``reference``
are the two Dice means (over subjects) at the reported setting — the flagged one, else the one
with the largest rise — and ``p`` its adjusted p. Iterative attacks count at their final
iterate. The threshold checks (d, e) compare one number with a fixed limit:
``value − reference > tolerance``.

- ``a_eps_monotone`` (fgsm): Dice does not rise with ε along the FGSM sweep (clean input at
  ε = 0 first), per consecutive pair of ε and region; value / reference: Dice at the larger /
  smaller ε.
- ``a_iter_monotone`` (ifgsm, tifgsm): Dice does not rise from one iterate to the next.
- ``b_whitebox_vs_transfer``: white-box FGSM is at least as strong as FGSM transferred from the
  reference model at equal ε (value: white-box Dice, reference: transfer Dice).
- ``c_beats_noise`` (each adversarial family): the attack is stronger than random ±ε sign
  noise (``random_sign``) at equal ε (value: attack Dice, reference: noise Dice).
- ``d_large_budget`` (pgd_large): PGD at a large budget drives Dice near 0; value: its mean
  Dice over subjects and regions, reference 0, tolerance ``large_eps_max_dice``.
- ``e_zero_gradient`` / ``e_saturated``: the mean share of brain input elements with an
  exactly-zero input gradient / of voxels with a saturated softmax (max probability 1.0 in
  float32), against ``zero_gradient_max`` / ``saturated_max``.
- ``f_temperature`` (distilled students): plain FGSM is not weaker than the temperature-aware
  FGSM (``fgsm_T``) at equal ε (value: plain Dice, reference: fgsm_T Dice).
- ``g_iterative_vs_single`` (ifgsm, pgd, segpgd, pgd_large): an untargeted iterative attack is
  at least as strong as FGSM at equal ε (value: iterative Dice, reference: FGSM Dice). ti-FGSM
  is left out: it steps towards a target map, not up the Dice loss.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from segrobust.families import names, only, single_step_first
from segrobust.labels import REGIONS as _REGIONS
from segrobust.results import CLEAN, eps_key, final_rows

AUDIT_COLUMNS: list[str] = [
    "model", "seed", "check", "attack", "status", "value", "reference", "tolerance", "p", "detail",
]  # fmt: skip
CHECKS: dict[str, str] = {
    "a_eps_monotone": "Dice non-increasing in ε (FGSM sweep)",
    "a_iter_monotone": "Dice non-increasing in iterations",
    "b_whitebox_vs_transfer": "white-box FGSM at least as strong as transfer",
    "c_beats_noise": "stronger than random ±ε sign noise",
    "d_large_budget": "large-budget PGD drives Dice near 0",
    "e_zero_gradient": "share of exactly-zero input gradients",
    "e_saturated": "share of saturated softmax voxels",
    "f_temperature": "plain FGSM not weaker than temperature-aware FGSM",
    "g_iterative_vs_single": "iterative at least as strong as FGSM",
}
# the families each check reads (segrobust.families), single-step attacks first
NOISE = only(audit="noise control")
LARGE = only(audit="large budget")
TRANSFER = only(kind="transfer")
TEMPERED = only(runs_on="distilled students")
ADVERSARIAL: tuple[str, ...] = tuple(single_step_first(names(adversarial=True)))
UNTARGETED_ITERATIVE: tuple[str, ...] = tuple(
    a for a in ADVERSARIAL if a in names(iterative=True, targeted=False)
)
RECORDED_ITERATES: tuple[str, ...] = tuple(names(iterates=True))
REGIONS: tuple[str, ...] = tuple(_REGIONS)


def _row(model, seed, check, attack, value=np.nan, reference=np.nan, tolerance=np.nan,
         detail="", status=None, p=np.nan) -> dict:  # fmt: skip
    if status is None:
        status = "flag" if value - reference > tolerance else "pass"
    values = (model, seed, check, attack, status, value, reference, tolerance, p, detail)
    return dict(zip(AUDIT_COLUMNS, values, strict=True))


def _na(model, seed, check, attack, why) -> dict:
    return _row(model, seed, check, attack, detail=why, status="n.a.")


def _means(rows: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Mean Dice over subjects per ``keys`` + region (regions of :data:`REGIONS` only)."""
    return _subjects(rows, keys).mean(axis=1)


def _subjects(rows: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Dice per (``keys``, region) × subject (regions of :data:`REGIONS` only)."""
    rows = rows[rows["region"].isin(REGIONS)]
    rows = rows.assign(eps=eps_key(rows["eps"]))  # one spelling of ε across families
    return rows.pivot_table("dice", [*keys, "region"], "subject", aggfunc="mean")


def _final(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of each (attack, ε)'s last iterate."""
    return final_rows(rows, ["attack", "eps"])


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values along the last axis (vectorised over the others; NaN → 1)."""
    p = np.where(np.isnan(p), 1.0, np.asarray(p, dtype=float))
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    adjusted = np.minimum(np.maximum.accumulate(ranked, axis=-1), 1.0)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def rise_test(diff: np.ndarray, tolerance: float, alpha: float) -> tuple[np.ndarray, ...]:
    """The decision of a Dice comparison from paired differences ``diff`` (..., settings,
    subjects; NaN = no pair), vectorised over leading axes. Per setting: the mean rise, and the
    exact one-sided sign test of "a subject's Dice is no more likely to rise than to fall"
    (binomial over the subjects whose Dice changed), Holm-adjusted over the settings. ``flag``
    where some setting has p_adj ≤ ``alpha`` and a mean rise above ``tolerance``. Returns
    (mean, p_adj, flag)."""
    d = np.asarray(diff, dtype=float)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(d, axis=-1)
    rises, falls = np.sum(d > 0, axis=-1), np.sum(d < 0, axis=-1)
    p = np.where(rises > 0, stats.binom.sf(rises - 1, rises + falls, 0.5), 1.0)
    p_adj = holm(p)
    flag = np.any((p_adj <= alpha) & (mean > tolerance), axis=-1)
    return mean, p_adj, flag


@dataclass(frozen=True)
class DiceComparison:
    """One Dice check's settings × subjects: ``value`` should not exceed ``reference``."""

    check: str
    attack: str
    value: pd.DataFrame
    reference: pd.DataFrame
    what: str  # the reference, in words

    def differences(self) -> pd.DataFrame:
        """value − reference over the settings and subjects both have."""
        rows = self.value.index.intersection(self.reference.index)
        cols = self.value.columns.intersection(self.reference.columns)
        return self.value.loc[rows, cols] - self.reference.loc[rows, cols]


def _decide(model, seed, comp: DiceComparison, tol: float, alpha: float) -> dict:
    """The row of one Dice comparison (module docstring)."""
    diff = comp.differences()
    if diff.empty:
        return _na(model, seed, comp.check, comp.attack, f"no setting shared with {comp.what}")
    smallest = min(1.0, len(diff) * 0.5 ** diff.shape[1])  # every subject rose at one setting
    if smallest > alpha:
        return _na(model, seed, comp.check, comp.attack,
                   f"{diff.shape[1]} subjects cannot show a rise: smallest adjusted p "
                   f"{smallest:.2g} > α {alpha:g}")  # fmt: skip
    mean, p_adj, flag = rise_test(diff.to_numpy(), tol, alpha)
    flagged = (p_adj <= alpha) & (mean > tol)
    k = int(np.argmin(np.where(flagged, p_adj, np.inf))) if flag else int(np.argmax(mean))
    setting = diff.index[k]
    value = comp.value.loc[setting, diff.columns].mean()
    ref = comp.reference.loc[setting, diff.columns].mean()
    detail = (
        f"{'flagged' if flag else 'largest rise'} at {_setting(diff.index.names, setting)}: "
        f"{value:.3f} vs {comp.what} {ref:.3f}, mean rise {mean[k]:+.3f}; Dice rose for "
        f"{int((diff.iloc[k] > 0).sum())} and fell for {int((diff.iloc[k] < 0).sum())} of "
        f"{diff.shape[1]} subjects (sign test, Holm over {len(diff)} settings)"
    )
    return _row(model, seed, comp.check, comp.attack, value, ref, tol, detail,
                "flag" if flag else "pass", float(p_adj[k]))  # fmt: skip


def _setting(names, setting) -> str:
    """Label of a setting: "ε = 0.05, ET" for (eps, region); a step's own label."""
    values = setting if isinstance(setting, tuple) else (setting,)
    return ", ".join(
        f"ε = {v:g}" if n == "eps" else str(v) for n, v in zip(names, values, strict=True)
    )


def _steps(curve: pd.DataFrame, axis: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(later, earlier) Dice per (step, region) × subject of consecutive points of ``curve``
    ((x, region) × subject): the monotone checks compare each point with the one before."""
    later, earlier = [], []
    for region, part in curve.groupby(level="region"):
        values = part.droplevel("region").sort_index()
        for lo, hi in zip(values.index[:-1], values.index[1:], strict=True):
            step = f"{region}, {axis} {lo:g} → {hi:g}"
            later.append(values.loc[hi].rename(step))
            earlier.append(values.loc[lo].rename(step))
    if not later:
        return pd.DataFrame(), pd.DataFrame()
    frames = [pd.DataFrame(x).rename_axis("step") for x in (later, earlier)]
    return frames[0], frames[1]


NotApplied = tuple[str, str, str]  # (check, attack, why)


def dice_comparisons(rows: pd.DataFrame, model: str) -> list[DiceComparison | NotApplied]:
    """The Dice checks (a, b, c, f, g) of one replicate's results rows, each as the settings ×
    subjects Dice it compares, or (check, attack, why) where it does not apply."""
    out: list[DiceComparison | NotApplied] = []
    clean = rows[rows["attack"] == CLEAN]
    white = rows[(rows["source_model"] == model) & rows["attack"].isin([*ADVERSARIAL, NOISE])]
    final = _final(white) if not white.empty else white
    present = set(final["attack"])
    by_attack = {a: _subjects(final[final["attack"] == a], ["eps"]) for a in present}

    # (a) monotone in ε (FGSM, from the clean input) and in iterations
    if "fgsm" in present:
        curve = _subjects(pd.concat([clean, final[final["attack"] == "fgsm"]]), ["eps"])
        later, earlier = _steps(curve, "ε")
        out.append(DiceComparison("a_eps_monotone", "fgsm", later, earlier, "the smaller ε"))
    else:
        out.append(("a_eps_monotone", "fgsm", "fgsm not run"))
    recorded = [a for a in RECORDED_ITERATES if white.loc[white["attack"] == a, "iteration"]
                .nunique() > 1]  # fmt: skip
    if not recorded:
        out.append(("a_iter_monotone", "", "no attack with recorded iterates"))
    for attack in recorded:
        steps = white[white["attack"] == attack]
        start = clean.assign(iteration=0)  # iterate 0 of i-FGSM is the clean input
        later, earlier = _steps(_subjects(pd.concat([start, steps]), ["iteration"]), "iteration")
        out.append(DiceComparison("a_iter_monotone", attack, later, earlier, "the iterate before"))

    # (b) white-box vs transfer from the reference model
    transfer = rows[(rows["attack"] == TRANSFER) & (rows["source_model"] != model)]
    if "fgsm" in present and not transfer.empty:
        source = ", ".join(sorted(transfer["source_model"].astype(str).unique()))
        what = f"transfer from {source}"
        out.append(DiceComparison("b_whitebox_vs_transfer", "fgsm", by_attack["fgsm"],
                                  _subjects(transfer, ["eps"]), what))  # fmt: skip
    else:
        why = "the transfer source itself" if transfer.empty else "fgsm not run"
        out.append(("b_whitebox_vs_transfer", "fgsm", why))
    if not transfer.empty:
        by_attack[TRANSFER] = _subjects(transfer, ["eps"])
        present.add(TRANSFER)

    # (c) every adversarial family beats random sign noise at equal ε
    if NOISE not in present:
        out.append(("c_beats_noise", "", f"{NOISE} not run"))
    else:
        out += [DiceComparison("c_beats_noise", a, by_attack[a], by_attack[NOISE], "random sign")
                for a in ADVERSARIAL if a in present]  # fmt: skip

    # (f) temperature-aware vs plain FGSM (distilled students)
    if TEMPERED in present and "fgsm" in present:
        out.append(DiceComparison("f_temperature", "fgsm", by_attack["fgsm"], by_attack[TEMPERED],
                                  TEMPERED))  # fmt: skip
    else:
        out.append(("f_temperature", "fgsm", f"{TEMPERED} not run (not a student)"))

    # (g) iterative at least as strong as single-step
    iterative = [a for a in UNTARGETED_ITERATIVE if a in present]
    if "fgsm" not in present or not iterative:
        out.append(("g_iterative_vs_single", "", "fgsm or iterative not run"))
    for attack in iterative if "fgsm" in present else []:
        out.append(DiceComparison("g_iterative_vs_single", attack, by_attack[attack],
                                  by_attack["fgsm"], "FGSM"))  # fmt: skip
    return out


def _threshold_checks(rows, grads, model, seed, large_eps_max_dice, zero_gradient_max,
                      saturated_max) -> list[dict]:  # fmt: skip
    """Rows of the fixed-limit checks (d, e)."""
    out = []
    # (d) large-budget PGD drives Dice near 0
    large = rows[(rows["source_model"] == model) & (rows["attack"] == LARGE)]
    if not large.empty:
        means = _means(_final(large), ["eps"])
        detail = ", ".join(f"{r} {v:.3f}" for (e, r), v in means.items())
        eps = means.index.get_level_values("eps")[0]
        out.append(_row(model, seed, "d_large_budget", LARGE, float(means.mean()), 0.0,
                        large_eps_max_dice, f"ε = {eps:g}: {detail}"))  # fmt: skip
    else:
        out.append(_na(model, seed, "d_large_budget", LARGE, f"{LARGE} not run"))

    # (e) zero gradients and saturated softmax
    mine = None if grads is None else grads[(grads["model"] == model) & (grads["seed"] == seed)]
    for check, column, limit in (("e_zero_gradient", "zero_gradient", zero_gradient_max),
                                 ("e_saturated", "saturated", saturated_max)):  # fmt: skip
        if mine is None or mine.empty:
            out.append(_na(model, seed, check, "", "no gradient statistics"))
            continue
        share = float(mine[column].mean())
        detail = f"mean over {len(mine)} subjects (max {mine[column].max():.4f})"
        if column == "zero_gradient" and mine["zero_gradient_tempered"].notna().any():
            detail += f"; through logits / T: {mine['zero_gradient_tempered'].mean():.4f}"
        out.append(_row(model, seed, check, "", share, 0.0, limit, detail))
    return out


def audit(
    results: pd.DataFrame,
    gradients: pd.DataFrame | None = None,
    *,
    dice_tolerance: float = 0.02,
    alpha: float = 0.05,
    large_eps_max_dice: float = 0.2,
    zero_gradient_max: float = 0.01,
    saturated_max: float = 0.05,
) -> pd.DataFrame:
    """Every check of the module docstring for each (model, seed) of ``results``.

    ``results``: the long results table (:data:`segrobust.results.RESULT_COLUMNS`);
    ``gradients``: :func:`segrobust.gradient_stats.evaluate_gradients` rows (None: the e-checks
    are n.a.). ``dice_tolerance`` and ``alpha`` apply to the Dice comparisons (a, b, c, f, g).
    Returns :data:`AUDIT_COLUMNS` rows in :data:`CHECKS` order; status pass / flag / n.a.
    """
    for name, value in (("dice_tolerance", dice_tolerance), ("large_eps_max_dice",
                        large_eps_max_dice), ("zero_gradient_max", zero_gradient_max),
                        ("saturated_max", saturated_max)):  # fmt: skip
        if not 0 <= value <= 1:
            raise ValueError(f"audit.{name} must be in [0, 1], got {value}")
    if not 0 < alpha < 1:
        raise ValueError(f"audit.alpha must be in (0, 1), got {alpha}")
    missing = {"model", "seed", "attack", "eps", "iteration", "region", "dice", "source_model"}
    if missing := sorted(missing - set(results.columns)):
        raise ValueError(f"results table lacks the columns {missing}")
    rows = []
    for (model, seed), part in results.groupby(["model", "seed"], sort=True):
        for comp in dice_comparisons(part, model):
            rows.append(_na(model, seed, *comp) if isinstance(comp, tuple) else
                        _decide(model, seed, comp, dice_tolerance, alpha))  # fmt: skip
        rows += _threshold_checks(part, gradients, model, seed, large_eps_max_dice,
                                  zero_gradient_max, saturated_max)  # fmt: skip
    table = pd.DataFrame(rows, columns=AUDIT_COLUMNS)
    order = table["check"].map({c: i for i, c in enumerate(CHECKS)})
    return table.iloc[np.lexsort([order, table["seed"], table["model"]])].reset_index(drop=True)


def _overview(table: pd.DataFrame) -> pd.DataFrame:
    """Model/seed × check: "flag (k/n)" when any of its n rows flags, else pass or n.a."""

    def cell(statuses: pd.Series) -> str:
        applied = statuses[statuses != "n.a."]
        flags = int((applied == "flag").sum())
        if applied.empty:
            return "n.a."
        return f"**flag** ({flags}/{len(applied)})" if flags else "pass"

    out = table.groupby(["model", "seed", "check"], sort=False)["status"].apply(cell).unstack()
    return out[[c for c in CHECKS if c in out.columns]].fillna("n.a.").reset_index()


def audit_markdown(table: pd.DataFrame) -> str:
    """The audit as Markdown: an overview per model and seed, the flags, every applied check."""
    tolerances = table.groupby("check")["tolerance"].first().dropna()
    legend = "\n".join(
        f"- `{c}`: {text}" + (f" (tolerance {tolerances[c]:g})" if c in tolerances else "")
        for c, text in CHECKS.items()
    )
    shown = table[table["status"] != "n.a."].copy()
    for col in ("value", "reference"):
        shown[col] = shown[col].map("{:.4f}".format)
    shown["tolerance"] = shown["tolerance"].map("{:g}".format)
    shown["p"] = shown["p"].map(lambda p: f"{p:.2g}" if np.isfinite(p) else "")
    flags = shown[shown["status"] == "flag"]
    n_flags = len(flags)
    lines = [
        "# Robustness audit",
        "",
        "Sanity checks of the attacks per model and training seed (segrobust.audit). A Dice "
        "comparison flags when, at some (ε or iterate, region) setting it scans, Dice rose for "
        "significantly more test subjects than it fell (exact one-sided sign test, p Holm-"
        "adjusted over the check's settings, ≤ α) and the mean rise exceeds the tolerance; "
        "value and reference are the two mean Dice there (the flagged setting, else the largest "
        "rise), p its adjusted p. An honest replicate is flagged by each Dice check with "
        "probability at most α. The threshold checks flag when value − reference > tolerance. "
        "A flag means the attack, not the model, is suspect (gradient masking, a too weak or "
        "broken attack): that model's robust Dice is then an upper bound.",
        "",
        legend,
        "",
        "## Overview",
        "",
        _overview(table).to_markdown(index=False, disable_numparse=True),
        "",
        f"## Flags ({n_flags})",
        "",
        flags.to_markdown(index=False, disable_numparse=True) if n_flags else "None.",
        "",
        "## Every applied check",
        "",
        shown.to_markdown(index=False, disable_numparse=True),
    ]
    return "\n".join(lines) + "\n"
