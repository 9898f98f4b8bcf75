"""Sanity checks of the attacks, per model and training seed: is the evaluation trustworthy?

A robustness number is only as good as the attack behind it. Gradient masking (saturated
softmax, zero or useless gradients, non-differentiable preprocessing) makes a model look robust
to gradient attacks while it is not (Athalye et al. 2018; Carlini et al. 2019, "On evaluating
adversarial robustness", §3 and §5). Each check below compares two numbers from the results
table (or the gradient statistics, :mod:`segrobust.gradient_stats`) and flags the model when
``value − reference > tolerance``; "n.a." when the attacks it needs were not run. A flag says
the attack, not the model, is suspect: the model's robust Dice is then an upper bound.

Dice values are means over the test subjects per region (WT, TC, ET); comparisons at equal ε
pair the same subjects and report the worst (region, ε) — value and reference are the two Dice
means there. Iterative attacks count at their final iterate.

- ``a_eps_monotone`` (fgsm): Dice does not rise with ε along the FGSM sweep (clean input at
  ε = 0 first); value / reference: Dice at the larger / smaller ε of the worst step.
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

import numpy as np
import pandas as pd

AUDIT_COLUMNS: list[str] = [
    "model", "seed", "check", "attack", "status", "value", "reference", "tolerance", "detail",
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
NOISE = "random_sign"
LARGE = "pgd_large"
ADVERSARIAL = ("fgsm", "fgsm_T", "transfer_fgsm", "ifgsm", "tifgsm", "pgd", "segpgd", LARGE)
UNTARGETED_ITERATIVE = ("ifgsm", "pgd", "segpgd", LARGE)
REGIONS = ("WT", "TC", "ET")


def _row(model, seed, check, attack, value=np.nan, reference=np.nan, tolerance=np.nan,
         detail="", status=None) -> dict:  # fmt: skip
    if status is None:
        status = "flag" if value - reference > tolerance else "pass"
    values = (model, seed, check, attack, status, value, reference, tolerance, detail)
    return dict(zip(AUDIT_COLUMNS, values, strict=True))


def _na(model, seed, check, attack, why) -> dict:
    return _row(model, seed, check, attack, detail=why, status="n.a.")


def _means(rows: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Mean Dice over subjects per ``keys`` + region (regions of :data:`REGIONS` only)."""
    rows = rows[rows["region"].isin(REGIONS)]
    rows = rows.assign(eps=rows["eps"].round(9))  # one spelling of ε across families
    return rows.groupby([*keys, "region"])["dice"].mean()


def _final(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of each (attack, ε)'s last iterate."""
    last = rows.groupby(["attack", "eps"])["iteration"].transform("max")
    return rows[rows["iteration"] == last]


def _compare(model, seed, check, attack, mine: pd.Series, ref: pd.Series, tol: float,
             what: str) -> dict:  # fmt: skip
    """Row of "mine (Dice per (ε, region)) at most ref + tol" at the worst shared setting."""
    common = mine.index.intersection(ref.index)
    if common.empty:
        return _na(model, seed, check, attack, f"no ε shared with {what}")
    diff = mine[common] - ref[common]
    eps, region = diff.idxmax()
    detail = (
        f"worst at ε = {eps:g}, {region}: {mine[(eps, region)]:.3f} vs {what} "
        f"{ref[(eps, region)]:.3f} ({len(common)} (ε, region) settings compared)"
    )
    return _row(model, seed, check, attack, mine[(eps, region)], ref[(eps, region)], tol, detail)


def _monotone(model, seed, check, attack, curve: pd.Series, axis: str, tol: float) -> dict:
    """Row of "Dice never rises by more than tol between consecutive points" of (x, region)."""
    worst = None
    for region, part in curve.groupby(level="region"):
        values = part.droplevel("region").sort_index()
        if len(values) < 2:
            continue
        rises = np.diff(values.to_numpy())
        k = int(np.argmax(rises))
        if worst is None or rises[k] > worst[0]:
            worst = (rises[k], region, values.index[k], values.index[k + 1], values.iloc[k],
                     values.iloc[k + 1])  # fmt: skip
    if worst is None:
        return _na(model, seed, check, attack, f"fewer than two {axis} values")
    _, region, lo, hi, before, after = worst
    detail = f"largest rise: {region} from {axis} {lo:g} ({before:.3f}) to {hi:g} ({after:.3f})"
    return _row(model, seed, check, attack, after, before, tol, detail)


def _checks_of_replicate(
    rows: pd.DataFrame,
    grads: pd.DataFrame | None,
    model: str,
    seed: int,
    tol: float,
    large_eps_max_dice: float,
    zero_gradient_max: float,
    saturated_max: float,
) -> list[dict]:
    out = []
    clean = rows[rows["attack"] == "none"]
    white = rows[(rows["source_model"] == model) & rows["attack"].isin([*ADVERSARIAL, NOISE])]
    final = _final(white) if not white.empty else white
    present = set(final["attack"])
    by_attack = {a: _means(final[final["attack"] == a], ["eps"]) for a in present}

    # (a) monotone in ε (FGSM, from the clean input) and in iterations
    if "fgsm" in present:
        curve = _means(pd.concat([clean, final[final["attack"] == "fgsm"]]), ["eps"])
        out.append(_monotone(model, seed, "a_eps_monotone", "fgsm", curve, "ε", tol))
    else:
        out.append(_na(model, seed, "a_eps_monotone", "fgsm", "fgsm not run"))
    recorded = [a for a in ("ifgsm", "tifgsm") if white.loc[white["attack"] == a, "iteration"]
                .nunique() > 1]  # fmt: skip
    if not recorded:
        out.append(_na(model, seed, "a_iter_monotone", "", "no attack with recorded iterates"))
    for attack in recorded:
        steps = white[white["attack"] == attack]
        start = clean.assign(iteration=0)  # iterate 0 of i-FGSM is the clean input
        curve = _means(pd.concat([start, steps]), ["iteration"])
        out.append(_monotone(model, seed, "a_iter_monotone", attack, curve, "iteration", tol))

    # (b) white-box vs transfer from the reference model
    transfer = rows[(rows["attack"] == "transfer_fgsm") & (rows["source_model"] != model)]
    if "fgsm" in present and not transfer.empty:
        source = ", ".join(sorted(transfer["source_model"].astype(str).unique()))
        out.append(_compare(model, seed, "b_whitebox_vs_transfer", "fgsm", by_attack["fgsm"],
                            _means(transfer, ["eps"]), tol, f"transfer from {source}"))  # fmt: skip
    else:
        why = "the transfer source itself" if transfer.empty else "fgsm not run"
        out.append(_na(model, seed, "b_whitebox_vs_transfer", "fgsm", why))
    if not transfer.empty:
        by_attack["transfer_fgsm"] = _means(transfer, ["eps"])
        present.add("transfer_fgsm")

    # (c) every adversarial family beats random sign noise at equal ε
    attacked = [a for a in ADVERSARIAL if a in present]
    if NOISE not in present:
        out.append(_na(model, seed, "c_beats_noise", "", "random_sign not run"))
    else:
        for attack in attacked:
            out.append(_compare(model, seed, "c_beats_noise", attack, by_attack[attack],
                                by_attack[NOISE], tol, "random sign"))  # fmt: skip

    # (d) large-budget PGD drives Dice near 0
    if LARGE in present:
        means = by_attack[LARGE]
        detail = ", ".join(f"{r} {v:.3f}" for (e, r), v in means.items())
        eps = means.index.get_level_values("eps")[0]
        out.append(_row(model, seed, "d_large_budget", LARGE, float(means.mean()), 0.0,
                        large_eps_max_dice, f"ε = {eps:g}: {detail}"))  # fmt: skip
    else:
        out.append(_na(model, seed, "d_large_budget", LARGE, "pgd_large not run"))

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

    # (f) temperature-aware vs plain FGSM (distilled students)
    if "fgsm_T" in present and "fgsm" in present:
        out.append(_compare(model, seed, "f_temperature", "fgsm", by_attack["fgsm"],
                            by_attack["fgsm_T"], tol, "fgsm_T"))  # fmt: skip
    else:
        out.append(_na(model, seed, "f_temperature", "fgsm", "fgsm_T not run (not a student)"))

    # (g) iterative at least as strong as single-step
    iterative = [a for a in UNTARGETED_ITERATIVE if a in present]
    if "fgsm" not in present or not iterative:
        out.append(_na(model, seed, "g_iterative_vs_single", "", "fgsm or iterative not run"))
    for attack in iterative if "fgsm" in present else []:
        out.append(_compare(model, seed, "g_iterative_vs_single", attack, by_attack[attack],
                            by_attack["fgsm"], tol, "FGSM"))  # fmt: skip
    return out


def audit(
    results: pd.DataFrame,
    gradients: pd.DataFrame | None = None,
    *,
    dice_tolerance: float = 0.02,
    large_eps_max_dice: float = 0.2,
    zero_gradient_max: float = 0.01,
    saturated_max: float = 0.05,
) -> pd.DataFrame:
    """Every check of the module docstring for each (model, seed) of ``results``.

    ``results``: the long results table (:data:`segrobust.metrics.RESULT_COLUMNS`);
    ``gradients``: :func:`segrobust.gradient_stats.evaluate_gradients` rows (None: the e-checks
    are n.a.). ``dice_tolerance`` applies to the Dice comparisons (a, b, c, f, g). Returns
    :data:`AUDIT_COLUMNS` rows; status pass / flag / n.a.
    """
    for name, value in (("dice_tolerance", dice_tolerance), ("large_eps_max_dice",
                        large_eps_max_dice), ("zero_gradient_max", zero_gradient_max),
                        ("saturated_max", saturated_max)):  # fmt: skip
        if not 0 <= value <= 1:
            raise ValueError(f"audit.{name} must be in [0, 1], got {value}")
    missing = {"model", "seed", "attack", "eps", "iteration", "region", "dice", "source_model"}
    if missing := sorted(missing - set(results.columns)):
        raise ValueError(f"results table lacks the columns {missing}")
    rows = []
    for (model, seed), part in results.groupby(["model", "seed"], sort=True):
        rows += _checks_of_replicate(
            part, gradients, model, seed, dice_tolerance, large_eps_max_dice,
            zero_gradient_max, saturated_max,
        )  # fmt: skip
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


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
    flags = shown[shown["status"] == "flag"]
    n_flags = len(flags)
    lines = [
        "# Robustness audit",
        "",
        "Sanity checks of the attacks per model and training seed (segrobust.audit). A check "
        "flags when value − reference > tolerance; Dice values are means over test subjects at "
        "the worst (region, ε) compared. A flag means the attack, not the model, is suspect "
        "(gradient masking, a too weak or broken attack): that model's robust Dice is then an "
        "upper bound.",
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
