"""Approach 2 on one allocation axis of one group of runs: QC'd per-budget optima and the power laws
through the Akima-spline minima and through the parabola vertices; the headline is the one whose
estimator measured better on this grid (analysis.isoflop.estimator_choice), the other sits beside it.

No silent fallback: with fewer clean budgets than ``min_budgets`` there is no power law, and ``reason``
says which budgets were left out and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.estimation import LEVEL
from analysis.isoflop import qc
from analysis.isoflop.estimator_choice import NAMES, EstimatorChoice, choose_estimator
from analysis.isoflop.noise import NoiseModel, Profile, draw_optima, noise_model
from analysis.isoflop.optima import BudgetOptimum, isoflop_optima
from analysis.isoflop.powerlaw import HEADLINE, NoPowerLaw, PowerLawFit, powerlaw_from_optima
from analysis.isoflop.profiles import averaged
from analysis.options import Options

# The paper's compute-optimal exponents (Parcae, arXiv 2604.12946, §5.2 and Fig. 5: µ_rec* ∝ C^0.40,
# D* ∝ C^0.78 at fixed model size). Shown beside our fits only; nothing is fitted towards them.
PAPER_GAMMA = {"mean_recurrence": 0.40, "tokens": 0.78}
PAPER_SOURCE = "Parcae (arXiv 2604.12946) §5.2, Fig. 5"
# Relative floor of the per-run noise SD: noise-free synthetic curves still get draws that move.
NOISE_FLOOR = 1e-4
LABEL = {"mean_recurrence": "µ_rec*", "tokens": "D*", "params": "N*"}
# The allocation axes of a sweep of looped models (one model per group, µ_rec varied at fixed C).
SWEEP_AXES = ("mean_recurrence", "tokens")
XLABEL = {"mean_recurrence": "mean recurrence µ_rec", "tokens": "training tokens D",
          "params": "parameters N"}


@dataclass
class AxisResult:
    group: str
    axis: str
    optima: list[BudgetOptimum]
    law: PowerLawFit | None = None          # through the chosen estimator's optima: the headline
    alternative: PowerLawFit | None = None  # through the other estimator's optima, same budgets
    choice: EstimatorChoice | None = None   # how the headline estimator was chosen
    noise: NoiseModel | None = None         # the per-run noise the intervals redraw
    reason: str | None = None            # why there is no power law
    notes: list[str] = field(default_factory=list)
    # The paper's exponent, only where it applies: a sweep of µ_rec at fixed model size (Parcae §5.2)
    paper: float | None = None

    @property
    def interval(self) -> tuple[float, float]:
        return self.law.boot_ci_gamma(HEADLINE, LEVEL) if self.law else (float("nan"), float("nan"))

    def budgets_excluded(self) -> dict[str, list[str]]:
        if self.law is None:
            return {f"{o.budget:.6g}": o.reasons or ["no power law"] for o in self.optima}
        used = set(self.law.C.tolist())
        return {f"{o.budget:.6g}": o.reasons or ["no finite optimum"]
                for o in self.optima if o.budget not in used}

    def points_excluded(self) -> list[dict]:
        return [{"C": o.budget, self.axis: p["value"], "loss": p["loss"], "run": p["run_id"],
                 "reason": f"{p['code']}: {p['reason']}"} for o in self.optima for p in o.points_excluded]


    @property
    def estimator(self) -> str:
        return self.law.estimator if self.law is not None else "parabola"


def bias_note(law: PowerLawFit, alternative: PowerLawFit | None) -> str | None:
    """A note when the other estimator's exponent falls outside the headline's interval."""
    if alternative is None:
        return None
    lo, hi = law.boot_ci_gamma(HEADLINE, LEVEL)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= alternative.gamma <= hi:
        return None
    return (f"the {NAMES[alternative.estimator]} exponent {alternative.gamma:.3f} lies outside the "
            f"{NAMES[law.estimator]} estimate's 95 % interval [{lo:.3f}, {hi:.3f}]: the two estimators "
            "disagree on these curves (asymmetry, an off-centre grid, or noise); the headline estimator "
            "is the one that measured better on this grid")


def approach2(df: pd.DataFrame, group: str, axis: str, opts: Options,
              rng: np.random.Generator, looped: bool = True, dropped: pd.DataFrame | None = None) -> AxisResult:
    """Approach 2 on the used runs ``df`` (the QC stage's decisions applied; ``dropped``: the rows it
    dropped, shown beside their budgets). looped: the runs vary µ_rec at fixed model size, so the paper's
    exponents are comparable. A frame from analysis.isoflop.groups.used_runs carries the QC stage's
    profile decision (qc.PROFILE_USED): only the runs it marks enter."""
    if qc.PROFILE_USED in df:
        df = df[df[qc.PROFILE_USED].astype(bool)]
    optima = isoflop_optima(df, axis, opts.qc, dropped)
    return approach2_from_optima(optima, group, axis, opts, looped, rng)


def _settle(optima: list[BudgetOptimum], estimator: str, cfg) -> None:
    """Every budget's estimate under ``estimator``, and its axis verdict on that estimate."""
    for o in optima:
        o.estimator = estimator
        if o.minima:
            ux, uy = averaged(o.x, o.y)
            o.flags = qc.axis_flags(ux, uy, o.x_opt, o.axis, o.minima["parabola"][0], o.minima["akima"][0], cfg)


def approach2_from_optima(optima: list[BudgetOptimum], group: str, axis: str, opts: Options,
                          looped: bool = True, rng: np.random.Generator | None = None) -> AxisResult:
    """The estimator chosen by simulation on these budgets' grids and noise, each budget's noise draws,
    and the power laws through both estimators' optima (the chosen one is the headline)."""
    rng = rng or np.random.default_rng(opts.seed)
    res = AxisResult(group, axis, optima, paper=PAPER_GAMMA.get(axis) if looped else None)
    fitted = [o for o in optima if o.minima]
    profiles = [Profile.of(o.budget, o.x, o.y) for o in fitted]
    if profiles:
        mean_loss = float(np.mean(np.concatenate([p.uy for p in profiles])))
        res.noise = noise_model(profiles, floor=NOISE_FLOOR * mean_loss)
        _settle(optima, "parabola", opts.qc)
        clean = [(o, p) for o, p in zip(fitted, profiles) if o.ok]
        if len(clean) >= 2:
            res.choice = choose_estimator(
                [(o.budget, p.ux, p.counts) for o, p in clean], np.array([o.minima["parabola"][0] for o, _ in clean]),
                np.array([max(2 * o.fit.coef[0], 1e-6) if o.fit.coef is not None else 1e-6 for o, _ in clean]),
                res.noise.sd, mean_loss)
        if res.choice is not None and res.choice.estimator != "parabola":
            _settle(optima, res.choice.estimator, opts.qc)
        if opts.n_boot:
            draws = draw_optima(profiles, res.noise, opts.n_boot, rng)
            for j, o in enumerate(fitted):
                o.boot = {k: v[:, j] for k, v in draws.items()}
    estimator = res.choice.estimator if res.choice is not None else "parabola"
    try:
        res.law = powerlaw_from_optima(optima, estimator, opts.min_budgets, opts.keep_flagged, rng)
    except NoPowerLaw as err:
        res.reason = str(err)
        at_one = [o for o in optima if any("looping does not pay" in f.reason for f in o.flags)]
        if at_one:
            res.reason += (f"; at {len(at_one)} of {len(optima)} budget(s) the optimum is µ_rec = 1: "
                           "looping does not pay there")
        return res
    kept = [o for o in optima if o.budget in set(res.law.C.tolist())]
    other = "akima" if estimator == "parabola" else "parabola"
    try:
        res.alternative = powerlaw_from_optima(kept, other, opts.min_budgets, keep_flagged=True, rng=rng)
    except NoPowerLaw:
        res.alternative = None
    note = bias_note(res.law, res.alternative)
    if note:
        res.notes.append(note)
    return res


def main_group(usable: pd.DataFrame) -> tuple[str, pd.DataFrame, tuple[str, ...]]:
    """(name, runs, axes) of a sweep's main isoFLOP analysis: over model sizes when µ_rec is fixed (a
    Chinchilla-style sweep), else the model group with the most runs, along µ_rec and D."""
    if usable["mean_recurrence"].nunique() <= 1 and usable["n_params"].nunique() >= 3:
        return "all models", usable, ("params",)
    name, grp = max(usable.groupby(["model_kind", "model_name"], sort=True, dropna=False),
                    key=lambda g: len(g[1]))
    return " / ".join(str(n) for n in name), grp, SWEEP_AXES
