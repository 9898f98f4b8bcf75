"""The paper's Tables 1 and 2 built from the statistics, and their rendering.

:func:`table1` and :func:`table2` run the paired tests of :mod:`segrobust.statistics` and lay
out one numeric frame (for CSV) and one display frame (mean ± sd cells with ↑* / ↓* where the
corrected test is significant, raw / adjusted p columns) with a caption saying how every number
was computed; :func:`write_table` renders them as CSV, Markdown, HTML and LaTeX. The display
names of attacks, models and regions are those of :mod:`segrobust.results`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segrobust.fileio import atomic_path, write_document
from segrobust.results import (
    CLEAN,
    REGION_LABELS,
    Selector,
    attack_label,
    attack_selector,
    attack_sort_key,
    model_label,
    model_sort_key,
    same_eps,
    select,
)
from segrobust.statistics import (
    Comparison,
    Correction,
    ZeroMethod,
    against,
    paired_tests,
    per_subject,
)

QUALITY_DECIMALS = {"psnr": 2, "ssim": 3, "rmse": 3}
DICE_DECIMALS = 3
LATEX_SYMBOLS = {
    "±": r"$\pm$",
    "ε": r"$\varepsilon$",
    "≤": r"$\leq$",
    "∈": r"$\in$",
    "×": r"$\times$",
}


# --------------------------------------------------------------------------- formatting


def format_p(p: float) -> str:
    """p-value as in the paper: 4 decimals from 1e-3 up, else 4 significant digits (6.628e-4)."""
    if p is None or not np.isfinite(p):
        return "-"
    if p >= 1e-3:
        return f"{p:.4f}"
    mantissa, exponent = f"{p:.3e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def format_mean_sd(
    mean: float, sd: float, decimals: int, star: bool = False, change: float = np.nan
) -> str:
    """``"0.821±0.042"``; with ``star`` a direction and ``*``: ``"0.821±0.042 ↓*"`` (↑ if
    ``change`` > 0, ↓ if < 0); ``"-"`` for a missing mean."""
    if mean is None or not np.isfinite(mean):
        return "-"
    text = f"{mean:.{decimals}f}" + (f"±{sd:.{decimals}f}" if np.isfinite(sd) else "")
    if not star:
        return text
    return f"{text} {'↑' if change > 0 else '↓' if change < 0 else ''}*"


def format_p_pair(p: float, p_adj: float) -> str:
    """Raw and adjusted p side by side: ``"0.0123 / 0.1845"``."""
    return f"{format_p(p)} / {format_p(p_adj)}"


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    """A built table: ``numeric`` for CSV, ``display`` strings for Markdown/LaTeX, the full
    per-test results in ``tests`` and a ``caption`` stating how it was computed."""

    numeric: pd.DataFrame
    display: pd.DataFrame
    tests: pd.DataFrame
    caption: str


def table1(
    df: pd.DataFrame,
    *,
    n_boot: int,
    seed: int,
    model: str = "baseline",
    rows: Sequence[tuple[str, float, int | None]] | None = None,
    regions: Sequence[str] = ("TC", "ET", "WT"),
    family: str = "table1",
    family_cols: Sequence[str] = (),
    correction: Correction = "bonferroni",
    alpha: float = 0.05,
    zero_method: ZeroMethod = "wilcox",
) -> Table:
    """Paper's Table 1: one model's Dice per region and input quality under each attack.

    ``rows`` are ``(attack, eps, iteration)`` settings (``iteration=None``: the final one);
    by default every white-box attack (eps > 0) of ``model`` at each eps and final iteration.
    The first row is always "No attack". Dice cells are mean ± sd over subjects (sd with
    ddof=1) with ``*`` where the Wilcoxon test against "No attack" of the same model,
    corrected within the family (default: all tests of the table), has p_adj ≤ ``alpha``.
    PSNR/SSIM/RMSE are per subject (one value per subject, averaged over its region rows).
    """
    _check_columns(df, ("model", "attack", "eps", "iteration", *QUALITY_DECIMALS), "table")
    model_rows = select(df, {"model": model})
    if model_rows.empty:
        raise ValueError(f"model {model!r} not in the table")
    if rows is None:
        attacked = model_rows[(model_rows["attack"] != CLEAN) & (model_rows["eps"] > 0)]
        if "source_model" in df.columns:
            attacked = attacked[attacked["source_model"] == model]
        pairs = attacked[["attack", "eps"]].drop_duplicates()
        pairs = sorted(pairs.itertuples(index=False), key=lambda r: (attack_sort_key(r[0]), r[1]))
        rows = [(a, float(e), None) for a, e in pairs]
    if any(a == CLEAN or e == 0 for a, e, _ in rows):
        raise ValueError("rows must not contain the clean input: 'No attack' is always row 1")
    if not rows:
        raise ValueError(f"model {model!r} has no attacked rows")
    reference = attack_selector(df, model, CLEAN, 0.0)
    selectors = [attack_selector(df, model, a, e, it) for a, e, it in rows]
    labels = _row_labels(selectors)
    tests = paired_tests(
        df,
        against(reference, selectors, family=family, labels=labels, reference_label="No attack"),
        n_boot=n_boot,
        seed=seed,
        regions=regions,
        family_cols=family_cols,
        correction=correction,
        alpha=alpha,
        zero_method=zero_method,
    )
    numeric_rows, display_rows = [], []
    for label, sel in zip(["No attack", *labels], [reference, *selectors], strict=True):
        num = {
            "row": label,
            "attack": sel["attack"],
            "eps": sel.get("eps", 0.0),
            "iteration": sel.get("iteration", 0),
        }
        disp = {"Attack Type": label}
        for region in regions:
            vals = per_subject(df, sel, region, "dice")
            test = tests[(tests["condition"] == label) & (tests["region"] == region)]
            stat = _dice_cell(vals, test)
            num |= {f"dice_{region}_{k}": v for k, v in stat.items()}
            num |= _surface_means(df, sel, region, f"_{region}")
            disp[f"Dice {region}"] = format_mean_sd(
                stat["mean"], stat["sd"], DICE_DECIMALS, stat["significant"], stat["change"]
            )
        quality = select(df, sel).groupby("subject")[list(QUALITY_DECIMALS)].mean()
        for metric, decimals in QUALITY_DECIMALS.items():
            mean, sd = quality[metric].mean(), quality[metric].std()
            num |= {f"{metric}_mean": mean, f"{metric}_sd": sd}
            disp[f"Input {metric.upper()}"] = format_mean_sd(mean, sd, decimals)
        num["n_subjects"] = select(df, sel)["subject"].nunique()
        numeric_rows.append(num)
        display_rows.append(disp)
    caption = (
        f"Segmentation of model '{model}' under each attack: Dice (mean ± sd over subjects) "
        "of the output and PSNR, SSIM, RMSE of the perturbed input; with several training "
        "seeds a subject's Dice is its mean over seeds. ↓* / ↑* : lower / higher than 'No "
        "attack', two-sided Wilcoxon signed-rank test (paired by subject, zero_method="
        f"{zero_method}), {correction.capitalize()}-corrected within "
        f"{_family_text(family, family_cols)} ({len(tests)} tests), p_adj ≤ {alpha:g}; raw and "
        "adjusted p, method and zero/tie handling of each test are in the tests CSV. The tests "
        "are conditional on these trained models: subjects are the only sample."
    )
    return Table(pd.DataFrame(numeric_rows), pd.DataFrame(display_rows), tests, caption)


def table2(
    df: pd.DataFrame,
    *,
    n_boot: int,
    seed: int,
    reference_model: str = "baseline",
    models: Sequence[str] | None = None,
    attack: str = "fgsm",
    eps: Sequence[float] = (0.0, 0.05, 0.1),
    regions: Sequence[str] = ("WT", "TC", "ET"),
    family: str = "table2",
    family_cols: Sequence[str] = (),
    correction: Correction = "bonferroni",
    alpha: float = 0.05,
    zero_method: ZeroMethod = "wilcox",
    model_labels: Mapping[str, str] | None = None,
) -> Table:
    """Paper's Table 2: Dice of each defence under ``attack`` at each ``eps``, per region.

    Rows are region × model ("No Defense" first, then ``models``; by default every other
    model, ordered by ``model_sort_key``). ``eps = 0`` is the clean input. Each defended
    model is tested against ``reference_model`` at the same eps (paired by subject), also at
    eps = 0 as in the paper. The p columns show raw and adjusted p side by side; a Dice cell
    whose adjusted p ≤ ``alpha`` carries ↑* or ↓* (higher or lower than the reference).
    """
    _check_columns(df, ("model", "attack", "eps", "iteration"), "table")
    if not eps:
        raise ValueError("eps must list at least one budget")
    if reference_model not in set(df["model"]):
        raise ValueError(f"reference_model {reference_model!r} not in the table")
    if models is None:
        models = sorted(set(df["model"]) - {reference_model}, key=model_sort_key)
    models = [m for m in models if m != reference_model]
    if not models:
        raise ValueError("no defended models to compare with the reference model")
    labels = dict(model_labels or {})
    names = {m: labels.get(m, model_label(m, reference_model)) for m in [reference_model, *models]}
    sel = {
        (m, e): attack_selector(df, m, attack, e) for m in [reference_model, *models] for e in eps
    }
    comparisons = [
        Comparison(
            sel[m, e],
            sel[reference_model, e],
            label=f"{m} @ eps={e:g}",
            reference_label=f"{reference_model} @ eps={e:g}",
            family=family,
        )
        for m in models
        for e in eps
    ]
    tests = paired_tests(
        df,
        comparisons,
        n_boot=n_boot,
        seed=seed,
        regions=regions,
        family_cols=family_cols,
        correction=correction,
        alpha=alpha,
        zero_method=zero_method,
    )
    numeric_rows, display_rows = [], []
    for region in regions:
        for i, m in enumerate([reference_model, *models]):
            num = {"region": region, "model": m, "model_label": names[m]}
            disp = {"Segmentation Type": REGION_LABELS.get(region, region) if i == 0 else ""}
            disp["Defense Type"] = names[m]
            pcells = {}
            for e in eps:
                vals = per_subject(df, sel[m, e], region, "dice")
                test = tests[
                    (tests["condition"] == f"{m} @ eps={e:g}") & (tests["region"] == region)
                ]
                stat = _dice_cell(vals, test)
                num |= {f"dice_eps{e:g}_{k}": v for k, v in stat.items()}
                num |= _surface_means(df, sel[m, e], region, f"_eps{e:g}")
                disp[f"Dice ε={e:g}"] = format_mean_sd(
                    stat["mean"], stat["sd"], DICE_DECIMALS, stat["significant"], stat["change"]
                )
                pcells[f"p ε={e:g} (raw / adj)"] = format_p_pair(stat["p"], stat["p_adj"])
            numeric_rows.append(num)
            display_rows.append(disp | pcells)
    caption = (
        f"Dice (mean ± sd over subjects) of each model under {attack_label(attack)} at "
        f"ε ∈ {{{', '.join(f'{e:g}' for e in eps)}}} (ε = 0: clean input); with several "
        "training seeds a subject's Dice is its mean over seeds. p (raw / adjusted): two-sided "
        f"Wilcoxon signed-rank test of each model against '{names[reference_model]}' at the same "
        f"ε (paired by subject, zero_method={zero_method}), {correction.capitalize()}-adjusted "
        f"within {_family_text(family, family_cols)} ({len(tests)} tests); ↑* / ↓* : higher / "
        f"lower than the reference with p_adj ≤ {alpha:g}. The tests are conditional on these "
        "trained models (subjects are the only sample); whether a defence helps on new "
        "patients, trained again: the primary analysis (tables/replicates.md)."
    )
    return Table(pd.DataFrame(numeric_rows), pd.DataFrame(display_rows), tests, caption)


def _dice_cell(values: pd.Series, test: pd.DataFrame) -> dict[str, Any]:
    """Mean, sd, n of one cell and its test's mean difference, p, p_adj and significance."""
    has_test = len(test) == 1
    return {
        "mean": values.mean(),
        "sd": values.std(),
        "n": len(values),
        "change": test["mean_diff"].iloc[0] if has_test else np.nan,
        "p": test["p"].iloc[0] if has_test else np.nan,
        "p_adj": test["p_adj"].iloc[0] if has_test else np.nan,
        "significant": bool(test["significant"].iloc[0]) if has_test else False,
    }


def _surface_means(df: pd.DataFrame, sel: Selector, region: str, tag: str) -> dict[str, float]:
    """Mean over subjects of HD95 (mm) and NSD, CSV only: ``hd95<tag>_mean``, ``nsd<tag>_mean``
    (tables of results without these columns get none)."""
    metrics = [m for m in ("hd95", "nsd") if m in df.columns]
    return {f"{m}{tag}_mean": per_subject(df, sel, region, m).mean() for m in metrics}


def _row_labels(selectors: Sequence[Selector]) -> list[str]:
    """Attack names, with ε and iteration added only where a name would otherwise repeat."""
    labels = []
    for s in selectors:
        same_attack = [t for t in selectors if t["attack"] == s["attack"]]
        at_eps = [t for t in same_attack if same_eps(t["eps"], s["eps"])]
        parts = []
        if len({t["eps"] for t in same_attack}) > 1:
            parts.append(f"ε={s['eps']:g}")
        if len({t["iteration"] for t in at_eps}) > 1:
            parts.append(f"{s['iteration']} it.")
        labels.append(attack_label(s["attack"]) + (f" ({', '.join(parts)})" if parts else ""))
    if len(set(labels)) != len(labels):
        raise ValueError(f"rows repeat the same setting: {labels}")
    return labels


def _family_text(family: str, family_cols: Sequence[str]) -> str:
    if not family_cols:
        return f"all tests of {family}"
    return f"each {' × '.join(family_cols)} of {family}"


# --------------------------------------------------------------------------- writers


def to_markdown(table: Table) -> str:
    """Pipe Markdown table of ``table.display`` followed by its caption."""
    body = table.display.to_markdown(index=False, disable_numparse=True)
    return f"{body}\n\n{table.caption}\n"


def to_latex(table: Table) -> str:
    """LaTeX ``table`` environment (booktabs rules) of ``table.display`` with its caption."""
    styler = table.display.style.hide(axis="index")
    styler = styler.format(escape="latex").format_index(escape="latex", axis=1)
    text = styler.to_latex(
        caption=_latex_escape(table.caption),
        hrules=True,
        column_format="l" * table.display.shape[1],
    )
    for char, tex in LATEX_SYMBOLS.items():
        text = text.replace(char, tex)
    return text


def write_table(
    table: Table,
    *,
    csv: str | Path | None = None,
    markdown: str | Path | None = None,
    latex: str | Path | None = None,
    tests_csv: str | Path | None = None,
    html: str | Path | None = None,
) -> None:
    """Write the numeric CSV, Markdown, LaTeX, HTML and per-test CSV asked for, atomically."""
    outputs = [
        (csv, lambda p: table.numeric.to_csv(p, index=False)),
        (tests_csv, lambda p: table.tests.to_csv(p, index=False)),
        (latex, lambda p: p.write_text(to_latex(table), encoding="utf-8")),
    ]
    if all(path is None for path, _ in outputs) and markdown is None and html is None:
        raise ValueError("write_table: give at least one of csv, markdown, latex, html, tests_csv")
    for path, write in outputs:
        if path is not None:
            with atomic_path(path) as tmp:
                write(tmp)
    if markdown is not None or html is not None:
        write_document(to_markdown(table), markdown, html)


def _latex_escape(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text


def _check_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}; has {list(df.columns)}")
