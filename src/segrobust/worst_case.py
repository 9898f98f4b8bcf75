"""Worst-case robust Dice: per subject, the lowest Dice over every adversarial attack at each ε.

A defence is only as robust as the strongest attack against it (Carlini et al. 2019): a model
that resists FGSM but not PGD, or white-box attacks but not a transfer attack (masked
gradients), is not robust. Per (model, seed, subject, region, ε) the worst case is the minimum
Dice over the adversarial families evaluated at that ε — white-box and transfer, not the
realistic artefacts nor the random-sign control (:mod:`segrobust.families`) — each iterative
attack at one iterate (the
Table 1 iterate for i-FGSM / ti-FGSM, ``iterations``; the final one otherwise). The number of
families differs between budgets (the FGSM sweeps cover many ε, the iterative attacks one), so
every row says which families it took the minimum over.
"""

from collections.abc import Mapping

import numpy as np
import pandas as pd

from segrobust.families import names
from segrobust.labels import REGIONS as _REGIONS
from segrobust.results import eps_key, final_rows

ADVERSARIAL: tuple[str, ...] = tuple(names(adversarial=True))
REGIONS: tuple[str, ...] = tuple(_REGIONS)
WORST = "worst case"


def adversarial_rows(df: pd.DataFrame, iterations: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Rows of ``df`` of the :data:`ADVERSARIAL` families at a finite ε > 0, each (model, seed,
    attack, source, ε) at iteration ``iterations[attack]`` or its last."""
    iterations = dict(iterations or {})
    rows = df[df["attack"].isin(ADVERSARIAL) & np.isfinite(df["eps"]) & (df["eps"] > 0)]
    rows = rows.assign(eps=eps_key(rows["eps"]))
    picked = final_rows(rows, ["model", "seed", "attack", "source_model", "eps"], iterations)
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
