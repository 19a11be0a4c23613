"""Test-time looping law per run: L(T) = L_inf + Z * exp(-z * T).

Fitted, as in the Parcae paper (App. L), by least squares on log-loss:
residual_i = ln(L_inf + Z e^{-z T_i}) - ln L_i, with bounds L_inf > 0, Z >= 0,
z in [Z_MIN, Z_MAX].  The model is linear in (L_inf, Z) for fixed z, so the
starts come from a grid over z with non-negative linear least squares for the
other two; the starts are then refined with a bounded trust-region solver with
tight tolerances (loose ones stop early on these ~1e-4 residuals) and the exact
Jacobian, in two phases (``multistart``: a short probe of every start, the two
lowest taken on to convergence).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares, nnls

from analysis import workers
from analysis.estimation import huber_mean
from analysis.runs import testtime_long

Z_MIN, Z_MAX = 1e-3, 20.0
MIN_T = 3
# Relative loss change below which a curve is called flat.
FLAT_REL = 1e-3
# Fraction of the decay still left at the largest T above which no plateau was seen.
PLATEAU_LEFT = 0.3
START_Z = np.geomspace(0.01, 10.0, 16)
# Multi-start budget (see multistart): evaluations per start, starts taken on, evaluations for those.
PROBE_NFEV, KEEP_STARTS, MAX_NFEV = 100, 2, 2000
N_PARAMS = 3  # L_inf, Z, z: with this many values of T the curve passes through every point
# Saturation point T*: the remaining decay Z·exp(−z·T) has fallen to this fraction of L_inf.
SATURATION_REL = 1e-3
FLAG_EXACT = (f"exact fit: no more values of T than the law's {N_PARAMS} parameters, so nothing tests it "
              "and z is not identified (evaluate more T)")
FLAG_NO_DECAY = "no decay"
# What to do about a curve that is not identified, by the flag that blocks it (in this order): advice
# that matches the flag (a flat curve needs no denser grid; it has nothing to saturate).
ADVICE = (("exact fit", "evaluate more values of T"),
          ("flat", "the loss does not change with T: nothing to saturate"),
          (FLAG_NO_DECAY, "the loss does not fall with T (e.g. a run trained at µ_rec = 1): nothing to saturate"),
          ("saturates", "evaluate a denser T grid below the second T"),
          ("z at its bound", "evaluate a denser T grid"),
          ("no plateau", "evaluate larger T"))


def advice(flags: list[str]) -> str | None:
    """The advice for the first blocking flag of a curve (None when nothing blocks)."""
    for prefix, text in ADVICE:
        if any(f.startswith(prefix) for f in flags):
            return text
    return None


@dataclass
class SaturationFit:
    T: np.ndarray
    loss: np.ndarray
    L_inf: float = float("nan")
    Z: float = float("nan")
    z: float = float("nan")
    se_L_inf: float = float("nan")
    se_z: float = float("nan")
    r2: float = float("nan")
    huber: float = float("nan")  # mean Huber(delta=1e-3) of log residuals
    z_identified: bool = False
    flags: list[str] = field(default_factory=list)

    @property
    def fitted(self) -> bool:
        return np.isfinite(self.L_inf)

    @property
    def T_star(self) -> float:
        """Loop count where the fitted curve is within SATURATION_REL·L_inf of L_inf (NaN if not
        identified): ln(Z / (SATURATION_REL·L_inf)) / z, at least 1."""
        if not (self.z_identified and self.Z > 0 and self.z > 0):
            return float("nan")
        return float(max(1.0, np.log(self.Z / (SATURATION_REL * self.L_inf)) / self.z))

    def intervals(self) -> dict[str, list[float]]:
        """95 % Wald intervals (estimate ± 1.96 SE from the Jacobian) where an SE exists."""
        out = {}
        for name, est, se in (("L_inf", self.L_inf, self.se_L_inf), ("z", self.z, self.se_z)):
            if np.isfinite(se):
                out[name] = [est - 1.959963984540054 * se, est + 1.959963984540054 * se]
        return out

    def predict(self, T: np.ndarray) -> np.ndarray:
        return self.L_inf + self.Z * np.exp(-self.z * np.asarray(T, dtype=float))


# The solver works with the decay normalised at the smallest T: L = L_inf + Z0·exp(−z·(T − T0)), so
# Z0 = Z·exp(−z·T0) is the decay still left at T0. Same family, same optimum, but a curve that saturates
# before its second T has its optimum at z → ∞ with Z0 finite (rather than Z growing like e^z), which
# the solver reaches instead of walking that valley to its evaluation cap. SEs of L_inf and z, the
# coordinates both parameterisations share, are the same in either.
#
# The three functions below serve every saturating form (testtime_forms.py, Parcae Table 12): the form
# only sets the distance b = base(T) − base(T0) (base T for the exponential, ln(1+T) or ln T for the
# power laws); p is (L_inf, Z0, z), or (Z0, z) for a form without a floor.
def decay_predict(p: np.ndarray, b: np.ndarray) -> np.ndarray:
    decay = np.exp(-p[-1] * b)
    return p[0] * decay if len(p) == 2 else p[0] + p[1] * decay


def decay_log_resid(p: np.ndarray, b: np.ndarray, lnL: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(decay_predict(p, b), 1e-300)) - lnL


def decay_log_jac(p: np.ndarray, b: np.ndarray, lnL: np.ndarray) -> np.ndarray:
    """d ln L_hat / d p, exact: a finite-difference Jacobian costs a model evaluation per parameter
    and step, and is what made these fits dominate the analysis time."""
    decay = np.exp(-p[-1] * b)
    if len(p) == 2:  # ln L_hat = ln Z0 − z·b
        return np.column_stack([np.full_like(b, 1.0 / p[0]), -b])
    f = np.maximum(p[0] + p[1] * decay, 1e-300)
    return np.column_stack([1.0 / f, decay / f, -p[1] * b * decay / f])


def _linear_start(z: float, dT: np.ndarray, L: np.ndarray) -> np.ndarray:
    basis = np.column_stack([np.ones_like(dT), np.exp(-z * dT)])
    (l_inf, amp), _ = nnls(basis, L)
    return np.array([max(l_inf, 1e-3 * L.min()), amp, z])


def multistart(fun, jac, starts, bounds, args) -> "OptimizeResult":
    """Bounded least squares from several starts, in two phases: every start gets PROBE_NFEV
    evaluations, then the KEEP_STARTS lowest go on to convergence (MAX_NFEV) from where they stopped.
    On a flat curve every start crawls along the valley where z is not identified and used to run to
    the evaluation cap, so the probe phase is what keeps 16 starts cheap; a start that converges
    within the probe is final as it is."""
    kw = dict(jac=jac, bounds=bounds, args=args, method="trf", x_scale="jac",
              ftol=1e-15, xtol=1e-15, gtol=1e-15)
    probes = []
    for p0 in starts:
        try:
            probes.append(least_squares(fun, p0, max_nfev=PROBE_NFEV, **kw))
        except ValueError:  # a start outside the form's domain
            continue
    if not probes:
        return None
    probes.sort(key=lambda r: r.cost)
    best = None
    for res in probes[:KEEP_STARTS]:
        if res.status == 0:  # stopped by the probe's cap: continue from there
            more = least_squares(fun, res.x, max_nfev=MAX_NFEV, **kw)
            more.nfev += res.nfev
            res = more if more.cost <= res.cost else res
        if best is None or res.cost < best.cost:
            best = res
    return best


def _best_fit(T: np.ndarray, L: np.ndarray):
    lnL = np.log(L)
    lower = [1e-9, 0.0, Z_MIN]
    upper = [np.inf, np.inf, Z_MAX]
    dT = T - T.min()
    starts = [np.clip(_linear_start(z0, dT, L), lower, [1e12, 1e12, Z_MAX]) for z0 in START_Z]
    return multistart(decay_log_resid, decay_log_jac, starts, (lower, upper), (dT, lnL))


def _standard_errors(res, n: int) -> tuple[float, float]:
    dof = n - 3
    if dof <= 0:
        return float("nan"), float("nan")
    s2 = 2 * res.cost / dof
    try:
        cov = s2 * np.linalg.inv(res.jac.T @ res.jac)
    except np.linalg.LinAlgError:
        return float("nan"), float("nan")
    diag = np.diag(cov)
    if np.any(diag < 0) or not np.all(np.isfinite(diag)):
        return float("nan"), float("nan")
    # Parameters are in absolute units, residuals in log units: cov is absolute.
    return float(np.sqrt(diag[0])), float(np.sqrt(diag[2]))


def _identification_flags(fit: SaturationFit) -> list[str]:
    T, L = fit.T, fit.loss
    flags: list[str] = []
    rmse = float(np.sqrt(np.mean((fit.predict(T) - L) ** 2)))
    if (L.max() - L.min()) / L.mean() < FLAT_REL:
        flags.append(f"flat curve (range < {FLAT_REL:g} relative): Z and z not identified")
    t1, t2 = np.unique(T)[:2]
    noise = max(rmse, 1e-5 * fit.L_inf)
    if not flags and fit.Z * np.exp(-fit.z * t1) < noise:
        # nothing left to decay even at the first T: the loss does not fall with T (a run trained at
        # µ_rec = 1, or one whose extra loops do not help), so neither Z nor z means anything
        flags.append(f"{FLAG_NO_DECAY}: the fitted drop below the loss at T={t1:g} is within the fit's "
                     "noise (Z ≈ 0): Z and z not identified")
    elif not flags and fit.Z * np.exp(-fit.z * t2) < noise:
        flags.append(f"saturates before T={t2:g}: z only bounded from below")
    # a curve without decay has any z, and one that saturates before T2 has its optimum at z → ∞, i.e. at
    # the upper bound: both said above
    no_decay = any(f.startswith(FLAG_NO_DECAY) for f in flags)
    saturated = any(f.startswith("saturates") for f in flags)
    if not no_decay and (fit.z <= Z_MIN * 1.01 or (fit.z >= Z_MAX * 0.99 and not saturated)):
        flags.append("z at its bound")
    if not flags and np.exp(-fit.z * (T.max() - T.min())) > PLATEAU_LEFT:
        flags.append("no plateau within the measured T: L_inf is an extrapolation "
                     "and trades off against z")
    after_min = L[int(np.argmin(L)):]
    if after_min.max() - L.min() > FLAT_REL * L.min():
        flags.append("non-monotone: loss rises again at large T")
    return flags


def fit_testtime(T: np.ndarray, loss: np.ndarray) -> SaturationFit:
    """Fit L(T) = L_inf + Z exp(-z T) to one run's test-time losses."""
    order = np.argsort(T)
    T = np.asarray(T, dtype=float)[order]
    L = np.asarray(loss, dtype=float)[order]
    fit = SaturationFit(T, L)
    if np.unique(T).size < MIN_T:
        fit.flags.append(f"fewer than {MIN_T} T values: not fitted")
        return fit
    res = _best_fit(T, L)
    fit.L_inf, z0_amp, fit.z = (float(v) for v in res.x)
    fit.Z = z0_amp * float(np.exp(fit.z * T.min()))  # back to L_inf + Z·exp(−z·T)
    fit.se_L_inf, fit.se_z = _standard_errors(res, T.size)
    pred = fit.predict(T)
    ss_tot = float(np.sum((L - L.mean()) ** 2))
    fit.r2 = 1 - float(np.sum((L - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    fit.huber = huber_mean(np.log(pred) - np.log(L))
    if not res.success:
        fit.flags.append(f"optimizer did not converge: {res.message}")
    if np.unique(T).size <= N_PARAMS:
        fit.flags.append(FLAG_EXACT)
    fit.flags += _identification_flags(fit)
    fit.z_identified = advice(fit.flags) is None
    return fit


def fit_testtime_runs(df: pd.DataFrame) -> dict[str, SaturationFit]:
    """Fit every run of ``df`` (usable runs from load_runs) that has >= 3 T values (one job per run
    on the analysis's worker pool, analysis/workers.py)."""
    long = testtime_long(df)
    groups = [(str(rid), g) for rid, g in long.groupby("run_id", sort=False) if g["T"].nunique() >= MIN_T]
    fits = workers.run_all(fit_testtime, [(g["T"].to_numpy(), g["loss"].to_numpy()) for _, g in groups])
    return {rid: fit for (rid, _), fit in zip(groups, fits)}


def tabulate_testtime(df: pd.DataFrame, fits: dict[str, SaturationFit]) -> pd.DataFrame:
    """Per fitted run: parameters, quality, and the gap between L_inf and L(T=mu_rec).

    gap_pct = 100 (L_inf - L_mu) / L_mu with L_mu the run's eval/loss (logged at
    T = mu_rec); negative means more test-time loops are predicted to help.
    """
    rows = []
    meta = df.set_index(df["run_id"].astype(str))
    for run_id, fit in fits.items():
        r = meta.loc[run_id]
        l_mu = float(r["loss"])
        rows.append({
            "run_id": run_id,
            "model_name": r["model_name"],
            "mean_recurrence": r["mean_recurrence"],
            "flop_budget": r.get("flop_budget", float("nan")),
            "n_T": int(fit.T.size),
            "L_inf": fit.L_inf, "se_L_inf": fit.se_L_inf,
            "Z": fit.Z, "z": fit.z, "se_z": fit.se_z,
            "r2": fit.r2, "huber": fit.huber,
            "loss_at_mu": l_mu,
            "gap_pct": 100 * (fit.L_inf - l_mu) / l_mu if fit.fitted else float("nan"),
            "z_identified": fit.z_identified,
            "T_star": fit.T_star,
            "flags": "; ".join(fit.flags),
        })
    return pd.DataFrame(rows)
