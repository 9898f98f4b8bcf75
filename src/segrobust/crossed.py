"""A defence's effect on new patients, trained again: training seeds × test subjects, crossed.

The data of one comparison is a matrix of paired differences ``D[s, i] = y_defence[s, i] −
y_reference[s, i]`` over the training seeds s (runs with the same seed share initial weights and
data order, so they are paired) and the test subjects i. The model is

    D[s, i] = Δ + a_s + c_i + e_si,

with crossed random effects: a_s the seed's (training run's) deviation, c_i the subject ×
defence interaction (the defence helps some patients more than others) and e_si the residual,
variances σ²_seed, σ²_subject, σ²_resid (:class:`Components`). Δ is estimated by the mean D̄ of
the k × n matrix, whose variance

    Var(D̄) = σ²_seed / k + σ²_subject / n + σ²_resid / (k n)

counts both sources: more test subjects cannot make up for few seeds, nor the reverse. The
two-way ANOVA mean squares (MS_seed, MS_subject, MS_resid with k − 1, n − 1 and (k − 1)(n − 1)
degrees of freedom) are independent and estimate σ²_resid + n σ²_seed, σ²_resid + k σ²_subject
and σ²_resid.

**The interval** (:func:`half_width`) is Banerjee's (1960) conservative construction for a sum
of variance terms with their own degrees of freedom, each term inflated by its own t quantile:

    h(α)² = [t²(k − 1) · MS_seed + t²(n − 1) · max(MS_subject − MS_resid, 0)] / (k n),

and never narrower than the subjects-only paired t interval on seed-averaged differences,
t(n − 1) · sqrt(MS_subject / (k n)) — the interval that treats the trained models as fixed.
Δ̂ ± h(0.05) is the 95 % CI and p the α at which h(α) = |Δ̂|. The first term (the seed means'
spread) is kept whole with its exact k − 1 degrees of freedom; the second adds the
subject-interaction part. We measured the textbook alternative, a t reference with
Satterthwaite's degrees of freedom for (MS_seed + MS_subject − MS_resid)/(k n), to reject a true
null 6–7 % of the time at 3 seeds and 9–12 % at 2 when the seed term dominates (20 000 draws
per setting, 18 subjects): its estimated degrees of freedom jump up whenever MS_seed comes out
small by chance. This construction stayed at or below 5 % in every setting tried (the
calibration test repeats that; ``docs/statistics.md``), at some cost in power when the
subject interaction dominates.

Sensitivity checks on the same matrix: :func:`mixed_model` (statsmodels MixedLM, REML, crossed
seed and subject variance components, Wald z) and :func:`two_level_bootstrap` (seeds and
subjects resampled independently, percentile interval).
"""

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LOG_P_FLOOR = -300.0  # p below 1e-300 is reported as 0
BISECTIONS = 48  # log10 p to 1e-12


@dataclass(frozen=True)
class Components:
    """Variances of the seed effect, the subject × defence interaction and the residual of D."""

    seed: float
    subject: float
    resid: float

    def var_mean(self, n_seeds: int, n_subjects: int) -> float:
        """Var(D̄) with ``n_seeds`` × ``n_subjects`` differences."""
        k, n = n_seeds, n_subjects
        return self.seed / k + self.subject / n + self.resid / (k * n)


@dataclass(frozen=True)
class CrossedResult:
    """Estimates of :func:`crossed_test`, arrays over the leading axes of its input."""

    delta: np.ndarray
    se: np.ndarray  # sqrt of the unbiased Var(D̄) estimate, floored at the subjects-only one
    ci_low: np.ndarray
    ci_high: np.ndarray
    p: np.ndarray
    ms_seed: np.ndarray
    ms_subject: np.ndarray
    ms_resid: np.ndarray
    n_seeds: int
    n_subjects: int

    def components(self) -> Components:
        """Truncated (≥ 0) ANOVA estimates of the variance components (scalar result only)."""
        k, n = self.n_seeds, self.n_subjects
        return Components(
            seed=max(float(self.ms_seed - self.ms_resid) / n, 0.0),
            subject=max(float(self.ms_subject - self.ms_resid) / k, 0.0),
            resid=float(self.ms_resid),
        )


def mean_squares(diff: np.ndarray) -> tuple[np.ndarray, ...]:
    """(D̄, MS_seed, MS_subject, MS_resid) of ``diff`` (..., seeds, subjects), vectorised."""
    d = np.asarray(diff, dtype=float)
    k, n = d.shape[-2:]
    grand = d.mean(axis=(-2, -1))
    by_seed, by_subject = d.mean(axis=-1), d.mean(axis=-2)
    ms_seed = n * ((by_seed - grand[..., None]) ** 2).sum(-1) / (k - 1)
    ms_subject = k * ((by_subject - grand[..., None]) ** 2).sum(-1) / (n - 1)
    resid = d - by_seed[..., :, None] - by_subject[..., None, :] + grand[..., None, None]
    ms_resid = (resid**2).sum(axis=(-2, -1)) / ((k - 1) * (n - 1))
    return grand, ms_seed, ms_subject, ms_resid


def half_width(
    ms_seed: np.ndarray,
    ms_subject: np.ndarray,
    ms_resid: np.ndarray,
    n_seeds: int,
    n_subjects: int,
    alpha: float | np.ndarray,
) -> np.ndarray:
    """Half-width h(α) of the two-sided 1 − α interval for Δ (module docstring)."""
    k, n = n_seeds, n_subjects
    t_seed = stats.t.isf(np.asarray(alpha) / 2, k - 1)
    t_subject = stats.t.isf(np.asarray(alpha) / 2, n - 1)
    banerjee = t_seed**2 * ms_seed + t_subject**2 * np.maximum(ms_subject - ms_resid, 0.0)
    subjects_only = t_subject**2 * ms_subject
    return np.sqrt(np.maximum(banerjee, subjects_only) / (k * n))


def crossed_test(diff: np.ndarray, *, confidence: float = 0.95) -> CrossedResult:
    """Δ̂, SE, CI and two-sided p of paired differences ``diff`` (..., seeds, subjects).

    Vectorised over leading axes (the calibration test runs thousands of matrices at once).
    Needs at least 2 seeds and 2 subjects and finite values; p = 1 when every difference is 0.
    """
    d = np.asarray(diff, dtype=float)
    if d.ndim < 2 or d.shape[-2] < 2 or d.shape[-1] < 2:
        raise ValueError(f"need at least 2 seeds × 2 subjects of differences, got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("differences must be finite (drop incomplete seeds or subjects first)")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    k, n = d.shape[-2:]
    grand, ms_seed, ms_subject, ms_resid = mean_squares(d)
    h = half_width(ms_seed, ms_subject, ms_resid, k, n, 1 - confidence)
    var = np.maximum(ms_seed + ms_subject - ms_resid, ms_subject) / (k * n)
    return CrossedResult(
        delta=grand,
        se=np.sqrt(var),
        ci_low=grand - h,
        ci_high=grand + h,
        p=_p_value(grand, ms_seed, ms_subject, ms_resid, k, n),
        ms_seed=ms_seed,
        ms_subject=ms_subject,
        ms_resid=ms_resid,
        n_seeds=k,
        n_subjects=n,
    )


def _p_value(grand, ms_seed, ms_subject, ms_resid, k, n) -> np.ndarray:
    """The α at which h(α) = |D̄| (h falls with α), by bisection on log10 α."""
    effect = np.abs(grand)
    lo = np.full(effect.shape, LOG_P_FLOOR)
    hi = np.zeros(effect.shape)
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        inside = effect <= half_width(ms_seed, ms_subject, ms_resid, k, n, 10.0**mid)
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    p = 10.0 ** ((lo + hi) / 2)
    p = np.where(effect <= half_width(ms_seed, ms_subject, ms_resid, k, n, 1.0), 1.0, p)
    return np.where(effect > half_width(ms_seed, ms_subject, ms_resid, k, n, 10.0**LOG_P_FLOOR),
                    0.0, p)  # fmt: skip


def mixed_model(diff: pd.DataFrame, *, confidence: float = 0.95) -> dict[str, float | str]:
    """Sensitivity check: REML fit of D = Δ + seed + subject + e (statsmodels MixedLM, crossed
    variance components in a single group) with its Wald z interval and p. ``diff``: seeds ×
    subjects. Keys delta, ci_low, ci_high, p, note (convergence and boundary warnings)."""
    import statsmodels.formula.api as smf  # heavy import, only where it is used

    long = diff.rename_axis(index="seed", columns="subject").stack().rename("d").reset_index()
    long["group"] = 1
    model = smf.mixedlm(
        "d ~ 1",
        long,
        groups="group",
        re_formula="0",
        vc_formula={"seed": "0 + C(seed)", "subject": "0 + C(subject)"},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = model.fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as err:
            nan = float("nan")
            return {"delta": nan, "ci_low": nan, "ci_high": nan, "p": nan, "note": str(err)}
    low, high = fit.conf_int(alpha=1 - confidence).loc["Intercept"]
    notes = sorted({str(w.message).split("\n")[0] for w in caught})
    if not fit.converged:
        notes.insert(0, "did not converge")
    return {
        "delta": float(fit.fe_params["Intercept"]),
        "ci_low": float(low),
        "ci_high": float(high),
        "p": float(fit.pvalues["Intercept"]),
        "note": "; ".join(notes),
    }


def two_level_bootstrap(
    diff: np.ndarray, *, n_boot: int, seed: int | list[int], confidence: float = 0.95
) -> dict[str, float]:
    """Sensitivity check: seeds and subjects resampled with replacement, independently (the
    pigeonhole bootstrap for crossed designs, Owen 2007); percentile interval of D̄ and the
    two-sided p = 2 · min(share ≤ 0, share ≥ 0), counted with +1 so it is never 0."""
    d = np.asarray(diff, dtype=float)
    if d.ndim != 2 or min(d.shape) < 2:
        raise ValueError(f"need a seeds × subjects matrix with at least 2 of each, got {d.shape}")
    if not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    k, n = d.shape
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(k, np.full(k, 1 / k), size=n_boot)
    subject_counts = rng.multinomial(n, np.full(n, 1 / n), size=n_boot)
    means = np.einsum("bk,kn,bn->b", seed_counts, d, subject_counts) / (k * n)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    extreme = min((means <= 0).sum(), (means >= 0).sum())
    return {
        "ci_low": float(low),
        "ci_high": float(high),
        "p": float(min(1.0, 2 * (extreme + 1) / (n_boot + 1))),
    }
