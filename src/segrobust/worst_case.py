"""Worst-case robust Dice: per subject, the lowest Dice over every adversarial attack at each ε.

A defence is only as robust as the strongest attack against it (Carlini et al. 2019): a model
that resists FGSM but not PGD, or white-box attacks but not a transfer attack (masked
gradients), is not robust. Per (model, seed, subject, region, ε) the worst case is the minimum
Dice over the adversarial families evaluated at that ε — white-box and transfer, not the
realistic artefacts nor the random-sign control — each iterative attack at one iterate (the
Table 1 iterate for i-FGSM / ti-FGSM, ``iterations``; the final one otherwise). The number of
families differs between budgets (the FGSM sweeps cover many ε, the iterative attacks one), so
every row says which families it took the minimum over.
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segrobust.fileio import atomic_path

NOT_ADVERSARIAL = ("none", "random_sign")
REGIONS = ("WT", "TC", "ET")
WORST = "worst case"


def adversarial_rows(df: pd.DataFrame, iterations: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Adversarial rows of ``df`` (finite ε > 0, no severity, not :data:`NOT_ADVERSARIAL`),
    each (model, seed, attack, source, ε) at iteration ``iterations[attack]`` or its last."""
    iterations = dict(iterations or {})
    rows = df[
        ~df["attack"].isin(NOT_ADVERSARIAL) & np.isfinite(df["eps"]) & (df["eps"] > 0)
        & (df["severity"].isna() if "severity" in df.columns else True)
    ]  # fmt: skip
    rows = rows.assign(eps=rows["eps"].round(9))
    keys = ["model", "seed", "attack", "source_model", "eps"]
    last = rows.groupby(keys, dropna=False)["iteration"].transform("max")
    wanted = rows["attack"].map(iterations).fillna(last)
    picked = rows[rows["iteration"] == wanted]
    lost = set(rows.loc[rows["attack"].isin(iterations), "attack"]) - set(picked["attack"])
    if lost:
        raise ValueError(f"no rows at the requested iteration for {sorted(lost)}: {iterations}")
    return picked


def worst_case(df: pd.DataFrame, iterations: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Per (model, seed, subject, region, ε): the minimum Dice over adversarial families, the
    family that reached it (``attack``) and the families compared (``families``)."""
    rows = adversarial_rows(df, iterations)
    if rows.empty:
        raise ValueError("no adversarial rows (finite ε > 0) in the results table")
    keys = ["model", "seed", "subject", "region", "eps"]
    rows = rows.sort_values([*keys, "dice", "attack"])
    worst = rows.groupby(keys, sort=True).first().reset_index()[[*keys, "dice", "attack"]]
    families = rows.groupby(["model", "seed", "eps"])["attack"].agg(
        lambda a: ", ".join(sorted(set(a)))
    )
    return worst.join(families.rename("families"), on=["model", "seed", "eps"])


def worst_case_table(df: pd.DataFrame, iterations: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Mean ± sd over subjects of the worst-case Dice per model, seed, ε and region, plus
    ``seed == "all"``: each subject's worst case averaged over seeds first. ``most_damaging``:
    the family that reached the minimum for most subjects (per seed rows only)."""
    worst = worst_case(df, iterations)
    keys = ["model", "seed", "eps", "region"]
    per_seed = worst.groupby(keys).agg(
        n_subjects=("dice", "size"), mean=("dice", "mean"), sd=("dice", "std"),
        families=("families", "first"), most_damaging=("attack", lambda a: a.mode().iloc[0]),
    ).reset_index()  # fmt: skip
    averaged = worst.groupby(["model", "eps", "region", "subject"])["dice"].mean()
    pooled = averaged.groupby(["model", "eps", "region"]).agg(
        n_subjects="size", mean="mean", sd="std"
    )
    pooled = pooled.reset_index().assign(seed="all", most_damaging="")
    pooled["families"] = [
        ", ".join(sorted({f for s in worst.loc[(worst["model"] == m) & (worst["eps"] == e),
                                               "families"] for f in s.split(", ")}))
        for m, e in zip(pooled["model"], pooled["eps"], strict=True)
    ]  # fmt: skip
    out = pd.concat([per_seed.assign(seed=per_seed["seed"].astype(str)), pooled])
    out["region"] = pd.Categorical(out["region"], [*REGIONS, *sorted(set(out["region"]) -
                                                                     set(REGIONS))])  # fmt: skip
    return out.sort_values(["model", "seed", "region", "eps"]).reset_index(drop=True)[
        ["model", "seed", "eps", "region", "n_subjects", "mean", "sd", "families",
         "most_damaging"]
    ]  # fmt: skip


def worst_case_markdown(table: pd.DataFrame) -> str:
    """Markdown: per region, a row per model and seed ("all": averaged over seeds), a column
    per ε with mean ± sd over subjects; then the families compared at each ε."""
    lines = [
        "# Worst-case robust Dice",
        "",
        "Per subject the minimum Dice over every adversarial attack family evaluated at that ε "
        "(white-box and transfer; not realistic artefacts, not the random-sign control; "
        "i-FGSM / ti-FGSM at the Table 1 iterate, other iterative attacks at their last), then "
        'mean ± sd over subjects. Seed "all": each subject\'s worst case averaged over the '
        "training seeds first.",
    ]
    cells = table.assign(
        cell=[f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}"
              for m, s in zip(table["mean"], table["sd"], strict=True)],
    )  # fmt: skip
    present = set(table["region"])
    for region in [r for r in REGIONS if r in present] + sorted(present - set(REGIONS)):
        part = cells[cells["region"] == region]
        wide = part.pivot(index=["model", "seed"], columns="eps", values="cell").fillna("")
        wide.columns = [f"ε = {e:g}" for e in wide.columns]
        lines += ["", f"## {region}", "", wide.reset_index().to_markdown(
            index=False, disable_numparse=True)]  # fmt: skip
    fams = table[table["seed"] == "all"].drop_duplicates(["model", "eps"])
    lines += ["", "## Families compared", "",
              fams[["model", "eps", "families"]].to_markdown(index=False)]  # fmt: skip
    return "\n".join(lines) + "\n"


def worst_case_figure(
    df: pd.DataFrame, model: str, iterations: Mapping[str, int] | None = None
) -> Figure:
    """Dice vs ε of ``model``: one panel per region, a line per adversarial family and the
    worst case (thick black), each the mean over subjects of Dice averaged over seeds; the
    clean input at ε = 0 starts every line."""
    mine = df[df["model"] == model]
    if mine.empty:
        raise ValueError(f"model {model!r} not in the results table")
    rows = adversarial_rows(mine, iterations)
    worst = worst_case(mine, iterations).assign(attack=WORST)
    clean = mine[mine["attack"] == "none"].groupby(["region", "subject"])["dice"].mean()
    curves = pd.concat([rows, worst])
    per_subject = curves.groupby(["attack", "region", "eps", "subject"])["dice"].mean()
    means = per_subject.groupby(["attack", "region", "eps"]).mean()
    regions = [r for r in REGIONS if r in set(rows["region"])]
    fig = Figure(figsize=(3.2 * len(regions), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(regions), sharey=True, squeeze=False)[0]
    families = sorted(set(rows["attack"]))
    for ax, region in zip(axes, regions, strict=True):
        start = clean[region].mean() if region in clean.index.get_level_values(0) else np.nan
        for attack in [*families, WORST]:
            curve = means[attack][region] if (attack, region) in means.index.droplevel(2) else None
            if curve is None:
                continue
            x, y = np.r_[0.0, curve.index.to_numpy()], np.r_[start, curve.to_numpy()]
            style = ({"color": "black", "linewidth": 2.4, "zorder": 3} if attack == WORST
                     else {"linewidth": 1.0, "marker": "o", "markersize": 3})  # fmt: skip
            ax.plot(x, y, label=attack, **style)
        ax.set_title(region)
        ax.set_xscale("symlog", linthresh=0.01, linscale=0.5)  # the sweeps and ε = 0.5 both
        ticks = [
            t
            for t in (0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1)
            if t <= means.index.get_level_values("eps").max()
        ]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel("ε (fraction of max intensity)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Dice (mean over subjects)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5),
               frameon=False)  # fmt: skip
    fig.suptitle(f"{model}: worst case over attack families")
    return fig


def save_figure(fig: Figure, png: str | Path, pdf: str | Path, dpi: int = 200) -> None:
    """Write ``fig`` as PNG and PDF (no creation date: same figure, same file), atomically."""
    for path, meta in ((png, {}), (pdf, {"CreationDate": None})):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, metadata=meta, format=Path(path).suffix[1:])
