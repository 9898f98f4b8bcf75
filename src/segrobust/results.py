"""The one long-format results table: its columns, how its rows are made and selected, and
the display names of what they hold. Every table and figure is a selection from it.

Results schema (:data:`RESULT_COLUMNS`), one row per (model, attack, eps, iteration, subject,
region); image-quality values repeat on the three region rows of an input:

- ``model``: the evaluated model; ``seed``: its training seed (replicates differ only in it);
  ``source_model``: the model the perturbation was crafted on (equal to ``model`` for white-box
  attacks, different for transfer attacks, empty for no attack or realistic perturbations);
- ``attack``: the attack family (:mod:`segrobust.families`), the artefact of the realistic
  family, or :data:`CLEAN` ("none") for clean inputs;
- ``eps``: relative budget ε (0 for clean inputs, NaN where not applicable);
- ``iteration``: gradient steps that produced the input (0 clean or random start, 1 FGSM, k for
  iterate k of an iterative attack);
- ``severity``: level of a realistic perturbation (NaN for adversarial attacks);
- ``subject``, ``region`` (WT/TC/ET), ``dice``;
- ``hd95`` (mm), ``nsd`` (at ``metrics.nsd_tolerance_mm``): NaN when not computed, which is on
  the iterates of i-FGSM / ti-FGSM other than the one Table 1 reports (as SSIM: their cost);
- ``psnr``, ``ssim``, ``rmse``, ``linf``, ``l2`` (relative), ``linf_abs``, ``l2_abs``
  (absolute): NaN when not computed;
- ``precision`` (fp32 or bf16) and ``kernel`` (:func:`segrobust.models.kernels.kernel_name`):
  what ran.

**Selecting rows.** A selector is a mapping ``{column: value}`` that picks one condition,
e.g. ``{"model": "baseline", "attack": "fgsm", "eps": 0.05, "iteration": 1}`` (:func:`select`).
Budgets are matched with one tolerance (:func:`same_eps`: relative 1e-9, absolute 1e-12, so
``0.05`` and ``0.05 + 1e-13`` are one budget and ``1e-10`` is not ``0``) and grouped by one key
(:func:`eps_key`). An attack's *final iterate* is the largest ``iteration`` of its rows at one
setting (:func:`final_rows`, :func:`final_iteration`).
"""

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from segrobust.families import ARTEFACTS, FAMILIES

CLEAN = "none"  # the ``attack`` of clean inputs
RESULT_COLUMNS: list[str] = [
    "model",
    "seed",
    "attack",
    "eps",
    "iteration",
    "subject",
    "region",
    "dice",
    "hd95",
    "nsd",
    "psnr",
    "ssim",
    "rmse",
    "linf",
    "l2",
    "linf_abs",
    "l2_abs",
    "source_model",
    "severity",
    "precision",
    "kernel",
]
QUALITY_KEYS: tuple[str, ...] = ("psnr", "ssim", "rmse", "linf", "l2", "linf_abs", "l2_abs")
SURFACE_KEYS: tuple[str, ...] = ("hd95", "nsd")
REGION_LABELS: dict[str, str] = {"WT": "Whole Tumor", "TC": "Tumor Core", "ET": "Enhancing Tumor"}
# display names of the ``attack`` values, in table order
ATTACK_LABELS: dict[str, str] = {CLEAN: "No attack"}
for _name, _family in FAMILIES.items():  # an artefact family's rows name its artefacts
    ATTACK_LABELS |= ARTEFACTS if _family.kind == "artefact" else {_name: _family.label}
EPS_RTOL, EPS_ATOL = 1e-9, 1e-12  # one budget (same_eps)
EPS_DECIMALS = 9  # one budget's key (eps_key)
Selector = Mapping[str, Any]


# --------------------------------------------------------------------------- making rows


def result_rows(
    *,
    model: str,
    attack: str,
    subject: str,
    dice: Mapping[str, float],
    eps: float,
    iteration: int,
    quality: Mapping[str, float] | None = None,
    surface: Mapping[str, Mapping[str, float]] | None = None,
    source_model: str = "",
    severity: float = math.nan,
    seed: int = 0,
    precision: str = "fp32",
    kernel: str = "",
) -> list[dict]:
    """Rows of :data:`RESULT_COLUMNS` for one evaluated input: one per region in ``dice``.

    ``surface`` maps regions to their ``hd95`` and ``nsd`` (:func:`segrobust.surface.
    surface_regions`); without it (or for a region it lacks) they are NaN.
    """
    if not dice:
        raise ValueError("dice must hold at least one region")
    surface = dict(surface or {})
    if surface.keys() - dice.keys():
        raise ValueError(f"surface has regions {sorted(surface.keys() - dice.keys())} not in dice")
    for values in surface.values():
        if set(values) != set(SURFACE_KEYS):
            raise ValueError(f"surface values must have keys {SURFACE_KEYS}, got {sorted(values)}")
    if int(iteration) != iteration or iteration < 0:
        raise ValueError(f"iteration must be an integer >= 0, got {iteration}")
    quality = dict(quality or {})
    unknown = quality.keys() - set(QUALITY_KEYS)
    if unknown:
        raise ValueError(f"unknown quality keys {sorted(unknown)}; expected {QUALITY_KEYS}")
    shared = {
        "model": model,
        "seed": int(seed),
        "precision": precision,
        "kernel": kernel,
        "source_model": source_model,
        "attack": attack,
        "eps": float(eps),
        "iteration": int(iteration),
        "severity": float(severity),
        "subject": subject,
        **{key: float(quality.get(key, math.nan)) for key in QUALITY_KEYS},
    }
    nan = dict.fromkeys(SURFACE_KEYS, math.nan)
    return [
        {**shared, "region": region, "dice": float(d)}
        | {k: float(v) for k, v in surface.get(region, nan).items()}
        for region, d in dice.items()
    ]


def results_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    """Long-format results table with exactly :data:`RESULT_COLUMNS`, in that order."""
    rows = list(rows)
    for row in rows:
        unknown = row.keys() - set(RESULT_COLUMNS)
        if unknown:
            raise ValueError(f"row has columns outside RESULT_COLUMNS: {sorted(unknown)}")
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    missing = frame[["model", "attack", "subject", "region", "dice"]].isna().any()
    if missing.any():
        raise ValueError(f"rows lack required values in {missing[missing].index.tolist()}")
    return frame.astype(
        {"iteration": "int64", "seed": "int64"}
        | dict.fromkeys(["eps", "severity", "dice", *SURFACE_KEYS, *QUALITY_KEYS], "float64")
    )


# --------------------------------------------------------------------------- selecting rows


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number (not a bool)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def same_eps(values: Any, eps: float) -> np.ndarray:
    """Whether each of ``values`` is the budget ``eps`` (the module docstring's tolerance)."""
    return np.isclose(np.asarray(values, dtype=float), float(eps), rtol=EPS_RTOL, atol=EPS_ATOL)


def eps_key(eps: pd.Series) -> pd.Series:
    """``eps`` rounded to :data:`EPS_DECIMALS`: one value per budget, to group rows by."""
    return eps.round(EPS_DECIMALS)


def select(df: pd.DataFrame, where: Selector) -> pd.DataFrame:
    """Rows of ``df`` matching every ``column: value`` of ``where`` (real numbers with the
    tolerance of :func:`same_eps`)."""
    unknown = sorted(set(where) - set(df.columns))
    if unknown:
        raise ValueError(f"selector {dict(where)} names columns not in the table: {unknown}")
    mask = np.ones(len(df), dtype=bool)
    for col, value in where.items():
        column = df[col]
        if is_real(value) and pd.api.types.is_numeric_dtype(column):
            mask &= same_eps(column, value)
        else:
            mask &= (column == value).to_numpy()
    return df[mask]


def final_iteration(df: pd.DataFrame, where: Selector) -> int:
    """Largest ``iteration`` among the rows matching ``where`` (the attack's final step)."""
    rows = select(df, where)
    if rows.empty:
        raise ValueError(f"selector {dict(where)} matches no rows of the table")
    return int(rows["iteration"].max())


def final_rows(
    rows: pd.DataFrame, keys: Sequence[str], iterations: Mapping[str, int] | None = None
) -> pd.DataFrame:
    """The rows of each group ``keys`` at its final iterate, or at ``iterations[attack]`` for
    the attacks listed there."""
    last = rows.groupby(list(keys), dropna=False)["iteration"].transform("max")
    wanted = rows["attack"].map(dict(iterations or {})).fillna(last) if iterations else last
    return rows[rows["iteration"] == wanted]


def attack_selector(
    df: pd.DataFrame, model: str, attack: str, eps: float, iteration: int | None = None
) -> dict[str, Any]:
    """Selector of one model under one white-box attack setting; ``eps == 0`` is the clean input.

    ``iteration=None`` picks the attack's final iteration at that ``eps``. When the table has a
    ``source_model`` column, attacked rows are restricted to perturbations crafted on ``model``
    itself (transfer attacks excluded).
    """
    if eps == 0 or attack == CLEAN:
        return {"model": model, "attack": CLEAN, "eps": 0.0, "iteration": 0}
    where = {"model": model, "attack": attack, "eps": float(eps)}
    if "source_model" in df.columns:
        where["source_model"] = model
    it = final_iteration(df, where) if iteration is None else int(iteration)
    return where | {"iteration": it}


# --------------------------------------------------------------------------- display names


def attack_label(attack: str) -> str:
    """Display name of an attack key (``"ifgsm"`` → ``"i-FGSM"``)."""
    return ATTACK_LABELS.get(attack, attack.upper())


def model_label(model: str, reference_model: str = "baseline") -> str:
    """Display name of a model key in the paper's wording.

    ``baseline`` → ``No Defense``, ``distill_T20`` → ``Distillation (T=20)``,
    ``adv_eps0.05`` → ``Adversarial Training (ε=0.05)``, ``pgdadv_eps0.05`` → ``PGD Adversarial
    Training (ε=0.05)``, ``noise`` → ``Noise augmentation``; other keys are returned unchanged.
    """
    if model == reference_model:
        return "No Defense"
    if m := re.fullmatch(r"distill_T(.+)", model):
        return f"Distillation (T={m[1]})"
    if m := re.fullmatch(r"adv_eps(.+)", model):
        return f"Adversarial Training (ε={m[1]})"
    if m := re.fullmatch(r"pgdadv_eps(.+)", model):
        return f"PGD Adversarial Training (ε={m[1]})"
    if m := re.fullmatch(r"noise_?(.*)", model):
        return "Noise augmentation" + (f" ({m[1]})" if m[1] else "")
    return model


def model_sort_key(model: str) -> tuple[int, float, str]:
    """Order of defences in Table 2: distillation by T, adversarial training (FGSM, then PGD)
    by ε, noise, rest."""
    patterns = (r"distill_T(.+)", r"adv_eps(.+)", r"pgdadv_eps(.+)", r"noise_?(.*)")
    for rank, pattern in enumerate(patterns):
        if m := re.fullmatch(pattern, model):
            try:
                return rank, float(m[1] or 0), model
            except ValueError:
                return rank, np.inf, model
    return len(patterns), 0.0, model


def attack_sort_key(attack: str) -> tuple[int, str]:
    """Order of attacks in tables: clean input, the families in registry order (artefacts in
    the realistic family's place), then unknown keys by name."""
    order = list(ATTACK_LABELS)
    return (order.index(attack) if attack in order else len(order), attack)
