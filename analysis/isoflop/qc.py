"""Quality control of isoFLOP runs: one stage, run once per group of runs, deciding once per row whether
it enters the fits and why not. Every fit reads these decisions: Approach 2 on every axis, Approach 3, the
held-out check, predictions and comparisons (analysis.isoflop.groups runs the stage; points.csv shows it).

The stages run in this order on each budget's profile (x = ln of the profile axis, y = loss); a row keeps
the reason of the first stage that drops it. They follow the categories of published isoFLOP QC (Czech
et al., arXiv 2603.22339, Open-Athena); docs/analysis.md gives the thresholds, why, and how often our
decisions agree with the published ones on real tables.

1. ``exact_duplicate`` / ``near_duplicate_params``: runs of one seed at (nearly) one size (relative
   difference below ``near_duplicate_rel``) are one grid point: the run whose implied compute is nearest
   the nominal budget is kept (its C is the one the fit assumes), the others dropped. Same size with a
   different seed is a replicate and stays (averaged by the estimators).
2. ``too_few_points``: a budget with fewer than ``min_points`` distinct sizes cannot locate a minimum
   and test its curvature with residual degrees of freedom to spare; the whole budget is dropped.
3. ``off_center``: the parabola's vertex v through the budget; h = the distance from v to the nearer end of
   the grid; sizes farther than ``off_center_k``·h from v are trimmed (a wide one-sided tail tilts every
   estimator of the minimum). A vertex beyond the sampled range drops the budget as ``edge_low`` /
   ``edge_high`` (on the µ_rec axis, µ_rec = 1 is a bound: looping does not pay at that budget).
4. ``spline_outlier``: the leave-one-out residual of each run (a natural cubic spline through the budget's
   other sizes, linear beyond the ends) in units of a robust z pooled over all budgets (median and MAD);
   |z| > ``outlier_z`` is dropped, lowered points as well as raised ones.
5. ``weak_curvature``: the parabola's quadratic coefficient is not significantly positive (t below the t
   distribution's 97.5 % quantile for its residual dof); the budget is dropped.
6. ``too_few_points`` again, on what is left.

Per axis, after the stage, ``axis_flags`` adds what belongs to one estimator's optimum, not to a row: an
optimum at the edge of the kept grid (never used as an estimate), and warnings that exclude nothing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from enum import Enum

import numpy as np
import pandas as pd
from scipy.interpolate import CubicSpline

from analysis.estimation import t_critical
from analysis.isoflop.profiles import EDGE_FRACTION, averaged


class Reason(str, Enum):
    """Why a row or a budget is not used: one enumeration for every QC decision."""

    KEPT = "none"
    EXACT_DUPLICATE = "exact_duplicate"
    NEAR_DUPLICATE = "near_duplicate_params"
    TOO_FEW = "too_few_points"
    OFF_CENTER = "off_center"
    EDGE_LOW = "edge_low"
    EDGE_HIGH = "edge_high"
    OUTLIER = "spline_outlier"
    WEAK_CURVATURE = "weak_curvature"
    SINGLE_POINT = "single_point"           # a warning on one axis's optimum
    DISAGREE = "parabola_akima_disagreement"  # a warning on one axis's optimum

    def __str__(self) -> str:
        return self.value


# Names kept for the modules that read codes (the value is what reports and summary.json print).
EXACT_DUPLICATE, NEAR_DUPLICATE, TOO_FEW = Reason.EXACT_DUPLICATE, Reason.NEAR_DUPLICATE, Reason.TOO_FEW
OFF_CENTER, EDGE_LOW, EDGE_HIGH = Reason.OFF_CENTER, Reason.EDGE_LOW, Reason.EDGE_HIGH
OUTLIER, WEAK_CURVATURE = Reason.OUTLIER, Reason.WEAK_CURVATURE
SINGLE_POINT, DISAGREE = Reason.SINGLE_POINT, Reason.DISAGREE

OUTLIER_SCALE_FLOOR = 1e-3
# Reasons that make a run bad in itself, for every fit (a repeated row, an outlier); the others are about a
# budget's isoFLOP profile (too few sizes, off-centre, an edge, weak curvature): such a run is still a
# valid training run for a parametric law (Approach 3), but it enters no isoFLOP profile.
RUN_REASONS = frozenset({Reason.EXACT_DUPLICATE, Reason.NEAR_DUPLICATE, Reason.OUTLIER})
# The column of a runs frame that carries the QC stage's profile decision (analysis.isoflop.groups.used_runs);
# Approach 2 reads only the runs it marks.
PROFILE_USED = "qc_used"

# The stage that makes each decision, in the order they run (points.csv's `stage`).
STAGES = ("duplicates", "too_few_points", "off_center", "outliers", "weak_curvature", "too_few_after")


@dataclass(frozen=True)
class QCConfig:
    """Every QC threshold, settable with ``--qc KEY=VALUE`` and recorded in summary.json["qc"]."""

    near_duplicate_rel: float = 0.01  # sizes closer than this (relative) are one grid point
    min_points: int = 6               # distinct sizes a budget needs, before and after QC
    off_center_k: float = 2.5         # trim sizes beyond k × the vertex's distance to the nearer grid end
    outlier_z: float = 6.0            # robust z of the pooled leave-one-out residuals
    outlier_min_points: int = 4       # sizes a budget needs for leave-one-out residuals
    disagree_steps: float = 1.0       # warn when parabola and spline minima are this many grid steps apart

    def entry(self) -> dict:
        return asdict(self)


_BOUNDS = {"near_duplicate_rel": (0.0, 0.5), "min_points": (3, 1000), "off_center_k": (1.0, 100.0),
           "outlier_z": (2.0, 1000.0), "outlier_min_points": (4, 1000), "disagree_steps": (0.0, 100.0)}


def parse_qc(items: list[str], base: QCConfig | None = None) -> QCConfig:
    """QCConfig from ``KEY=VALUE`` strings; ValueError (one line naming the key and the fix) otherwise."""
    cfg = base or QCConfig()
    types = {f.name: f.type for f in fields(QCConfig)}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in types:
            raise ValueError(f"--qc {item}: unknown QC setting {key!r}; give KEY=VALUE with KEY one of "
                             + ", ".join(types))
        cast = int if types[key] in (int, "int") else float
        lo, hi = _BOUNDS[key]
        try:
            parsed = cast(value)
        except ValueError:
            parsed = None
        if parsed is None or not np.isfinite(parsed) or not lo <= parsed <= hi:
            raise ValueError(f"--qc {item}: {key} takes a{'n integer' if cast is int else ' number'} in "
                             f"[{lo:g}, {hi:g}], e.g. {key}={getattr(QCConfig(), key)}")
        cfg = replace(cfg, **{key: parsed})
    return cfg


@dataclass(frozen=True)
class Flag:
    code: Reason
    reason: str
    excludes: bool = True  # False: a warning, shown but not a reason to leave the budget out


# --- the stage ---------------------------------------------------------------------------------------

def _vertex(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(vertex, quadratic coefficient) of the least-squares parabola through the per-size means; the best
    point when the parabola is not convex."""
    ux, uy = averaged(x, y)
    coef = np.polyfit(ux, uy, 2)
    if coef[0] <= 0:
        return float(ux[np.argmin(uy)]), float(coef[0])
    return float(-coef[1] / (2 * coef[0])), float(coef[0])


def curvature_t(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """t statistic of the parabola's quadratic coefficient through the per-size means, and its dof."""
    ux, uy = averaged(x, y)
    dof = ux.size - 3
    if dof <= 0:
        return float("nan"), dof
    X = np.vander(ux, 3)
    coef, *_ = np.linalg.lstsq(X, uy, rcond=None)
    r = uy - X @ coef
    var = float(r @ r) / dof * np.linalg.inv(X.T @ X)[0, 0]
    return (float(coef[0] / np.sqrt(var)) if var > 0 else float("inf") * np.sign(coef[0])), dof


def _loo_residuals(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's loss minus a natural cubic spline through the mean losses of the budget's other rows'
    sizes, evaluated at the row's size. A natural spline continues linearly beyond the ends, so an end
    point is judged against the slope of its neighbours rather than against an extrapolated cubic."""
    out = np.full(x.size, np.nan)
    for i in range(x.size):
        others = np.arange(x.size) != i
        ux, uy = averaged(x[others], y[others])
        if ux.size < 3:
            continue
        out[i] = y[i] - float(CubicSpline(ux, uy, bc_type="natural")(x[i]))
    return out


def _implied_compute(df: pd.DataFrame) -> np.ndarray:
    """Each run's own compute, to choose between duplicates: implied_flops (a table's 6·N·D), else
    train_flops as logged, else 6·N·D."""
    if "implied_flops" in df:
        return df["implied_flops"].to_numpy(dtype=float)
    if "train_flops" in df and np.isfinite(df["train_flops"].to_numpy(dtype=float)).any():
        return df["train_flops"].to_numpy(dtype=float)
    if {"n_params", "tokens"} <= set(df):
        return 6 * df["n_params"].to_numpy(dtype=float) * df["tokens"].to_numpy(dtype=float)
    return np.full(len(df), np.nan)


@dataclass
class Screen:
    """The stage's decisions: per row of the frame it screened (same index), and the budgets it dropped."""

    reason: pd.Series          # Reason per row (KEPT: used)
    detail: pd.Series          # one line per dropped row
    axis: str                  # the profile axis the stage screened along
    config: QCConfig
    outlier_scale: float = float("nan")  # the pooled robust SD of the leave-one-out residuals

    @property
    def used(self) -> pd.Series:
        return self.reason == Reason.KEPT

    @property
    def stage(self) -> pd.Series:
        return self.reason.map(_STAGE_OF)

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.reason.value_counts().items() if k != Reason.KEPT}


_STAGE_OF = {Reason.KEPT: "kept", Reason.EXACT_DUPLICATE: "duplicates", Reason.NEAR_DUPLICATE: "duplicates",
             Reason.TOO_FEW: "too_few_points", Reason.OFF_CENTER: "off_center", Reason.EDGE_LOW: "off_center",
             Reason.EDGE_HIGH: "off_center", Reason.OUTLIER: "outliers",
             Reason.WEAK_CURVATURE: "weak_curvature"}


def screen(df: pd.DataFrame, column: str, cfg: QCConfig = QCConfig(), bound_at_one: bool = False) -> Screen:
    """Run the QC stage on the rows of ``df`` that have a FLOP budget (``flop_budget``), along ``column``
    (> 0), with ``loss``; a ``seed`` column, when present, marks replicates. Rows without a budget or a
    positive value are dropped as ``too_few_points`` (they lie on no isoFLOP profile).

    bound_at_one: the profile axis is µ_rec, whose lowest possible value is 1 (an optimum there is
    the answer "looping does not pay", not a grid to extend)."""
    original = df.index
    df = df.reset_index(drop=True)
    names = (df["run"] if "run" in df else df["run_id"] if "run_id" in df else pd.Series(df.index)).astype(str)
    reason = pd.Series(Reason.KEPT, index=df.index, dtype=object)
    detail = pd.Series("", index=df.index, dtype=object)
    budget = df["flop_budget"].to_numpy(dtype=float)
    value = df[column].to_numpy(dtype=float) if column in df else np.full(len(df), np.nan)
    ok = np.isfinite(budget) & np.isfinite(value) & (value > 0) & np.isfinite(df["loss"].to_numpy(dtype=float))
    # runs without a FLOP budget (token-budget runs) lie on no isoFLOP profile: nothing to screen, and the
    # laws fitted on every run still read them
    bad = ~ok & np.isfinite(budget)
    reason[bad] = Reason.TOO_FEW
    detail[bad] = f"no {column} or loss: on no isoFLOP profile"
    x_all = np.log(np.where(ok, value, 1.0))
    seeds = (df["seed"].to_numpy(dtype=float, na_value=np.nan) if "seed" in df
             else np.full(len(df), np.nan))
    implied = _implied_compute(df)

    def drop(idx, code: Reason, why: str) -> None:
        idx = [i for i in idx if reason[i] == Reason.KEPT]
        reason[idx] = code
        detail[idx] = why

    def budgets():
        alive = (reason == Reason.KEPT).to_numpy() & ok
        for b in np.unique(budget[alive]):
            rows = np.flatnonzero(alive & (budget == b))
            yield b, rows

    # 1. duplicates: one grid point per (size, seed); keep the run nearest the nominal compute
    for b, rows in list(budgets()):
        for s in np.unique(np.nan_to_num(seeds[rows], nan=-1.0)):
            r = rows[np.nan_to_num(seeds[rows], nan=-1.0) == s]
            r = r[np.argsort(x_all[r], kind="stable")]
            cluster = [r[0]]
            for i in list(r[1:]) + [None]:
                if i is not None and x_all[i] - x_all[cluster[-1]] < np.log1p(cfg.near_duplicate_rel):
                    cluster.append(i)
                    continue
                if len(cluster) > 1:
                    dev = np.abs(np.log(implied[cluster] / b))
                    keep = cluster[int(np.nanargmin(dev))] if np.isfinite(dev).any() else cluster[0]
                    for j in cluster:
                        if j == keep:
                            continue
                        same = value[j] == value[keep]
                        drop([df.index[j]], Reason.EXACT_DUPLICATE if same else Reason.NEAR_DUPLICATE,
                             f"{'same' if same else 'nearly the same'} {column} {value[j]:.6g} as run "
                             f"{names[keep]} ({value[keep]:.6g}); the run whose implied compute is nearest "
                             f"the budget {b:.3g} is kept")
                cluster = [i] if i is not None else []

    def too_few(when: str) -> None:
        for b, rows in list(budgets()):
            n = np.unique(x_all[rows]).size
            if n < cfg.min_points:
                drop(df.index[rows], Reason.TOO_FEW, f"budget {b:.3g} has {n} distinct {column} value(s) "
                     f"{when}; a minimum with a curvature test needs >= {cfg.min_points} (min_points)")

    # 2. too few points to begin with
    too_few("")
    # 3. off-centre trimming (or the whole budget at an edge)
    for b, rows in list(budgets()):
        x, y = x_all[rows], df["loss"].to_numpy(dtype=float)[rows]
        v, _ = _vertex(x, y)
        lo, hi = x.min(), x.max()
        tol = EDGE_FRACTION * (hi - lo)
        if v <= lo + tol or v >= hi - tol:
            low = v <= lo + tol
            if low and bound_at_one and abs(np.exp(lo) - 1) < 1e-9:
                why = f"at budget {b:.3g} the lowest loss lies at µ_rec = 1, the bound: looping does not pay here"
            else:
                why = (f"at budget {b:.3g} the optimum lies at or beyond the {'smallest' if low else 'largest'} "
                       f"sampled {column} ({np.exp(lo if low else hi):.4g}); extend the grid "
                       f"{'downwards' if low else 'upwards'}")
            drop(df.index[rows], Reason.EDGE_LOW if low else Reason.EDGE_HIGH, why)
            continue
        h = min(v - lo, hi - v)
        far = np.abs(x - v) > cfg.off_center_k * h
        if bound_at_one and abs(np.exp(lo) - 1) < 1e-9:
            far &= x > v  # nothing lies below µ_rec = 1: the lower side cannot be extended, only trimmed above
        drop(df.index[rows[far]], Reason.OFF_CENTER,
             f"{column} more than {cfg.off_center_k:g}× the vertex's distance to the nearer grid end "
             f"({np.exp(h):.3g}×) from the vertex {np.exp(v):.4g} at budget {b:.3g}")
    # 4. outliers: leave-one-out residuals pooled over budgets, robust z; the worst one is dropped and the
    # residuals recomputed (an outlier pulls its neighbours' leave-one-out predictions, so flagging every
    # |z| beyond the threshold at once also drops the neighbours)
    scale = float("nan")
    floor = OUTLIER_SCALE_FLOOR * float(df["loss"].abs().median())
    while True:
        res = pd.Series(np.nan, index=df.index)
        for b, rows in budgets():
            if np.unique(x_all[rows]).size >= cfg.outlier_min_points:
                res.iloc[rows] = _loo_residuals(x_all[rows], df["loss"].to_numpy(dtype=float)[rows])
        r = res.dropna()
        if r.size < 8:
            break
        med = float(r.median())
        # floored at OUTLIER_SCALE_FLOOR of the loss: on noise-free curves the MAD is ~0 and every
        # interpolation error would count as an outlier
        scale = max(1.4826 * float((r - med).abs().median()), floor)
        z = (r - med) / scale
        i = z.abs().idxmax()
        if not abs(z[i]) > cfg.outlier_z:
            break
        drop([i], Reason.OUTLIER, f"loss {df.at[i, 'loss']:.5g} is {z[i]:+.1f} robust SDs "
             f"({'above' if z[i] > 0 else 'below'}) a spline through the budget's other runs "
             f"(|z| > {cfg.outlier_z:g}; SD pooled over {r.size} runs)")
    # 5. weak curvature
    for b, rows in list(budgets()):
        t, dof = curvature_t(x_all[rows], df["loss"].to_numpy(dtype=float)[rows])
        if dof > 0 and not t >= t_critical(dof):
            drop(df.index[rows], Reason.WEAK_CURVATURE,
                 f"budget {b:.3g}: the parabola's curvature t = {t:.2f} on {dof} dof is below "
                 f"{t_critical(dof):.2f} (97.5 % t quantile): no significant minimum")
    # 6. too few left
    too_few("after QC")
    reason.index = detail.index = original
    return Screen(reason, detail, column, cfg, scale)


# --- per axis, after the stage -----------------------------------------------------------------------

def axis_flags(ux: np.ndarray, uy: np.ndarray, x_opt: float, axis: str, parabola_x: float,
               akima_x: float, cfg: QCConfig = QCConfig()) -> list[Flag]:
    """What one axis's optimum of one budget adds to the stage's decisions (ux, uy: per-size means of
    the used rows; x_opt: the chosen estimator's ln optimum): an optimum at the edge of the kept grid is
    not an estimate (excluded); the two estimators far apart is a warning."""
    if ux.size == 0:
        return [Flag(Reason.TOO_FEW, "the QC stage left no run at this budget (its runs are listed with their reasons)")]
    if ux.size < 3:
        return [Flag(Reason.TOO_FEW, f"{ux.size} distinct value(s) on this axis")]
    flags: list[Flag] = []
    tol = EDGE_FRACTION * (ux[-1] - ux[0])
    if not np.isfinite(x_opt) or x_opt <= ux[0] + tol:
        bound = axis == "mean_recurrence" and abs(np.exp(ux[0]) - 1) < 1e-9
        flags.append(Flag(Reason.EDGE_LOW, f"optimum at the smallest kept value {np.exp(ux[0]):.4g}"
                          + (" (µ_rec = 1 is the bound: looping does not pay here)" if bound
                             else ": a clipped optimum is not an estimate; extend the grid downwards")))
    elif x_opt >= ux[-1] - tol:
        flags.append(Flag(Reason.EDGE_HIGH, f"optimum at the largest kept value {np.exp(ux[-1]):.4g}: a "
                          "clipped optimum is not an estimate; extend the grid upwards"))
    step = float(np.median(np.diff(ux)))
    if np.isfinite(parabola_x) and np.isfinite(akima_x) and step > 0:
        steps = abs(parabola_x - akima_x) / step
        if steps > cfg.disagree_steps:
            flags.append(Flag(Reason.DISAGREE, f"parabola vertex {np.exp(parabola_x):.4g} and spline minimum "
                              f"{np.exp(akima_x):.4g} are {steps:.2f} grid steps apart (> {cfg.disagree_steps:g}): "
                              "the curve is asymmetric or noisy at the grid's resolution (a warning)", False))
    return flags
