"""Curve and summary figures of the paper (Figs. 2-4, Supplemental Fig. 2) and the extra
robustness figures (strong attacks, realistic artefacts, each model's worst case); the slice
montages (Figs. 1 and 5) are in :mod:`segrobust.montages`.

Every quantitative figure reads the one long-format results table of
:mod:`segrobust.metrics` (columns ``model, source_model, attack, eps, iteration, severity,
subject, region, dice, psnr, ...``) and draws per-condition means over subjects with intervals
(``error="boot95"``, the default: percentile bootstrap 95% CI of the mean over subjects, which
stays inside the range of the data, so a Dice interval never leaves [0, 1]; ``"sd"``: mean ± sample
sd, ``"ci95"``: t-based 95% CI, both of which can; the y label says which, and how many subjects).
A subject's value is its mean over the training seeds; with several seeds the curve figures draw
one thin line per seed (its mean over subjects) behind the seed-averaged mean. Figures of
per-model distributions show the distribution itself: boxes and one point per subject.

Styling is fixed so figures stay comparable: a model's colour and marker depend only on the set
of models in the table (:func:`model_styles`), so figures drawn from one table agree; regions and
tumour classes have their own colour-blind-safe colours (Okabe-Ito palette). Figures are built
without pyplot on an Agg canvas (no display, nothing left in pyplot's figure registry);
:func:`save_figure` writes PNG and PDF atomically.

A figure whose data is missing (a model, attack, region or perturbation without rows) raises a
ValueError naming what is missing rather than drawing an empty plot.
"""

import functools
import math
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from scipy import stats

from segrobust.families import ARTEFACTS, names, of, single_step_first
from segrobust.fileio import atomic_path
from segrobust.results import (
    CLEAN,
    REGION_LABELS,
    attack_label,
    final_rows,
    model_label,
    model_sort_key,
    same_eps,
)
from segrobust.statistics import bootstrap_mean_ci
from segrobust.worst_case import WORST as WORST_CASE
from segrobust.worst_case import adversarial_rows, worst_case

ErrorKind = Literal["boot95", "sd", "ci95"]
ERROR_KINDS: tuple[str, ...] = ("boot95", "sd", "ci95")
_ERROR_TEXT = {"boot95": "mean, bootstrap 95% CI", "sd": "mean ± sd", "ci95": "mean, t 95% CI"}
SEED_LINE = {"linewidth": 0.6, "alpha": 0.55, "marker": None}
SEED_NOTE = "thin lines: individual training seeds"

REGION_ORDER: tuple[str, ...] = ("WT", "TC", "ET")
REALISTIC_KINDS: tuple[str, ...] = tuple(ARTEFACTS)
# strong, transfer and temperature-aware attacks: white-box ones (single-step, then iterative)
# beside plain FGSM at one ε (the temperature-aware attack's reference), then transfer ones
ROBUSTNESS_REFERENCE = "fgsm"
ROBUSTNESS_ATTACKS: tuple[str, ...] = tuple(
    sorted(single_step_first(names(robustness=True)), key=lambda a: of(a).kind == "transfer")
)
TRANSFER: tuple[str, ...] = tuple(names(kind="transfer"))
ITERATES: tuple[str, ...] = tuple(names(iterates=True))  # i-FGSM, ti-FGSM: Fig. 2

# Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}
REGION_COLOURS: dict[str, str] = {
    "WT": OKABE_ITO["green"],
    "TC": OKABE_ITO["blue"],
    "ET": OKABE_ITO["vermillion"],
}
REGION_MARKERS: dict[str, str] = {"WT": "o", "TC": "s", "ET": "^"}
# Per model family: key pattern, colours (cycled, then line styles change), marker.
_FAMILIES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        r"distill_T.+",
        (OKABE_ITO["sky_blue"], OKABE_ITO["blue"], OKABE_ITO["green"], "#1B3A6B"),
        "s",
    ),
    (
        r"adv_eps.+",
        (OKABE_ITO["orange"], OKABE_ITO["vermillion"], OKABE_ITO["purple"], "#8C510A"),
        "^",
    ),
    (r"pgdadv_eps.+", ("#5E3C99", "#B2ABD2", "#2D004B"), "v"),
    (r"noise_?.*", ("#7F7F7F", "#B0B0B0"), "*"),
    (r".*", ("#6A3D9A", "#B15928", "#33A02C", "#FB9A99"), "D"),
)
_LINESTYLES = ("-", "--", ":", "-.")

STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.3,
    "lines.markersize": 4.5,
    "errorbar.capsize": 2,
    "pdf.fonttype": 42,  # embed TrueType: text stays editable and searchable
    "svg.fonttype": "none",
}
FULL_WIDTH = 7.2  # inches: a two-column page
HALF_WIDTH = 3.5
MIN_DPI = 200
EPS_LABEL = "{attack} ε\n(fraction of max intensity)"  # two lines: fits under each panel


# --------------------------------------------------------------------------- styles


def model_styles(models: Iterable[str], reference_model: str = "baseline") -> dict[str, dict]:
    """Colour, marker and line style of each model, for ``plot``/``errorbar``/``bar`` kwargs.

    The reference model is black with circles; distilled models are cool colours with squares,
    adversarially trained ones warm colours with triangles, noise augmentation grey with stars
    (as in the paper's Fig. 4). Within a family, models are ordered by ``model_sort_key``, so the
    same set of models always gets the same styles.
    """
    models = sorted(set(models), key=model_sort_key)
    styles = {}
    if reference_model in models:
        styles[reference_model] = {"color": OKABE_ITO["black"], "marker": "o", "linestyle": "-"}
    for pattern, colours, marker in _FAMILIES:
        family = [m for m in models if m not in styles and re.fullmatch(pattern, m)]
        for i, m in enumerate(family):
            styles[m] = {
                "color": colours[i % len(colours)],
                "marker": marker,
                "linestyle": _LINESTYLES[(i // len(colours)) % len(_LINESTYLES)],
            }
    return styles


def ordered_models(models: Iterable[str], reference_model: str = "baseline") -> list[str]:
    """Models with the reference first, then in ``model_sort_key`` order (as in Table 2)."""
    models = set(models)
    rest = sorted(models - {reference_model}, key=model_sort_key)
    return [reference_model, *rest] if reference_model in models else rest


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A new Figure on an Agg canvas, with constrained layout."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def with_style(build: Callable[..., Figure]) -> Callable[..., Figure]:
    """Run a figure builder under :data:`STYLE`.

    Tick labels are created lazily at draw time, outside the style context, so their size is
    also set explicitly on every axes.
    """

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with mpl.rc_context(STYLE):
            fig = build(*args, **kwargs)
        for ax in fig.axes:
            ax.tick_params(labelsize=STYLE["xtick.labelsize"])
        return fig

    return wrapper


# --------------------------------------------------------------------------- data


def summarise(
    df: pd.DataFrame,
    by: Sequence[str],
    metric: str = "dice",
    error: ErrorKind = "boot95",
    *,
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    """Mean, interval (``low``, ``high``) and subject count ``n`` of ``metric`` per group ``by``.

    Rows of one subject within a group (its region rows that repeat one input's PSNR, its
    training seeds) are averaged first, so ``n`` counts subjects. Non-finite values (the PSNR of
    an unperturbed input is inf) are dropped. ``error="boot95"``: percentile bootstrap 95% CI of
    the mean (:func:`segrobust.statistics.bootstrap_mean_ci`, ``n_boot`` resamples, seeded per
    group from ``seed`` and the group's key; the workflow passes ``statistics.n_boot`` and
    ``seed``); ``"sd"``: mean ± sample sd (ddof=1); ``"ci95"``: t-based 95% CI of the mean.
    Groups with one subject get NaN bounds.
    """
    _check_choice(error, ERROR_KINDS, "error")
    per_subject = _per_subject(df, by, metric)
    grouped = per_subject.groupby(level=list(range(len(by))), dropna=False, sort=False)
    out = grouped.agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    if error == "boot95":
        bounds = [
            bootstrap_mean_ci(
                values.to_numpy(float), n_boot=n_boot, seed=[seed, zlib.crc32(repr(key).encode())]
            )
            for key, values in grouped
        ]
        out["low"], out["high"] = np.array(bounds, dtype=float).reshape(-1, 2).T
    else:
        half = out["std"]
        if error == "ci95":
            dof = (out["n"] - 1).where(out["n"] > 1)
            half = stats.t.ppf(0.975, dof) * out["std"] / np.sqrt(out["n"])
        out["low"], out["high"] = out["mean"] - half, out["mean"] + half
    return out[["mean", "low", "high", "n"]].reset_index()


def seed_means(df: pd.DataFrame, by: Sequence[str], metric: str = "dice") -> pd.DataFrame | None:
    """Mean over subjects of ``metric`` per group ``by`` and training ``seed`` (columns
    ``*by, seed, mean``), or None when the table has fewer than two seeds."""
    if "seed" not in df.columns or df["seed"].nunique() < 2:
        return None
    per_seed = _per_subject(df, [*by, "seed"], metric)
    means = per_seed.groupby(level=list(range(len(by) + 1)), dropna=False, sort=False).mean()
    return means.rename("mean").reset_index()


def _per_subject(df: pd.DataFrame, by: Sequence[str], metric: str) -> pd.Series:
    """Finite ``metric`` values averaged per group ``by`` and subject."""
    _require_columns(df, [*by, "subject", metric])
    values = df[[*by, "subject", metric]].replace([np.inf, -np.inf], np.nan).dropna(subset=[metric])
    if values.empty:
        raise ValueError(f"no finite {metric!r} values to summarise")
    return values.groupby([*by, "subject"], dropna=False, sort=False)[metric].mean()


def _require_columns(df: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in df.columns]
    if missing:
        raise ValueError(f"results table lacks columns {missing}; has {list(df.columns)}")


def _check_choice(value: Any, choices: Sequence[Any], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _source(df: pd.DataFrame) -> pd.Series:
    if "source_model" not in df.columns:
        return pd.Series("", index=df.index)
    return df["source_model"].fillna("").astype(str)


def _white_box(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose perturbation was crafted on the evaluated model itself (or none)."""
    src = _source(df)
    return df[(src == "") | (src == df["model"])]


def _rows(df: pd.DataFrame, attack: str, models: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of one attack (optionally of some models); ValueError naming what is missing."""
    rows = df[df["attack"] == attack]
    if rows.empty:
        raise ValueError(
            f"no rows for attack {attack!r} in the results table "
            f"(attacks present: {sorted(df['attack'].unique())})"
        )
    if models is not None:
        missing = [m for m in models if m not in set(rows["model"])]
        if missing:
            raise ValueError(f"no {attack!r} rows for models {missing}")
        rows = rows[rows["model"].isin(models)]
    return rows


def _check_models(df: pd.DataFrame, models: Sequence[str]) -> None:
    if not models:
        raise ValueError("no models to plot")
    missing = [m for m in models if m not in set(df["model"])]
    if missing:
        raise ValueError(
            f"models {missing} have no rows in the results table "
            f"(models present: {sorted(df['model'].unique())})"
        )


def _check_regions(df: pd.DataFrame, regions: Sequence[str]) -> None:
    if not regions:
        raise ValueError("regions must name at least one region")
    missing = [r for r in regions if r not in set(df["region"])]
    if missing:
        raise ValueError(f"regions {missing} have no rows in the results table")


def _single_eps(rows: pd.DataFrame, eps: float | None, what: str) -> float:
    """The one ε of ``rows`` (or check that ``eps`` is present); ValueError otherwise."""
    present = np.unique(rows["eps"].dropna().to_numpy(float))
    if eps is None:
        if len(present) != 1:
            raise ValueError(
                f"{what} has rows at several eps {present.tolist()}: pass eps to pick one"
            )
        return float(present[0])
    if not same_eps(present, eps).any():
        raise ValueError(f"{what} has no rows at eps={eps:g} (present: {present.tolist()})")
    return float(eps)


def _at_eps(rows: pd.DataFrame, eps: float) -> pd.DataFrame:
    return rows[same_eps(rows["eps"], eps)]


def _clean_rows(df: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    rows = df[(df["attack"] == CLEAN) & df["model"].isin(models)]
    missing = [m for m in models if m not in set(rows["model"])]
    if missing:
        raise ValueError(f"no clean ({CLEAN!r}) rows for models {missing}")
    return rows


def _n_text(summary: pd.DataFrame) -> str:
    lo, hi = int(summary["n"].min()), int(summary["n"].max())
    return f"n = {lo} subjects" if lo == hi else f"n = {lo}–{hi} subjects"


def _metric_label(name: str, error: ErrorKind, summary: pd.DataFrame, unit: str = "") -> str:
    """Y label stating what the points and error bars are, e.g.
    'Dice (mean, bootstrap 95% CI, n = 10 subjects)'."""
    unit = f"{unit}; " if unit else ""
    return f"{name}\n({unit}{_ERROR_TEXT[error]},\n{_n_text(summary)})"


# --------------------------------------------------------------------------- drawing


def _dodged(x: np.ndarray, index: int, count: int, dodge: float, step: float) -> np.ndarray:
    """Shift series ``index`` of ``count`` sideways so error bars at one x do not overlap."""
    if count < 2 or dodge == 0:
        return x
    return x + (index - (count - 1) / 2) * dodge * step / (count - 1)


def _min_step(values: Iterable[float]) -> float:
    x = np.unique(np.asarray(list(values), dtype=float))
    return float(np.diff(x).min()) if len(x) > 1 else 1.0


def _error_lines(
    ax: Axes,
    summary: pd.DataFrame,
    x: str,
    series: str,
    order: Sequence[str],
    styles: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
    dodge: float,
    seeds: pd.DataFrame | None = None,
) -> None:
    """One errorbar line per ``series`` value of ``summary`` (columns x, series, mean, low,
    high), and behind it one thin line per training seed of ``seeds`` (columns x, series, seed,
    mean; see :func:`seed_means`) in the same colour."""
    step = _min_step(summary[x])
    present = [s for s in order if s in set(summary[series])]
    for i, name in enumerate(present):
        part = summary[summary[series] == name].sort_values(x)
        style = dict(styles[name])
        if style.get("marker") == "*":
            style["markersize"] = 8
        if seeds is not None:
            mine = seeds[seeds[series] == name]
            for _, line in mine.groupby("seed"):
                line = line.sort_values(x)
                ax.plot(
                    _dodged(line[x].to_numpy(float), i, len(present), dodge, step),
                    line["mean"],
                    color=style.get("color"),
                    linestyle=style.get("linestyle", "-"),
                    zorder=1.5,
                    **SEED_LINE,
                )
        mean = part["mean"].to_numpy(float)
        below = (mean - part["low"].to_numpy(float)).clip(min=0)
        above = (part["high"].to_numpy(float) - mean).clip(min=0)
        ax.errorbar(
            _dodged(part[x].to_numpy(float), i, len(present), dodge, step),
            mean,
            yerr=np.nan_to_num(np.vstack([below, above])),
            label=labels[name],
            **style,
        )


def _set_dice_axis(ax: Axes) -> None:
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_locator(mpl.ticker.MultipleLocator(0.2))


def _legend(fig: Figure, ax: Axes, loc: str = "outside lower center", seeds: bool = False) -> None:
    """One figure legend of ``ax``'s entries, at most three columns wide so it fits the page;
    with ``seeds`` an entry saying what the thin lines are."""
    handles, labels = ax.get_legend_handles_labels()
    if seeds:
        handles.append(_seed_handle())
        labels.append(SEED_NOTE)
    ncols = len(labels) if len(labels) <= 4 else 3
    fig.legend(handles, labels, loc=loc, ncols=ncols, frameon=False)


def _seed_handle() -> Line2D:
    return Line2D([], [], color="0.35", **SEED_LINE)


# --------------------------------------------------------------------------- paper figures


@with_style
def figure2(
    df: pd.DataFrame,
    *,
    model: str = "baseline",
    attacks: Sequence[str] = ITERATES,
    eps: float | None = None,
    regions: Sequence[str] = REGION_ORDER,
    error: ErrorKind = "boot95",
    n_boot: int,
    seed: int,
    alphas: Mapping[str, float] | None = None,
) -> Figure:
    """Paper's Fig. 2: Dice vs number of iterations, one panel per attack, a line per region.

    Iteration 0 is the clean input: the attack's own iteration-0 rows if it has them, else the
    model's clean (attack "none") rows. ``eps=None`` takes the attack's only ε. With the step
    sizes ``alphas`` (per attack) a dotted line marks the iteration where α·N reaches ε: later
    iterates stay on the ε ball's surface.
    """
    summary, seeds = _iteration_summary(df, model, attacks, eps, "dice", error, by_region=True,
                                        n_boot=n_boot, seed=seed)  # fmt: skip
    _check_regions(summary, regions)
    fig = new_figure((FULL_WIDTH, 2.9))
    axes = fig.subplots(1, len(attacks), sharey=True, squeeze=False)[0]
    styles = {
        r: {"color": REGION_COLOURS.get(r), "marker": REGION_MARKERS.get(r, "o")} for r in regions
    }
    labels = {r: f"{REGION_LABELS.get(r, r)} ({r})" for r in regions}
    for ax, attack in zip(axes, attacks, strict=True):
        part = summary[summary["attack"] == attack]
        mine = None if seeds is None else seeds[seeds["attack"] == attack]
        _error_lines(ax, part, "iteration", "region", regions, styles, labels, 0.3, mine)
        ax.set_title(f"{attack_label(attack)} (ε = {part['eps'].iloc[0]:g}, {model_label(model)})")
        if alphas and attack in alphas:
            spent = math.ceil(part["eps"].iloc[0] / alphas[attack] - 1e-9)
            ax.axvline(spent, color="0.4", linestyle=":", linewidth=1)
            ax.annotate(
                "α·N = ε", (spent, 0.02), xytext=(3, 0), textcoords="offset points",
                xycoords=("data", "axes fraction"), fontsize="small", color="0.3",
            )  # fmt: skip
        ax.set_xlabel("iterations")
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        _set_dice_axis(ax)
    axes[0].set_ylabel(_metric_label("Dice", error, summary))
    _legend(fig, axes[0], seeds=seeds is not None)
    return fig


@with_style
def supplementary_figure2(
    df: pd.DataFrame,
    *,
    model: str = "baseline",
    attacks: Sequence[str] = ITERATES,
    eps: float | None = None,
    metric: Literal["psnr", "ssim", "rmse"] = "psnr",
    error: ErrorKind = "boot95",
    n_boot: int,
    seed: int,
) -> Figure:
    """Supplemental Fig. 2: input quality (PSNR by default) vs iterations, a line per attack.

    Quality is of the perturbed input against the clean one, one value per subject; the clean
    input itself (PSNR = inf) is not drawn.
    """
    _check_choice(metric, ("psnr", "ssim", "rmse"), "metric")
    summary, seeds = _iteration_summary(df, model, attacks, eps, metric, error, by_region=False,
                                        n_boot=n_boot, seed=seed)  # fmt: skip
    summary = summary[summary["iteration"] > 0]
    seeds = None if seeds is None else seeds[seeds["iteration"] > 0]
    if summary.empty:
        raise ValueError(f"no finite {metric!r} values of attacked inputs for model {model!r}")
    palette = (OKABE_ITO["blue"], OKABE_ITO["vermillion"], OKABE_ITO["green"], OKABE_ITO["orange"])
    markers = ("o", "s", "^", "D")
    styles = {a: {"color": palette[i % 4], "marker": markers[i % 4]} for i, a in enumerate(attacks)}
    labels = {
        a: f"{attack_label(a)} (ε = {summary.loc[summary['attack'] == a, 'eps'].iloc[0]:g})"
        for a in attacks
        if a in set(summary["attack"])
    }
    fig = new_figure((HALF_WIDTH, 2.8))
    ax = fig.subplots()
    _error_lines(ax, summary, "iteration", "attack", attacks, styles, labels, 0.2, seeds)
    name, unit = {"psnr": ("PSNR", "dB"), "ssim": ("SSIM", ""), "rmse": ("RMSE", "rel.")}[metric]
    ax.set_ylabel(_metric_label(name, error, summary, unit))
    ax.set_xlabel("iterations")
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    ax.set_title(f"Input quality, {model_label(model)}")
    handles, texts = ax.get_legend_handles_labels()
    if seeds is not None:
        handles, texts = [*handles, _seed_handle()], [*texts, SEED_NOTE]
    ax.legend(handles, texts, loc="upper right")  # PSNR falls from the upper left
    return fig


def _iteration_summary(
    df: pd.DataFrame,
    model: str,
    attacks: Sequence[str],
    eps: float | None,
    metric: str,
    error: ErrorKind,
    by_region: bool,
    n_boot: int,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Summary over subjects per (attack, eps, iteration[, region]) of one model's iterates, and
    the per-seed means (None with one seed)."""
    _require_columns(df, ["model", "attack", "eps", "iteration", "subject", "region", metric])
    if not attacks:
        raise ValueError("attacks must name at least one attack")
    _check_models(df, [model])
    frames = []
    for attack in attacks:
        rows = _white_box(_rows(df, attack, [model]))
        if rows.empty:
            raise ValueError(f"no {attack!r} rows crafted on model {model!r} itself")
        e = _single_eps(rows, eps, f"attack {attack!r} on model {model!r}")
        rows = _at_eps(rows, e)
        if not (rows["iteration"] == 0).any():
            rows = pd.concat([_clean_rows(df, [model]), rows])
        if rows["iteration"].nunique() < 2:
            raise ValueError(f"attack {attack!r} on model {model!r} has a single iteration")
        frames.append(rows.assign(attack=attack, eps=e))
    by = ["attack", "eps", "iteration", *(["region"] if by_region else [])]
    data = pd.concat(frames)
    intervals = summarise(data, by, metric, error, n_boot=n_boot, seed=seed)
    return intervals, seed_means(data, by, metric)


@with_style
def dice_vs_eps(
    df: pd.DataFrame,
    models: Sequence[str],
    *,
    attack: str = "fgsm",
    regions: Sequence[str] = REGION_ORDER,
    reference_model: str = "baseline",
    title: str = "",
    error: ErrorKind = "boot95",
    n_boot: int,
    seed: int,
) -> Figure:
    """Dice vs attack ε, one panel per region, a line per model (the paper's Figs. 3 and 4).

    ε = 0 is each model's clean input; iterative attacks are drawn at their final iterate.
    Only perturbations crafted on the evaluated model itself are used.
    """
    _require_columns(df, ["model", "attack", "eps", "iteration", "subject", "region", "dice"])
    _check_models(df, models)
    _check_regions(df, regions)
    attacked = _white_box(_rows(df, attack, models))
    attacked = final_rows(attacked[attacked["eps"] > 0], ["model", "eps"])
    if attacked.empty:
        raise ValueError(f"no {attack!r} rows with eps > 0 for models {list(models)}")
    rows = pd.concat([_clean_rows(df, models).assign(eps=0.0), attacked])
    rows = rows[rows["region"].isin(regions)]
    summary = summarise(rows, ["model", "eps", "region"], "dice", error, n_boot=n_boot, seed=seed)
    seeds = seed_means(rows, ["model", "eps", "region"])
    styles = model_styles(df["model"].unique(), reference_model)
    labels = {m: model_label(m, reference_model) for m in models}
    order = ordered_models(models, reference_model)
    fig = new_figure((FULL_WIDTH, 3.0))
    axes = fig.subplots(1, len(regions), sharey=True, squeeze=False)[0]
    for i, (ax, region) in enumerate(zip(axes, regions, strict=True)):
        part = summary[summary["region"] == region]
        mine = None if seeds is None else seeds[seeds["region"] == region]
        _error_lines(ax, part, "eps", "model", order, styles, labels, 0.4, mine)
        ax.set_title(f"({chr(97 + i)}) {REGION_LABELS.get(region, region)}")
        ax.set_xlabel(EPS_LABEL.format(attack=attack_label(attack)))
        _set_dice_axis(ax)
    axes[0].set_ylabel(_metric_label("Dice", error, summary))
    if title:
        fig.suptitle(title)
    _legend(fig, axes[0], seeds=seeds is not None)
    return fig


def _family(df: pd.DataFrame, pattern: str, what: str, reference_model: str) -> list[str]:
    family = [m for m in df["model"].unique() if re.fullmatch(pattern, m)]
    if not family:
        raise ValueError(f"no {what} models (model names matching {pattern!r}) in the table")
    return ordered_models([reference_model, *family], reference_model)


def figure3(df: pd.DataFrame, *, reference_model: str = "baseline", **kwargs: Any) -> Figure:
    """Paper's Fig. 3: distillation, Dice vs FGSM ε for the baseline (T = 1) and each T."""
    models = _family(df, r"distill_T.+", "distillation (distill_T*)", reference_model)
    return dice_vs_eps(
        df, models, reference_model=reference_model, title="Defensive distillation", **kwargs
    )


def figure4(df: pd.DataFrame, *, reference_model: str = "baseline", **kwargs: Any) -> Figure:
    """Paper's Fig. 4: adversarial training per training ε, plus noise augmentation (stars)
    and, beyond the paper, PGD adversarial training (triangles down) where trained."""
    models = _family(
        df, r"(?:pgd)?adv_eps.+|noise_?.*", "adversarial training (adv_eps*)", reference_model
    )
    if not any(m.startswith("adv_eps") for m in models):
        raise ValueError("no adversarial training models (adv_eps*) in the table")
    return dice_vs_eps(
        df, models, reference_model=reference_model, title="Adversarial training", **kwargs
    )


# --------------------------------------------------------------------------- beyond the paper


@with_style
def robustness_figure(
    df: pd.DataFrame,
    *,
    attacks: Sequence[str] | None = None,
    eps: float | None = None,
    models: Sequence[str] | None = None,
    regions: Sequence[str] = REGION_ORDER,
    reference_model: str = "baseline",
    transfer_source: str | None = None,
    include_clean: bool = True,
) -> Figure:
    """Robust Dice of every model under strong, transfer and temperature-aware attacks.

    The distribution itself, not a mean and an error bar: per group (clean input, then each
    attack) one box per model (quartiles and median, whiskers at the range) with one point per
    subject (its Dice averaged over the training seeds) and the mean as a white diamond; one
    panel per region.
    ``attacks=None`` takes those of :data:`ROBUSTNESS_ATTACKS` present, after plain FGSM
    (:data:`ROBUSTNESS_REFERENCE`) when ``eps`` picks one budget of its sweep.
    Transfer attacks (:mod:`segrobust.families`) use perturbations crafted on
    ``transfer_source`` (default: the reference model); the others only perturbations crafted
    on the evaluated model. Iterative
    attacks are drawn at their final iterate; ``eps=None`` takes each attack's only ε. A model
    without rows for an attack leaves a gap.
    """
    _require_columns(df, ["model", "attack", "eps", "iteration", "subject", "region", "dice"])
    _check_regions(df, regions)
    if attacks is None:
        present = set(df["attack"])
        attacks = [a for a in ROBUSTNESS_ATTACKS if a in present]
        if not attacks:
            raise ValueError(
                f"no strong, transfer or temperature-aware attack rows ({list(ROBUSTNESS_ATTACKS)})"
                " in the results table"
            )
        if eps and ROBUSTNESS_REFERENCE in present:
            attacks = [ROBUSTNESS_REFERENCE, *attacks]
    models = ordered_models(df["model"].unique() if models is None else models, reference_model)
    _check_models(df, models)
    source = transfer_source or reference_model
    frames, groups = [], []
    if include_clean:
        frames.append(_clean_rows(df, models).assign(group="Clean input"))
        groups.append("Clean input")
    for attack in attacks:
        rows = _rows(df, attack)
        rows = rows[rows["model"].isin(models)]
        if attack in TRANSFER:
            rows = rows[_source(rows) == source]
            where = f" crafted on {source!r}"
        else:
            rows = _white_box(rows)
            where = ""
        if rows.empty:
            raise ValueError(f"no {attack!r} rows{where} for models {models}")
        e = _single_eps(rows, eps, f"attack {attack!r}")
        rows = final_rows(_at_eps(rows, e), ["model"])
        label = attack_label(attack) + (
            f"\nfrom {model_label(source, reference_model)}" if where else ""
        )
        label += f"\nε = {e:g}"
        frames.append(rows.assign(group=label))
        groups.append(label)
    data = pd.concat(frames)
    values = _per_subject(data[data["region"].isin(regions)], ["region", "group", "model"], "dice")
    styles = model_styles(df["model"].unique(), reference_model)
    fig = new_figure((FULL_WIDTH, 1.4 + 2.1 * len(regions)))
    axes = fig.subplots(len(regions), 1, sharex=True, squeeze=False)[:, 0]
    width = 0.8 / len(models)
    x = np.arange(len(groups))
    jitter = np.random.default_rng(0)  # horizontal spread of the points only
    cells = {key: v.to_numpy(float) for key, v in values.groupby(level=[0, 1, 2], sort=False)}
    counts = values.groupby(level=[0, 1, 2], sort=False).size().rename("n").reset_index()
    for ax, region in zip(axes, regions, strict=True):
        for j, m in enumerate(models):
            colour = styles[m]["color"]
            for k, group in enumerate(groups):
                pos = x[k] + (j - (len(models) - 1) / 2) * width
                v = cells.get((region, group, m), np.array([]))
                if v.size == 0:  # not evaluated: say so
                    ax.text(pos, 0.02, "n/a", rotation=90, ha="center", va="bottom", color="0.35")
                    continue
                _box(ax, v, pos, width * 0.8, colour)
                spread = jitter.uniform(-0.25, 0.25, v.size) * width
                ax.scatter(
                    pos + spread, v, s=4, color=colour, alpha=0.8, linewidths=0, zorder=3,
                    gid=f"subjects:{m}:{k}",
                )  # fmt: skip
                ax.plot(pos, v.mean(), gid=f"mean:{m}:{k}", **_MEAN_MARKER)
        ax.set_title(f"{REGION_LABELS.get(region, region)} ({region})")
        n = _n_text(counts[counts["region"] == region])
        ax.set_ylabel(f"Dice per subject\n(mean over seeds;\n{n})")
        ax.grid(axis="x", visible=False)
        _set_dice_axis(ax)
        ax.set_ylim(-0.03, 1.03)  # points at exactly 0 or 1 stay visible
    handles = [
        Patch(facecolor=mpl.colors.to_rgba(styles[m]["color"], 0.3), edgecolor=styles[m]["color"])
        for m in models
    ]
    labels = [model_label(m, reference_model) for m in models]
    handles.append(Line2D([], [], linestyle="none", **_MEAN_MARKER))
    labels.append("mean (dots: subjects)")
    axes[-1].set_xticks(x, groups)
    fig.legend(handles, labels, loc="outside upper center", ncols=3, frameon=False)
    return fig


_MEAN_MARKER: dict[str, Any] = {
    "marker": "D",
    "markersize": 3.5,
    "markerfacecolor": "white",
    "markeredgecolor": "black",
    "markeredgewidth": 0.6,
    "zorder": 4,
}


def _box(ax: Axes, values: np.ndarray, pos: float, width: float, colour: str) -> None:
    """One box (quartiles, median) with whiskers at the range of ``values``, at ``pos``."""
    line = {"color": colour, "linewidth": 0.8}
    ax.boxplot(
        [values],
        positions=[pos],
        widths=width,
        whis=(0, 100),
        showfliers=False,
        patch_artist=True,
        manage_ticks=False,
        boxprops={
            "facecolor": mpl.colors.to_rgba(colour, 0.3),
            "edgecolor": colour,
            "linewidth": 0.8,
        },
        medianprops={"color": "black", "linewidth": 1.0},
        whiskerprops=line,
        capprops=line,
    )


@with_style
def realistic_figure(
    df: pd.DataFrame,
    *,
    kinds: Sequence[str] | None = None,
    regions: Sequence[str] = REGION_ORDER,
    models: Sequence[str] | None = None,
    reference_model: str = "baseline",
    error: ErrorKind = "boot95",
    n_boot: int,
    seed: int,
) -> Figure:
    """Dice vs severity of each realistic artefact: a row of panels per region, a panel per
    artefact.

    ``kinds=None`` takes those of :data:`REALISTIC_KINDS` present in the table. Severity 0 is the
    clean input: when an artefact has no severity-0 rows, the model's clean rows are drawn there.
    Each region's row shares a y axis fitted to its data (the differences between models are
    what the figure shows); x ticks sit at the severities present.
    """
    _require_columns(df, ["model", "attack", "severity", "subject", "region", "dice"])
    _check_regions(df, regions)
    if kinds is None:
        kinds = [k for k in REALISTIC_KINDS if k in set(df["attack"])]
        if not kinds:
            raise ValueError(
                f"no realistic perturbation rows (attack in {list(REALISTIC_KINDS)}) in the "
                "results table"
            )
    models = ordered_models(df["model"].unique() if models is None else models, reference_model)
    _check_models(df, models)
    frames = []
    for kind in kinds:
        rows = _rows(df, kind, models).dropna(subset=["severity"])
        if rows.empty:
            raise ValueError(f"{kind!r} rows have no severity values")
        if not (rows["severity"] == 0).any():
            rows = pd.concat([rows, _clean_rows(df, models).assign(severity=0.0)])
        frames.append(rows.assign(attack=kind))
    data = pd.concat(frames)
    data = data[data["region"].isin(regions)]
    by = ["region", "attack", "model", "severity"]
    summary = summarise(data, by, "dice", error, n_boot=n_boot, seed=seed)
    seeds = seed_means(data, ["region", "attack", "model", "severity"])
    styles = model_styles(df["model"].unique(), reference_model)
    labels = {m: model_label(m, reference_model) for m in models}
    fig = new_figure((FULL_WIDTH, 0.9 + 1.9 * len(regions)))
    axes = fig.subplots(len(regions), len(kinds), sharex=True, sharey="row", squeeze=False)
    for row, region in zip(axes, regions, strict=True):
        for ax, kind in zip(row, kinds, strict=True):
            part = summary[(summary["region"] == region) & (summary["attack"] == kind)]
            mine = None
            if seeds is not None:
                mine = seeds[(seeds["region"] == region) & (seeds["attack"] == kind)]
            _error_lines(ax, part, "severity", "model", models, styles, labels, 0.4, mine)
            ax.set_xticks(sorted(part["severity"].unique()))
            if region == regions[0]:
                ax.set_title(attack_label(kind))
            if region == regions[-1]:
                ax.set_xlabel("severity")
        part = summary[summary["region"] == region]
        low = part["low"].fillna(part["mean"]).min()
        high = part["high"].fillna(part["mean"]).max()
        if seeds is not None:
            mine = seeds.loc[seeds["region"] == region, "mean"]
            low, high = min(low, mine.min()), max(high, mine.max())
        pad = max(0.02, 0.05 * (high - low))
        row[0].set_ylim(max(0.0, low - pad), min(1.02, high + pad))
        row[0].set_ylabel(_metric_label(f"Dice {region}", error, part))
    fig.suptitle("Realistic artefacts")
    _legend(fig, axes.flat[0], seeds=seeds is not None)
    return fig


@with_style
def worst_case_figure(
    df: pd.DataFrame, model: str, iterations: Mapping[str, int] | None = None
) -> Figure:
    """Dice vs ε of ``model``: one panel per region, a line per adversarial family and the
    worst case (thick black), each the mean over subjects of Dice averaged over seeds; the
    clean input at ε = 0 starts every line (:mod:`segrobust.worst_case`)."""
    mine = df[df["model"] == model]
    if mine.empty:
        raise ValueError(f"model {model!r} not in the results table")
    rows = adversarial_rows(mine, iterations)
    worst = worst_case(mine, iterations).assign(attack=WORST_CASE)
    clean = mine[mine["attack"] == CLEAN].groupby(["region", "subject"])["dice"].mean()
    curves = pd.concat([rows, worst])
    per_subject = curves.groupby(["attack", "region", "eps", "subject"])["dice"].mean()
    means = per_subject.groupby(["attack", "region", "eps"]).mean()
    regions = [r for r in REGION_ORDER if r in set(rows["region"])]
    fig = new_figure((3.2 * len(regions), 3.4))
    axes = fig.subplots(1, len(regions), sharey=True, squeeze=False)[0]
    families = sorted(set(rows["attack"]))
    for ax, region in zip(axes, regions, strict=True):
        start = clean[region].mean() if region in clean.index.get_level_values(0) else np.nan
        for attack in [*families, WORST_CASE]:
            curve = means[attack][region] if (attack, region) in means.index.droplevel(2) else None
            if curve is None:
                continue
            x, y = np.r_[0.0, curve.index.to_numpy()], np.r_[start, curve.to_numpy()]
            style = ({"color": "black", "linewidth": 2.4, "zorder": 3} if attack == WORST_CASE
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


# --------------------------------------------------------------------------- output


def save_figure(fig: Figure, path_stem: str | Path, dpi: int = 300) -> tuple[Path, Path]:
    """Write ``<path_stem>.png`` (at ``dpi``) and ``<path_stem>.pdf`` atomically; close ``fig``.

    ``path_stem`` is used verbatim (a dot in it, e.g. ``dice_eps0.05``, is not a suffix).
    PDF metadata carry no creation date, so the same figure gives the same file.
    """
    if dpi < MIN_DPI:
        raise ValueError(f"dpi must be >= {MIN_DPI} for print, got {dpi}")
    if not fig.axes:
        raise ValueError("the figure has no axes: nothing to save")
    stem = str(path_stem)
    paths = (Path(f"{stem}.png"), Path(f"{stem}.pdf"))
    for path, fmt, meta in zip(paths, ("png", "pdf"), ({}, {"CreationDate": None}), strict=True):
        with atomic_path(path) as tmp, mpl.rc_context(STYLE):
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta)
    if fig.canvas.manager is not None:  # made through pyplot: drop it from pyplot's registry
        import matplotlib.pyplot as plt

        plt.close(fig)
    return paths
